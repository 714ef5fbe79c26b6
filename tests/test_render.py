"""bot.render: fingerprints, markers, coverage wording and the Jinja2 templates."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from conftest import check_golden

from analyzer.types import Feature, LineScore, ModelInfo, Report, Skipped
from bot.render import (
    MAX_BODY_CHARS,
    Coverage,
    Renderer,
    SummaryTable,
    fingerprint,
    line_fingerprints,
    marker,
    md_code,
    normalise_line,
    occurrence_index,
    parse_marker,
    risk_band,
)

GOLDEN = Path(__file__).parent / "golden" / "report"
MODEL = ModelInfo("smollm2-135m-pttrust", "HuggingFaceTB/SmolLM2-135M-Instruct", 8, "0.1.0")


def line(path: str, n: int, text: str, p: float, rank: int, feats=()) -> LineScore:
    return LineScore(path, n, text, score=p * 4 - 2, probability=p, rank=rank, features=feats)


# ----- fingerprints -----------------------------------------------------------------------------

def test_fingerprint_ignores_line_number_and_indentation_but_not_text_or_path():
    fp = fingerprint("a.py", "    return x + 1", 0)
    assert fp == fingerprint("a.py", "return   x + 1\t", 0)  # re-indented, respaced
    assert fp != fingerprint("a.py", "return x - 1", 0)
    assert fp != fingerprint("b.py", "return x + 1", 0)
    assert fp != fingerprint("a.py", "return x + 1", 1)
    assert len(fp) == 16 and int(fp, 16) >= 0


def test_fingerprints_survive_a_line_move_in_the_file():
    before = "import os\n\ndef f(x):\n    return None\n\ndef g():\n    return None\n"
    after = "import os\nimport sys\n\n\ndef f(x):\n    return None\n\ndef g():\n    return None\n"
    old = line_fingerprints([line("m.py", 4, "    return None", 0.6, 1),
                             line("m.py", 7, "    return None", 0.3, 2)], {"m.py": before})
    new = line_fingerprints([line("m.py", 6, "    return None", 0.6, 1),
                             line("m.py", 9, "    return None", 0.3, 2)], {"m.py": after})
    assert old[("m.py", 4)] == new[("m.py", 6)]
    assert old[("m.py", 7)] == new[("m.py", 9)]
    # The two identical lines are told apart by their occurrence index.
    assert old[("m.py", 4)] != old[("m.py", 7)]


def test_fingerprints_without_file_text_count_occurrences_among_scored_lines():
    fps = line_fingerprints([line("m.py", 9, "pass", 0.2, 2), line("m.py", 3, "pass", 0.9, 1)])
    assert fps[("m.py", 3)] == fingerprint("m.py", "pass", 0)
    assert fps[("m.py", 9)] == fingerprint("m.py", "pass", 1)


def test_occurrence_index_counts_earlier_equal_lines_and_rejects_bad_lines():
    text = "x = 1\n  x = 1\ny = 2\nx  =  1\n"
    assert [occurrence_index(text, n) for n in (1, 2, 3, 4)] == [0, 1, 0, 2]
    with pytest.raises(ValueError, match="outside the file"):
        occurrence_index(text, 5)
    assert normalise_line("\t a   b ") == "a b"


def test_occurrence_index_numbers_lines_as_git_does():
    # A form feed is text inside a line to git (and to the diff's line numbers): str.splitlines
    # would split there and shift every later line.
    text = "x = 1\n# \x0c section\nx = 1\r\n"
    assert [occurrence_index(text, n) for n in (1, 2, 3)] == [0, 0, 1]
    with pytest.raises(ValueError, match="outside the file"):
        occurrence_index(text, 4)


def test_marker_round_trips_and_the_last_marker_wins():
    m = marker(fp="0123abcd", model="smollm2 135m@0.1", sha=None)
    assert m == "<!-- ptbot:fp=0123abcd model=smollm2_135m@0.1 -->"
    # Reviewed code quoted earlier in a body cannot forge the marker ptbot writes last.
    body = "`<!-- ptbot:fp=evil -->`\n\ntext\n" + m
    assert parse_marker(body) == {"fp": "0123abcd", "model": "smollm2_135m@0.1"}
    assert parse_marker("no marker here") == {}


def test_risk_bands():
    assert [risk_band(p) for p in (0.9, 0.5, 0.49, 0.2, 0.19, 0.0)] == [
        "high", "high", "medium", "medium", "low", "low"]


def test_md_code_cannot_be_broken_out_of():
    assert md_code("a | b") == "`a \\| b`"
    assert md_code("x = `y` + ``z``") == "``` x = `y` + ``z`` ```"  # fence longer than any run
    assert md_code("`tick`") == "`` `tick` ``"
    assert md_code("x" * 100, limit=10) == "`" + "x" * 9 + "…`"


# ----- coverage ---------------------------------------------------------------------------------

def test_coverage_sentence():
    cov = Coverage(scored=12, candidates=15, skipped=(
        Skipped("a.png", "binary file"), Skipped("b.png", "binary file"),
        Skipped("c.xyz", "unknown language")))
    assert cov.sentence() == ("scored 12 of 15 AI-authored lines; skipped 3: binary file "
                              "(a.png, b.png); unknown language (c.xyz)")
    assert cov.sentence(reasons=False) == "scored 12 of 15 AI-authored lines; skipped 3"
    with_comments = Coverage(scored=13, candidates=17, scope="changed",
                             not_scored=(("comment", 2), ("blank", 1), ("punctuation-only", 1)))
    assert with_comments.sentence() == ("scored 13 of 17 changed lines; 2 comment lines, 1 blank line, "
                                        "1 punctuation-only line not scored")
    human_only = Coverage(scored=0, candidates=0, out_of_scope=7)
    assert human_only.sentence() == ("scored 0 of 0 AI-authored lines "
                                     "(7 other added lines not in scope)")


def test_coverage_rejects_impossible_counts():
    with pytest.raises(ValueError, match="exceeds candidates"):
        Coverage(scored=3, candidates=2)
    with pytest.raises(ValueError, match=">= 0"):
        Coverage(scored=0, candidates=-1)
    with pytest.raises(ValueError, match="exceed candidates"):
        Coverage(scored=3, candidates=4, not_scored=(("comment", 2),))


# ----- templates --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def sample_report() -> Report:
    return Report(MODEL, (
        line("src/auth.py", 42, "    if user.is_admin or token:", 0.81, 1,
             (Feature(12, 0.84, "permission check"), Feature(40, 0.5, "boolean or"))),
        line("src/auth.py", 57, "    return a | b", 0.33, 2, (Feature(3, 1.25), Feature(9, 0.7))),
        line("lib/x.py", 3, "count += 1", 0.05, 3),
    ), (Skipped("logo.png", "binary file"),))


def test_inline_comment_has_rank_probability_reason_provenance_and_marker(renderer):
    rep = sample_report()
    body = renderer.inline_comment(rep.lines[0], "AI-authored: commit 1a2b3c4 (Co-authored-by: "
                                   "Claude)", "00ff00ff00ff00ff", model_version="smollm2@0.1.0",
                                   head_sha="abc123")
    check_golden(GOLDEN / "inline_comment.md", body)
    assert "#1" in body and "81%" in body and "permission check" in body
    assert body.rstrip().endswith(
        "<!-- ptbot:fp=00ff00ff00ff00ff model=smollm2@0.1.0 sha=abc123 -->")
    assert parse_marker(body)["fp"] == "00ff00ff00ff00ff"
    unlabelled = renderer.inline_comment(rep.lines[1], "AI-authored", "ab")
    assert "#3 (1.25)" in unlabelled and "<!-- ptbot:fp=ab -->" in unlabelled


def test_review_body_has_table_coverage_model_and_feedback(renderer):
    rep = sample_report()
    cov = Coverage(scored=3, candidates=4, skipped=rep.skipped)
    body = renderer.review_body(SummaryTable(rep, cov, "smollm2@0.1.0", head_sha="abc123", max_rows=2))
    assert "| 1 | 81% | `src/auth.py:42` | `if user.is_admin or token:` |" in body
    assert "`return a \\| b`" in body
    assert "lib/x.py" not in body and "1 more scored line below rank 2" in body
    assert "scored 3 of 4 AI-authored lines; skipped 1: binary file (logo.png)" in body
    assert "`smollm2@0.1.0`" in body and "👍" in body and "👎" in body
    assert parse_marker(body) == {"kind": "review", "model": "smollm2@0.1.0", "sha": "abc123"}


def test_check_summary_title_and_body(renderer):
    rep = sample_report()
    out = renderer.check_summary(SummaryTable(rep, Coverage.from_report(rep), "smollm2@0.1.0"))
    assert out.title == "ptbot: 3 lines ranked, 1 high risk, top 81%"
    assert "neutral" in out.summary and "`src/auth.py:42`" in out.summary
    assert parse_marker(out.summary)["kind"] == "check"
    empty = renderer.check_summary(SummaryTable(Report(MODEL, ()), Coverage(0, 0), "m"))
    assert empty.title == "ptbot: no lines scored"
    assert "nothing to rank" in empty.summary


def test_bodies_stay_under_githubs_size_limit(renderer):
    many = tuple(line(f"pkg/module_{i}.py", i + 1, "x" * 200, 0.5, i + 1) for i in range(2000))
    rep = Report(MODEL, many)
    out = renderer.check_summary(SummaryTable(rep, Coverage.from_report(rep), "m", max_rows=2000))
    assert len(out.summary) <= MAX_BODY_CHARS
    assert "more scored lines below rank" in out.summary


def test_strict_undefined_raises_on_a_missing_variable(tmp_path):
    (tmp_path / "inline_comment.md.j2").write_text("{{ line.rank }} {{ no_such_variable }}\n")
    r = Renderer(tmp_path)
    with pytest.raises(jinja2.UndefinedError, match="no_such_variable"):
        r.inline_comment(sample_report().lines[0], "AI-authored", "ab")


def test_missing_templates_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Renderer(tmp_path / "nope")


def test_autoescape_is_on_for_html_only(tmp_path):
    (tmp_path / "a.md.j2").write_text("{{ x }}")
    (tmp_path / "a.html.j2").write_text("{{ x }}")
    r = Renderer(tmp_path)
    assert r.render("a.md.j2", x="<b>") == "<b>"
    assert r.render("a.html.j2", x="<b>") == "&lt;b&gt;"
