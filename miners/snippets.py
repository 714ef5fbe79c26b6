"""Cut a changed region out of a file: the enclosing function when one can be found, else a window.

A snippet is what the supervisor sees at training time, so it should be a whole unit of code:
Python functions by indentation, brace languages by a header line plus brace matching. Both are
heuristics (no parser per language); when they fail the snippet is ``window`` lines either side.

Line numbers are 1-based and inclusive. Hunks come from a ``-U0`` diff: a pure insertion
(``old_count == 0``) sits after old line ``old_start``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from analyzer.languages import is_scorable
from analyzer.types import Hunk

RegionKind = Literal["function", "window"]

_PY_DEF = re.compile(r"^(\s*)(async\s+def|def|class)\s")
_CONTROL = re.compile(
    r"^\s*(\}\s*)?(if|else|elif|for|foreach|while|do|switch|case|catch|try|finally|return|"
    r"synchronized|with|using|lock|unsafe|loop|match|new|throw|sizeof|await)\b")
_BRACE_STRIP = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`|//.*$|/\*.*?\*/')
_TRIPLE = re.compile("\"\"\"|\'\'\'")
_BRACE_LANGUAGES = frozenset({"java", "javascript", "typescript", "go", "c", "cpp", "rust",
                              "csharp", "php", "kotlin", "swift", "scala"})


@dataclass(frozen=True)
class Snippet:
    """One labelled region of a fix: buggy ``code``, its ``fixed`` version, and the labels."""

    code: str
    fixed: str
    buggy_lines: tuple[int, ...]
    """1-based lines of ``code`` the fix replaces or deletes (pure insertion: the next line)."""
    insertion_only_lines: tuple[int, ...]
    """Labels that come only from the pure-insertion rule (an insertion labels the line after it)."""
    start: int
    """First line of the region in the old file."""
    kind: RegionKind


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _python_function(lines: Sequence[str], first: int, last: int, max_lines: int) -> tuple[int, int] | None:
    """Innermost ``def``/``class`` (0-based lines) whose body spans ``first..last``."""
    for k in range(first, max(-1, first - max_lines), -1):
        m = _PY_DEF.match(lines[k])
        if not m:
            continue
        base = len(m.group(1))
        end = k
        for j in range(k + 1, len(lines)):
            t = lines[j]
            if not t.strip():
                continue
            if _indent(t) <= base and not t.lstrip()[:1] in (")", "]", "}"):
                break
            end = j
        if end >= last:
            start = k
            while start > 0 and lines[start - 1].strip().startswith("@") \
                    and _indent(lines[start - 1]) == base:
                start -= 1
            return start, end
    return None


def _brace_close(lines: Sequence[str], k: int, limit: int) -> int | None:
    """Line closing the first ``{`` opened on line k (or the two lines after), if within limit."""
    depth, opened = 0, False
    for j in range(k, min(len(lines), k + limit)):
        code = _BRACE_STRIP.sub("", lines[j])
        if not opened and j > k + 2:
            return None
        if not opened and ";" in code and "{" not in code:
            return None
        for ch in code:
            if ch == "{":
                depth, opened = depth + 1, True
            elif ch == "}" and opened:
                depth -= 1
                if depth == 0:
                    return j
    return None


def _brace_function(lines: Sequence[str], first: int, last: int, max_lines: int) -> tuple[int, int] | None:
    """Nearest header line above the change whose brace block spans ``first..last``."""
    for k in range(first, max(-1, first - max_lines), -1):
        t = lines[k]
        if "(" not in t or _CONTROL.match(t) or t.rstrip().endswith(";"):
            continue
        close = _brace_close(lines, k, max_lines)
        if close is not None and close >= last:
            return k, close
    return None


def enclosing_region(
    lines: Sequence[str], first: int, last: int, language: str, *, window: int, max_lines: int,
) -> tuple[int, int, RegionKind]:
    """0-based inclusive region holding lines ``first..last``: the function, or a window."""
    found = None
    if language == "python":
        found = _python_function(lines, first, last, max_lines)
    elif language in _BRACE_LANGUAGES:
        found = _brace_function(lines, first, last, max_lines)
    if found is not None and found[1] - found[0] + 1 <= max_lines:
        return found[0], found[1], "function"
    return max(0, first - window), min(len(lines) - 1, last + window), "window"


def python_docstring_lines(text: str) -> frozenset[int]:
    """1-based lines of triple-quoted strings that open a line: docstrings, in practice.

    A literal scan, not ``ast`` or a ``^``-anchored regex: those cost more than the rest of mining.
    """
    lines: set[int] = set()
    pos, line, counted = 0, 1, 0
    while True:
        m = _TRIPLE.search(text, pos)
        if m is None:
            break
        start = m.start()
        end = text.find(text[start:start + 3], start + 3)
        if end < 0:
            break
        bol = text.rfind("\n", 0, start) + 1
        if text[bol:start].strip(" \t").lstrip("rRuUbB") == "":  # the string opens its line
            line += text.count("\n", counted, start)
            last = line + text.count("\n", start, end)
            lines.update(range(line, last + 1))
            counted, line = start, last - text.count("\n", start, end)
        pos = end + 3
    return frozenset(lines)


def is_docstring_hunk(h: Hunk, old_doc: frozenset[int], new_doc: frozenset[int]) -> bool:
    """True when every changed line of ``h`` lies inside a docstring, before and after."""
    return all((ln.old_lineno in old_doc) if ln.kind == "-" else (ln.new_lineno in new_doc)
               for ln in h.lines if ln.kind != " ")


def is_new_definition(h: Hunk, language: str) -> bool:
    """A pure insertion of a whole new function or class: new code, not a fix of the old."""
    added = [ln.text for ln in h.lines if ln.kind == "+"]
    code = [t for t in added if t.strip()]
    if h.old_count or not code:
        return False
    if language == "python":
        head = code[0].lstrip()
        if head.startswith("@"):
            head = next((t.lstrip() for t in code if not t.lstrip().startswith("@")), "")
        return bool(_PY_DEF.match(head)) and all(_indent(t) > _indent(code[0]) for t in code[1:]
                                                  if not t.lstrip().startswith(("@", "def ", "class ")))
    if language in _BRACE_LANGUAGES:
        text = _BRACE_STRIP.sub("", "\n".join(code))
        return "(" in code[0] and not _CONTROL.match(code[0]) and text.count("{") == text.count("}") > 0
    return False


def _footprint(h: Hunk, n_old: int) -> tuple[int, int]:
    """Old lines (1-based) a hunk is about; a pure insertion is about the line after it."""
    if h.old_count > 0:
        return h.old_start, h.old_start + h.old_count - 1
    at = min(max(h.old_start + 1, 1), n_old)
    return at, at


def _merge(regions: list[list]) -> list[list]:
    regions.sort(key=lambda r: r[0])
    merged: list[list] = []
    for r in regions:
        if merged and r[0] <= merged[-1][1] + 1:
            m = merged[-1]
            m[1] = max(m[1], r[1])
            m[2] = m[2] if m[2] == r[2] else "window"
            m[3] += r[3]
        else:
            merged.append(r)
    return merged


def _normalise(lines: Sequence[str]) -> str:
    """Shared-schema text: LF endings, one trailing newline (leading/trailing blanks trimmed by caller)."""
    return "\n".join(x.rstrip("\r") for x in lines) + "\n"


def _trim(lines: Sequence[str], s: int, e: int, keep: tuple[int, int]) -> tuple[int, int]:
    """Shrink 0-based [s, e] past blank lines at either end, never past ``keep``."""
    while s < keep[0] and not lines[s].strip():
        s += 1
    while e > keep[1] and not lines[e].strip():
        e -= 1
    return s, e


def fix_snippets(
    old: str, new: str, hunks: Sequence[Hunk], language: str, *, kept: Sequence[Hunk] | None = None,
    window: int = 10, max_lines: int = 150,
) -> list[Snippet]:
    """One snippet per enclosing region of the ``kept`` hunks (hunks in one function share one).

    ``hunks`` are all hunks of the file's ``-U0`` diff (they map old lines to new ones); ``kept``
    (default: all) are the code changes that get labels. Whitespace- or comment-only hunks that fall
    inside a region still show in ``fixed``.
    """
    kept = hunks if kept is None else kept
    old_lines, new_lines = old.split("\n"), new.split("\n")
    if old.endswith("\n"):
        old_lines.pop()
    if new.endswith("\n"):
        new_lines.pop()
    if not old_lines:
        return []
    n_old = len(old_lines)
    if any(_footprint(h, n_old)[1] > n_old for h in hunks):
        return []  # the diff does not match the blob we read
    regions = []
    for h in kept:
        a, b = _footprint(h, n_old)
        s, e, kind = enclosing_region(old_lines, a - 1, b - 1, language, window=window,
                                      max_lines=max_lines)
        regions.append([s, e, kind, [h]])
    out = []
    for s, e, kind, group in _merge(regions):
        # Grow the region over any other hunk it cuts, so old and new regions stay aligned.
        grown = True
        while grown:
            grown = False
            for h in hunks:
                a, b = _footprint(h, n_old)
                if a - 1 <= e and b - 1 >= s and (a - 1 < s or b - 1 > e):
                    s, e, grown = min(s, a - 1), max(e, b - 1), True
        foot = [f for f in (_footprint(h, n_old) for h in hunks) if s <= f[0] - 1 and f[1] - 1 <= e]
        s, e = _trim(old_lines, s, e, (min(a for a, _ in foot) - 1, max(b for _, b in foot) - 1))
        if e - s + 1 > max_lines:
            continue
        # Old region [s, e] (0-based) -> new region: shift by the hunks before it, grow by those inside.
        before = sum(h.new_count - h.old_count for h in hunks if _footprint(h, n_old)[1] - 1 < s)
        inside = sum(h.new_count - h.old_count for h in hunks
                     if s <= _footprint(h, n_old)[0] - 1 and _footprint(h, n_old)[1] - 1 <= e)
        ns, ne = s + before, e + before + inside
        fixed_lines = new_lines[ns:ne + 1]
        while fixed_lines and not fixed_lines[0].strip():
            fixed_lines.pop(0)
        while fixed_lines and not fixed_lines[-1].strip():
            fixed_lines.pop()
        code_lines = old_lines[s:e + 1]
        direct: set[int] = set()
        inserted: set[int] = set()
        for h in group:
            a, b = _footprint(h, n_old)
            hit = [i for i in range(a, b + 1) if is_scorable(old_lines[i - 1])] if h.old_count else []
            if hit:
                direct.update(hit)
                continue
            # Insertion or a deleted brace: the next scorable line, else the previous one.
            nxt = [i for i in range(b if h.old_count == 0 else b + 1, e + 2)
                   if is_scorable(old_lines[i - 1])]
            prev = [i for i in range(a, s, -1) if is_scorable(old_lines[i - 1])]
            (direct if h.old_count else inserted).update((nxt or prev)[:1])
        rel = tuple(sorted(i - s for i in direct | inserted))
        code, fixed = _normalise(code_lines), _normalise(fixed_lines) if fixed_lines else ""
        if not rel or not fixed.strip() or code == fixed:
            continue
        out.append(Snippet(code, fixed, rel, tuple(sorted(i - s for i in inserted - direct)),
                           s + 1, kind))
    return out


def clean_snippets(
    new: str, hunks: Sequence[Hunk], language: str, *, window: int = 10, max_lines: int = 150,
    min_code_lines: int = 3,
) -> list[str]:
    """Regions of the new file around each hunk's added lines: clean code to mutate."""
    lines = new.split("\n")
    if new.endswith("\n"):
        lines.pop()
    regions = []
    for h in hunks:
        if h.new_count == 0:
            continue
        a, b = h.new_start, min(h.new_start + h.new_count - 1, len(lines))
        if a < 1 or a > len(lines):
            continue
        s, e, kind = enclosing_region(lines, a - 1, b - 1, language, window=window, max_lines=max_lines)
        regions.append([s, e, kind, [h]])
    out = []
    for s, e, _, _ in _merge(regions):
        while s < e and not lines[s].strip():
            s += 1
        while e > s and not lines[e].strip():
            e -= 1
        chunk = lines[s:e + 1]
        if len(chunk) <= max_lines and sum(map(is_scorable, chunk)) >= min_code_lines:
            out.append(_normalise(chunk))
    return out
