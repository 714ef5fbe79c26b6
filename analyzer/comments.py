"""Which lines of a source file are only comment: line comments, block comments, docstrings.

A line is a *comment line* when it holds at least one non-blank character and every one of them
sits inside a comment, or, in Python, inside a docstring (a statement that is only a string
literal). Such a line carries no decision a reviewer must check, so ptbot gives it no risk score,
as it gives none to blank lines. A line with code and a trailing comment is code; so is every line
of a string literal that is a value (``x = \"\"\"...\"\"\"``, a JS template, a Go raw string).

The languages of ``analyzer.languages`` are read by a small lexer each: it knows their comment
markers and enough of their string syntax that a ``//`` or ``#`` inside a string is not a comment.
Python is read with the standard tokenizer. An unknown language falls back to a lexical test per
line (``languages.is_comment_line``).

Standard library only (bot counts comment lines when it plans a review).
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass

from analyzer.languages import is_comment_line


def comment_lines(text: str, language: str | None) -> frozenset[int]:
    """1-based numbers of the lines of ``text`` that are only comment (see the module docstring).

    Lines are numbered as git numbers them (split on LF only). Blank lines are never in the set.
    """
    if language == "python":
        return _python(text)
    syntax = SYNTAX.get(language or "")
    if syntax is None:
        return frozenset(i for i, ln in enumerate(text.split("\n"), 1) if is_comment_line(ln))
    return _Lexer(text, syntax).run()


# ----- Python ------------------------------------------------------------------------------------

_LAYOUT = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER,
           tokenize.ENCODING}


def _python(text: str) -> frozenset[int]:
    """Comment tokens and docstring statements (every string-only statement, wherever it stands:
    module, class and function docstrings, attribute docstrings, strings used as block comments)."""
    tokens: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            tokens.append(tok)
    except (tokenize.TokenError, SyntaxError):
        pass  # an unfinished file (a snippet, a syntax error): what came before is still right
    comment: set[int] = set()
    code: set[int] = set()
    statement: list[tokenize.TokenInfo] = []

    def close_statement() -> None:
        is_docstring = bool(statement) and all(t.type == tokenize.STRING for t in statement)
        for t in statement:
            (comment if is_docstring else code).update(range(t.start[0], t.end[0] + 1))
        statement.clear()

    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            comment.add(tok.start[0])
        elif tok.type == tokenize.NEWLINE:
            close_statement()
        elif tok.type not in _LAYOUT:
            statement.append(tok)
    # An unfinished last statement stays code; so do lines the tokenizer never reached, unless
    # they start with "#".
    for t in statement:
        code.update(range(t.start[0], t.end[0] + 1))
    lines = text.split("\n")
    reached = max((t.end[0] for t in tokens), default=0)
    comment.update(i for i in range(reached + 1, len(lines) + 1) if lines[i - 1].lstrip().startswith("#"))
    return frozenset(i for i in comment - code if i <= len(lines) and lines[i - 1].strip())


# ----- the other languages -----------------------------------------------------------------------

@dataclass(frozen=True)
class Syntax:
    """What a language's lexer must know to tell comments from code and strings."""

    line: tuple[str, ...] = ("//",)
    """Line comment markers."""
    block: bool = True
    """``/* ... */`` block comments."""
    nested: bool = False
    """Block comments nest (Rust, Swift, Kotlin, Scala)."""
    quotes: str = '"'
    """Characters that open a string closed by the same character."""
    multiline_strings: bool = False
    """Quoted strings may span lines (else an unclosed one ends at the end of its line)."""
    char_literals: bool = False
    """``'`` opens a character literal, only where one is written out (``'a'``, ``'\\n'``): a Rust
    lifetime or a C++ digit separator is code."""
    triple_quotes: bool = False
    """``\"\"\"`` opens a multi-line string (Java text blocks, Kotlin, Scala, Swift, C#)."""
    backtick: str = ""
    """``raw``: a backtick opens a raw multi-line string (Go); ``template``: a JS template literal,
    whose ``${...}`` holds code."""
    regex_literals: bool = False
    """``/.../`` regular expression literals (JavaScript, TypeScript)."""
    raw_strings: str = ""
    """``rust`` (``r#"..."#``), ``cpp`` (``R"d(...)d"``) or ``csharp`` (``@"..."``)."""
    code_comments: tuple[str, ...] = ()
    """Line comments that are directives to the compiler, hence code (Go's ``//go:build``,
    TypeScript's ``/// <reference>``)."""
    hash_needs_word_start: bool = False
    """``#`` is a comment only at the start of a word (shell: ``$#``, ``${#x}`` are code)."""
    hash_bracket_is_code: bool = False
    """``#[`` is an attribute, not a comment (PHP 8)."""
    ruby_blocks: bool = False
    """``=begin`` ... ``=end`` block comments at the start of a line (Ruby)."""
    raw_single_quotes: bool = False
    """A backslash escapes nothing between single quotes (shell)."""


