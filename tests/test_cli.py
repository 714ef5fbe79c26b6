"""``ptbot score / review / pretrain / bind`` through click's CliRunner, plus one real run of the
installed ``ptbot`` console script.

Models:
- the tiny random supervisor's artifact (conftest ``tiny_artifact_dir``) for formats and bad
  input: fast, and the code paths are the same;
- the real SmolLM2 for ``review`` end to end: the packaged default model when its manifest exists,
  and in any case a small SmolLM2 artifact built here with ``ptbot pretrain`` + ``ptbot bind``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.artifact import default_model_dir, read_manifest, write_manifest
from conftest import TINY_CODE, tiny_records
from gitrepo import commit, git, write
from ptbot.cli import cli

PY_V1 = '''def mean(xs):
    total = 0
    for x in xs:
        total += x
    return total / len(xs)
'''
PY_V2 = '''def mean(xs):
    if not xs:
        return 0.0
    total = 0
    for x in xs:
        total += x
    return total / (len(xs) - 1)


def median(xs):
    ys = sorted(xs)
    return ys[len(ys) // 2]
'''
JS = '''function clamp(x, lo, hi) {
  if (x < lo) return lo;
  if (x > hi) return lo;
  return x;
}
'''


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ptbot_cache_dir: Path) -> None:
    """Keep the machine's git config and ptbot settings out; share the session's model cache."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("GIT_DIR", "GIT_WORK_TREE", "PTBOT_MODEL", "PTBOT_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PTBOT_CACHE_DIR", str(ptbot_cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def make_repo(root: Path) -> Path:
    """A repository whose working tree holds every kind of change ptbot must handle."""
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root, "src/stats.py", PY_V1)
    write(root, "old.py", "x = 1\ny = 2\n")
    write(root, "keep/name.py", "def f():\n    return 1\n")
    write(root, "notes.txt", "hello\n")
    commit(root, "base")
    write(root, "src/stats.py", PY_V2)                     # modified: lines added and changed
    write(root, "web/clamp.js", JS)                        # new file, another language
    write(root, "img/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    write(root, "latin1.py", "s = 'caf\xe9'\nprint(s)\n".encode("latin-1"))
    write(root, "big.py", "x = 1\n" * 200_000)             # 1.2 MB: over the 1 MB limit
    write(root, "data.xyz", "some = thing\nelse = other\n")  # unknown language
    write(root, "blank.py", "\n\n}\n")                     # only punctuation / blank lines
    (root / "old.py").unlink()                             # deletion only
    (root / "keep" / "name.py").rename(root / "keep" / "renamed.py")  # rename only
    git(root, "add", "-A")                                 # staged, so git sees the rename
    return root


def run(*args: str, input: str | bytes | None = None):
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=True)
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    # A command that failed exits through SystemExit with a message, never by an exception.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def check_json_report(doc: dict) -> None:
    assert set(doc) >= {"model", "lines", "skipped"}
    assert set(doc["model"]) >= {"name", "supervisor", "layer"}
    ranks = [ln["rank"] for ln in doc["lines"]]
    assert ranks == list(range(1, len(ranks) + 1))
    for ln in doc["lines"]:
        assert set(ln) == {"path", "line", "rank", "probability", "score", "text", "features"}
        assert 0.0 <= ln["probability"] <= 1.0 and isinstance(ln["score"], float)
        for f in ln["features"]:
            assert {"latent", "activation"} <= set(f)
    probs = [ln["probability"] for ln in doc["lines"]]
    assert probs == sorted(probs, reverse=True)
    for s in doc["skipped"]:
        assert set(s) == {"path", "reason"} and s["reason"]


EXPECTED_SKIPS = {
    "img/logo.png": "binary",
    "latin1.py": "UTF-8",
    "big.py": "too large",
    "data.xyz": "unknown language",
    "blank.py": "blank or punctuation",
    "old.py": "deleted",
    "keep/renamed.py": "rename only",
}


def check_skips(doc: dict) -> None:
    reasons = {s["path"]: s["reason"] for s in doc["skipped"]}
    for path, words in EXPECTED_SKIPS.items():
        assert path in reasons, (path, reasons)
        assert words.lower() in reasons[path].lower(), (path, reasons[path])


# ------------------------------------------------------------------------------ real SmolLM2


