"""Comment lines per language (analyzer.comments): golden files and the traps around them.

Each ``tests/golden/comments/sample.<ext>`` is read in the language of its extension; its golden
file shows every line with ``C`` when it is a comment line (regenerate with
``PTBOT_UPDATE_GOLDEN=1``, then read the marks).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import check_golden

from analyzer.comments import SYNTAX, comment_lines
from analyzer.languages import LANGUAGES, language_for_path

GOLDEN = Path(__file__).parent / "golden" / "comments"
SAMPLES = sorted(p for p in GOLDEN.glob("sample.*") if p.suffix != ".golden")


def marked(text: str, language: str | None) -> str:
    found = comment_lines(text, language)
    lines = text.removesuffix("\n").split("\n")
    return "".join(f"{'C' if n in found else ' '} {n:>3} | {line}".rstrip() + "\n" for n, line in enumerate(lines, 1))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.suffix[1:])
def test_comment_lines_golden(sample: Path) -> None:
    language = language_for_path(sample.name)
    assert language is not None
    check_golden(sample.with_name(sample.name + ".golden"), marked(sample.read_text(encoding="utf-8"), language))


def test_every_language_has_a_reader_and_a_sample() -> None:
    assert LANGUAGES == set(SYNTAX) | {"python"}
    sampled = {language_for_path(p.name) for p in SAMPLES}
    assert sampled >= {"python", "java", "javascript", "typescript", "go", "rust", "c", "cpp",
                       "ruby", "shell", "php", "kotlin", "csharp", "swift", "scala"}


@pytest.mark.parametrize("language,text,expected", [
    # Python: docstrings of every kind, never a string that is a value
    ("python", 'def f():\n    """Doc."""\n    return 1\n', {2}),
    ("python", 'x = """\nnot a docstring\n"""\n', set()),
    ("python", 'f("""\nan argument\n""")\n', set()),
    ("python", "x = 1  # trailing\n", set()),
    ("python", "# a\n\n# b\n", {1, 3}),
    ("python", 'def f():\n    """unterminated\n', set()),       # the tokenizer stops; nothing invented
    ("python", "def f(:\n# still a comment\n", {2}),             # a syntax error does not hide comments
    # C family
    ("c", "/* a\n   b */ int x;\n", {1}),                        # the block's last line holds code
    ("java", "int x; // y\n// z\n", {2}),
    ("rust", "/// doc\n//! inner\nfn f() {}\n", {1, 2}),
    ("go", "//go:build linux\n// Package p.\n", {2}),            # a build constraint is code
    ("javascript", "const r = /\\/*/; // c\nx = 1; /* not opened by the regex */\n", set()),
    ("javascript", "a = b / c; // division\n// c\n", {2}),
    # unknown language: the per-line test
    (None, "# a\n// b\nx = 1\n", {1, 2}),
    ("cpp", "", set()),
])
def test_comment_lines_traps(language, text, expected) -> None:
    assert comment_lines(text, language) == expected


def test_crlf_and_a_missing_final_newline() -> None:
    assert comment_lines("x = 1\r\n# c\r\ny = 2", "python") == {2}
    assert comment_lines("int x;\r\n// c\r\n/* d */", "c") == {2, 3}
