"""The output formats of ``ptbot review`` and ``ptbot score``: text, json, sarif, markdown, html.

All of them render one ``analyzer.types.Report``. ``json`` is the stable, documented document
(``Report.to_dict``); ``sarif`` is SARIF 2.1.0 for GitHub code scanning;
``markdown`` is what the pull-request review would say; ``html`` is one self-contained page.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Collection, Mapping
from importlib import metadata
from typing import Any, Literal, get_args
from urllib.parse import quote

from analyzer.types import LineScore, Report
from bot.render import (
    Coverage,
    Renderer,
    SummaryTable,
    line_fingerprints,
    model_label,
    pct,
    reason,
    risk_band,
)

Format = Literal["text", "json", "sarif", "markdown", "html"]
FORMATS: tuple[str, ...] = get_args(Format)

SARIF_SCHEMA_URI = ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
                    "sarif-schema-2.1.0.json")
RULE_ID = "ptbot/risky-line"
# ptbot never fails a build (its reviews are COMMENT-only), and code scanning
# fails its check on "error" alerts by default, so the strongest level is "warning".
SARIF_LEVELS = {"high": "warning", "medium": "note", "low": "note"}

TERMINAL_WIDTH = 100


def render_report(
    report: Report,
    fmt: str,
    *,
    files: Mapping[str, str] | None = None,
    changed: Mapping[str, Collection[int]] | None = None,
    coverage: Coverage | None = None,
    renderer: Renderer | None = None,
    explain: bool = False,
) -> str:
    """Render ``report`` in one of :data:`FORMATS`.

    ``files`` (path -> whole new text) gives html its code view and SARIF/markdown fingerprints
    their occurrence counts; ``changed`` (path -> changed line numbers) marks lines in html
    (default: the scored lines); ``coverage`` feeds the text and markdown coverage line (default:
    derived from the report alone, which cannot know how many candidate lines went unscored).
    ``explain`` adds each line's strongest SAE latents to the text table (the other formats
    always carry them).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "sarif":
        return json.dumps(sarif_log(report, files=files), indent=2, ensure_ascii=False) + "\n"
    if fmt == "text":
        return text_report(report, coverage=coverage, explain=explain)
    renderer = renderer or Renderer()
    if fmt == "markdown":
        # Without a Coverage the report cannot tell how many changed lines went unscored.
        coverage = coverage or Coverage.from_report(report, scope="changed")
        return renderer.review_body(SummaryTable(report, coverage, model_label(report.model),
                                                 max_rows=len(report.lines)))
    return renderer.html_report(report, files=files, changed=changed)


# ----- text -------------------------------------------------------------------------------------