_C = Syntax(char_literals=True)
SYNTAX: dict[str, Syntax] = {
    "c": _C,
    "cpp": Syntax(char_literals=True, raw_strings="cpp"),
    "java": Syntax(char_literals=True, triple_quotes=True),
    "javascript": Syntax(quotes="\"'", backtick="template", regex_literals=True),
    "typescript": Syntax(quotes="\"'", backtick="template", regex_literals=True,
                         code_comments=("/// <reference", "/// <amd-")),
    "go": Syntax(char_literals=True, backtick="raw", code_comments=("//go:", "//line ", "//export ")),
    "rust": Syntax(nested=True, multiline_strings=True, char_literals=True, raw_strings="rust"),
    "csharp": Syntax(char_literals=True, triple_quotes=True, raw_strings="csharp"),
    "kotlin": Syntax(nested=True, char_literals=True, triple_quotes=True),
    "scala": Syntax(nested=True, char_literals=True, triple_quotes=True),
    "swift": Syntax(nested=True, triple_quotes=True),
    "php": Syntax(line=("//", "#"), quotes="\"'", multiline_strings=True, hash_bracket_is_code=True),
    "ruby": Syntax(line=("#",), block=False, quotes="\"'", multiline_strings=True, ruby_blocks=True),
    "shell": Syntax(line=("#",), block=False, quotes="\"'", multiline_strings=True,
                    hash_needs_word_start=True, raw_single_quotes=True),
}
"""Lexer settings per language name of ``analyzer.languages`` (Python has its own reader)."""

_WORD = re.compile(r"[A-Za-z0-9_$]+")
_CHAR = re.compile(r"""'(?:[^'\\\n]|\\(?:x[0-9a-fA-F]{1,8}|u\{[0-9a-fA-F]{1,6}\}|u[0-9a-fA-F]{4}
                     |U[0-9a-fA-F]{8}|[0-7]{1,3}|.))'""", re.VERBOSE)
_TRIPLE = re.compile(r'"""(?:\\.|[\s\S])*?(?:"""|\Z)')
_RUST_RAW = re.compile(r'b?r(#*)"[\s\S]*?(?:"\1|\Z)')
_CPP_RAW = re.compile(r'(?:u8|u|U|L)?R"([^()\\\s]{0,16})\([\s\S]*?(?:\)\1"|\Z)')
_CSHARP_VERBATIM = re.compile(r'@"(?:[^"]|"")*"?')
_GO_RAW = re.compile(r"`[^`]*`?")
_REGEX = re.compile(r"/(?:[^/\\\[\n]|\\.|\[(?:[^\]\\\n]|\\.)*\])+/?[A-Za-z]*")
_BLOCK_MARK = re.compile(r"/\*|\*/")
_RUBY_BLOCK_END = re.compile(r"^=end\b.*$", re.M)
# After these a "/" starts a regular expression, not a division.
_REGEX_AFTER_CHARS = set("(,=:[!&|?{};+-*%<>~^")
_REGEX_AFTER_WORDS = {"return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void",
                      "throw", "instanceof", "yield", "await"}


def _quoted(quote: str, multiline: bool, escapes: bool) -> re.Pattern[str]:
    q = re.escape(quote)
    body = (rf"[^{q}\\]|\\[\s\S]" if multiline else rf"[^{q}\\\n]|\\[\s\S]") if escapes else \
           (rf"[^{q}]" if multiline else rf"[^{q}\n]")
    return re.compile(rf"{q}(?:{body})*{q}?")


