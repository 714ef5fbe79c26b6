"""The review pipeline shared by every surface: changed files -> score requests -> ranked report.

Declares the small interface it needs from a scorer (``Scorer``); ``analyzer.score.RiskScorer``
satisfies it structurally, and tests pass a fake. Never imports torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from analyzer.comments import comment_lines
from analyzer.languages import is_scorable, language_for_path
from analyzer.types import FileDiff, LineScore, ModelInfo, Report, ScoreRequest, Skipped


class Scorer(Protocol):
    """What the pipeline needs from a scorer."""

    @property
    def info(self) -> ModelInfo: ...

    def score_many(self, requests: Sequence[ScoreRequest], progress: bool = False) -> list[list[LineScore]]: ...


@dataclass(frozen=True)
class ReviewLimits:
    """What a review scores and shows."""

    top_k: int | None = None
    """Show at most this many lines (None: all scored lines)."""
    min_probability: float = 0.0
    """Hide lines whose probability is below this."""
    max_file_bytes: int = 1_000_000
    """Files larger than this are skipped (generated or vendored code, most likely)."""

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.min_probability <= 1.0:
            raise ValueError(f"min_probability must be in [0, 1], got {self.min_probability}")


@dataclass(frozen=True)
class Plan:
    """Score requests for a diff, the files skipped, and how many candidate lines there were."""

    requests: tuple[ScoreRequest, ...]
    skipped: tuple[Skipped, ...]
    candidates: int
    texts: dict[str, str]
    not_scored: tuple[tuple[str, int], ...] = ()
    """Candidate lines of the planned files that get no score, by kind (``UNSCORED_KINDS``)."""


UNSCORED_KINDS = ("comment", "blank", "punctuation-only")
"""Lines that carry no decision of their own, so no risk score: only comment (or docstring), blank,
or only brackets and separators."""


def unscored_kind(line: str, is_comment: bool) -> str | None:
    """Which of ``UNSCORED_KINDS`` a line is, or None for a line to score."""
    if not line.strip():
        return "blank"
    if not is_scorable(line):
        return "punctuation-only"
    return "comment" if is_comment else None


def plan_requests(files: Sequence[FileDiff], read_new: Callable[[str], bytes | None],
                  limits: ReviewLimits, undecodable: frozenset[str] = frozenset(),
                  lines_of: Callable[[FileDiff], Sequence[int]] | None = None) -> Plan:
    """Decide what to score: added/changed lines of each file, in the context of the whole new file.

    ``read_new(path)`` returns the new file's bytes; ``lines_of`` picks the candidate lines of a
    file (default: every added line; the App passes only AI-authored ones).
    """
    requests, skipped, texts = [], [], {}
    candidates = 0
    not_scored: Counter[str] = Counter()
    for f in files:
        if f.is_binary:
            skipped.append(Skipped(f.path, "binary file"))
            continue
        if f.status == "deleted":
            skipped.append(Skipped(f.path, "deleted file (nothing to score)"))
            continue
        lines = list(lines_of(f) if lines_of else f.added_linenos())
        if not lines:
            reason = "rename only" if f.status in ("renamed", "copied") else "no added lines"
            skipped.append(Skipped(f.path, reason))
            continue
        language = language_for_path(f.path)
        if language is None:
            skipped.append(Skipped(f.path, "unknown language (no scorer for this file type)"))
            continue
        if f.path in undecodable:
            skipped.append(Skipped(f.path, "not valid UTF-8 text"))
            continue
        data = read_new(f.path)
        if data is None:
            skipped.append(Skipped(f.path, "new version of the file not found"))
            continue
        if len(data) > limits.max_file_bytes:
            skipped.append(Skipped(f.path, f"file too large ({len(data):,} bytes > "
                                           f"{limits.max_file_bytes:,})"))
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(Skipped(f.path, "not valid UTF-8 text"))
            continue
        if "\x00" in text:
            skipped.append(Skipped(f.path, "binary file"))
            continue
        all_lines = text.split("\n")
        comments = comment_lines(text, language)
        wanted = []
        for n in lines:
            if not 0 < n <= len(all_lines):
                continue
            kind = unscored_kind(all_lines[n - 1], n in comments)
            if kind is None:
                wanted.append(n)
            else:
                not_scored[kind] += 1
        candidates += len(lines)
        if not wanted:
            skipped.append(Skipped(f.path, "only comment, blank or punctuation-only lines added"))
            continue
        texts[f.path] = text
        requests.append(ScoreRequest(path=f.path, text=text, lines=frozenset(wanted),
                                     language=language))
    return Plan(tuple(requests), tuple(skipped), candidates, texts,
                tuple((k, not_scored[k]) for k in UNSCORED_KINDS if not_scored[k]))


def rank_report(scorer: Scorer, plan: Plan, limits: ReviewLimits, progress: bool = False) -> tuple[Report, int]:
    """Score a plan and rank all lines across files; returns (report, number of lines scored).

    Ranking across files uses the calibrated probability (comparable between files), then the raw
    score. ``top_k`` and ``min_probability`` are applied after ranking.
    """
    per_file = scorer.score_many(list(plan.requests), progress=progress) if plan.requests else []
    every = [ln for lines in per_file for ln in lines]
    every.sort(key=lambda ln: (-ln.probability, -ln.score, ln.path, ln.line))
    shown = [ln for ln in every if ln.probability >= limits.min_probability]
    if limits.top_k is not None:
        shown = shown[: limits.top_k]
    ranked = tuple(LineScore(ln.path, ln.line, ln.text, ln.score, ln.probability, i, ln.features)
                   for i, ln in enumerate(shown, 1))
    return Report(model=scorer.info, lines=ranked, skipped=plan.skipped), len(every)