def text_report(report: Report, *, coverage: Coverage | None = None,
                width: int = TERMINAL_WIDTH, explain: bool = False) -> str:
    """Aligned ranked table, skipped files with reasons, and a one-line summary, ``width`` wide.

    ``explain``: under each row, the line's strongest SAE latents (number, label if one was
    stored with ``ptbot features --label``, activation), strongest first.
    """
    ranked = sorted(report.lines, key=lambda ln: ln.rank)
    out: list[str] = []
    if ranked:
        rank_w = max(4, len(str(ranked[-1].rank)))
        prob_w = max(4, *(len(pct(ln.probability)) for ln in ranked))
        locs = [f"{ln.path}:{ln.line}" for ln in ranked]
        # Locations get at most 40% of the width; long paths lose their leading directories.
        loc_w = min(max(8, *(_width(s) for s in locs)), (width * 2) // 5)
        code_w = max(10, width - rank_w - prob_w - loc_w - 6)
        out.append(f"{'rank':>{rank_w}}  {'prob':>{prob_w}}  {_pad('location', loc_w)}  line")
        out.append(f"{'-' * rank_w}  {'-' * prob_w}  {'-' * loc_w}  {'-' * min(code_w, 40)}")
        for ln, loc in zip(ranked, locs, strict=True):
            code = _clip(ln.text.strip().replace("\t", "    "), code_w)
            out.append(f"{ln.rank:>{rank_w}}  {pct(ln.probability):>{prob_w}}  "
                       f"{_pad(_clip_left(loc, loc_w), loc_w)}  {code}".rstrip())
            if explain:
                out.append(_clip(" " * (rank_w + 2) + "latents: " + _latents(ln), width))
    else:
        out.append("No line was scored.")
    if report.skipped:
        out.append("")
        out.append(f"Skipped ({len(report.skipped)}):")
        path_w = min(max(_width(s.path) for s in report.skipped), (width * 2) // 5)
        for s in report.skipped:
            out.append(_clip(f"  {_pad(_clip_left(s.path, path_w), path_w)}  {s.reason}", width))
    out.append("")
    n_files = len({ln.path for ln in ranked})
    if coverage is not None:
        what = coverage.sentence(reasons=False)
    else:
        what = f"scored {len(ranked)} line{_s(len(ranked))} in {n_files} file{_s(n_files)}"
        if report.skipped:
            what += f"; skipped {len(report.skipped)} file{_s(len(report.skipped))}"
    model = f"model {model_label(report.model)}, layer {report.model.layer}."
    summary = f"{what}; {model}"
    if _width(summary) > width:
        # Two sentences rather than a clipped one: the coverage and the model are both worth reading.
        summary = f"{what}.\n{model[0].upper()}{model[1:]}"
    out.extend(_clip(line[0].upper() + line[1:], width) for line in summary.split("\n"))
    return "\n".join(out) + "\n"


def _latents(ln: LineScore, n: int = 3) -> str:
    feats = sorted(ln.features, key=lambda f: -f.activation)[:n]
    if not feats:
        return "none stood out"
    return ", ".join(f"#{f.latent}{f' ({f.label})' if f.label else ''} {f.activation:.2f}" for f in feats)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _char_width(ch: str) -> int:
    """Terminal columns of one character: 2 for wide East Asian forms, 0 for combining marks."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _width(s: str) -> int:
    return sum(_char_width(c) for c in s)


def _pad(s: str, w: int) -> str:
    return s + " " * max(0, w - _width(s))


def _clip(s: str, w: int) -> str:
    """Cut ``s`` to ``w`` columns, ending with '…' when cut."""
    if _width(s) <= w:
        return s
    out, used = [], 0
    for c in s:
        if used + _char_width(c) > w - 1:
            break
        out.append(c)
        used += _char_width(c)
    return "".join(out) + "…"


def _clip_left(s: str, w: int) -> str:
    """Cut ``s`` to ``w`` columns from the left, so a path keeps its file name."""
    if _width(s) <= w:
        return s
    kept, used = [], 0
    for c in reversed(s):
        if used + _char_width(c) > w - 1:
            break
        kept.append(c)
        used += _char_width(c)
    return "…" + "".join(reversed(kept))


# ----- SARIF ------------------------------------------------------------------------------------

def sarif_log(report: Report, *, files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The report as one SARIF 2.1.0 log with one run, one rule and one result per scored line.

    Levels by band: probability >= 0.5 is "warning", anything lower "note" (ptbot never emits
    "error"). ``partialFingerprints`` hold the content fingerprint (path, normalised text,
    occurrence), so alerts follow a line when it moves instead of churning.
    """
    ranked = sorted(report.lines, key=lambda ln: ln.rank)
    fps = line_fingerprints(ranked, files)
    run: dict[str, Any] = {
        "tool": {"driver": _driver()},
        "columnKind": "utf16CodeUnits",
        "results": [_result(ln, fps[(ln.path, ln.line)], len(ranked)) for ln in ranked],
        "properties": {"model": report.model.to_dict()},
    }
    if report.skipped:
        # SARIF's place for "the tool could not analyse this": notifications on the invocation.
        run["invocations"] = [{
            "executionSuccessful": True,
            "toolExecutionNotifications": [
                {"level": "note", "message": {"text": f"Not scored: {s.reason}"},
                 "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(s.path)}}}]}
                for s in report.skipped
            ],
        }]
    return {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def _driver() -> dict[str, Any]:
    version, homepage = _package_info()
    return {
        "name": "ptbot",
        "version": version,
        "informationUri": homepage,
        "rules": [{
            "id": RULE_ID,
            "name": "RiskyLine",
            "shortDescription": {"text": "Line likely to need a change"},
            "fullDescription": {"text": (
                "ptbot ranks the added lines of a change by the calibrated probability that they "
                "need an edit, read from a supervisor language model's hidden states.")},
            "help": {
                "text": ("Read this line first: ptbot estimates it is among the most likely in "
                         "this change to need a fix. The probability is a reading order, not a "
                         "verdict; dismiss the alert if the line is right."),
                "markdown": ("**Read this line first.** ptbot estimates it is among the most "
                             "likely in this change to need a fix. The probability is a reading "
                             "order, not a verdict; dismiss the alert if the line is right."),
            },
            "defaultConfiguration": {"level": "warning"},
            "properties": {"tags": ["ai-review", "maintainability"], "precision": "medium",
                           "problem.severity": "warning"},
        }],
    }


def _result(ln: LineScore, fp: str, total: int) -> dict[str, Any]:
    band = risk_band(ln.probability)
    return {
        "ruleId": RULE_ID,
        "ruleIndex": 0,
        "level": SARIF_LEVELS[band],
        "message": {"text": (f"{pct(ln.probability)} probability that this line needs a change "
                             f"(rank {ln.rank} of {total}, {band} risk): {reason(ln)}.")},
        "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": _uri(ln.path)},
            "region": {"startLine": ln.line, "snippet": {"text": ln.text}},
        }}],
        # GitHub reads only primaryLocationLineHash; the versioned key names ptbot's own scheme.
        "partialFingerprints": {"primaryLocationLineHash": fp, "ptbotLineHash/v1": fp},
        "rank": round(100.0 * ln.probability, 2),  # SARIF's 0-100 "priority" of a result
        "properties": {
            "probability": round(ln.probability, 6),
            "score": round(ln.score, 6),
            "rank": ln.rank,
            "riskBand": band,
            "features": [{"latent": f.latent, "activation": round(f.activation, 6),
                          "label": f.label} for f in ln.features],
        },
    }


def _uri(path: str) -> str:
    """A repository-relative URI reference: POSIX separators, special characters escaped."""
    return quote(path.replace("\\", "/").lstrip("/"), safe="/")


def _package_info() -> tuple[str, str]:
    """ptbot's installed version and home page, with fallbacks when run from a source tree."""
    try:
        meta = metadata.metadata("ptbot")
    except metadata.PackageNotFoundError:
        return "0+unknown", "https://pypi.org/project/ptbot/"
    homepage = meta.get("Home-page") or ""
    for entry in meta.get_all("Project-URL") or ():
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("homepage", "home", "source", "repository") and url.strip():
            homepage = url.strip()
            break
    return meta["Version"], homepage or "https://pypi.org/project/ptbot/"
