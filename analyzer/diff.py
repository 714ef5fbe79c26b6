"""Unified-diff parser: ``git diff``/``show``/``format-patch`` or ``diff -u`` text -> FileDiff.

Standard library only (``bot`` and ``miners`` import it). What it understands:

- git extended headers: new/deleted files, renames and copies (with or without content change),
  mode changes, binary files (``Binary files ... differ`` and ``GIT binary patch``);
- C-quoted paths (``"a/\\303\\251.py"``: git's octal escapes for non-ASCII bytes), paths with
  spaces, with or without the ``a/``/``b/`` prefixes (``diff.noprefix``);
- hunks with and without counts (``@@ -1 +1 @@``), ``\\ No newline at end of file``, CRLF content;
- plain ``diff -u`` output (no ``diff --git`` line, timestamps after a tab).

Text before the first file (a commit message) and between files (``Only in ...``, a mail signature)
is ignored, as ``git apply`` does. A hunk that is cut short or overfull is an error, never a silent
guess: a review anchored on a mis-numbered line is worse than no review.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from analyzer.types import DiffLine, FileDiff, FileStatus, Hunk

logger = logging.getLogger(__name__)

_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_BINARY_RE = re.compile(r"^Binary files (.+) and (.+) differ$")
_DEV_NULL = "/dev/null"
# C escapes git uses in quoted paths (quote.c: sq_lookup), besides \ooo octal bytes.
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


class DiffError(ValueError):
    """The input is not a unified diff, or is truncated or corrupt; the message says where."""


@dataclass(frozen=True, slots=True)
class DecodedDiff:
    """A diff read from bytes: its text, its files, and which files held non-UTF-8 bytes."""

    text: str
    """The diff text; bytes that are not valid UTF-8 are replaced by U+FFFD."""
    files: tuple[FileDiff, ...]
    """``parse_diff(text)``."""
    undecodable: frozenset[str]
    """``FileDiff.path`` of every file whose section of the diff was not valid UTF-8."""


def parse_diff(text: str) -> list[FileDiff]:
    """Parse unified-diff text into one FileDiff per file, in order. Empty input gives ``[]``.

    Raises DiffError when the text holds no file header at all, or a hunk is malformed,
    truncated or longer than its header says.
    """
    return [fd for fd, _, _ in _parse(text.split("\n"))]


def decode_diff(data: bytes) -> DecodedDiff:
    """Decode diff bytes line by line, so that one Latin-1 file does not spoil the others.

    Files with non-UTF-8 lines are still parsed (their line numbers stay right) but are
    listed in ``undecodable`` so that callers can skip them with a reason.
    """
    raw_lines = data.split(b"\n")
    lines: list[str] = []
    bad: list[int] = []
    for i, raw in enumerate(raw_lines):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(raw.decode("utf-8", errors="replace"))
            bad.append(i)
    sections = _parse(lines)
    undecodable = {fd.path for fd, start, end in sections if any(start <= i < end for i in bad)}
    return DecodedDiff("\n".join(lines), tuple(fd for fd, _, _ in sections), frozenset(undecodable))


def anchorable_lines(file: FileDiff) -> set[int]:
    """New-side line numbers shown in some hunk (added or context): valid review-comment anchors."""
    return {n for h in file.hunks for n in h.new_linenos()}


# --- parsing -----------------------------------------------------------------------------------

def _parse(lines: list[str]) -> list[tuple[FileDiff, int, int]]:
    """Every file of the diff with the [start, end) range of its lines (for ``decode_diff``)."""
    out: list[tuple[FileDiff, int, int]] = []
    i = 0
    while i < len(lines):
        line = _chomp(lines[i])
        if line.startswith(("diff --cc ", "diff --combined ")):
            raise DiffError(f"line {i + 1}: combined (merge) diffs are not supported; "
                            "diff the merge against one of its parents instead")
        if line.startswith("diff --git "):
            fd, j = _parse_git_file(lines, i)
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            fd, j = _parse_plain_file(lines, i)
        elif m := _BINARY_RE.match(line):
            # GNU diff reports binary files with this one line and no header.
            old, new = _plain_names(_path_token(m[1]), _path_token(m[2]))
            fd, j = FileDiff(old, new, _status(old, new), is_binary=True), i + 1
        elif _HUNK_RE.match(line):
            raise DiffError(f"line {i + 1}: hunk header {line!r} without a file header "
                            "('diff --git ...' or '--- a/FILE' + '+++ b/FILE') before it")
        else:
            i += 1  # commit message, "Only in ...", "diff -ru ..." lines, mail signature
            continue
        out.append((fd, i, j))
        i = j
    if not out and any(line.strip() for line in lines):
        first = next(line for line in lines if line.strip())
        raise DiffError("input is not a unified diff: no 'diff --git' or '---'/'+++' file header "
                        f"found (first line: {first[:60]!r})")
    return out


def _parse_git_file(lines: list[str], i: int) -> tuple[FileDiff, int]:
    """One ``diff --git`` section starting at ``lines[i]``; returns it and the index after it."""
    header_old, header_new, prefixed = _split_git_header(_chomp(lines[i])[len("diff --git "):])
    old: str | None = header_old
    new: str | None = header_new
    status: FileStatus = "modified"
    is_binary = False
    hunks: tuple[Hunk, ...] = ()
    j = i + 1
    while j < len(lines):
        line = _chomp(lines[j])
        if line.startswith("new file mode "):
            status = "added"
        elif line.startswith("deleted file mode "):
            status = "deleted"
        elif line.startswith(("rename from ", "copy from ")):
            status = "renamed" if line.startswith("rename") else "copied"
            old = _path_token(line.split(" ", 2)[2])
        elif line.startswith(("rename to ", "copy to ")):
            new = _path_token(line.split(" ", 2)[2])
        elif line.startswith(("old mode ", "new mode ", "index ", "similarity index ",
                              "dissimilarity index ")):
            pass  # modes and blob ids do not change what a reviewer reads
        elif line.startswith("--- "):
            if j + 1 >= len(lines) or not lines[j + 1].startswith("+++ "):
                raise DiffError(f"line {j + 2}: expected '+++ b/FILE' after {line!r}")
            minus = _path_token(line[4:])
            plus = _path_token(_chomp(lines[j + 1])[4:])
            # rename/copy lines carry the real names; ---/+++ only matter for other files.
            if status not in ("renamed", "copied"):
                old = None if minus == _DEV_NULL else _strip_prefix(minus, prefixed)
                new = None if plus == _DEV_NULL else _strip_prefix(plus, prefixed)
            hunks, j = _parse_hunks(lines, j + 2)
            break
        elif _BINARY_RE.match(line):
            is_binary = True
            j += 1
            break
        elif line == "GIT binary patch":
            # base85 data lines never contain a space, so they cannot look like the next header.
            is_binary = True
            j += 1
            while j < len(lines) and not lines[j].startswith("diff --git "):
                j += 1
            break
        else:
            break  # end of this file's extended header: next file or trailing text
        j += 1
    if status == "added" or old == _DEV_NULL:
        old, status = None, "added"
    if status == "deleted" or new == _DEV_NULL:
        new, status = None, "deleted"
    if old is None and new is None:
        raise DiffError(f"line {i + 1}: cannot tell the file names in {_chomp(lines[i])!r}")
    return FileDiff(old, new, status, hunks, is_binary), j


def _parse_plain_file(lines: list[str], i: int) -> tuple[FileDiff, int]:
    """One ``--- old`` / ``+++ new`` section of ``diff -u`` output (no git header)."""
    old, new = _plain_names(_path_token(lines[i][4:]), _path_token(_chomp(lines[i + 1])[4:]))
    hunks, j = _parse_hunks(lines, i + 2)
    return FileDiff(old, new, _status(old, new), hunks), j


def _parse_hunks(lines: list[str], j: int) -> tuple[tuple[Hunk, ...], int]:
    hunks: list[Hunk] = []
    while j < len(lines):
        line = _chomp(lines[j])
        if line.startswith("@@"):
            hunk, j = _parse_hunk(lines, j)
            hunks.append(hunk)
            continue
        next_is_plus = j + 1 < len(lines) and lines[j + 1].startswith("+++ ")
        next_file = line.startswith("--- ") and next_is_plus
        if line[:1] in ("+", "-", " ") and line != "-- " and not next_file:
            raise DiffError(f"line {j + 1}: diff line {line[:60]!r} is outside any hunk "
                            "(a hunk header promises fewer lines than follow it: corrupt diff)")
        break
    if not hunks:
        raise DiffError(f"line {j + 1}: expected a hunk header '@@ -A,B +C,D @@' after the "
                        "file header")
    return tuple(hunks), j


def _parse_hunk(lines: list[str], start: int) -> tuple[Hunk, int]:
    header = _chomp(lines[start])
    m = _HUNK_RE.match(header)
    if m is None:
        raise DiffError(f"line {start + 1}: malformed hunk header {header!r} "
                        "(expected '@@ -A,B +C,D @@')")
    old_start, new_start = int(m[1]), int(m[3])
    # A missing count means 1 (`@@ -1 +1 @@`), per the unified format.
    old_count = int(m[2]) if m[2] is not None else 1
    new_count = int(m[4]) if m[4] is not None else 1
    old_left, new_left = old_count, new_count
    old_no, new_no = old_start, new_start
    out: list[DiffLine] = []
    j = start + 1
    while old_left > 0 or new_left > 0:
        # The last element of text.split("\n") is what follows the final newline: never a line.
        if j >= len(lines) or (j == len(lines) - 1 and lines[j] == ""):
            raise DiffError(f"line {j}: the diff ends inside the hunk {header!r} of line "
                            f"{start + 1} "
                            f"({old_left} old and {new_left} new line(s) missing): truncated diff?")
        raw = _chomp(lines[j])
        # Tools that strip trailing whitespace turn a blank context line " " into "".
        kind, text = (raw[0], raw[1:]) if raw else (" ", "")
        if kind == " " and old_left > 0 and new_left > 0:
            out.append(DiffLine(" ", text, old_no, new_no))
            old_no, new_no, old_left, new_left = old_no + 1, new_no + 1, old_left - 1, new_left - 1
        elif kind == "-" and old_left > 0:
            out.append(DiffLine("-", text, old_no, None))
            old_no, old_left = old_no + 1, old_left - 1
        elif kind == "+" and new_left > 0:
            out.append(DiffLine("+", text, None, new_no))
            new_no, new_left = new_no + 1, new_left - 1
        elif kind == "\\":
            pass  # "\ No newline at end of file" (localised by some tools, so match only '\')
        else:
            raise DiffError(f"line {j + 1}: unexpected {raw[:60]!r} inside the hunk {header!r} of "
                            f"line {start + 1} ({old_left} old and {new_left} new line(s) still "
                            "expected): truncated or corrupt diff")
        j += 1
    while j < len(lines) and lines[j].startswith("\\"):
        j += 1
    return Hunk(old_start, old_count, new_start, new_count, tuple(out), header), j


# --- names -------------------------------------------------------------------------------------

def _chomp(line: str) -> str:
    """Drop the CR of a CRLF line ending (the split was on LF only: str.splitlines would also
    split on form feeds and U+2028 inside code lines)."""
    return line[:-1] if line.endswith("\r") else line


def _status(old: str | None, new: str | None) -> FileStatus:
    return "added" if old is None else "deleted" if new is None else "modified"


def _unquote(s: str) -> tuple[str, str]:
    """Read a C-quoted name at the start of ``s``; return it and the rest after the closing quote.

    git quotes names with control characters, quotes, backslashes and (with core.quotePath,
    the default) every byte >= 0x80 as ``\\ooo`` octal; the bytes are UTF-8 in practice.
    """
    assert s.startswith('"')
    out = bytearray()
    i = 1
    while i < len(s):
        c = s[i]
        if c == '"':
            return out.decode("utf-8", errors="surrogateescape"), s[i + 1:]
        if c == "\\" and i + 1 < len(s):
            e = s[i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
                continue
            if re.match(r"[0-7]{3}", s[i + 1:i + 4]):
                out.append(int(s[i + 1:i + 4], 8) & 0xFF)
                i += 4
                continue
            raise DiffError(f"bad escape '\\{e}' in quoted path {s!r}")
        out += c.encode("utf-8", errors="surrogateescape")
        i += 1
    raise DiffError(f"unterminated quoted path {s!r}")


def _path_token(s: str) -> str:
    """The name in a ``---``/``+++``/``rename from``/``Binary files`` field.

    Quoted names end at the closing quote; plain ones at a TAB (diff -u puts a timestamp there,
    git a lone TAB after names with spaces, for GNU patch).
    """
    if s.startswith('"'):
        return _unquote(s)[0]
    return s.split("\t", 1)[0]


def _strip_prefix(name: str, prefixed: bool) -> str:
    """Drop git's ``a/``/``b/`` (or mnemonic ``c/``, ``w/``, ``i/``, ``o/``) prefix."""
    if not prefixed or "/" not in name:
        return name
    return name.split("/", 1)[1]


