"""No block of six or more identical lines appears twice in the product code.

A copied block is a concept without a name: the copies drift apart, and a fix lands in one of
them. The scan reads every ``.py`` file of the product packages, keeps each line stripped of its
indentation, and leaves out what says nothing about the code's logic:

- blank lines, and lines that are only closing or opening brackets (``)``, ``]``, ``},``...) or
  only docstring quotes: two blocks differing only in such lines are still copies;
- import statements: two modules that need the same names say so in the same words, and that is
  no logic to share (a helper cannot import for its caller).

Any run of ``WINDOW`` consecutive remaining lines found at two places (in one file or in two)
fails the test, reported as the longest stretch the two places share.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_PACKAGES = ("analyzer", "lab", "miners", "bot", "workers", "ptbot")
WINDOW = 6
_NOISE = re.compile(r'^(?:[()\[\]{},:;]+|[rbuRBU]?("""|\'\'\'))$')


def _import_lines(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return out


def significant_lines(source: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of each line the comparison reads."""
    skip = _import_lines(ast.parse(source))
    return [(n, text) for n, raw in enumerate(source.splitlines(), 1)
            if (text := raw.strip()) and not _NOISE.match(text) and n not in skip]


def duplicate_blocks(files: dict[str, str], window: int = WINDOW) -> list[str]:
    """Each stretch of ``window`` or more significant lines that two places share, as
    ``"a.py:12-20 == b.py:40-48 (7 lines): first line"``; overlapping windows merge into one."""
    lines = {name: significant_lines(src) for name, src in files.items()}
    seen: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for name, sig in lines.items():
        texts = [t for _, t in sig]
        for i in range(len(texts) - window + 1):
            seen[tuple(texts[i:i + window])].append((name, i))
    pairs: set[tuple[str, int, str, int]] = set()
    for places in seen.values():
        first = places[0]
        pairs |= {(*first, *other) for other in places[1:]}
    found = []
    for a, i, b, j in sorted(pairs):
        if (a, i - 1, b, j - 1) in pairs:
            continue  # inside a stretch reported from its start
        n = window
        while (a, i + n - window + 1, b, j + n - window + 1) in pairs:
            n += 1
        la, lb = lines[a], lines[b]
        found.append(f"{a}:{la[i][0]}-{la[i + n - 1][0]} == {b}:{lb[j][0]}-{lb[j + n - 1][0]} "
                     f"({n} lines): {la[i][1]}")
    return found


def test_the_scan_finds_a_copied_block_and_ignores_what_it_should():
    block = "\n".join(f"    x{i} = compute({i})" for i in range(6))
    a = f"import os\n\n\ndef f():\n{block}\n    return x5\n"
    assert duplicate_blocks({"a.py": a, "b.py": f"def g():\n{block}\n    return 0\n"}) == [
        "a.py:5-10 == b.py:2-7 (6 lines): x0 = compute(0)"]
    assert duplicate_blocks({"a.py": a, "b.py": f"def g():\n{block.replace('x4', 'y4')}\n"}) == []
    # Blank lines and lone brackets between the lines do not hide a copy.
    spread = "\n\n    [\n    ]\n".join(block.split("\n"))
    assert len(duplicate_blocks({"a.py": a, "c.py": f"def h():\n{spread}\n"})) == 1
    # Identical import statements are no copied logic.
    imports = "\n".join(f"from m{i} import n" for i in range(8))
    assert duplicate_blocks({"a.py": imports, "b.py": imports}) == []


def test_no_block_of_six_identical_lines_appears_twice():
    files = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
             for pkg in PRODUCT_PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    found = duplicate_blocks(files)
    assert not found, ("blocks of code written twice (give the shared part a name in the module that "
                       "owns the concept):\n" + "\n".join(found))