class _Lexer:
    """One pass over a file: every non-blank character is marked as code or comment by line."""

    def __init__(self, text: str, syntax: Syntax):
        self.text, self.s = text, syntax
        self.code: set[int] = set()
        self.comment: set[int] = set()
        self.line = 1
        self.strings = {q: _quoted(q, syntax.multiline_strings,
                                   escapes=not (q == "'" and syntax.raw_single_quotes))
                        for q in syntax.quotes}
        self.template_depths: list[int] = []  # open ${ ... } of JS templates, by brace depth
        self.prev = ""  # the last code token, for telling a regex from a division

    def run(self) -> frozenset[int]:
        text, n, s = self.text, len(self.text), self.s
        i = 0
        while i < n:
            c = text[i]
            if c == "\n":
                self.line += 1
                i += 1
            elif c.isspace():
                i += 1
            elif (end := self._comment_end(i)) is not None:
                i = self._mark(i, end, self.comment)
            elif (end := self._string_end(i)) is not None:
                i = self._mark(i, end, self.code)
                self.prev = '"'
            elif s.backtick == "template" and c == "`":
                i = self._template(i + 1, i)
            elif c == "}" and self.template_depths and self.template_depths[-1] == 0:
                self.template_depths.pop()
                i = self._template(i + 1, i)
            elif s.regex_literals and c == "/" and self._regex_may_start():
                m = _REGEX.match(text, i)
                end = m.end() if m else i + 1
                i = self._mark(i, end, self.code)
                self.prev = '"'
            elif m := _WORD.match(text, i):
                self.code.add(self.line)
                self.prev = m.group()
                i = m.end()
            else:
                if self.template_depths and c in "{}":
                    self.template_depths[-1] += 1 if c == "{" else -1
                self.code.add(self.line)
                self.prev = c
                i += 1
        lines = text.split("\n")
        return frozenset(i for i in self.comment - self.code if i <= len(lines) and lines[i - 1].strip())

    def _mark(self, start: int, end: int, into: set[int]) -> int:
        """Mark the lines of the non-blank characters of ``text[start:end]``; returns ``end``."""
        for k, piece in enumerate(self.text[start:end].split("\n")):
            if piece.strip():
                into.add(self.line + k)
        self.line += self.text.count("\n", start, end)
        return end

    def _comment_end(self, i: int) -> int | None:
        """Where the comment starting at ``i`` ends, or None when no comment starts there."""
        text, s = self.text, self.s
        for marker in s.line:
            if not text.startswith(marker, i):
                continue
            if marker == "#" and s.hash_needs_word_start and i > 0 and text[i - 1] not in " \t\n;&|()":
                continue
            if marker == "#" and s.hash_bracket_is_code and text.startswith("#[", i):
                continue
            if any(text.startswith(d, i) for d in s.code_comments):
                return None
            end = text.find("\n", i)
            return len(text) if end < 0 else end
        if s.block and text.startswith("/*", i):
            if not s.nested:
                end = text.find("*/", i + 2)
                return len(text) if end < 0 else end + 2
            depth = 0
            for m in _BLOCK_MARK.finditer(text, i):
                depth += 1 if m.group() == "/*" else -1
                if depth == 0:
                    return m.end()
            return len(text)
        if s.ruby_blocks and text.startswith("=begin", i) and (i == 0 or text[i - 1] == "\n"):
            m = _RUBY_BLOCK_END.search(text, i)
            return m.end() if m else len(text)
        return None

    def _string_end(self, i: int) -> int | None:
        """Where the string or character literal starting at ``i`` ends, or None."""
        text, s = self.text, self.s
        c = text[i]
        for pattern, wanted in ((_RUST_RAW, s.raw_strings == "rust"), (_CPP_RAW, s.raw_strings == "cpp"),
                                (_CSHARP_VERBATIM, s.raw_strings == "csharp")):
            if wanted and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
                m = pattern.match(text, i)
                if m:
                    return m.end()
        if s.triple_quotes and text.startswith('"""', i):
            return _TRIPLE.match(text, i).end()
        if c in self.strings:
            return self.strings[c].match(text, i).end()
        if c == "'" and s.char_literals:
            m = _CHAR.match(text, i)
            return m.end() if m else None
        if c == "`" and s.backtick == "raw":
            return _GO_RAW.match(text, i).end()
        return None

    def _regex_may_start(self) -> bool:
        return self.prev == "" or self.prev in _REGEX_AFTER_CHARS or self.prev in _REGEX_AFTER_WORDS

    def _template(self, i: int, start: int) -> int:
        """Read a JS template's text from ``i`` (after its opening backtick, or after the ``}``
        closing one of its ``${...}``) to its end or its next ``${``; returns where to go on."""
        text, n = self.text, len(self.text)
        j = i
        while j < n:
            if text[j] == "\\":
                j += 2
            elif text[j] == "`":
                self.prev = '"'
                return self._mark(start, j + 1, self.code)
            elif text.startswith("${", j):
                self.template_depths.append(0)
                self.prev = "{"
                return self._mark(start, j + 2, self.code)
            else:
                j += 1
        return self._mark(start, n, self.code)
