"""The real-fix corpus rebuilt from a card, on repositories made in the test: reserved projects are
refused, snippets shared across repositories are dropped before splitting, splits follow the card,
and records of test repositories can never train, select or calibrate a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer.types import Record
from lab.records import refuse_test_repositories
from miners.corpus import Card, CardRepo, CorpusError, Selection, read_reserved, rejection, reserved_hits
from ptbot.cli import cli
from tests.gitrepo import commit, git, write

GOOD = "def area(w, h):\n    total = w * h\n    return total\n"


def _history(root: Path, name: str) -> str:
    """A small history with two fix commits (one in a test file) and a version bump."""
    root.mkdir(parents=True)
    git(root, "init", "-q")
    body = "".join(f"def f{i}_{name.replace('-', '_')}(x):\n    y = x + {i}\n    return y\n\n" for i in range(3))
    good = GOOD.replace("area", f"area_{name.replace('-', '_')}")
    write(root, "src/calc.py", body + good.replace("w * h", "w + h"))
    write(root, "tests/test_calc.py", "def test_a():\n    assert 1 == 2\n")
    commit(root, "initial import")
    write(root, "src/calc.py", body + good)
    commit(root, "Fix area of a rectangle")
    write(root, "tests/test_calc.py", "def test_a():\n    assert 1 == 1\n")
    commit(root, "fix the test")
    write(root, "src/calc.py", body.replace("+ 0", "+ 9") + good)
    commit(root, "Bump version to 1.2 (fix)")
    return git(root, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("repos")
    _history(base / "acme+alpha", "alpha")
    _history(base / "acme+beta", "beta")
    _history(base / "acme+gamma", "gamma")
    # delta is a fork of alpha: its fix is the very snippet alpha's is.
    shutil.copytree(base / "acme+alpha", base / "acme+delta")
    return base


@pytest.fixture()
def reserved(tmp_path) -> Path:
    write(tmp_path, "reserved-projects.txt", "# comment\npython  flask  pallets/flask\njavascript  ms  vercel/ms\n")
    write(tmp_path, "reserved-debian-packages.txt", "# reserved\ncurl openssl libxml2\n")
    return tmp_path


def _card(repos: Path, splits: dict[str, str]) -> Card:
    return Card("tiny", tuple(
        CardRepo(f"acme/{n}", f"https://example.invalid/acme/{n}", git(repos / f"acme+{n}", "rev-parse", "HEAD"),
                 "MIT", "Python", split) for n, split in splits.items()),
        {"mutations": 0}, Selection(per_repo={"train": 10, "validation": 10, "test": 10}))


def _write_card(card: Card, path: Path) -> Path:
    path.write_text(json.dumps(card.to_dict()))
    return path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_card_rebuilds_the_same_corpus_by_repository(repos, reserved, tmp_path):
    card = _card(repos, {"alpha": "train", "beta": "validation", "gamma": "test"})
    path = _write_card(card, tmp_path / "card.json")
    outs = []
    for run in ("a", "b"):
        r = CliRunner().invoke(cli, ["corpus", "build", str(path), "--out", str(tmp_path / run),
                                     "--repos", str(repos), "--reserved", str(reserved)])
        assert r.exit_code == 0, r.output
        outs.append({s: _jsonl(tmp_path / run / f"{s}.jsonl") for s in ("train", "validation", "test")})
    assert outs[0] == outs[1]  # rebuilt from the card alone, byte for byte the same records
    got = outs[0]
    for split, name in (("train", "alpha"), ("validation", "beta"), ("test", "gamma")):
        assert got[split] and {r["meta"]["repo"] for r in got[split]} == {f"acme/{name}"}
        assert {r["meta"]["split"] for r in got[split]} == {split}
    # Only the real fix of src/calc.py: not the test-file fix, not the version bump.
    assert all(r["meta"]["path"] == "src/calc.py" and "Fix area" in r["meta"]["message"]
               for rs in got.values() for r in rs)
    summary = json.loads((tmp_path / "a" / "corpus.json").read_text())
    assert summary["counts"]["test"]["python"]["records"] == len(got["test"])
    assert summary["card"]["repositories"][0]["commit"] == card.repositories[0].commit


def test_a_snippet_in_two_repositories_is_dropped_from_both(repos, reserved, tmp_path):
    card = _card(repos, {"alpha": "train", "delta": "test", "gamma": "validation"})
    from miners.corpus import build

    summary = build(card, tmp_path, reserved_dir=reserved, repos_dir=repos)
    assert not _jsonl(tmp_path / "train.jsonl") and not _jsonl(tmp_path / "test.jsonl")
    assert _jsonl(tmp_path / "validation.jsonl")
    assert summary["rejected"]["same snippet in another repository"] >= 2


def test_reserved_projects_are_refused(repos, reserved, tmp_path):
    listed = read_reserved(reserved)
    for name in ("pallets/flask", "someone/flask", "curl/curl", "vercel/ms"):
        card = Card("x", (CardRepo(name, "u", "c", "MIT", "Python", "train"),), {}, Selection())
        assert reserved_hits(card, listed) == [name]
    ok = Card("x", (CardRepo("psf/black", "u", "c", "MIT", "Python", "train"),), {}, Selection())
    assert reserved_hits(ok, listed) == []
    bad = _card(repos, {"alpha": "train"})
    bad = Card("x", bad.repositories + (CardRepo("pallets/flask", "u", "c", "BSD-3-Clause", "Python", "test"),),
               bad.mine, bad.selection)
    r = CliRunner().invoke(cli, ["corpus", "build", str(_write_card(bad, tmp_path / "c.json")), "--out",
                                 str(tmp_path / "o"), "--repos", str(repos), "--reserved", str(reserved)])
    assert r.exit_code == 1 and "reserved for judging ptbot, never mined: pallets/flask" in r.output
    assert not (tmp_path / "o" / "mined").exists()  # refused before anything is mined


def test_bad_cards_are_refused_with_the_reason(tmp_path):
    p = tmp_path / "card.json"
    p.write_text(json.dumps({"name": "x", "repositories": [{"name": "a/b", "url": "u", "commit": "c", "licence": "MIT",
                                                            "family": "Python", "split": "holdout"}]}))
    with pytest.raises(CorpusError, match="split 'holdout'"):
        Card.load(p)
    p.write_text("{")
    with pytest.raises(CorpusError, match="not a corpus card"):
        Card.load(p)


@pytest.mark.parametrize("subject, path, why", [
    ("Fix off-by-one in range", "src/a.py", None),
    ("Revert \"Fix off-by-one\"", "src/a.py", "revert"),
    ("fix typo in docstring", "src/a.py", "typo"),
    ("Bump version, fix build", "src/a.py", "version bump"),
    ("Fix flaky test", "tests/test_a.py", "test, example"),
    ("Fix flaky test", "pkg/a_test.go", "test, example"),
    ("Add a new flag", "src/a.py", "no fix cue"),
])
def test_which_fixes_a_careful_dataset_keeps(subject, path, why):
    rec = {"task": "real-fix", "code": "a\nb\n", "buggy_lines": [1], "meta": {"message": subject, "path": path}}
    got = rejection(rec, Selection())
    assert (got is None) if why is None else (why in got)


def test_test_repository_records_never_train_select_or_calibrate(tmp_path, tiny_model_dir):
    from analyzer.supervisor import Supervisor, SupervisorConfig
    from lab.evaluate import EvalConfig, run_eval
    from lab.train import bind, pretrain

    tiny_supervisor = Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), device="cpu", layer=1))

    def rec(i: int, split: str) -> Record:
        return Record(f"mined/acme/x/python/real-fix/{i}", "mined", "python", "real-fix", GOOD, GOOD, (2,),
                      {"split": split, "repo": "acme/x"})

    train = [rec(i, "train") for i in range(4)] + [rec(9, "test")]
    with pytest.raises(ValueError, match="test repositories"):
        refuse_test_repositories(train)
    with pytest.raises(ValueError, match="test repositories"):
        pretrain(tiny_supervisor, train, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match="test repositories"):
        bind(tiny_supervisor, tmp_path, train, progress=False)
    with pytest.raises(ValueError, match="test repositories"):
        run_eval(train, {"t": [rec(20, "test")]}, EvalConfig(methods=("length",)))
    refuse_test_repositories([rec(1, "train"), rec(2, "validation")])  # validation may select and calibrate


def test_the_recipe_builds_a_model_from_the_card_that_scores(repos, reserved, tmp_path, tiny_model_dir):
    """`lab.recipe.build` on a corpus built from a card: stage 1 on the training split, stage 2 on
    it plus the shared Python sets; the manifest names the recipe, and the model scores code."""
    from analyzer.score import RiskScorer
    from analyzer.supervisor import Supervisor, SupervisorConfig
    from dataclasses import replace

    from analyzer.features import FeatureConfig
    from lab.recipe import Recipe, build
    from miners.corpus import build as build_corpus
    from tests.conftest import SAMPLE_RECORDS

    card = _card(repos, {"alpha": "train", "beta": "train", "gamma": "test"})
    build_corpus(card, tmp_path / "corpus", reserved_dir=reserved, repos_dir=repos)
    shutil.copy(SAMPLE_RECORDS, reserved / "humanevalpack-python.jsonl")
    recipe = Recipe(supervisor=str(tiny_model_dir), layer=2, latents=32, members=2,
                    extra_sets=("humanevalpack-python.jsonl",))
    sup = Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), layer=2, device="cpu",
                                           cache_dir=tmp_path / "cache"))
    manifest = build(recipe, sup, tmp_path / "corpus", reserved, tmp_path / "model", version="9.9.9",
                     progress=False)
    assert manifest["recipe"] == recipe.to_dict() and manifest["version"] == "9.9.9"
    assert manifest["ranker"]["members"] == 2 and manifest["ranker"]["length_prior"] == recipe.length_prior
    assert manifest["features"] == FeatureConfig().to_dict()
    assert manifest["ranker"]["d_in"] == FeatureConfig().n_inputs(sup.info.hidden_size)  # raw states
    # the test repository's records never reached it: 2 corpus training records + 64 benchmark ones
    assert manifest["ranker_training"]["train_records"] + manifest["ranker_training"]["dev_records"] == 66
    assert not (tmp_path / "model" / "checkpoints").exists()
    scorer = RiskScorer.load(tmp_path / "model", supervisor=SupervisorConfig(device="cpu", cache_dir=tmp_path / "c"))
    lines = scorer.score(GOOD, language="python")
    assert sorted(s.line for s in lines) == [1, 2, 3] and all(0 < s.probability < 1 for s in lines)
    sae = (tmp_path / "model" / "sae.safetensors").read_bytes()
    again = build(replace(recipe, members=1), sup, tmp_path / "corpus", reserved, tmp_path / "model",
                  version="9.9.10", progress=False, keep_sae=True)
    assert again["ranker"]["members"] == 1 and (tmp_path / "model" / "sae.safetensors").read_bytes() == sae
    with pytest.raises(ValueError, match="latents"):
        build(replace(recipe, latents=64), sup, tmp_path / "corpus", reserved, tmp_path / "model", version="0",
              progress=False, keep_sae=True)
    with pytest.raises(FileNotFoundError, match="quixbugs"):
        build(Recipe(supervisor=str(tiny_model_dir), layer=2), sup, tmp_path / "corpus", reserved,
              tmp_path / "other", version="0")


def test_more_train_grows_the_training_split_around_the_smaller_corpus(tmp_path, reserved):
    """``more_train`` adds records to training repositories only, keeping the smaller corpus whole."""
    from miners.corpus import build

    root = tmp_path / "repos" / "acme+many"
    root.mkdir(parents=True)
    git(root, "init", "-q")
    bodies = [f"def f{i}(x):\n    y = x + {i}\n    return y\n" for i in range(6)]
    for i, body in enumerate(bodies):
        write(root, f"src/m{i}.py", body.replace("x + ", "x - "))
    commit(root, "initial import")
    for i, body in enumerate(bodies):
        write(root, f"src/m{i}.py", body)
        commit(root, f"Fix sign in f{i}")
    repos = tmp_path / "repos"
    head = git(root, "rev-parse", "HEAD")

    def corpus(more: int, out: str) -> dict[str, list[dict]]:
        card = Card("many", (CardRepo("acme/many", "https://example.invalid/acme/many", head, "MIT", "Python",
                                      "train"),),
                    {"mutations": 0}, Selection(per_repo={"train": 2, "validation": 2, "test": 2}, more_train=more))
        build(card, tmp_path / out, reserved_dir=reserved, repos_dir=repos)
        return {s: _jsonl(tmp_path / out / f"{s}.jsonl") for s in ("train", "validation", "test")}

    small, grown = corpus(0, "small"), corpus(2, "grown")
    assert len(small["train"]) == 2 and len(grown["train"]) == 4
    assert {r["id"] for r in small["train"]} < {r["id"] for r in grown["train"]}
    assert all(r["meta"]["split"] == "train" for r in grown["train"])
    assert [r["id"] for r in grown["train"] if not r["meta"].get("more_train")] == [r["id"] for r in small["train"]]
    assert corpus(2, "again") == grown
