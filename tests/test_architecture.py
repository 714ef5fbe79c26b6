"""The layering rules of the brief, checked on the import graph and at run time.

- ``analyzer`` imports no other ptbot package and never github, git, celery, jinja2 or click;
- ``miners`` and ``bot`` (except the composition root ``bot/cli.py``) use only analyzer's
  stdlib-only modules, so the webhook process never imports torch;
- ``workers`` may import ``bot`` and ``analyzer`` but never ``bot.cli``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STDLIB_ONLY_ANALYZER = {"analyzer", "analyzer.types", "analyzer.languages", "analyzer.diff",
                        "analyzer.mutate", "analyzer.lines", "analyzer.records", "analyzer.declarations",
                        "analyzer.comments"}
FORBIDDEN_IN_ANALYZER = {"bot", "miners", "workers", "github", "git", "celery", "jinja2", "click",
                         "flask", "redis", "sqlalchemy"}


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


@pytest.mark.parametrize("path", _modules("analyzer"), ids=lambda p: p.name)
def test_analyzer_imports_nothing_above_it(path: Path) -> None:
    bad = {m for m in _imports(path) if m.split(".")[0] in FORBIDDEN_IN_ANALYZER}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("analyzer"), ids=lambda p: p.name)
def test_stdlib_only_analyzer_modules_stay_stdlib_only(path: Path) -> None:
    name = "analyzer." + path.stem if path.stem != "__init__" else "analyzer"
    if name not in STDLIB_ONLY_ANALYZER:
        pytest.skip("may use torch")
    third_party = {m for m in _imports(path)
                   if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith("analyzer")}
    assert not third_party, f"{name} must stay stdlib-only but imports {sorted(third_party)}"
    heavy = {m for m in _imports(path) if m.startswith("analyzer.") and m not in STDLIB_ONLY_ANALYZER}
    assert not heavy, f"{name} imports torch-side analyzer modules {sorted(heavy)}"


@pytest.mark.parametrize("path", _modules("miners") + [p for p in _modules("bot") if p.name != "cli.py"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_miners_and_bot_use_only_stdlib_analyzer(path: Path) -> None:
    bad = {m for m in _imports(path)
           if (m.startswith("analyzer") and m not in STDLIB_ONLY_ANALYZER)
           or m.split(".")[0] in ("torch", "transformers", "workers")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("workers"), ids=lambda p: p.name)
def test_workers_never_import_the_cli(path: Path) -> None:
    assert "bot.cli" not in _imports(path)


def test_webhook_process_never_imports_torch() -> None:
    code = ("import sys, bot.webhook, bot.review, bot.report, bot.render, bot.config, "
            "analyzer.diff, analyzer.types; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_no_bucket_modules() -> None:
    buckets = [p for p in ROOT.glob("*/*.py") if p.stem in ("utils", "helpers", "common", "misc")]
    assert not buckets, f"modules without a name for what they own: {buckets}"
