"""analyzer.lines: which token's state stands for each line, on the real SmolLM2 and Gemma-3 tokenizers.

Golden files: tests/golden/lines/<tokenizer>-<language>.json hold, for every scorable line, its
number, text, end token and the tokens that start on it. Regenerate after a deliberate change with

    PTBOT_UPDATE_GOLDEN=1 pytest tests/test_lines.py

Besides the goldens, every case checks the mapping's invariants directly (each token belongs to
at most one line, by its first character; merged tokens such as "\\n    " or "):\\n" belong to
the line where they start; blank and punctuation-only lines get no span).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from analyzer.features import FeatureConfig
from analyzer.languages import is_comment_line, is_scorable
from analyzer.lines import LineSpan, as_read, line_starts, map_lines, source_lines

GOLDEN = Path(__file__).parent / "golden" / "lines"
UPDATE = os.environ.get("PTBOT_UPDATE_GOLDEN") == "1"

SNIPPETS = {
    "python": '''import os


def load(path):
    """Read a file; return None if missing."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        data = f.read()  # café ✓
    return data.strip()


class Box:
    def __init__(self, items=()):
        self.items = list(items)
''',
    "java": '''public class Counter {
    private int count = 0;

    public int next() {
        count += 1;
        return count;
    }
}
''',
    "javascript": '''function sum(xs) {
  let total = 0;
  for (const x of xs) {
    total += x;
  }
  return total;
}

module.exports = { sum };
''',
    "go": '''package main

import "fmt"

func main() {
\tfor i := 0; i < 3; i++ {
\t\tfmt.Println(i)
\t}
}
''',
    "cpp": '''#include <vector>

