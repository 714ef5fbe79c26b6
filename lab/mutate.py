"""Line mutations of clean code, and line pairs of real fixes, for contrastive SAE pretraining.

Standard library only: ``ptbot pretrain`` (analyzer) and ``ptbot mine-repo`` (miners) both use it.

PtTrust's stage 1 trains on correct snippets next to mutated copies, with pairs
(line of the correct snippet, line of the mutated snippet) for the contrastive loss. The reference
``switch_inside`` copies a line over another; here ``swap`` really exchanges two lines, as its
name says. ``fine=True`` adds realistic single-token mutators, closer to real bugs than PtTrust's:
comparison and arithmetic operator swaps, off-by-one, logical swaps, swapped call arguments and a
wrong variable.

Line numbers are 1-based throughout. Pairing rules:
  * ``swap`` of lines i and j: both are labelled; pairs (i, i') and (j, j'), each mutated line paired
    with the original line that stood at its position.
  * ``foreign`` and every fine operator on line i: pair (i, i').
  * ``delete`` of line i: the next surviving scorable line k' of the mutated code is labelled (the
    previous one when the deletion is at the end), and paired with the deleted line: (i, k'). This is
    the PtTrust convention for missing code (and the benchmark data's pure-insertion labels).
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from analyzer.languages import is_scorable

COARSE_OPS: tuple[str, ...] = ("swap", "foreign", "delete")
FINE_OPS: tuple[str, ...] = (
    "comparison", "arithmetic", "off_by_one", "boolean", "swap_args", "wrong_variable",
)


@dataclass(frozen=True)
class Mutant:
    """A mutated copy of a snippet with its labels and contrastive pairs."""

    code: str
    """The mutated code, with the original's trailing-newline convention."""
    buggy_lines: tuple[int, ...]
    """Sorted 1-based lines of ``code`` that a mutation changed (or that follow a deletion)."""
    pairs: tuple[tuple[int, int], ...]
    """(line in the original code, line in ``code``): the correct line and the line replacing it."""
    ops: tuple[str, ...]
    """The operator of each applied mutation, in the order applied."""


# --- finding code (not strings or comments) inside one line ---------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_COMMENT = re.compile(r"(#|//|/\*).*$")


def _code_mask(line: str) -> list[bool]:
    """Per character: True when it is code, False inside a string literal or trailing comment."""
    mask = [True] * len(line)
    for m in _STRING.finditer(line):
        mask[m.start():m.end()] = [False] * (m.end() - m.start())
    # A comment starts at the first comment marker that is itself code (not inside a string).
    for m in _COMMENT.finditer(line):
        if mask[m.start()]:
            mask[m.start():] = [False] * (len(line) - m.start())
            break
    return mask


# Lines never mutated: comments, and also docstring openers and preprocessor lines, which
# ``languages.is_comment_line`` counts as code. Kept as it is (not that function) because the
# shipped SAE was pretrained on the mutations this set gives; changing it changes them.
_COMMENT_LINE = re.compile(r"^\s*(#|//|/\*|\*|\"\"\"|\'\'\'|<!--)")


def _is_code(line: str) -> bool:
    """A scorable line that is not a comment line: the only lines worth mutating."""
    return is_scorable(line) and not _COMMENT_LINE.match(line)


def _in_code(mask: list[bool], start: int, end: int) -> bool:
    return all(mask[start:end])


def _code_matches(pattern: re.Pattern[str], line: str) -> list[re.Match[str]]:
    mask = _code_mask(line)
    return [m for m in pattern.finditer(line) if _in_code(mask, m.start(), m.end())]


def _replace(line: str, m: re.Match[str], text: str, group: int = 0) -> str:
    return line[:m.start(group)] + text + line[m.end(group):]


# --- fine operators: each returns a changed line, or None when it does not apply ------------

# Spaces around the operator keep generics (`List<T>`), arrows and shifts out.
_COMPARISON = re.compile(r"(?<=\s)(===|!==|<=|>=|==|!=|<|>)(?=\s)")
_COMPARISON_SWAP = {
    "<": ("<=", ">", ">="), "<=": ("<", ">=", ">"), ">": (">=", "<", "<="),
    ">=": (">", "<=", "<"), "==": ("!=",), "!=": ("==",), "===": ("!==",), "!==": ("===",),
}
_ARITHMETIC = re.compile(r"(?<=\s)([-+*/])(=?)(?=\s)")
_ARITHMETIC_SWAP = {"+": "-", "-": "+", "*": "/", "/": "*"}
_INTEGER = re.compile(r"(?<![\w.])(\d+)(?![\w.])")
_RANGE = re.compile(r"\brange\(([^(),]+)\)")
_BOOLEAN = re.compile(r"\b(and|or|True|False|true|false)\b|(&&|\|\|)")
_BOOLEAN_SWAP = {"and": "or", "or": "and", "True": "False", "False": "True",
                 "true": "false", "false": "true", "&&": "||", "||": "&&"}