@pytest.fixture(scope="module")
def smollm2_model_dir(smollm2_supervisor, tmp_path_factory) -> Path:
    """A small SmolLM2 artifact made with the real CLI commands (pretrain + bind)."""
    tmp = tmp_path_factory.mktemp("smollm2-model")
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in tiny_records(16)))
    out = tmp / "model"
    env = {"PTBOT_CACHE_DIR": str(smollm2_supervisor.cfg.cache_dir), "HF_HUB_OFFLINE": "1"}
    r = CliRunner(env=env).invoke(cli, ["pretrain", str(data), "--out", str(out), "--supervisor", "smollm2",
                                        "--latents", "256",
                                        "--k", "16", "--epochs", "2", "--mutations", "1"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    r = CliRunner(env=env).invoke(cli, ["bind", str(data), "--model", str(out), "--epochs", "5",
                                        "--dev-fraction", "0.3"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out


def _review_json(repo: Path, model: Path | None) -> dict:
    args = ["review", "--repo", str(repo), "--format", "json", "--top", "50"]
    if model is not None:
        args += ["--model", str(model)]
    r = run(*args)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    check_json_report(doc)
    check_skips(doc)
    return doc


@pytest.mark.slow
def test_review_end_to_end_with_real_smollm2(tmp_path, smollm2_model_dir):
    repo = make_repo(tmp_path / "repo")
    doc = _review_json(repo, smollm2_model_dir)
    assert doc["model"]["supervisor"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert doc["model"]["layer"] == 8
    got = {(ln["path"], ln["line"]) for ln in doc["lines"]}
    # only added/changed scorable lines of the two scorable files are reported
    assert got == {("src/stats.py", n) for n in (2, 3, 7, 10, 11, 12)} | \
        {("web/clamp.js", n) for n in (1, 2, 3, 4)}
    texts = {(ln["path"], ln["line"]): ln["text"] for ln in doc["lines"]}
    assert texts[("src/stats.py", 7)] == "    return total / (len(xs) - 1)"


@pytest.mark.slow
def test_review_with_the_packaged_default_model(tmp_path, ptbot_cache_dir):
    """The shipped default: Qwen2.5-Coder-0.5B from its pinned packages, offline, read at layer 6."""
    if not (default_model_dir() / "manifest.json").exists():
        pytest.skip(f"the default model is not trained yet ({default_model_dir()}/manifest.json missing)")
    manifest = read_manifest(default_model_dir())
    repo = make_repo(tmp_path / "repo")
    doc = _review_json(repo, None)
    assert doc["lines"] and doc["model"]["layer"] == manifest["supervisor"]["layer"]
    assert doc["model"]["supervisor"] == manifest["supervisor"]["source"] == "Qwen/Qwen2.5-Coder-0.5B-Instruct"


@pytest.mark.slow
def test_installed_console_script_runs_review(tmp_path, smollm2_model_dir, ptbot_cache_dir):
    """One real process: the `ptbot` entry point installed next to this Python."""
    exe = Path(sys.executable).with_name("ptbot")
    if not exe.exists():
        exe = shutil.which("ptbot")
        assert exe, "the ptbot console script is not installed (pip install -e .)"
    repo = make_repo(tmp_path / "repo")
    env = {**os.environ, "PTBOT_CACHE_DIR": str(ptbot_cache_dir), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([str(exe), "review", "--repo", str(repo), "--model", str(smollm2_model_dir),
                        "--format", "json", "--top", "3"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    doc = json.loads(p.stdout)
    check_json_report(doc)
    assert len(doc["lines"]) == 3


# ----------------------------------------------------------------------- formats (tiny model)


def test_review_json_on_tiny_model(tmp_path, tiny_artifact_dir):
    doc = _review_json(make_repo(tmp_path / "repo"), tiny_artifact_dir)
    assert {ln["path"] for ln in doc["lines"]} == {"src/stats.py", "web/clamp.js"}
    assert len(doc["lines"]) == 10


def test_review_sarif_validates(tmp_path, tiny_artifact_dir, sarif_validator):
    repo = make_repo(tmp_path / "repo")
    r = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--format", "sarif")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    errors = sorted(sarif_validator.iter_errors(doc), key=str)
    assert not errors, errors[:3]
    results = doc["runs"][0]["results"]
    assert len(results) == 10
    for res in results:
        assert res["ruleId"] and res["level"] in ("error", "warning", "note", "none")
        assert res["partialFingerprints"]


def test_review_markdown_html_text_and_output_file(tmp_path, tiny_artifact_dir):
    repo = make_repo(tmp_path / "repo")
    base = ["review", "--repo", str(repo), "--model", str(tiny_artifact_dir)]
    md = run(*base, "--format", "markdown")
    assert md.exit_code == 0 and "stats.py" in md.stdout and "%" in md.stdout
    html = run(*base, "--format", "html", "--output", str(tmp_path / "r.html"))
    assert html.exit_code == 0 and html.stdout == ""
    page = (tmp_path / "r.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "clamp.js" in page
    assert "<script src=" not in page and "<link " not in page  # self-contained
    text = run(*base, "--top", "2")
    assert text.exit_code == 0
    assert "rank" in text.stdout and "Skipped" in text.stdout and "rename only" in text.stdout
    assert "loading model" in text.stderr and "loading model" not in text.stdout


COMMENTED_PY = '''"""Stock keeping."""


def restock(items, n):
    """Add n to every item.

    Returns the items.
    """
    # every item, not only the first
    for item in items:
        item.count += n  # in place
    return items
'''
COMMENTED_JS = '''/**
 * Clamp x.
 */
function clamp(x, lo, hi) {
  // below the range
  return Math.max(lo, Math.min(x, hi)); /* inclusive */
}
'''


def test_review_scores_no_comment_line_and_counts_them(tmp_path, tiny_artifact_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, "README.md", "stock\n")
    commit(repo, "base")
    write(repo, "stock.py", COMMENTED_PY)
    write(repo, "clamp.js", COMMENTED_JS)
    git(repo, "add", "-A")
    base = ["review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--top", "50"]
    r = run(*base, "--format", "json")
    assert r.exit_code == 0, r.stderr
    scored = {(ln["path"], ln["line"]) for ln in json.loads(r.stdout)["lines"]}
    assert scored == {("stock.py", 4), ("stock.py", 10), ("stock.py", 11), ("stock.py", 12),
                      ("clamp.js", 4), ("clamp.js", 6)}
    r = run(*base)
    assert r.exit_code == 0, r.stderr
    # 19 added lines: 6 scored, 9 comment/docstring lines, 3 blank, 1 "}"
    assert ("Scored 6 of 19 changed lines; 9 comment lines, 3 blank lines, 1 punctuation-only line "
            "not scored") in r.stdout


def test_review_top_and_min_probability(tmp_path, tiny_artifact_dir):
    repo = make_repo(tmp_path / "repo")
    r = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--format", "json",
            "--top", "3")
    assert len(json.loads(r.stdout)["lines"]) == 3
    r = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--format", "json",
            "--min-probability", "1")
    assert r.exit_code == 0 and json.loads(r.stdout)["lines"] == []


def test_review_base_head_range_and_diff_file(tmp_path, tiny_artifact_dir):
    repo = make_repo(tmp_path / "repo")
    git(repo, "reset", "-q", "--hard")                 # drop the working-tree changes
    write(repo, "src/stats.py", PY_V2)
    head = commit(repo, "v2")
    r = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--format", "json",
            "--base", "HEAD~1", "--head", head)
    assert r.exit_code == 0, r.stderr
    lines = {(ln["path"], ln["line"]) for ln in json.loads(r.stdout)["lines"]}
    assert lines == {("src/stats.py", n) for n in (2, 3, 7, 10, 11, 12)}
    diff = git(repo, "diff", "HEAD~1", "HEAD") + "\n"
    r2 = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--format", "json",
             "--diff", "-", input=diff)
    assert r2.exit_code == 0, r2.stderr
    assert {(ln["path"], ln["line"]) for ln in json.loads(r2.stdout)["lines"]} == lines


# ------------------------------------------------------------------------------ bad input


def test_empty_diff_is_not_a_failure(tmp_path, tiny_artifact_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo, "a.py", PY_V1)
    commit(repo)
    r = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--format", "json")
    assert r.exit_code == 0
    assert "nothing to review: the diff is empty" in r.stderr
    assert json.loads(r.stdout)["lines"] == [] and json.loads(r.stdout)["skipped"] == []
    r = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir))
    assert r.exit_code == 0 and "No line was scored." in r.stdout
    r = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--diff", "-", input="")
    assert r.exit_code == 0 and "diff is empty" in r.stderr


def test_deletion_only_and_rename_only(tmp_path, tiny_artifact_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo, "a.py", PY_V1)
    write(repo, "b.py", "def g():\n    return 2\n")
    commit(repo)
    (repo / "a.py").unlink()
    (repo / "b.py").rename(repo / "c.py")
    git(repo, "add", "-A")
    r = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--format", "json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["lines"] == []
    reasons = {s["path"]: s["reason"] for s in doc["skipped"]}
    assert "deleted" in reasons["a.py"] and reasons["c.py"] == "rename only"


@pytest.mark.parametrize("case", ["not_a_repo", "no_such_dir", "bad_base", "bad_head", "diff_and_base",
                                  "missing_diff_file"])
def test_review_failures_exit_non_zero_with_a_message(tmp_path, tiny_artifact_dir, case):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo, "a.py", PY_V1)
    commit(repo)
    plain = tmp_path / "plain"
    plain.mkdir()
    args, expect = {
        "not_a_repo": (["--repo", str(plain)], "not a git repository"),
        "no_such_dir": (["--repo", str(tmp_path / "nowhere")], "not a git repository"),
        "bad_base": (["--repo", str(repo), "--base", "no-such-rev"], "unknown revision 'no-such-rev'"),
        "bad_head": (["--repo", str(repo), "--base", "HEAD", "--head", "deadbeef1234"], "unknown revision"),
        "diff_and_base": (["--repo", str(repo), "--diff", "-", "--base", "HEAD"], "cannot be combined"),
        "missing_diff_file": (["--repo", str(repo), "--diff", str(tmp_path / "x.diff")], "no such diff file"),
    }[case]
    r = run("review", "--model", str(tiny_artifact_dir), *args)
    assert r.exit_code != 0
    assert expect in r.stderr, r.stderr
    assert r.stdout == ""


def test_non_utf8_diff_file_is_skipped_not_fatal(tmp_path, tiny_artifact_dir):
    repo = tmp_path / "repo"
    repo.mkdir()
    write(repo, "a.py", "s = 'caf\xe9'\n".encode("latin-1"))
    diff = b"--- /dev/null\n+++ b/a.py\n@@ -0,0 +1 @@\n+s = 'caf\xe9'\n"
    (tmp_path / "x.diff").write_bytes(diff)
    r = run("review", "--repo", str(repo), "--model", str(tiny_artifact_dir), "--format", "json",
            "--diff", str(tmp_path / "x.diff"))
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["lines"] == [] and "UTF-8" in doc["skipped"][0]["reason"]


@pytest.mark.parametrize("case", ["missing_dir", "no_manifest", "other_supervisor", "not_trained"])
def test_bad_model_directories(tmp_path, tiny_artifact_dir, tiny_model_dir, case):
    repo = make_repo(tmp_path / "repo")
    model = tmp_path / "model"
    if case == "missing_dir":
        expect = "model directory not found"
    elif case == "no_manifest":
        model.mkdir()
        expect = "has no manifest.json"
    else:
        shutil.copytree(tiny_artifact_dir, model)
        m = {k: v for k, v in read_manifest(model).items() if k not in ("format", "format_version")}
        if case == "other_supervisor":
            m["supervisor"]["sha256"] = "0" * 64
            expect = "was built for supervisor"
        else:
            m["calibration"] = None
            expect = "not fully trained"
        write_manifest(model, m)
    r = run("review", "--repo", str(repo), "--model", str(model), "--format", "json")
    assert r.exit_code == 1
    assert expect in r.stderr and r.stdout == ""
    assert r.stderr.count("\n") <= 3  # a message, not a dump


# ------------------------------------------------------------------------------------ score


def test_score_file_lines_and_formats(tmp_path, tiny_artifact_dir):
    f = tmp_path / "stack.py"
    f.write_text(TINY_CODE)
    r = run("score", str(f), "--model", str(tiny_artifact_dir), "--format", "json", "--lines", "1-3,12")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    check_json_report(doc)
    assert {ln["line"] for ln in doc["lines"]} == {1, 3, 12}  # line 2 is a docstring
    r = run("score", str(f), "--model", str(tiny_artifact_dir), "--top", "2")
    assert r.exit_code == 0 and "stack.py:" in r.stdout
    r = run("score", "-", "--model", str(tiny_artifact_dir), "--language", "python", "--format", "json",
            input=TINY_CODE)
    assert r.exit_code == 0 and json.loads(r.stdout)["lines"][0]["path"] == "<stdin>"


def test_score_bad_inputs(tmp_path, tiny_artifact_dir):
    m = ["--model", str(tiny_artifact_dir)]
    r = run("score", str(tmp_path / "nope.py"), *m)
    assert r.exit_code != 0 and "no such file" in r.stderr
    ok = tmp_path / "ok.py"
    ok.write_text(TINY_CODE)
    r = run("score", str(ok), *m, "--lines", "x")
    assert r.exit_code == 2 and "is not a line number or range like 7-9" in r.stderr
    binf = tmp_path / "b.py"
    binf.write_bytes(b"\x00\x01\xff\xfe")
    r = run("score", str(binf), *m, "--format", "json")
    assert r.exit_code == 0 and "UTF-8" in json.loads(r.stdout)["skipped"][0]["reason"]
    blank = tmp_path / "blank.py"
    blank.write_text("\n}\n")
    r = run("score", str(blank), *m, "--format", "json")
    assert r.exit_code == 0 and "no scorable lines" in json.loads(r.stdout)["skipped"][0]["reason"]
    odd = tmp_path / "thing.unknownext"
    odd.write_text("a = b\n")
    r = run("score", str(odd), *m)
    assert r.exit_code == 0 and "unknown language" in r.stderr
    r = run("score", str(odd), "--model", str(tmp_path / "missing"))
    assert r.exit_code == 1 and "model directory not found" in r.stderr


# --------------------------------------------------------------------- pretrain + bind (tiny)


def test_pretrain_bind_review_via_cli(tmp_path, tiny_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in tiny_records(24)))
    out = tmp_path / "model"
    r = run("pretrain", str(data), "--out", str(out), "--supervisor", str(tiny_model_dir),
            "--latents", "64", "--k", "8", "--epochs", "2", "--mutations", "1")
    assert r.exit_code == 0, r.stderr
    assert "SAE trained on" in r.stderr and (out / "sae.safetensors").exists()
    r = run("bind", str(data), "--model", str(out), "--epochs", "3", "--dev-fraction", "0.3")
    assert r.exit_code == 0, r.stderr
    assert "dev split:" in r.stderr
    m = read_manifest(out)
    assert m["sae"]["n_latents"] == 64 and m["ranker"]["epochs"] == 3 and m["calibration"]
    assert m["ranker"]["length_prior"] == 3.0 and m["ranker"]["members"] == 5  # the recipe; scoring goes through it
    assert m["calibration"]["method"] == "centred"  # the default calibration map
    # the default is cross-source; these records have one source, so bind fell back to the dev split
    assert m["ranker_training"]["calibrated_on"] == "dev"
    repo = make_repo(tmp_path / "repo")
    r = run("review", "--repo", str(repo), "--model", str(out), "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["lines"]
    r = run("bind", str(data), "--model", str(out), "--epochs", "3", "--dev-fraction", "0.3", "--length-prior", "0",
            "--members", "2", "--version", "9.9")
    assert r.exit_code == 0, r.stderr
    m = read_manifest(out)
    assert m["ranker"]["length_prior"] == 0.0 and m["ranker"]["members"] == 2 and m["version"] == "9.9"
    assert m["calibration"]["method"] == "centred"
    # the switches of losing experiments are gone: the recipe is the only way to bind
    for gone in (("--calibration", "platt"), ("--calibrate-on", "dev"), ("--inputs", "sae"), ("--no-declarations",),
                 ("--prior-skips-declarations",), ("--temperature", "2"), ("--keep-ranker",),
                 ("--ranker-sources", "mined")):
        r = run("bind", str(data), "--model", str(out), *gone)
        assert r.exit_code == 2 and "No such option" in r.stderr, gone


def test_bind_help_shows_the_recipe_defaults():
    """The defaults `bind --help` shows are RankerConfig's, the shipped recipe's (spelled out in the
    CLI so that --help does not import torch)."""
    from analyzer.ranker import RankerConfig
    from lab.recipe import Recipe
    from ptbot.cli import bind

    defaults = {p.name: p.default for p in bind.params}
    ranker = RankerConfig(d_in=1)
    assert defaults["length_prior"] == ranker.length_prior == Recipe().length_prior == 3.0
    assert defaults["members"] == ranker.members == Recipe().members == 5
    r = run("bind", "--help")
    assert r.exit_code == 0 and re.search(r"\[default:\s+3\.0;", r.stdout) and re.search(r"\[default:\s+5;", r.stdout)
    assert "shipped recipe" in " ".join(r.stdout.split())


def test_pretrain_and_bind_bad_inputs(tmp_path, tiny_model_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    r = run("pretrain", str(bad), "--out", str(tmp_path / "m"), "--supervisor", str(tiny_model_dir))
    assert r.exit_code == 1 and "not a record in the shared schema" in r.stderr
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in tiny_records(4)))
    r = run("pretrain", str(good), "--out", str(tmp_path / "m"), "--supervisor", str(tmp_path / "none.gguf"))
    assert r.exit_code == 1 and "GGUF file not found" in r.stderr
    r = run("pretrain", str(good), "--out", str(tmp_path / "m"), "--supervisor", str(tiny_model_dir),
            "--languages", "cobol")
    assert r.exit_code == 1 and "no records in" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run("bind", str(good), "--model", str(tmp_path / "empty"))
    assert r.exit_code == 1 and "has no manifest.json" in r.stderr
    r = run("bind", str(tmp_path / "missing.jsonl"), "--model", str(tmp_path / "empty"))
    assert r.exit_code == 2 and "does not exist" in r.stderr
