"""Words a person reads: Jinja2 templates for inline comments, the review body, the check run and
the HTML report, plus the content fingerprint that keeps ptbot from repeating itself.

Every artifact ptbot posts carries one hidden marker, ``<!-- ptbot:fp=... model=... sha=... -->``
(as other bots do), so later runs can find their own output. The fingerprint is built from the
path, the whitespace-normalised line text and its occurrence index, never the line number, so a
finding survives code moving up or down the file (reviewdog's location-based fingerprint does not).
SARIF ``partialFingerprints`` use the same function.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from analyzer.lines import source_lines
from analyzer.types import LineScore, ModelInfo, Report, Skipped

log = logging.getLogger(__name__)

RiskBand = Literal["high", "medium", "low"]

# Probability bands, shared by SARIF levels and comment wording. The calibrated probability is
# "this line needs an edit"; at 0.5 an edit is more likely than not, which earns a warning. Below
# 0.2 a line is roughly at the base rate of edited lines in the training data, so
# it is listed for completeness but never presented as a problem.
HIGH_RISK = 0.5
MEDIUM_RISK = 0.2

# GitHub caps check-run summaries at 65,535 characters and PR bodies at about 64 KB
# (65,536 characters); stay below both with room for the marker.
MAX_BODY_CHARS = 60_000

_MARKER = re.compile(r"<!--\s*ptbot:([^>]*?)\s*-->")
_WS = re.compile(r"\s+")
_UNSAFE_MARKER_CHARS = re.compile(r"[^A-Za-z0-9._:/+@-]")


def risk_band(probability: float) -> RiskBand:
    """Band of a calibrated probability: high (>= 0.5), medium (>= 0.2) or low."""
    if probability >= HIGH_RISK:
        return "high"
    if probability >= MEDIUM_RISK:
        return "medium"
    return "low"


def model_label(model: ModelInfo) -> str:
    """How a model is named to people and in markers: ``name@version`` (or just the name)."""
    return f"{model.name}@{model.version}" if model.version else model.name


def normalise_line(text: str) -> str:
    """Line text with surrounding whitespace stripped and inner runs collapsed to one space,
    so re-indenting a block does not change its fingerprints."""
    return _WS.sub(" ", text.strip())


def fingerprint(path: str, text: str, occurrence: int = 0) -> str:
    """Content fingerprint of a line: 16 hex digits of sha256(path, normalised text, occurrence).

    ``occurrence`` is how many earlier lines of the same file normalise to the same text
    (see :func:`occurrence_index`); it tells apart repeated lines such as ``return None``.
    """
    if occurrence < 0:
        raise ValueError(f"occurrence must be >= 0, got {occurrence}")
    key = f"{path}\0{normalise_line(text)}\0{occurrence}".encode()
    return hashlib.sha256(key).hexdigest()[:16]


def occurrences(file_text: str) -> list[int]:
    """For each line of ``file_text`` (index 0 = line 1), how many earlier lines normalise to the
    same text. One pass over the file, so fingerprinting every line of a large file stays linear."""
    counts: dict[str, int] = {}
    out = []
    for text in source_lines(file_text):
        key = normalise_line(text)
        out.append(counts.get(key, 0))
        counts[key] = out[-1] + 1
    return out


def occurrence_index(file_text: str, line: int) -> int:
    """How many lines before 1-based ``line`` of ``file_text`` normalise to the same text."""
    occ = occurrences(file_text)
    if not 1 <= line <= len(occ):
        raise ValueError(f"line {line} is outside the file ({len(occ)} lines)")
    return occ[line - 1]


def line_fingerprints(
    lines: Iterable[LineScore], files: Mapping[str, str] | None = None
) -> dict[tuple[str, int], str]:
    """Fingerprint of each scored line, keyed by ``(path, line)``.

    With the file's text, occurrences are counted over the whole file (as GitHub's own
    ``primaryLocationLineHash`` does); without it, over the scored lines of that file in line
    order, which is stable as long as the same lines are scored.
    """
    lines = sorted(lines, key=lambda ln: (ln.path, ln.line))
    seen: dict[tuple[str, str], int] = {}
    per_file: dict[str, list[int]] = {}  # path -> occurrences(text), computed once per file
    out: dict[tuple[str, int], str] = {}
    for ln in lines:
        text = files.get(ln.path) if files else None
        if text is not None and ln.path not in per_file:
            per_file[ln.path] = occurrences(text)
        occ_of = per_file.get(ln.path, [])
        if 1 <= ln.line <= len(occ_of):
            occ = occ_of[ln.line - 1]
        else:
            key = (ln.path, normalise_line(ln.text))
            occ = seen.get(key, 0)
            seen[key] = occ + 1
        out[(ln.path, ln.line)] = fingerprint(ln.path, ln.text, occ)
    return out


def marker(**fields: str | None) -> str:
    """The hidden HTML comment that identifies a ptbot artifact, e.g. ``<!-- ptbot:fp=ab12 -->``."""
    parts = []
    for k, v in fields.items():
        if v is None or v == "":
            continue
        # One token per field: anything else (spaces, '>', '=') would break parse_marker.
        parts.append(f"{k}={_UNSAFE_MARKER_CHARS.sub('_', v)}")
    return f"<!-- ptbot:{' '.join(parts)} -->"


def parse_marker(body: str) -> dict[str, str]:
    """Fields of the last ptbot marker in a comment body ({} if none).

    The last one is taken because ptbot writes its marker at the very end; a marker-like string
    quoted earlier (say, inside reviewed code) cannot override it.
    """
    found = _MARKER.findall(body)
    if not found:
        return {}
    return dict(kv.split("=", 1) for kv in found[-1].split() if "=" in kv)


def parse_markers(body: str) -> list[dict[str, str]]:
    """Fields of every ptbot marker in a body, in order (a review body holds its own marker and,
    after it, the markers of findings that could not be anchored inline)."""
    return [dict(kv.split("=", 1) for kv in found.split() if "=" in kv) for found in _MARKER.findall(body or "")]


@dataclass(frozen=True, slots=True)
class Coverage:
    """What a review looked at, for the "scored X of Y AI-authored lines; skipped Z" sentence."""

    scored: int
    """Lines that received a probability."""
    candidates: int
    """Lines in scope: AI-authored added lines in ``ai-only`` mode, all added lines in ``all``."""
    skipped: tuple[Skipped, ...] = ()
    """Files (or parts of files) not scored, with a reason a person can act on."""
    scope: str = "AI-authored"
    """How the candidate lines are described: "AI-authored" or "added"."""
    out_of_scope: int = 0
    """Added lines left out by the mode (e.g. human-authored lines in ``ai-only`` mode)."""
    not_scored: tuple[tuple[str, int], ...] = ()
    """Candidate lines given no score by kind, e.g. ``(("comment", 2), ("blank", 4))``
    (``bot.review.Plan.not_scored``)."""

    def __post_init__(self) -> None:
        if min(self.scored, self.candidates, self.out_of_scope, *(n for _, n in self.not_scored)) < 0:
            raise ValueError("Coverage counts must be >= 0")
        if self.scored > self.candidates:
            raise ValueError(
                f"Coverage.scored ({self.scored}) exceeds candidates ({self.candidates}): "
                "count every scored line among the candidates"
            )
        if self.scored + sum(n for _, n in self.not_scored) > self.candidates:
            raise ValueError(
                f"Coverage: {self.scored} scored and {sum(n for _, n in self.not_scored)} unscored lines "
                f"exceed candidates ({self.candidates})")
        if not self.scope.strip():
            raise ValueError("Coverage.scope must name the lines in scope, e.g. 'AI-authored'")

    @classmethod
    def from_report(cls, report: Report, candidates: int | None = None, **kw: Any) -> Coverage:
        """Coverage of a report; ``candidates`` defaults to the number of scored lines."""
        n = len(report.lines)
        return cls(scored=n, candidates=n if candidates is None else candidates,
                   skipped=report.skipped, **kw)

    def sentence(self, reasons: bool = True) -> str:
        """One line: ``scored X of Y AI-authored lines; 2 comment lines, 4 blank lines not
        scored; skipped Z: reasons``.

        Z counts the skipped files (or parts); candidate lines that are comments, blank or
        punctuation-only get no score either, which is why X can be below Y with Z = 0.
        """
        s = f"scored {self.scored} of {self.candidates} {self.scope} line{_s(self.candidates)}"
        if self.not_scored:
            s += "; " + ", ".join(f"{n} {kind} line{_s(n)}" for kind, n in self.not_scored) + " not scored"
        if self.skipped:
            s += f"; skipped {len(self.skipped)}"
            if reasons:
                s += ": " + "; ".join(_group_reasons(self.skipped))
        if self.out_of_scope:
            s += f" ({self.out_of_scope} other added line{_s(self.out_of_scope)} not in scope)"
        return s


@dataclass(frozen=True, slots=True)
class SummaryTable:
    """What the review body and the check run's summary both show: the report's lines as a
    ranked table, what the review covered, the comment rule and the model."""

    report: Report
    """The scored lines (in rank order in the table) and the files skipped."""
    coverage: Coverage
    """What the review looked at."""
    model_version: str
    """The model as ``name@version``, named in the text and in the marker."""
    head_sha: str | None = None
    """The commit the summary is about, recorded in the marker."""
    max_rows: int = 10
    """Rows of the table at most; fewer when the body would pass GitHub's size limit."""
    rule: str | None = None
    """The comment rule in one sentence, when there is one."""

    def __post_init__(self) -> None:
        if self.max_rows < 0:
            raise ValueError(f"max_rows must be >= 0, got {self.max_rows}")


