"""bot.report: the five output formats of ``ptbot review`` / ``ptbot score``."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import check_golden

from analyzer.types import Feature, LineScore, ModelInfo, Report, Skipped
from bot.render import Coverage, fingerprint
from bot.report import FORMATS, RULE_ID, TERMINAL_WIDTH, render_report, sarif_log, text_report

GOLDEN = Path(__file__).parent / "golden" / "report"
MODEL = ModelInfo("smollm2-135m-pttrust", "HuggingFaceTB/SmolLM2-135M-Instruct", 8, "0.1.0")

AUTH_PY = """\
import hmac


def check(user, token, expected):
    if user.is_admin or token:
        return True
    return hmac.compare_digest(token, expected)
"""

UTIL_PY = """\
def clamp(x, lo, hi):
    return max(lo, min(x, hi))


def mean(xs):
    return sum(xs) / len(xs) if xs else 0
"""


def fixed_report() -> Report:
    """A small report with the awkward cases: pipes, backticks, a long path, a long line, CJK."""
    return Report(MODEL, (
        LineScore("src/auth.py", 5, "    if user.is_admin or token:", 1.734, 0.8123, 1,
                  (Feature(12, 0.84, "permission check"), Feature(40, 0.5))),
        LineScore("src/auth.py", 7, "    return hmac.compare_digest(token, expected)", 0.41,
                  0.3377, 2, (Feature(3, 1.25),)),
        LineScore("src/very/deeply/nested/package/structure/util_module.py", 6,
                  "    return sum(xs) / len(xs) if xs else 0  # `mean` | fallback to 0 " + "#" * 60,
                  -0.2, 0.1204, 3),
        LineScore("src/i18n.py", 2, 'GREETING = "こんにちは、世界"', -1.5, 0.0042, 4),
    ), (Skipped("assets/logo.png", "binary file"), Skipped("tools/gen.zig", "unknown language")))


# ----- text, json, markdown ---------------------------------------------------------------------

def test_text_golden_and_fits_100_columns():
    out = render_report(fixed_report(), "text")
    check_golden(GOLDEN / "report.txt", out)
    from bot.report import _width
    assert all(_width(row) <= TERMINAL_WIDTH for row in out.splitlines())
    rows = out.splitlines()
    assert rows[2].split()[:3] == ["1", "81%", "src/auth.py:5"]
    assert "binary file" in out and "unknown language" in out
    assert rows[-1].startswith("Scored 4 lines in 3 files; skipped 2 files; model ")


def test_text_explain_adds_each_lines_strongest_latents():
    out = render_report(fixed_report(), "text", explain=True)
    check_golden(GOLDEN / "report-explain.txt", out)
    from bot.report import _width
    assert all(_width(row) <= TERMINAL_WIDTH for row in out.splitlines())
    rows = out.splitlines()
    # Row 1 is followed by its latents, strongest first, labelled ones by name.
    assert rows[3].strip() == "latents: #12 (permission check) 0.84, #40 0.50"
    assert rows[5].strip() == "latents: #3 1.25"
    assert rows[7].strip() == "latents: none stood out"
    # Without --explain the table is unchanged.
    assert "latents:" not in render_report(fixed_report(), "text")


def test_text_uses_coverage_when_given_and_handles_an_empty_report():
    out = short = text_report(Report(MODEL, ()), coverage=Coverage(0, 3, scope="changed"))
    assert out.splitlines()[0] == "No line was scored."
    assert out.splitlines()[-1].startswith("Scored 0 of 3 changed lines; model smollm2")
    # A summary too long for one line becomes two sentences, rather than losing its end.
    long = text_report(Report(MODEL, ()), coverage=Coverage(11, 17, scope="changed", not_scored=(
        ("comment", 2), ("blank", 3), ("punctuation-only", 1))), width=100)
    assert long.splitlines()[-2:] == [
        "Scored 11 of 17 changed lines; 2 comment lines, 3 blank lines, 1 punctuation-only line not scored.",
        "Model " + short.splitlines()[-1].split("; model ", 1)[1]]


def test_json_is_exactly_to_dict():
    rep = fixed_report()
    out = render_report(rep, "json")
    check_golden(GOLDEN / "report.json", out)
    assert json.loads(out) == rep.to_dict()
    assert Report.from_dict(json.loads(out)).to_dict() == rep.to_dict()
    assert [ln["rank"] for ln in json.loads(out)["lines"]] == [1, 2, 3, 4]


def test_markdown_golden():
    rep = fixed_report()
    out = render_report(rep, "markdown",
                        coverage=Coverage(scored=4, candidates=6, skipped=rep.skipped))
    check_golden(GOLDEN / "report.md", out)
    assert "scored 4 of 6 AI-authored lines; skipped 2" in out
    # Every table row has exactly the 4 cells of the header: pipes in code did not split cells.
    rows = [r for r in out.splitlines() if r.startswith("| ")]
    assert len(rows) == 5
    assert all(len(re.split(r"(?<!\\)\|", r)) == 6 for r in rows)


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValueError, match="choose one of text, json, sarif, markdown, html"):
        render_report(fixed_report(), "xml")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_an_empty_report(fmt):
    assert render_report(Report(MODEL, ()), fmt).strip()


# ----- SARIF ------------------------------------------------------------------------------------

def test_sarif_validates_against_the_official_schema(sarif_validator):
    files = {"src/auth.py": AUTH_PY,
             "src/very/deeply/nested/package/structure/util_module.py": UTIL_PY}
    doc = json.loads(render_report(fixed_report(), "sarif", files=files))
    errors = sorted(sarif_validator.iter_errors(doc), key=str)
    assert not errors, "\n".join(e.message for e in errors[:5])
    sarif_validator.validate(json.loads(render_report(Report(MODEL, ()), "sarif")))


def test_sarif_content():
    doc = sarif_log(fixed_report())
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert doc["version"] == "2.1.0"
    assert driver["name"] == "ptbot" and driver["version"] and driver["informationUri"]
    assert [r["id"] for r in driver["rules"]] == [RULE_ID]
    rule = driver["rules"][0]
    assert rule["shortDescription"]["text"] and rule["help"]["text"]
    results = run["results"]
    assert [r["ruleId"] for r in results] == [RULE_ID] * 4
    assert [r["level"] for r in results] == ["warning", "note", "note", "note"]
    first = results[0]
    assert "81%" in first["message"]["text"] and "rank 1 of 4" in first["message"]["text"]
    loc = first["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "src/auth.py"
    assert loc["region"]["startLine"] == 5
    assert first["properties"]["probability"] == 0.8123
    assert first["properties"]["features"][0] == {"latent": 12, "activation": 0.84,
                                                  "label": "permission check"}
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert [n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for n in notes] == [
        "assets/logo.png", "tools/gen.zig"]


def test_sarif_uri_is_relative_and_escaped():
    rep = Report(MODEL, (LineScore("docs dir/a#b.py", 1, "x = 1", 0.0, 0.5, 1),))
    uri = sarif_log(rep)["runs"][0]["results"][0]["locations"][0]["physicalLocation"][
        "artifactLocation"]["uri"]
    assert uri == "docs%20dir/a%23b.py"


def test_sarif_fingerprints_survive_a_line_move():
    moved = "# a new header comment\n\n" + AUTH_PY
    before = Report(MODEL, (LineScore("src/auth.py", 5, "    if user.is_admin or token:",
                                      1.0, 0.8, 1),))
    after = Report(MODEL, (LineScore("src/auth.py", 7, "    if user.is_admin or token:",
                                     1.0, 0.8, 1),))
    r0 = sarif_log(before, files={"src/auth.py": AUTH_PY})["runs"][0]["results"][0]
    r1 = sarif_log(after, files={"src/auth.py": moved})["runs"][0]["results"][0]
    assert r0["locations"][0]["physicalLocation"]["region"]["startLine"] == 5
    assert r1["locations"][0]["physicalLocation"]["region"]["startLine"] == 7
    assert r0["partialFingerprints"] == r1["partialFingerprints"]
    expected = fingerprint("src/auth.py", "if user.is_admin or token:", 0)
    assert r0["partialFingerprints"]["primaryLocationLineHash"] == expected


# ----- HTML -------------------------------------------------------------------------------------

class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k == "id":
                self.ids.add(v)
            if k in ("src", "href", "action", "srcset", "data", "poster"):
                self.links.append((k, v or ""))


def test_html_is_one_self_contained_page_that_escapes_code():
    evil = 'x = "</td><script>alert(1)</script>"'
    rep = Report(MODEL, fixed_report().lines + (LineScore("src/evil.py", 2, evil, 0.0, 0.6, 5),),
                 fixed_report().skipped)
    files = {"src/auth.py": AUTH_PY, "src/evil.py": "import os\n" + evil + "\n"}
    out = render_report(rep, "html", files=files, changed={"src/auth.py": {4, 5, 6},
                                                           "src/evil.py": {2}})
    page = _Collect()
    page.feed(out)
    assert out.startswith("<!DOCTYPE html>") and out.count("<html") == 1
    # Self-contained: no scripts, no stylesheets or images to fetch, no remote CSS.
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert not re.search(r"url\(|@import", out)
    assert all(v.startswith("#") for _, v in page.links), page.links
    # Every in-page link lands on an element of the page.
    assert {v[1:] for _, v in page.links} <= page.ids
    # Code is escaped, never interpreted.
    assert "<script>" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    # The whole file is shown, with changed lines marked and the scored line coloured.
    assert "def check(user, token, expected):" in out
    assert re.search(r'<tr id="f\d-L5" class="changed scored">\s*<td class="heat" '
                     r'style="background: hsl\(', out)
    assert re.search(r'<tr id="f\d-L1">\s*<td class="heat" style="background: transparent">', out)


def test_html_without_file_text_lists_the_scored_lines():
    out = render_report(fixed_report(), "html")
    assert "scored lines only" in out and "こんにちは" in out