def _split_git_header(rest: str) -> tuple[str | None, str | None, bool]:
    """Names on a ``diff --git A B`` line: (old, new, whether they carry a/ b/ prefixes).

    Unquoted names may contain spaces, so the line is ambiguous in general; like git apply we
    accept a split where both sides name the same file (true unless the file was renamed, and
    then the ``rename from/to`` lines give the names). None when no split fits.
    """
    if rest.startswith('"'):
        a, tail = _unquote(rest)
        b = _path_token(tail[1:]) if tail.startswith(" ") else None
        candidates = [(a, b)] if b is not None else []
    elif rest.endswith('"') and ' "' in rest:
        k = rest.rindex(' "')
        candidates = [(rest[:k], _unquote(rest[k + 1:])[0])]
    else:
        candidates = [(rest[:k], rest[k + 1:]) for k, c in enumerate(rest) if c == " "]
    for a, b in candidates:
        if a == b:
            return a, b, False  # diff.noprefix: both sides spell the same path
    for a, b in candidates:
        if "/" in a and "/" in b and a.split("/", 1)[1] == b.split("/", 1)[1]:
            return a.split("/", 1)[1], b.split("/", 1)[1], True
    if len(candidates) == 1:  # one quoted side: a rename, names come from 'rename from/to'
        a, b = candidates[0]
        return _strip_prefix(a, True), _strip_prefix(b, True), True
    return None, None, True


def _plain_names(old: str, new: str) -> tuple[str | None, str | None]:
    """Names for ``diff -u``/``diff -ru`` output, with a ``-p1``-style prefix removed when the two
    sides differ only in their first directory (``a/x`` vs ``b/x``, ``old/x`` vs ``new/x``)."""
    old_n = None if old == _DEV_NULL else old
    new_n = None if new == _DEV_NULL else new
    if old_n and new_n and "/" in old_n and "/" in new_n:
        if old_n.split("/", 1)[1] == new_n.split("/", 1)[1] and old_n != new_n:
            return old_n.split("/", 1)[1], new_n.split("/", 1)[1]
    elif (old_n or new_n or "").startswith(("a/", "b/")):
        # One side is /dev/null: strip only the conventional a/ b/ prefixes.
        return (old_n and old_n[2:]), (new_n and new_n[2:])
    return old_n, new_n