@dataclass(frozen=True, slots=True)
class CheckOutput:
    """The ``output`` object of a check run."""

    title: str
    summary: str


class Renderer:
    """Jinja2 templates over ``templates/``; an undefined variable raises, never renders blank."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        if templates_dir is None:
            import templates  # the package-data directory shipped next to bot/

            templates_dir = Path(templates.__file__).parent
        templates_dir = Path(templates_dir)
        if not templates_dir.is_dir():
            raise ValueError(
                f"templates directory {templates_dir} does not exist: "
                "pass the folder holding inline_comment.md.j2 etc., or None for the built-in one"
            )
        self.templates_dir = templates_dir
        self.env = Environment(
            loader=FileSystemLoader(templates_dir),
            undefined=StrictUndefined,
            # Escape only HTML: markdown goes to GitHub, which sanitises it, and escaping there
            # would show "&lt;" to reviewers. Code in markdown is fenced by ``md_code`` instead.
            autoescape=select_autoescape(enabled_extensions=("html.j2", "html"),
                                         default_for_string=False, default=False),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(md_code=md_code, md_text=md_text, pct=pct, heat=heat_colour,
                                band=risk_band, reason=reason)

    def render(self, name: str, **context: Any) -> str:
        """Render one template by file name with the given variables."""
        return self.env.get_template(name).render(**context)

    def inline_comment(
        self,
        line: LineScore,
        provenance: str,
        fingerprint: str,
        *,
        model_version: str | None = None,
        head_sha: str | None = None,
    ) -> str:
        """Body of one inline review comment: rank, probability, provenance, reason, marker."""
        return self.render(
            "inline_comment.md.j2", line=line, provenance=provenance,
            marker=marker(fp=fingerprint, model=model_version, sha=head_sha),
        )

    def review_body(self, table: SummaryTable) -> str:
        """Review body (also the markdown report): ranked table, coverage, the comment rule in
        one sentence (when there is one), model, feedback hint."""
        return self._capped("review_summary.md.j2", "review", table)

    def check_summary(self, table: SummaryTable) -> CheckOutput:
        """Title and summary of the neutral check run; carries the same table (and rule) as
        the review."""
        lines = table.report.lines
        n = len(lines)
        top = max((ln.probability for ln in lines), default=None)
        high = sum(1 for ln in lines if risk_band(ln.probability) == "high")
        if n == 0:
            title = "ptbot: no lines scored"
        else:
            title = (f"ptbot: {n} line{_s(n)} ranked, {high} high risk, "
                     f"top {pct(top)}")
        return CheckOutput(title=title, summary=self._capped("check_summary.md.j2", "check", table))

    def html_report(
        self,
        report: Report,
        files: Mapping[str, str] | None = None,
        changed: Mapping[str, Collection[int]] | None = None,
    ) -> str:
        """One self-contained HTML page: each file with a risk heat strip, then the ranked list."""
        files = files or {}
        ranked = sorted(report.lines, key=lambda ln: ln.rank)
        by_path: dict[str, dict[int, LineScore]] = {}
        for ln in ranked:
            by_path.setdefault(ln.path, {})[ln.line] = ln
        # Files with scored lines first, in order of their best rank; then the other files given
        # (changed files where nothing was scorable still deserve a look at their heat strip).
        paths = list(dict.fromkeys([*by_path, *sorted(files)]))
        ids = {p: f"f{i}" for i, p in enumerate(paths)}
        views = []
        for path in paths:
            scores = by_path.get(path, {})
            marked = set(changed.get(path, ())) if changed is not None else set(scores)
            text = files.get(path)
            if text is None:  # no file text: show the scored lines alone
                rows = [(n, scores[n].text, scores.get(n), n in marked) for n in sorted(scores)]
            else:
                rows = [(i, t, scores.get(i), i in marked)
                        for i, t in enumerate(source_lines(text), start=1)]
            views.append({"path": path, "id": ids[path], "rows": rows, "full": text is not None})
        return self.render("report.html.j2", report=report, ranked=ranked, files=views, ids=ids)

    def _capped(self, name: str, kind: str, table: SummaryTable) -> str:
        """Render ``table`` with template ``name`` and a ``kind`` marker, dropping table rows until
        the body fits GitHub's size limit."""
        mark = marker(kind=kind, model=table.model_version, sha=table.head_sha)
        ranked = sorted(table.report.lines, key=lambda ln: ln.rank)
        rows = min(table.max_rows, len(ranked))
        while True:
            body = self.render(name, ranked=ranked[:rows], total=len(ranked), coverage=table.coverage,
                               model=table.report.model, model_version=table.model_version, marker=mark,
                               rule=table.rule)
            if len(body) <= MAX_BODY_CHARS or rows == 0:
                return body
            rows //= 2
            log.warning("%s is %d characters; retrying with %d table rows", name, len(body), rows)