# A call with exactly two simple arguments: name(a, b).
_TWO_ARGS = re.compile(r"\b\w+\(\s*([^(),]+?)\s*,\s*([^(),]+?)\s*\)")
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_]\w*)\b(?!\s*\()")
_KEYWORDS = frozenset("""
and as assert async await break case catch class const continue def default del do elif else
enum except export extends false final finally fn for from func function go if impl implements
import in instanceof interface is lambda let loop match mod mut new nil none None not null or
package pass private protected pub public raise return self Self static struct super switch this
throw throws true True False try type typeof use var void while with yield int long float double
char bool boolean string str byte short unsigned signed auto println print len range
""".split())


def _mutate_comparison(line: str, rng: random.Random) -> str | None:
    found = _code_matches(_COMPARISON, line)
    if not found:
        return None
    m = rng.choice(found)
    return _replace(line, m, rng.choice(_COMPARISON_SWAP[m.group(1)]), 1)


def _mutate_arithmetic(line: str, rng: random.Random) -> str | None:
    found = _code_matches(_ARITHMETIC, line)
    if not found:
        return None
    m = rng.choice(found)
    return _replace(line, m, _ARITHMETIC_SWAP[m.group(1)], 1)


def _mutate_off_by_one(line: str, rng: random.Random) -> str | None:
    ranges = _code_matches(_RANGE, line)
    if ranges:
        m = rng.choice(ranges)
        return _replace(line, m, f"{m.group(1).strip()} + 1", 1)
    found = _code_matches(_INTEGER, line)
    if not found:
        return None
    m = rng.choice(found)
    value = int(m.group(1))
    new = value + 1 if value == 0 or rng.random() < 0.5 else value - 1
    return _replace(line, m, str(new), 1)


def _mutate_boolean(line: str, rng: random.Random) -> str | None:
    found = _code_matches(_BOOLEAN, line)
    if not found:
        return None
    m = rng.choice(found)
    return _replace(line, m, _BOOLEAN_SWAP[m.group(0)])


def _mutate_swap_args(line: str, rng: random.Random) -> str | None:
    found = [m for m in _code_matches(_TWO_ARGS, line) if m.group(1) != m.group(2)]
    if not found:
        return None
    m = rng.choice(found)
    a, b = m.group(1), m.group(2)
    # Replace group 2 first so group 1's offsets stay valid.
    swapped = line[:m.start(2)] + a + line[m.end(2):]
    return swapped[:m.start(1)] + b + swapped[m.end(1):]


def _variables(lines: Sequence[str]) -> list[str]:
    """Identifiers used as variables (not calls, attributes or keywords) in a snippet, in order."""
    seen: dict[str, None] = {}
    for line in lines:
        if not _is_code(line):
            continue
        for m in _code_matches(_IDENT, line):
            if m.group(1) not in _KEYWORDS:
                seen.setdefault(m.group(1), None)
    return list(seen)


def _mutate_wrong_variable(line: str, rng: random.Random, variables: Sequence[str]) -> str | None:
    found = [m for m in _code_matches(_IDENT, line) if m.group(1) not in _KEYWORDS]
    if not found:
        return None
    m = rng.choice(found)
    others = [v for v in variables if v != m.group(1)]
    if not others:
        return None
    return _replace(line, m, rng.choice(others), 1)


_FINE: dict[str, Callable[[str, random.Random], str | None]] = {
    "comparison": _mutate_comparison,
    "arithmetic": _mutate_arithmetic,
    "off_by_one": _mutate_off_by_one,
    "boolean": _mutate_boolean,
    "swap_args": _mutate_swap_args,
}


# --- the line-level mutation driver ---------------------------------------------------------

def _split(code: str) -> tuple[list[str], bool]:
    """Lines of ``code`` and whether it ended with a newline (kept on output)."""
    trailing = code.endswith("\n")
    body = code[:-1] if trailing else code
    return body.split("\n"), trailing


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _donor_lines(donors: Sequence[str]) -> list[str]:
    out = []
    for donor in donors:
        for line in donor.splitlines():
            if _is_code(line):
                out.append(line.strip())
    return out


def mutate(
    code: str,
    rng: random.Random,
    *,
    donors: Sequence[str] = (),
    n: int = 1,
    fine: bool = False,
) -> Mutant | None:
    """Apply up to ``n`` mutations to distinct code lines of ``code``.

    Code lines are scorable lines that are not comment lines. Each mutation picks an untouched one at random, then an operator uniformly among
    those that apply to it: ``swap``, ``foreign`` (needs ``donors``, other snippets), ``delete``,
    and with ``fine=True`` also the realistic operators of ``FINE_OPS``. Returns None when no
    mutation applies (too few scorable lines, nothing to swap with, no donor line that differs).
    ``len(result.ops)`` may be below ``n`` when the snippet runs out of lines. Deterministic for a
    given ``rng`` state.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1 (got {n})")
    lines, trailing = _split(code)
    slots: list[str | None] = list(lines)  # None = deleted
    touched: set[int] = set()  # 0-based original lines already used by a mutation
    applied: list[tuple[str, tuple[int, ...]]] = []  # (op, original 0-based lines)
    donor_pool = _donor_lines(donors)
    variables = _variables(lines) if fine else []
    ops = COARSE_OPS + (FINE_OPS if fine else ())

    def alive_scorable(exclude: int) -> bool:
        return any(k != exclude and s is not None and is_scorable(s) for k, s in enumerate(slots))

    def try_op(op: str, i: int) -> tuple[int, ...] | None:
        """Apply ``op`` to line i in ``slots``; return the original lines it touched."""
        line = slots[i]
        assert line is not None
        if op == "swap":
            partners = [j for j, s in enumerate(slots) if j != i and j not in touched
                        and s is not None and _is_code(s) and s.strip() != line.strip()]
            if not partners:
                return None
            j = rng.choice(partners)
            slots[i], slots[j] = slots[j], slots[i]
            return (i, j)
        if op == "foreign":
            choices = [d for d in donor_pool if d != line.strip()]
            if not choices:
                return None
            ending = "\r" if line.endswith("\r") else ""
            slots[i] = _indent(line) + rng.choice(choices) + ending
            return (i,)
        if op == "delete":
            if not alive_scorable(i):
                return None
            slots[i] = None
            return (i,)
        if op == "wrong_variable":
            new = _mutate_wrong_variable(line, rng, variables)
        else:
            new = _FINE[op](line, rng)
        if new is None or new == line:
            return None
        slots[i] = new
        return (i,)

    for _ in range(n):
        candidates = [i for i, s in enumerate(slots)
                      if i not in touched and s is not None and _is_code(s)]
        rng.shuffle(candidates)
        done = False
        for i in candidates:
            for op in rng.sample(ops, len(ops)):
                hit = try_op(op, i)
                if hit is not None:
                    touched.update(hit)
                    applied.append((op, hit))
                    done = True
                    break
            if done:
                break
        if not done:
            break
    if not applied:
        return None

    # Map surviving original lines to their 0-based position in the mutated code.
    position: dict[int, int] = {}
    for i, s in enumerate(slots):
        if s is not None:
            position[i] = len(position)
    pairs: set[tuple[int, int]] = set()
    for op, hit in applied:
        if op == "delete":
            (i,) = hit
            after = [k for k in range(i + 1, len(slots)) if k in position and is_scorable(slots[k] or "")]
            before = [k for k in range(i - 1, -1, -1) if k in position and is_scorable(slots[k] or "")]
            k = (after or before)[0]
            pairs.add((i + 1, position[k] + 1))
        else:
            for i in hit:
                pairs.add((i + 1, position[i] + 1))
    out = "\n".join(s for s in slots if s is not None) + ("\n" if trailing else "")
    if out == code:
        return None
    return Mutant(
        code=out,
        buggy_lines=tuple(sorted({b for _, b in pairs})),
        pairs=tuple(sorted(pairs, key=lambda p: (p[1], p[0]))),
        ops=tuple(op for op, _ in applied),
    )


def pair_lines(correct: str, buggy: str) -> list[tuple[int, int]]:
    """Contrastive pairs of a real fix: (line in ``correct``, line in ``buggy``), 1-based.

    ``correct`` is the fixed version and ``buggy`` the code before the fix. Lines are aligned with
    ``difflib.SequenceMatcher`` (trailing whitespace ignored). A replaced buggy line is paired with
    the correct line at the same offset in its block (the block's last line when the buggy block is
    longer); a buggy line the fix deletes with the correct line at that point; a correct line the
    buggy code lacks with the next scorable buggy line (insertion rule). Pairs touching a blank or
    punctuation-only line are dropped: those lines get no vector.
    """
    a, _ = _split(correct)
    b, _ = _split(buggy)
    matcher = difflib.SequenceMatcher(None, [x.rstrip() for x in a], [x.rstrip() for x in b],
                                      autojunk=False)
    pairs: list[tuple[int, int]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag in ("replace", "insert"):
            # insert: buggy lines j1..j2 that the fix removes; their counterpart is the correct line
            # at that point (clamped to the last line).
            for j in range(j1, j2):
                i = min(i1 + (j - j1), i2 - 1) if i2 > i1 else min(i1, len(a) - 1)
                pairs.append((i + 1, j + 1))
        else:  # delete: correct lines i1..i2 missing from buggy -> next buggy line is labelled
            nxt = [j for j in range(j1, len(b)) if is_scorable(b[j])]
            prev = [j for j in range(j1 - 1, -1, -1) if is_scorable(b[j])]
            if not (nxt or prev):
                continue
            j = (nxt or prev)[0]
            for i in range(i1, i2):
                pairs.append((i + 1, j + 1))
    return [(i, j) for i, j in pairs
            if 0 < i <= len(a) and is_scorable(a[i - 1]) and is_scorable(b[j - 1])]
