"""The review pipeline shared by every surface: changed files -> score requests -> ranked report.

``review`` is the library entry point: a Python caller reviews a repository's change or a
unified diff with one call and gets a ``Review`` (the ranked ``Report`` and its coverage) back.
Every surface scores through ``review_plan``: the CLI (through ``review``), the GitHub Action and
the App's workers (through ``bot.pr_review.score``, which plans from a pull request instead).

Declares the small interface it needs from a scorer (``Scorer``); ``analyzer.score.RiskScorer``
satisfies it structurally, and tests pass a fake. Never imports torch.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from analyzer.comments import comment_lines
from analyzer.diff import decode_diff
from analyzer.languages import is_scorable, language_for_path
from analyzer.types import FileDiff, LineScore, ModelInfo, Report, ScoreRequest, Skipped
from bot.localrepo import LocalRepo
from bot.render import Coverage


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


# ----- the library API: one change in, one ranked review out ----------------------------------


@dataclass(frozen=True)
class Review:
    """One reviewed change: the ranked report, what it covered, and the files it read."""

    report: Report
    """The scored lines, riskiest first, and the files skipped with their reasons."""
    coverage: Coverage
    """How many candidate lines were scored, and what was left out (the renderers' summary line)."""
    texts: Mapping[str, str]
    """path -> whole new text of each planned file (the context that reports quote)."""
    changed: Mapping[str, frozenset[int]]
    """path -> the lines of that file planned for scoring."""


def review_plan(scorer: Scorer, plan: Plan, limits: ReviewLimits, *, scope: str = "changed",
                out_of_scope: int = 0, progress: bool = False) -> Review:
    """Score a plan, rank it across files and count its coverage: the step every surface shares.

    ``scope`` names the candidate lines in the coverage sentence ("changed", "added",
    "AI-authored"); ``out_of_scope`` counts added lines the caller left out on purpose.
    """
    report, n_scored = rank_report(scorer, plan, limits, progress=progress)
    return Review(report, plan_coverage(plan, report, n_scored, scope=scope, out_of_scope=out_of_scope),
                  dict(plan.texts), {r.path: frozenset(r.lines or ()) for r in plan.requests})


def plan_coverage(plan: Plan, report: Report, n_scored: int, *, scope: str,
                  out_of_scope: int = 0) -> Coverage:
    """The coverage of a scored plan: ``n_scored`` of its candidate lines, what was skipped and
    what was left unscored on purpose (a line may be scored without being a candidate, when a
    caller plans lines of its own, so the candidates count is at least ``n_scored``)."""
    return Coverage(scored=n_scored, candidates=max(plan.candidates, n_scored), skipped=report.skipped,
                    scope=scope, out_of_scope=out_of_scope, not_scored=plan.not_scored)


def review(scorer: Scorer | Callable[[], Scorer], repo: str | os.PathLike[str] = ".", *,
           base: str | None = None, head: str | None = None, diff: bytes | str | None = None,
           limits: ReviewLimits | None = None, progress: bool = False,
           say: Callable[[str], None] | None = None) -> Review:
    """Review a change of a git repository, or a unified diff, and return the ranked ``Review``.

    By default the change is ``repo``'s working tree (staged, unstaged and untracked files)
    against ``HEAD``; ``base`` and ``head`` pick revisions instead. With ``diff`` (the text or
    bytes of a unified diff) git is not asked: the new file texts are read from ``repo``'s
    working tree. Each changed line is scored in the context of its whole new file.

    ``scorer`` is a ``Scorer`` or a function that loads one: it is called once the change is
    read and planned, so a bad revision or diff fails before a model is loaded. ``say`` gets the
    lines meant for a person watching: an empty change always, and with ``progress`` (which also
    shows the scorer's progress bar) how many lines are being scored. Raises ``bot.localrepo.RepoError`` (not a repository,
    unknown revision), ``analyzer.diff.DiffError`` (a malformed diff) and ``ValueError`` (``diff``
    together with ``base``/``head``).

    >>> from analyzer.score import RiskScorer               # doctest: +SKIP
    >>> result = review(RiskScorer.load, "path/to/repo", base="main",
    ...                 limits=ReviewLimits(top_k=5))       # doctest: +SKIP
    >>> for line in result.report.lines:                    # doctest: +SKIP
    ...     print(f"{line.path}:{line.line} {line.probability:.0%} {line.text.strip()}")
    >>> result.coverage.sentence()                          # doctest: +SKIP
    """
    limits = limits or ReviewLimits()
    if diff is not None:
        if base or head:
            raise ValueError("a diff cannot be combined with base/head revisions")
        decoded = decode_diff(diff.encode("utf-8") if isinstance(diff, str) else diff)
        files, undecodable = decoded.files, decoded.undecodable
        root = Path(repo)

        def read_new(path: str) -> bytes | None:
            p = root / path
            return p.read_bytes() if p.is_file() else None
    else:
        local = LocalRepo(repo)
        change = local.diff(base, head)
        files, undecodable = change.files, change.undecodable

        def read_new(path: str) -> bytes | None:
            return local.file_text(path, change.head)

    plan = plan_requests(files, read_new, limits, undecodable)
    if not files and say:
        say("nothing to review: the diff is empty")
    loaded = scorer if hasattr(scorer, "score_many") else scorer()  # type: ignore[operator]
    if plan.requests and say and progress:
        n_lines = sum(len(r.lines or ()) for r in plan.requests)
        say(f"scoring {n_lines} line{'s' * (n_lines != 1)} in {len(plan.requests)} "
            f"file{'s' * (len(plan.requests) != 1)}")
    return review_plan(loaded, plan, limits, progress=progress)