# ----- template filters -----------------------------------------------------------------------

def pct(probability: float | None) -> str:
    """0.8123 -> '81%'; small values keep one decimal ('0.4%') so they never read as zero."""
    if probability is None:
        return "n/a"
    p = 100.0 * probability
    return f"{p:.1f}%" if 0 < p < 1 else f"{p:.0f}%"


def md_text(text: str) -> str:
    """Plain text safe inside a markdown table cell: pipes escaped, newlines flattened."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def md_code(text: str, limit: int = 80) -> str:
    """A code span that no backtick, pipe or marker in the code can break out of."""
    text = text.strip().replace("\t", " ").replace("\n", " ")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    if not text:
        return ""
    # A fence one backtick longer than the longest run inside, padded when the text touches it
    # (CommonMark code spans).
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    # Inside GitHub tables "\|" is honoured even in code spans, and is what keeps the cell whole.
    text = text.replace("|", "\\|")
    return f"{fence}{pad}{text}{pad}{fence}"


def reason(line: LineScore, n: int = 3) -> str:
    """Short reason from the strongest SAE features, labelled when a label is known."""
    feats = sorted(line.features, key=lambda f: -f.activation)[:n]
    if not feats:
        return "no single feature stood out; the score comes from the whole line state"
    labelled = [f.label for f in feats if f.label]
    if labelled:
        return "resembles " + ", ".join(labelled)
    return "strongest SAE features " + ", ".join(f"#{f.latent} ({f.activation:.2f})" for f in feats)


def heat_colour(probability: float | None) -> str:
    """CSS colour for a probability: pale yellow at 0 through orange to red at 1."""
    if probability is None:
        return "transparent"
    p = min(1.0, max(0.0, probability))
    return f"hsl({50 - 50 * p:.0f}, 90%, {88 - 38 * p:.0f}%)"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _group_reasons(skipped: Sequence[Skipped], max_paths: int = 3) -> list[str]:
    """``reason (a.py, b.py, +2 more)`` per distinct reason, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for s in skipped:
        groups.setdefault(s.reason, []).append(s.path)
    out = []
    for why, paths in groups.items():
        shown = ", ".join(paths[:max_paths])
        more = f", +{len(paths) - max_paths} more" if len(paths) > max_paths else ""
        out.append(f"{why} ({shown}{more})")
    return out
