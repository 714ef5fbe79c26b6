"""Unified-diff reading: ``git diff``/``show``/``format-patch`` or ``diff -u`` text -> FileDiff.

``unidiff`` splits the text into files and hunks, numbers the lines, and recognises git's
extended headers (new and deleted files, modes) and binary files (``Binary files ... differ``,
``GIT binary patch``). This module adapts its ``PatchSet`` to ptbot's ``FileDiff`` and adds the
little it leaves to its caller:

- names as ptbot needs them: C-quoted paths (``"a/\\303\\251.py"``: git's octal escapes for
  non-ASCII bytes) decoded, ``a/``/``b/`` prefixes removed only when the diff has them
  (``diff.noprefix``), ``rename``/``copy`` lines read, ``diff -ru``'s ``old/x``/``new/x`` pairs;
- CRLF diffs (a diff saved by a Windows editor) and ``\\ No newline at end of file`` markers;
- strictness: a hunk that is cut short or overfull, a malformed hunk header or a file header
  with no hunk is an error, never a silent guess (a review anchored on a mis-numbered line is
  worse than no review).

Text before the first file (a commit message) and between files (``Only in ...``, a mail
signature) is ignored, as ``git apply`` does. Pure Python: ``bot`` and ``miners`` import it
without torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from unidiff import PatchedFile, PatchSet
from unidiff import Hunk as UnidiffHunk
from unidiff.errors import UnidiffParseError

from analyzer.types import DiffLine, FileDiff, FileStatus, Hunk

_DEV_NULL = "/dev/null"
_KINDS = ("+", "-", " ")  # unidiff also keeps "\" markers and trailing blank lines in a hunk
# git's extended header lines, between 'diff --git' and '---' (or the end of a hunkless file).
_GIT_HEADER = ("old mode ", "new mode ", "deleted file mode ", "new file mode ", "copy from ",
               "copy to ", "rename from ", "rename to ", "similarity index ",
               "dissimilarity index ", "index ")
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


# --- the adapter -------------------------------------------------------------------------------

class _Cursor:
    """Feeds lines to unidiff and remembers the last one it took, so that an error names a line."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.at = -1

    def __iter__(self) -> Iterator[str]:
        for self.at, line in enumerate(self.lines):
            yield line


def _parse(lines: list[str]) -> list[tuple[FileDiff, int, int]]:
    """Every file of the diff with the [start, end) range of its lines (for ``decode_diff``)."""
    if lines and lines[-1] == "":
        lines = lines[:-1]  # what follows the final newline is never a line
    # unidiff's header patterns end in "$", which does not match before a CR: lines reach it
    # without one, so that a diff saved with CRLF endings reads like its LF original.
    body = [_chomp(line) + "\n" for line in lines]
    combined = next((i for i, line in enumerate(body)
                     if line.startswith(("diff --cc ", "diff --combined "))), None)
    if combined is not None:
        raise DiffError(f"line {combined + 1}: combined (merge) diffs are not supported; "
                        "diff the merge against one of its parents instead")
    cursor = _Cursor(body)
    try:
        patch = PatchSet(cursor)
    except UnidiffParseError as e:
        raise _located(str(e), body, cursor.at) from None
    starts = [_start(pf, body) for pf in patch]
    out: list[tuple[FileDiff, int, int]] = []
    for k, pf in enumerate(patch):
        start, stop = starts[k], starts[k + 1] if k + 1 < len(starts) else len(body)
        read = [_hunk(h, body, start) for h in pf]
        hunks = tuple(hunk for hunk, _, _ in read)
        first = read[0][1] if read else stop
        end = _skip_markers(body, read[-1][2], stop) if read else stop
        _check_strict(pf, body, start, first, end, stop)
        out.append((_file_diff(pf, body[start], hunks), start, end))
    if not out and any(line.strip() for line in body):
        first = next(line for line in body if line.strip())
        raise DiffError("input is not a unified diff: no 'diff --git' or '---'/'+++' file header "
                        f"found (first line: {first[:-1][:60]!r})")
    return out


def _start(pf: PatchedFile, body: list[str]) -> int:
    """Index of a file's first line: its ``diff --git`` or ``Binary files`` line, or the ``---``
    line before the ``+++`` line where unidiff starts a plain ``diff -u`` file."""
    at = pf.diff_line_no - 1
    return at - 1 if body[at].startswith("+++ ") else at


def _hunk(h: UnidiffHunk, body: list[str], start: int) -> tuple[Hunk, int, int]:
    """One hunk, the index of its ``@@`` line and the index after its last line."""
    numbered = [ln.diff_line_no for ln in h if ln.diff_line_no is not None]
    if not numbered:  # only '@@ -0,0 +0,0 @@' can promise no line at all
        raise DiffError(f"empty hunk in the file of line {start + 1}: corrupt diff")
    header_at, end = numbered[0] - 2, numbered[-1]
    lines = tuple(DiffLine(ln.line_type, ln.value[:-1], ln.source_line_no, ln.target_line_no)
                  for ln in h if ln.line_type in _KINDS)
    # unidiff keeps only the text after the second "@@"; Hunk.header is the whole line.
    return (Hunk(h.source_start, h.source_length, h.target_start, h.target_length, lines,
                 body[header_at][:-1]), header_at, end)


