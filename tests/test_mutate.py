"""lab.mutate: line mutations of clean code and line pairs of real fixes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from analyzer.languages import is_scorable
from lab.mutate import COARSE_OPS, FINE_OPS, Mutant, mutate, pair_lines

PY = """\
def clamp(x, lo, hi):
    if x < lo:
        return lo
    if x > hi:
        return hi
    total = x + 1
    return total
"""

DONOR = """\
for item in items:
    print(item)
"""


def _only(op: str, code: str = PY, seed: int = 0, **kw) -> Mutant:
    """Run mutate until it picks ``op`` (ops are drawn at random; seeds make it reproducible)."""
    for s in range(seed, seed + 500):
        m = mutate(code, random.Random(s), **kw)
        if m is not None and m.ops == (op,):
            return m
    raise AssertionError(f"op {op} never drawn")


def test_swap_is_a_real_swap():
    m = _only("swap")
    before, after = PY.splitlines(), m.code.splitlines()
    assert Counter(before) == Counter(after)
    changed = [i + 1 for i, (x, y) in enumerate(zip(before, after)) if x != y]
    assert len(changed) == 2
    assert m.buggy_lines == tuple(changed)
    # Each mutated line is paired with the original line at its position.
    assert sorted(m.pairs) == [(c, c) for c in changed]


def test_foreign_line_comes_from_a_donor_and_is_reindented():
    m = _only("foreign", donors=[DONOR])
    (line,) = m.buggy_lines
    new = m.code.splitlines()[line - 1]
    old = PY.splitlines()[line - 1]
    assert new.strip() in {"for item in items:", "print(item)"}
    assert new.strip() != old.strip()
    assert new[: len(new) - len(new.lstrip())] == old[: len(old) - len(old.lstrip())]
    assert m.pairs == ((line, line),)


def test_foreign_needs_donors():
    for s in range(50):
        m = mutate(PY, random.Random(s))
        assert m is not None and "foreign" not in m.ops


def test_delete_labels_the_next_line():
    m = _only("delete")
    before, after = PY.splitlines(), m.code.splitlines()
    assert len(after) == len(before) - 1
    # find the deleted line: first index where they differ
    d = next((i for i, (x, y) in enumerate(zip(before, after)) if x != y), len(after))
    if d < len(after):
        assert m.buggy_lines == (d + 1,)
        assert after[d] == before[d + 1]
        assert m.pairs == ((d + 1, d + 1),)
    else:  # deleted the last line: the previous one is labelled
        assert m.buggy_lines == (len(after),)


def test_delete_at_end_labels_previous_line():
    code = "a = 1\nb = 2\n"
    for s in range(100):
        m = mutate(code, random.Random(s))
        if m and m.ops == ("delete",) and m.code == "a = 1\n":
            assert m.buggy_lines == (1,)
            assert m.pairs == ((2, 1),)
            return
    raise AssertionError("never deleted the last line")


def test_deterministic_with_seed():
    a = mutate(PY, random.Random(7), donors=[DONOR], n=3, fine=True)
    b = mutate(PY, random.Random(7), donors=[DONOR], n=3, fine=True)
    assert a == b and a is not None and len(a.ops) == 3


def test_labels_point_at_changed_lines_and_are_scorable():
    for s in range(200):
        m = mutate(PY, random.Random(s), donors=[DONOR], n=2, fine=True)
        assert m is not None and m.code != PY
        lines = m.code.splitlines()
        assert list(m.buggy_lines) == sorted(set(m.buggy_lines))
        assert all(1 <= b <= len(lines) and is_scorable(lines[b - 1]) for b in m.buggy_lines)
        assert {b for _, b in m.pairs} == set(m.buggy_lines)
        assert set(m.ops) <= set(COARSE_OPS + FINE_OPS)
        assert m.code.endswith("\n")


def test_trailing_newline_convention_kept():
    m = mutate(PY.rstrip("\n"), random.Random(3), donors=[DONOR])
    assert m is not None and not m.code.endswith("\n")


@pytest.mark.parametrize("code", ["", "\n\n", "}\n", "  )\n  ;\n", "x = 1\n"])
def test_unmutatable_returns_none(code):
    # "x = 1" alone: nothing to swap with, no donors, and deleting would leave no scorable line.
    assert mutate(code, random.Random(0)) is None


def test_n_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        mutate(PY, random.Random(0), n=0)


@pytest.mark.parametrize(
    ("op", "line", "allowed"),
    [
        ("comparison", "    if x < lo:", {"    if x <= lo:", "    if x > lo:", "    if x >= lo:"}),
        ("arithmetic", "    total = x + 1", {"    total = x - 1"}),
        ("off_by_one", "for i in range(n):", {"for i in range(n + 1):"}),
        ("off_by_one", "    k = 10", {"    k = 11", "    k = 9"}),
        ("boolean", "if a && b {", {"if a || b {"}),
        ("boolean", "ok = a and b", {"ok = a or b"}),
        ("swap_args", "    put(key, value)", {"    put(value, key)"}),
    ],
)
def test_fine_operators(op, line, allowed):
    code = line + "\nreturn 0\n"
    seen = set()
    for s in range(300):
        m = mutate(code, random.Random(s), fine=True)
        if m is not None and m.ops == (op,) and m.buggy_lines == (1,):
            seen.add(m.code.splitlines()[0])
    assert seen and seen <= allowed


def test_fine_operators_skip_strings_and_comments():
    code = 'msg = "a < b and 1 + 2"  # x > y\nreturn msg\n'
    for s in range(200):
        m = mutate(code, random.Random(s), fine=True)
        if m is not None and m.buggy_lines == (1,) and m.ops[0] in ("comparison", "arithmetic", "boolean", "off_by_one"):
            raise AssertionError(f"mutated inside a string or comment: {m.code!r}")


def test_wrong_variable_uses_another_snippet_identifier():
    code = "lo = 0\nhi = 9\nmid = lo + hi\n"
    for s in range(300):
        m = mutate(code, random.Random(s), fine=True)
        if m is not None and m.ops == ("wrong_variable",):
            (b,) = m.buggy_lines
            old, new = code.splitlines()[b - 1], m.code.splitlines()[b - 1]
            assert old != new and set(new.split()) - set(old.split()) <= {"lo", "hi", "mid"}
            return
    raise AssertionError("wrong_variable never drawn")


def test_pair_lines_replace_delete_insert():
    correct = "a = 1\nif a <= 2:\n    go()\nb = 3\nreturn b\n"
    buggy = "a = 1\nif a < 2:\n    go()\nextra()\nreturn b\n"
    # line 2 replaced; line 4 "b = 3" replaced by "extra()"
    assert pair_lines(correct, buggy) == [(2, 2), (4, 4)]
    # missing line in buggy: correct line 3 pairs with the next buggy line
    assert pair_lines("x = 1\ny = 2\nz = 3\n", "x = 1\nz = 3\n") == [(2, 2)]
    # extra buggy line: paired with the correct line at that point
    assert pair_lines("x = 1\nz = 3\n", "x = 1\ny = 2\nz = 3\n") == [(2, 2)]
    assert pair_lines("x = 1\n", "x = 1\n") == []


def test_comment_lines_are_never_targets():
    code = "# helper\nx = 1\n// note\ny = 2\n/* block\n * more\n */\nz = x + y\n"
    for s in range(200):
        m = mutate(code, random.Random(s), n=2, fine=True)
        assert m is not None
        after = m.code.splitlines()
        for c in ("# helper", "// note", " * more"):
            assert c in after  # never replaced, swapped or deleted
