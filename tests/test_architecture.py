"""The layering rules of the brief, checked on the import graph and at run time.

- the packages stand in layers, each importing only the layers below it (lowest first):
  ``analyzer`` (the scoring runtime) and ``templates``; ``lab`` (training, evaluation,
  retraining); ``miners`` and ``bot``; ``workers``; and the composition root ``ptbot`` (the
  command line) on top, which no product package imports;
- ``lab`` sits below ``miners`` because the miners make mutated copies of clean code with
  ``lab.mutate`` while nothing in ``lab`` needs a miner: the mining that ``ptbot adapt`` does
  is put together in ``workers``, above both;
- ``analyzer`` imports no other ptbot package (``lab`` included: scoring loads no training
  code) and never github, git, celery, jinja2 or click; ``lab`` imports only ``analyzer``
  and none of those either;
- ``miners`` and ``bot`` use only the stdlib-only modules of ``analyzer`` and ``lab``, so the
  webhook process never imports torch; the web process sends tasks by name and never imports
  ``workers.tasks``;
- no import cycle, between the modules of the product packages or between the packages.

The torch-free analyzer modules may also use ``PURE_PYTHON_PARSERS`` (``analyzer.diff`` adapts
``unidiff``): pure-Python parsing libraries with no native code and no I/O of their own.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB_ONLY = {"analyzer", "analyzer.types", "analyzer.languages", "analyzer.diff", "analyzer.lines",
               "analyzer.declarations", "analyzer.artifact", "analyzer.versions", "analyzer.embedded",
               "analyzer.comments",
               "lab", "lab.mutate", "lab.records"}
"""The modules of ``analyzer`` and ``lab`` that import nothing but the standard library (and
``PURE_PYTHON_PARSERS``): all that ``miners`` and ``bot`` may use of them."""
PURE_PYTHON_PARSERS = {"unidiff"}
SERVICES = {"github", "git", "celery", "jinja2", "click", "flask", "redis", "sqlalchemy"}
FORBIDDEN = {"analyzer": {"lab", "bot", "miners", "workers", "ptbot"} | SERVICES,
             "lab": {"bot", "miners", "workers", "ptbot"} | SERVICES}
"""What the runtime and the lab never import (top-level names)."""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _is_product(module: str, packages: tuple[str, ...] = ("analyzer", "lab")) -> bool:
    return module.split(".")[0] in packages


@pytest.mark.parametrize("path", _modules("analyzer") + _modules("lab"),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_runtime_and_lab_import_nothing_above_them(path: Path) -> None:
    """The runtime imports no lab module (scoring loads no training code); neither imports a
    package above it or a service client."""
    package = path.relative_to(ROOT).parts[0]
    bad = {m for m in _imports(path) if m.split(".")[0] in FORBIDDEN[package]}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("analyzer") + _modules("lab"),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_stdlib_only_modules_stay_stdlib_only(path: Path) -> None:
    name = _module_name(path)
    if name not in STDLIB_ONLY:
        pytest.skip("may use torch")
    allowed = sys.stdlib_module_names | PURE_PYTHON_PARSERS
    third_party = {m for m in _imports(path) if m.split(".")[0] not in allowed and not _is_product(m)}
    assert not third_party, (f"{name} must stay stdlib-only (or use {sorted(PURE_PYTHON_PARSERS)}) "
                             f"but imports {sorted(third_party)}")
    heavy = {m for m in _imports(path) if _is_product(m) and m not in STDLIB_ONLY}
    assert not heavy, f"{name} imports torch-side modules {sorted(heavy)}"


@pytest.mark.parametrize("path", _modules("miners") + _modules("bot"),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_miners_and_bot_use_only_stdlib_modules_below_them(path: Path) -> None:
    bad = {m for m in _imports(path)
           if (_is_product(m) and m not in STDLIB_ONLY)
           or m.split(".")[0] in ("torch", "transformers", "workers", "ptbot")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_webhook_process_never_imports_torch_or_the_tasks() -> None:
    """``ptbot serve`` loads the webhook and the task producer; the tasks (PyGithub, the
    scorer) load only in workers."""
    code = ("import sys, bot.webhook, bot.review, bot.report, bot.render, bot.config, "
            "analyzer.diff, analyzer.types, workers.producer; "
            "assert 'torch' not in sys.modules, 'torch was imported'; "
            "assert 'workers.tasks' not in sys.modules, 'workers.tasks was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_bucket_modules() -> None:
    buckets = [p for p in ROOT.glob("*/*.py") if p.stem in ("utils", "helpers", "common", "misc")]
    assert not buckets, f"modules without a name for what they own: {buckets}"


def test_scoring_never_imports_the_lab() -> None:
    """Training, evaluation and ``ptbot adapt`` are the lab's: loading the scorer, a review or the
    worker's tasks must not pull any of it (or the miners) in."""
    code = ("import sys, analyzer.score, bot.review, bot.pr_review, bot.action, workers.tasks; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'lab' "
            "or m in ('workers.adapt', 'miners.mine')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- import cycles -----------------------------------------------------------------------------

PRODUCT_PACKAGES = ("analyzer", "lab", "miners", "bot", "workers", "templates", "ptbot")

# The layers, lowest first: a package imports only packages in lower layers.
LAYERS = (("analyzer", "templates"), ("lab",), ("miners", "bot"), ("workers",), ("ptbot",))

# Imports that close a cycle today, each as (importing module, imported module). The tests below
# fail on a cycle not listed here and on an entry that no longer closes one, so the list only
# ever shrinks; it is empty, and a new cycle is to be removed, not listed.
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the product modules it imports.

    Every import statement counts wherever it stands: at module level, inside a function, under
    ``if TYPE_CHECKING``. A deferred import hides a cycle from the interpreter, not from a reader,
    and is the usual way one creeps in. ``from pkg import name`` points at ``pkg.name`` when that
    is a module, else at ``pkg``; importing ``pkg.mod`` also points at ``pkg`` when the
    ``__init__`` of ``pkg``, which runs first, imports anything itself.
    """
    paths = {_module_name(p): p for pkg in PRODUCT_PACKAGES for p in _modules(pkg)}

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in paths:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets |= {resolve(f"{base}.{a.name}") for a in node.names}
        graph[name] = {t for t in targets if t is not None and t != name}
    # Importing pkg.mod runs pkg/__init__ first: that matters only for an __init__ that imports.
    for name, targets in graph.items():
        parents = {t.rsplit(".", k)[0] for t in targets for k in range(1, t.count(".") + 1)}
        targets |= {p for p in parents if graph.get(p) and p != name}
    return graph


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {p: set() for p in PRODUCT_PACKAGES}
    for name, targets in graph.items():
        packages[name.split(".")[0]] |= {t.split(".")[0] for t in targets} - {name.split(".")[0]}
    return packages


def _path(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A shortest import chain from ``start`` to ``goal`` (breadth first), or None."""
    came_from: dict[str, str | None] = {start: None}
    todo = deque([start])
    while todo:
        node = todo.popleft()
        for nxt in sorted(graph.get(node, ())):
            if nxt == goal:
                chain = [goal, node]
                while (prev := came_from[chain[-1]]) is not None:
                    chain.append(prev)
                return chain[::-1]
            if nxt not in came_from:
                came_from[nxt] = node
                todo.append(nxt)
    return None


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """One cycle through each edge that closes one, as ``a -> b -> a``, without repeats."""
    found: set[frozenset[str]] = set()
    out: list[str] = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            back = _path(graph, b, a)
            if back is not None and frozenset(back) not in found:
                found.add(frozenset(back))
                out.append(" -> ".join([a, *back]))
    return out


def _without_known(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {a: {b for b in targets if (a, b) not in KNOWN_CYCLE_EDGES}
            for a, targets in graph.items()}


def test_no_import_cycle_between_modules() -> None:
    cycles = _cycles(_without_known(_import_graph()))
    assert not cycles, "import cycles between modules:\n" + "\n".join(cycles)


def test_no_import_cycle_between_packages() -> None:
    cycles = _cycles(_package_graph(_without_known(_import_graph())))
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)


def test_packages_import_only_lower_layers() -> None:
    layer = {p: i for i, names in enumerate(LAYERS) for p in names}
    assert sorted(layer) == sorted(PRODUCT_PACKAGES), "every product package has a layer"
    graph = _import_graph()
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                    if (pa := a.split(".")[0]) != (pb := b.split(".")[0]) and layer[pb] >= layer[pa])
    assert not upward, "imports that do not go down a layer:\n" + "\n".join(upward)


def test_no_product_package_imports_the_composition_root() -> None:
    graph = _import_graph()
    bad = sorted(f"{a} -> {b}" for a, targets in graph.items() if not a.startswith("ptbot")
                 for b in targets if b.split(".")[0] == "ptbot")
    assert not bad, "the composition root (ptbot/) is on top, but:\n" + "\n".join(bad)


@pytest.mark.parametrize("edge", sorted(KNOWN_CYCLE_EDGES), ids=" -> ".join)
def test_known_cycle_edges_still_close_a_cycle(edge: tuple[str, str]) -> None:
    a, b = edge
    graph = _import_graph()
    assert b in graph.get(a, set()), f"{a} no longer imports {b}: drop it from KNOWN_CYCLE_EDGES"
    packages = _package_graph(graph)
    closes = (_path(graph, b, a) is not None
              or (a.split(".")[0] != b.split(".")[0]
                  and _path(packages, b.split(".")[0], a.split(".")[0]) is not None))
    assert closes, f"{a} -> {b} no longer closes a cycle: drop it from KNOWN_CYCLE_EDGES"