def _skip_markers(body: list[str], end: int, stop: int) -> int:
    """The index after the backslash lines at ``end``: unidiff takes the English
    "No newline at end of file" marker after a hunk, but other tools localise it."""
    while end < stop and body[end].startswith("\\"):
        end += 1
    return end


def _check_strict(pf: PatchedFile, body: list[str], start: int, first: int, end: int,
                  stop: int) -> None:
    """Refuse what unidiff lets pass as free text: a malformed ``@@`` line, diff lines before a
    file's first hunk (``first``) or past a hunk's count (at ``end``), a ``---``/``+++`` header
    with no hunk. Each would shift or drop scored lines."""
    if pf:
        for i in range(start + 1, first):
            if not body[i].startswith(("--- ", "+++ ")):
                _refuse_stray(body, i)
        next_file = (end + 1 < stop and body[end].startswith("--- ")
                     and body[end + 1].startswith("+++ "))
        # "-- " opens the signature of a format-patch mail.
        if end < stop and body[end] != "-- \n" and not next_file:
            _refuse_stray(body, end)
        return
    if pf.is_binary_file:
        return
    i, named = start + 1, body[start].startswith("--- ")
    while i < stop and body[i].startswith(_GIT_HEADER + ("--- ", "+++ ")):
        named = named or body[i].startswith(("--- ", "+++ "))
        i += 1
    if i < stop and body[i].startswith("@@"):
        _refuse_stray(body, i)
    if named:
        raise DiffError(f"line {i + 1}: expected a hunk header '@@ -A,B +C,D @@' after the "
                        f"file header of line {start + 1}")


def _refuse_stray(body: list[str], i: int) -> None:
    """Raise if ``body[i]``, a line outside every hunk, looks like part of one."""
    line = body[i][:-1]
    if line.startswith("@@"):
        raise DiffError(f"line {i + 1}: malformed hunk header {line!r} "
                        "(expected '@@ -A,B +C,D @@')")
    if line[:1] in ("+", "-", " "):
        raise DiffError(f"line {i + 1}: diff line {line[:60]!r} is outside any hunk (a hunk "
                        "header is missing, or promises fewer lines than follow it: corrupt diff)")


def _located(message: str, body: list[str], at: int) -> DiffError:
    """unidiff's error, with the line it stopped at and what to do about it."""
    line = body[at][:-1] if 0 <= at < len(body) else ""
    if message.startswith(("Hunk is shorter", "Hunk is longer", "Hunk diff line expected")):
        h = next(i for i in range(min(at, len(body) - 1), -1, -1) if body[i].startswith("@@"))
        header = body[h][:-1]
        if message.startswith("Hunk is shorter"):
            return DiffError(f"line {len(body) + 1}: the diff ends inside the hunk {header!r} of "
                             f"line {h + 1}: truncated diff?")
        return DiffError(f"line {at + 1}: unexpected {line[:60]!r} inside the hunk {header!r} of "
                         f"line {h + 1} (more or other lines than its header says): truncated or "
                         "corrupt diff")
    if message.startswith("Unexpected hunk found"):
        return DiffError(f"line {at + 1}: hunk header {line!r} without a file header "
                         "('diff --git ...' or '--- a/FILE' + '+++ b/FILE') before it")
    if message.startswith("Target without source"):
        # unidiff splits an unquoted 'diff --git' line at its last space when the names carry no
        # a/ b/ prefixes, so a diff.noprefix diff of a path with a space lands here too.
        return DiffError(f"line {at + 1}: {line!r} names another file than the '---' line or "
                         "'diff --git' header before it: a corrupt diff, or a diff.noprefix diff "
                         "of a path with spaces (make that one with 'git -c diff.noprefix=false "
                         "diff')")
    return DiffError(f"line {at + 1}: {message.strip()}")


# --- names -------------------------------------------------------------------------------------

def _file_diff(pf: PatchedFile, first: str, hunks: tuple[Hunk, ...]) -> FileDiff:
    if not first.startswith("diff --git "):
        old, new = _plain_names(_path_token(pf.source_file), _path_token(pf.target_file))
        return FileDiff(old, new, _status(old, new), hunks, pf.is_binary_file)
    # unidiff keeps the names of 'diff --git A B' as written (quotes, octal escapes, a/ b/); the
    # split below decodes them as git apply does. rename/copy lines, when present, name the files.
    old, new, _ = _split_git_header(first[len("diff --git "):-1])
    status: FileStatus = "modified"
    for info in pf.patch_info or ():  # extended header lines, kept by unidiff as text
        verb, side, name = (info.rstrip("\n").split(" ", 2) + ["", ""])[:3]
        if verb in ("rename", "copy") and side in ("from", "to"):
            status = "renamed" if verb == "rename" else "copied"
            if side == "from":
                old = _path_token(name)
            else:
                new = _path_token(name)
    if _DEV_NULL in (pf.source_file, pf.target_file):  # unidiff's mark for a new/deleted file
        if status != "modified":
            raise DiffError(f"{first[:-1]!r} is both a new or deleted file and a {status} one: "
                            "corrupt diff")
        status = "added" if pf.source_file == _DEV_NULL else "deleted"
        old, new = (None, new) if status == "added" else (old, None)
    if (old is None and status != "added") or (new is None and status != "deleted"):
        raise DiffError(f"cannot tell the file names in {first[:-1]!r}")
    return FileDiff(old, new, status, hunks, pf.is_binary_file)


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