int total(const std::vector<int>& xs) {
    int t = 0;
    for (int x : xs) {
        t += x;
    }
    return t;
}''',  # no final newline: the last line's vector is its last token
    "rust": '''fn max(xs: &[i32]) -> Option<i32> {
    let mut best = None;
    for &x in xs {
        if best.map_or(true, |b| x > b) {
            best = Some(x);
        }
    }
    best
}
''',
}


def _tokenizer_cached(cache_dir: Path, name: str):
    """The embedded supervisor's tokenizer, read from its GGUF once and kept as tokenizer.json
    under the cache dir (the GGUF -> fast tokenizer conversion alone takes ~50 s for Gemma-3)."""
    from transformers import AutoTokenizer

    from analyzer.supervisor import _embedded_gguf

    saved = cache_dir / "test-tokenizers" / name
    if (saved / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(str(saved))
    gguf = _embedded_gguf(name, cache_dir)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(str(saved))
    return tok


@pytest.fixture(scope="module")
def tokenizers(smollm2_supervisor, ptbot_cache_dir):
    toks = {"smollm2": smollm2_supervisor.tokenizer}
    try:
        toks["gemma3"] = _tokenizer_cached(ptbot_cache_dir, "gemma3-270m")
    except Exception as e:  # noqa: BLE001 — reported as a skip of the Gemma cases, with the cause
        toks["gemma3"] = e
    return toks


def _case(tok, language: str) -> tuple[str, str, list[tuple[int, int]], list[LineSpan]]:
    text = SNIPPETS[language]
    prefix = FeatureConfig().prefix_for(language)  # exactly what analyzer.features feeds the model
    enc = tok(prefix + text, add_special_tokens=False, return_offsets_mapping=True,
              split_special_tokens=True)  # the call Supervisor.encode makes
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    return prefix, text, offsets, map_lines(text, offsets, base=len(prefix))


def _golden_doc(tokenizer: str, language: str, prefix: str, text: str,
                offsets: list[tuple[int, int]], spans: list[LineSpan]) -> dict:
    full = prefix + text
    return {
        "tokenizer": tokenizer,
        "language": language,
        "prefix": prefix,
        "lines": [{"line": s.line, "text": s.text, "end_token": full[slice(*offsets[s.end_token])],
                   "n_tokens": s.n_tokens,
                   "tokens": [full[slice(*offsets[t])] for t in range(s.first_token, s.first_token + s.n_tokens)]}
                  for s in spans],
    }


def _check_invariants(prefix: str, text: str, offsets: list[tuple[int, int]], spans: list[LineSpan]) -> None:
    base = len(prefix)
    starts = line_starts(text)
    lines = text.split("\n")

    def line_of(char: int) -> int:  # 1-based line holding text[char]
        return max(i for i, s in enumerate(starts) if s <= char) + 1

    owner: dict[int, int] = {}
    for s in spans:
        toks = range(s.first_token, s.first_token + s.n_tokens)
        for t in toks:  # tokens of a line are contiguous and start on that line
            assert t not in owner, f"token {t} belongs to lines {owner[t]} and {s.line}"
            owner[t] = s.line
            assert line_of(offsets[t][0] - base) == s.line
        assert s.end_token in toks
        assert s.text == lines[s.line - 1] and is_scorable(s.text)
        nl = starts[s.line] - 1 if s.line < len(starts) else (len(text) - 1 if text.endswith("\n") else None)
        a, b = offsets[s.end_token]
        if nl is not None and any(x - base <= nl < y - base for x, y in offsets[s.first_token:s.first_token + s.n_tokens]):
            assert a - base <= nl < b - base, f"line {s.line}: end token does not hold its newline"
        else:  # newline swallowed by an earlier line's token, or no newline: last own token
            assert s.end_token == s.first_token + s.n_tokens - 1
    # every token that starts inside the text and is not owned sits on an unscored line
    for t, (a, b) in enumerate(offsets):
        if b > a and a >= base and t not in owner:
            assert not is_scorable(lines[line_of(a - base) - 1])
    # every scorable line gets a span (all of them own at least one token here)
    scored = {s.line for s in spans}
    assert scored == {i + 1 for i, ln in enumerate(lines[:len(starts)]) if is_scorable(ln)}
    # prefix tokens belong to no line
    assert all(offsets[t][0] >= base for t in owner)


@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["smollm2", "gemma3"])
@pytest.mark.parametrize("language", list(SNIPPETS))
def test_line_mapping_golden(tokenizers, tokenizer, language):
    tok = tokenizers[tokenizer]
    if isinstance(tok, Exception):
        pytest.skip(f"the {tokenizer} tokenizer cannot be loaded from its GGUF: {tok!r}")
    prefix, text, offsets, spans = _case(tok, language)
    _check_invariants(prefix, text, offsets, spans)
    doc = _golden_doc(tokenizer, language, prefix, text, offsets, spans)
    path = GOLDEN / f"{tokenizer}-{language}.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert path.exists(), f"missing golden {path}; run with PTBOT_UPDATE_GOLDEN=1"
    assert doc == json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_merged_newline_tokens_stay_on_their_line(tokenizers):
    """SmolLM2 merges a newline with the next line's indentation ("\\n   "): that token is the
    vector of the line it *ends*, and the indented line's own tokens start after it."""
    prefix, text, offsets, spans = _case(tokenizers["smollm2"], "python")
    full = prefix + text
    merged = [t for t, (a, b) in enumerate(offsets) if "\n" in full[a:b] and full[a:b].strip(" \n") == ""
              and full[a:b].rstrip("\n") != "" and a >= len(prefix)]
    assert merged, "expected SmolLM2 to produce a newline+indent token on this snippet"
    by_line = {s.line: s for s in spans}
    for t in merged:
        start_line = text.count("\n", 0, offsets[t][0] - len(prefix)) + 1
        if start_line in by_line:
            assert by_line[start_line].end_token == t
        assert all(not (s.first_token <= t < s.first_token + s.n_tokens) for s in spans
                   if s.line != start_line)


# ------------------------------------------------------------------- synthetic offsets (no model)


def _offsets(pieces: list[str]) -> list[tuple[int, int]]:
    out, at = [], 0
    for p in pieces:
        out.append((at, at + len(p)))
        at += len(p)
    return out


def test_map_lines_on_hand_made_offsets():
    pieces = ["if", " x", ":\n   ", " y", " =", " f", "(x", ")\n\n", "}\n", "z", "\n"]
    text = "".join(pieces)
    assert text == "if x:\n    y = f(x)\n\n}\nz\n"
    spans = map_lines(text, _offsets(pieces))
    assert [(s.line, s.first_token, s.end_token, s.n_tokens) for s in spans] == [
        (1, 0, 2, 3),   # ":\n   " starts on line 1 and holds its newline
        (2, 3, 7, 5),   # ")\n\n" holds line 2's newline; the blank line 3 gets nothing
        (5, 9, 10, 2),  # "}" (line 4) is punctuation only: no span
    ]


def test_map_lines_with_prefix_and_special_tokens():
    pieces = ["", "```", "python\n", "a", " =", " 1", "\n", "b", " =", " 2"]
    prefix = "```python\n"
    text = "".join(pieces)[len(prefix):]
    offs = _offsets(pieces)
    spans = map_lines(text, offs, base=len(prefix))
    # the empty special token and the prefix belong to no line; the unterminated last line's
    # vector is its last token
    assert [(s.line, s.first_token, s.end_token, s.n_tokens) for s in spans] == [(1, 3, 6, 4), (2, 7, 9, 3)]


def test_newline_swallowed_by_previous_line_token():
    # "x\n\ny" with a token "\n\n" starting on line 1: line 2 is blank anyway, line 3 is "y"
    pieces = ["x", "\n\n", "y"]
    spans = map_lines("".join(pieces), _offsets(pieces))
    assert [(s.line, s.end_token, s.n_tokens) for s in spans] == [(1, 1, 2), (3, 2, 1)]


def test_empty_text_and_no_tokens():
    assert map_lines("", []) == []
    assert map_lines("x = 1\n", []) == []


@pytest.mark.parametrize("text, lines", [
    ("a\nb\n", ["a", "b"]),
    ("a\nb", ["a", "b"]),
    ("a\r\nb\r\n", ["a", "b"]),                 # CRLF: the CR is part of the ending
    ("a\n\n", ["a", ""]),
    ("", []),
    ("\n", [""]),
    ("x = 1  # \x0c page\nz\n", ["x = 1  # \x0c page", "z"]),  # form feed: text, not a line break
    ("s = 'a\u2028b'\nz\n", ["s = 'a\u2028b'", "z"]),      # U+2028 inside a string literal
    ("a\rb\n", ["a\rb"]),                        # a lone CR is text to git
])
def test_source_lines_number_lines_as_git_does(text, lines):
    assert source_lines(text) == lines
    assert as_read(text).count("\n") == text.count("\n")  # line numbers never move
    assert as_read("\ufeff" + text) == as_read(text)


def test_map_lines_on_a_crlf_text_gives_lf_line_texts():
    pieces = ["a", " =", " 1", "\r\n", "b", " =", " 2", "\r\n"]
    spans = map_lines("".join(pieces), _offsets(pieces))
    assert [(s.line, s.text, s.end_token) for s in spans] == [(1, "a = 1", 3), (2, "b = 2", 7)]


COMMENT_LINES = ["# a note", "    // TODO", "/* block", " * middle of a block", " */", "*/", "<!-- html -->",
                 "-- sql comment", "#!/usr/bin/env python", "#", "# if the list is empty, stop",
                 "    # import this lazily", "# else branch", "# define the limits"]
CODE_LINES = ["#include <vector>", "#define MAX 3", "#ifdef _WIN32", "#endif",
              "#pragma once", "#[derive(Debug)]", "#![allow(dead_code)]", "*p = 0;", "    *args,", "**kwargs)",
              "x = 1  # trailing comment", "int a = b / c;", "return a-- > 0;", '"""A docstring."""']


@pytest.mark.parametrize("line", COMMENT_LINES)
def test_comment_lines(line):
    assert is_comment_line(line)


@pytest.mark.parametrize("line", CODE_LINES)
def test_code_lines_are_not_comments(line):
    """Preprocessor lines, Rust attributes and pointer or unpacking stars are code; so is a
    docstring (a string literal, to the compiler)."""
    assert not is_comment_line(line)
