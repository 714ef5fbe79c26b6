"""The suite runs from the repository alone.

Fixtures live under ``tests/``; the only files a test may read from outside the repository are
the large benchmark files beside the clone, and only through ``conftest.shared_data``, which
skips the test with its reason when they are absent. A static scan of every test module finds
any other path built to leave the repository: ``parents[N]`` reaching above the repository root,
``.parent`` chains doing the same, ``..`` path parts, ``os.pardir``, and the shared data's
folder or environment variables.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ALLOWED = {("conftest.py", "shared_data")}
"""(module, function) pairs that may build paths outside the repository."""
SHARED_NAMES = ("PTBOT_SHARED", "shared/data")


def _parents_depth(node: ast.AST) -> int | None:
    """How many directories above tests/ ``node`` climbs when it is ``<...__file__...>.parents[N]``
    or a ``<...__file__...>.parent.parent...`` chain; else None.

    ``Path(__file__).parents[0]`` is tests/ itself (0), ``parents[1]`` the repository root (1).
    """
    if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "parents" and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, int)):
        return node.slice.value if _mentions_file(node.value.value) else None
    depth = 0
    while isinstance(node, ast.Attribute) and node.attr == "parent":
        depth += 1
        node = node.value
    return depth - 1 if depth and _mentions_file(node) else None


def _mentions_file(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "__file__" for n in ast.walk(node))


def _is_escape_string(value: str) -> bool:
    parts = value.replace("\\", "/").split("/")
    return ".." in parts and not value.startswith(("http:", "https:"))


def outside_paths(source: str, module: str) -> list[str]:
    """Where ``source`` (the test module ``module``) builds a path outside the repository, as
    ``"module:line: what"`` strings, skipping the ``ALLOWED`` helpers."""
    tree = ast.parse(source)
    found: list[str] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if (module, function) in ALLOWED:
            return
        what = None
        depth = _parents_depth(node)
        if depth is not None and depth >= 2:
            what = f"climbs {depth} directories above tests/"
        elif isinstance(node, ast.Attribute) and node.attr == "pardir":
            what = "uses os.pardir"
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if _is_str(side) and _is_escape_string(side.value):
                    what = f"joins {side.value!r} onto a path"
        elif (isinstance(node, ast.Call) and any(_is_str(a) and _is_escape_string(a.value) for a in node.args)
              and _call_name(node) in ("Path", "PurePath", "join", "open", "abspath", "realpath", "resolve")):
            what = f"passes a '..' path to {_call_name(node)}()"
        elif _is_str(node) and any(s in node.value for s in SHARED_NAMES):
            what = f"names the shared data ({node.value!r})"
        if what:
            found.append(f"{module}:{node.lineno}: {what}")
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    return found


def _is_str(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


# This module is left out: its strings are the scan's own samples.
@pytest.mark.parametrize("path", sorted(p for p in TESTS.glob("*.py") if p.name != Path(__file__).name),
                         ids=lambda p: p.name)
def test_no_test_module_reads_outside_the_repository(path: Path) -> None:
    found = outside_paths(path.read_text(encoding="utf-8"), path.name)
    assert not found, ("tests must read files from the repository only; the shared benchmark data "
                       "beside the clone goes through conftest.shared_data (which skips when it is "
                       "absent):\n" + "\n".join(found))


@pytest.mark.parametrize("source", [
    'DATA = Path(__file__).resolve().parents[2] / "shared" / "data"',
    'DATA = Path(__file__).resolve().parent.parent.parent / "x.jsonl"',
    'DATA = Path(__file__).parents[3]',
    'DATA = ROOT / ".." / "x.jsonl"',
    'DATA = Path("../shared/x.jsonl")',
    'DATA = os.path.join(ROOT, os.pardir, "x")',
    'DATA = os.environ["PTBOT_SHARED_DATA"]',
    'def helper():\n    return open("../data/x.jsonl")',
])
def test_the_scan_finds_paths_outside_the_repository(source: str) -> None:
    assert outside_paths(source, "test_example.py")


@pytest.mark.parametrize("source", [
    'ROOT = Path(__file__).resolve().parents[1]',
    'GOLDEN = Path(__file__).parent / "golden"',
    'ROOT = Path(__file__).resolve().parent.parent',
    'UP = tmp_path.parent.parent.parent',
    'CASES = ("../x.py", "/etc/passwd")',  # data handed to code under test, not a path read here
    'JS = "var express = require(\'../\')"',
])
def test_the_scan_leaves_paths_inside_the_repository_alone(source: str) -> None:
    assert outside_paths(source, "test_example.py") == []


def test_only_the_shared_data_helper_may_leave_the_repository() -> None:
    conftest = (TESTS / "conftest.py").read_text(encoding="utf-8")
    assert outside_paths(conftest, "helper.py"), "conftest.shared_data no longer builds the shared path?"
    assert outside_paths(conftest, "conftest.py") == []
