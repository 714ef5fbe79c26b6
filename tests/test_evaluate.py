"""``lab.evaluate``: the eval harness on a tiny random supervisor (no downloads).

What is proven here:
- test records never reach training: the ids every trainable run fitted and calibrated on are
  disjoint from the test ids, and poisoning the *test* labels leaves every score unchanged while
  poisoning the *training* labels changes them (so the check is not vacuous);
- the JSON has exactly the documented schema, with numbers;
- the feature caches make a second evaluation read nothing from the model;
- ``random`` equals the exact expectation, ``length`` ranks by token count;
- ``ptbot features`` statistics and latent labels.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analyzer import artifact  # noqa: E402
from analyzer.supervisor import Supervisor, SupervisorConfig  # noqa: E402
from analyzer.types import Record  # noqa: E402
from lab.evaluate import (EvalConfig, latent_associations, open_model, run_eval,  # noqa: E402
                          write_latent_labels)
from lab.metrics import expected_random_topk_hit_rate  # noqa: E402

PY_LINES = ["total = 0", "for i in range(n):", "    total += i * i", "if total > limit:",
            "    return None", "values = sorted(xs)", "count = len(values)", "    count -= 1",
            "result = total + count", "while n > 0:", "    n //= 2", "print(result)"]
JS_LINES = ["let total = 0;", "for (let i = 0; i < n; i++) {", "  total += i * i;", "}",
            "if (total > limit) {", "  return null;", "const values = xs.sort();", "return total + values.length;"]


def make_records(source: str, language: str, lines: list[str], n_problems: int, per_problem: int,
                 seed: int) -> list[Record]:
    """Small synthetic programs; the buggy line is usually the longest one, so methods can learn."""
    rng = random.Random(seed)
    out = []
    for p in range(n_problems):
        for v in range(per_problem):
            body = rng.sample(lines, k=min(len(lines), rng.randint(4, 7)))
            head = f"def task_{p}(xs, n, limit):" if language == "python" else f"function task{p}(xs, n, limit) {{"
            code_lines = [head]
            code_lines += ["    " + ln for ln in body]
            if language != "python":
                code_lines.append("}")
            longest = max(range(1, len(body) + 1), key=lambda i: len(body[i - 1]))
            bug = longest + 1 if rng.random() < 0.7 else rng.randint(2, len(body) + 1)
            code = "\n".join(code_lines) + "\n"
            out.append(Record(id=f"{source}/{language}/{p}-{v}", source=source, language=language, task="repair",
                              code=code, fixed=code.replace(code_lines[bug - 1], code_lines[bug - 1] + "  # fixed"),
                              buggy_lines=(bug,), meta={"slug": f"{source}-{language}-{p}",
                                                        "description": f"Task {p}: sum the squares."}))
    return out


@pytest.fixture(scope="module")
def data() -> dict[str, list[Record]]:
    return {"train": make_records("synth", "python", PY_LINES, 10, 2, 0),
            "test-js": make_records("synthtest", "javascript", JS_LINES, 4, 2, 1),
            "test-py": make_records("synthtest", "python", PY_LINES, 3, 2, 2)}


@pytest.fixture(scope="module")
def sup_cfg(tiny_model_dir, tmp_path_factory) -> SupervisorConfig:
    return SupervisorConfig(model=str(tiny_model_dir), device="cpu", cache_dir=tmp_path_factory.mktemp("supcache"))


@pytest.fixture(scope="module")
def model_dir(sup_cfg, data, tmp_path_factory) -> Path:
    """A tiny trained artifact: SAE (pretrain) + ranker and calibration (bind) on the training records."""
    from lab.train import bind, pretrain

    out = tmp_path_factory.mktemp("artifact") / "tiny"
    sup = Supervisor.load(sup_cfg)
    pretrain(sup, data["train"], out, sae_cfg={"n_latents": 32, "k": 4, "epochs": 2, "batch_size": 64},
             mutations=1, progress=False, holdout=None)
    bind(sup, out, data["train"], ranker_cfg={"epochs": 3, "hidden": 16}, progress=False)
    return out


FAST = dict(n_boot=20, ranker_epochs=3)


def _scores(report, method: str) -> list[list[float]]:
    run = next(r for r in report.runs if r.method == method)
    return [p.scores.tolist() for ds in sorted(run.predictions) for p in run.predictions[ds]]


def _poison(records: list[Record]) -> list[Record]:
    """Move every buggy label to another scorable-looking line (the first body line)."""
    return [replace(r, buggy_lines=(2,) if r.buggy_lines != (2,) else (3,)) for r in records]


def test_json_schema_and_methods(data, sup_cfg, model_dir, tmp_path):
    cfg = EvalConfig(**FAST)
    report = run_eval(data["train"], {"test-js": data["test-js"], "test-py": data["test-py"]}, cfg,
                      model_dir=model_dir, supervisor=sup_cfg, cache_root=tmp_path / "cache")
    doc = json.loads(json.dumps(report.to_json()))  # must survive a JSON round trip
    assert list(doc) == ["results"]
    assert set(doc["results"]) == {"test-js", "test-py"}
    for ds, methods in doc["results"].items():
        assert list(methods) == list(cfg.methods)
        for name, m in methods.items():
            for key in ("top1", "top3", "top5", "auroc", "brier", "bss", "ece"):
                assert isinstance(m[key], float), (ds, name, key, m[key])
            assert m["n_snippets"] == len(data[ds])
            assert len(m["topk_curve"]) == cfg.curve_k
            assert sum(m["reliability"]["count"]) == m["n_lines"]
            assert 0 <= m["top1"] <= m["top3"] <= m["top5"] <= 1
            assert m["n_fixed_snippets"] == len(data[ds])  # every fixed version is a clean snippet
            if name != "random":
                assert isinstance(m["snippet_auroc"], float)
    # random is the exact expectation, and predicts the training base rate
    run = next(r for r in report.runs if r.method == "random")
    assert set(run.predictions) == {"test-js", "test-py", "test-js#fixed", "test-py#fixed"}
    for ds, preds in run.predictions.items():
        assert all(np.allclose(p.probabilities, report.base_rate) for p in preds)
        if not ds.endswith("#fixed"):
            assert doc["results"][ds]["random"]["top1"] == pytest.approx(expected_random_topk_hit_rate(preds, 1))
            assert doc["results"][ds]["random"]["snippet_auroc"] == 0.5  # all snippets tie
            assert doc["results"][ds]["random"]["shuffle50"]["top1"] == pytest.approx(
                doc["results"][ds]["random"]["top1"], abs=0.15)
    # length ranks by token count
    run = next(r for r in report.runs if r.method == "length")
    p = run.predictions["test-py"][0]
    assert np.array_equal(p.scores, p.tokens.astype(float))


def test_test_records_never_reach_training(data, sup_cfg, model_dir, tmp_path):
    methods = ("pttrust", "probe", "lookback", "lookback_mlp", "uncertainty", "length")
    cfg = EvalConfig(methods=methods, seeds=2, **FAST)
    tests = {"test-js": data["test-js"]}
    cache = tmp_path / "cache"
    clean = run_eval(data["train"], tests, cfg, model_dir=model_dir, supervisor=sup_cfg, cache_root=cache)
    test_ids = {r.id for r in data["test-js"]}
    train_ids = {r.id for r in data["train"]}
    for run in clean.runs:
        assert not run.trained_on & test_ids and not run.calibrated_on & test_ids, run.method
        assert run.trained_on <= train_ids and run.calibrated_on <= train_ids
        if run.method in ("pttrust", "probe", "lookback", "lookback_mlp"):
            assert run.trained_on and run.calibrated_on and not run.trained_on & run.calibrated_on
    # Poisoned test labels: every method scores every test line exactly as before.
    poisoned = run_eval(data["train"], {"test-js": _poison(data["test-js"])}, cfg,
                        model_dir=model_dir, supervisor=sup_cfg, cache_root=cache)
    for m in methods:
        assert _scores(poisoned, m) == _scores(clean, m), m
    assert poisoned.results["test-js"]["length"]["top1"] != clean.results["test-js"]["length"]["top1"]
    # Poisoned training labels do change the learned scores: the check above is not vacuous.
    moved = run_eval(_poison(data["train"]), tests, replace(cfg, methods=("probe", "lookback")),
                     model_dir=model_dir, supervisor=sup_cfg, cache_root=cache)
    assert _scores(moved, "probe") != _scores(clean, "probe")
    assert _scores(moved, "lookback") != _scores(clean, "lookback")
    # seeds: mean and spread reported for trainable methods
    assert clean.results["test-js"]["probe"]["seeds"]["top1"]["n"] == 2


def test_cross_source_calibration_stays_on_training_records(data, sup_cfg, model_dir, tmp_path):
    # pttrust and probe calibrate as bind does: on each training source as scored by a ranker
    # trained without it, and never on test records.
    train = [replace(r, source="synth-a" if (i // 2) % 2 else "synth-b") for i, r in enumerate(data["train"])]
    assert len({(r.source, r.meta["slug"]) for r in train}) == len({r.meta["slug"] for r in train})  # by problem
    report = run_eval(train, {"test-js": data["test-js"]}, EvalConfig(methods=("pttrust", "probe"), **FAST),
                      model_dir=model_dir, supervisor=sup_cfg, cache_root=tmp_path / "cache")
    train_ids, test_ids = {r.id for r in train}, {r.id for r in data["test-js"]}
    for run in report.runs:
        assert run.calibrated_on == train_ids and not run.calibrated_on & test_ids, run.method
        assert run.trained_on < train_ids
    # training records of one source: the map is fitted on the dev split only
    assert len({r.source for r in data["train"]}) == 1
    dev_report = run_eval(data["train"], {"test-js": data["test-js"]}, EvalConfig(methods=("pttrust",), **FAST),
                          model_dir=model_dir, supervisor=sup_cfg, cache_root=tmp_path / "cache")
    (run,) = dev_report.runs
    assert run.calibrated_on and not run.calibrated_on & run.trained_on


def test_same_file_in_train_and_test_is_refused(data, sup_cfg, model_dir):
    with pytest.raises(ValueError, match="also training records"):
        run_eval(data["train"], {"train": data["train"][:3]}, EvalConfig(methods=("length",)),
                 model_dir=model_dir, supervisor=sup_cfg)


def test_without_train_uses_shipped_ranker(data, sup_cfg, model_dir):
    report = run_eval([], {"test-py": data["test-py"]}, EvalConfig(methods=("pttrust", "length", "random"), n_boot=0),
                      model_dir=model_dir, supervisor=sup_cfg)
    manifest = artifact.read_manifest(model_dir)
    assert report.base_rate == pytest.approx(manifest["ranker_training"]["base_rate"])
    res = report.results["test-py"]
    assert isinstance(res["pttrust"]["bss"], float)
    assert res["length"]["brier"] is None  # nothing to calibrate a non-learning method on
    from analyzer.score import RiskScorer

    scorer = RiskScorer.load(model_dir, supervisor=sup_cfg)
    rec = data["test-py"][0]
    expected = {s.line: s.score for s in scorer.score(rec.code, language="python")}
    p = next(r for r in report.runs if r.method == "pttrust").predictions["test-py"][0]
    assert sorted(p.scores.tolist()) == pytest.approx(sorted(expected.values()), abs=1e-5)
    with pytest.raises(ValueError, match="learn from labels"):
        run_eval([], {"t": data["test-py"]}, EvalConfig(methods=("probe",)), model_dir=model_dir, supervisor=sup_cfg)


def test_second_eval_reads_from_cache(data, sup_cfg, model_dir, tmp_path, monkeypatch):
    cfg = EvalConfig(methods=("probe", "uncertainty", "lookback"), n_boot=0, ranker_epochs=2)
    tests = {"test-py": data["test-py"]}
    first = run_eval(data["train"], tests, cfg, model_dir=model_dir, supervisor=sup_cfg, cache_root=tmp_path)
    assert list((tmp_path / "states").rglob("*.pt")) and list((tmp_path / "fullpass").rglob("*.pt"))

    def no_model(*_a, **_k):
        raise AssertionError("the model ran although every text is cached")

    monkeypatch.setattr(Supervisor, "states", no_model)
    monkeypatch.setattr("lab.baselines._full_pass", no_model)
    second = run_eval(data["train"], tests, cfg, model_dir=model_dir, supervisor=sup_cfg, cache_root=tmp_path)
    for m in cfg.methods:
        flat = lambda rep: [v for row in _scores(rep, m) for v in row]  # noqa: E731
        assert flat(second) == pytest.approx(flat(first)), m


def test_config_validation():
    with pytest.raises(ValueError, match="unknown methods"):
        EvalConfig(methods=("pttrust", "magic"))
    with pytest.raises(ValueError, match="seeds"):
        EvalConfig(seeds=0)


def test_latent_associations_and_labels(data, sup_cfg, model_dir):
    loaded = open_model(model_dir, sup_cfg)
    assoc = latent_associations(loaded, data["train"], top=5, examples=2)
    assert len(assoc) == 5
    diffs = [a.diff for a in assoc]
    assert diffs == sorted(diffs, reverse=True)
    for a in assoc:
        assert a.diff == pytest.approx(a.mean_buggy - a.mean_correct)
        assert len(a.examples) <= 2
        assert all(e.activation > 0 for e in a.examples)
    # hand check of the top latent's statistic from the raw SAE activations
    from lab.evaluate import read_records

    rs = read_records(loaded.sup, data["train"], loaded.features, None)
    with torch.no_grad():
        z = torch.cat([loaded.sae.encode(r.snippet.states) for r in rs]).numpy()
    y = np.concatenate([r.labels for r in rs]).astype(bool)
    j = assoc[0].latent
    assert assoc[0].diff == pytest.approx(float(z[y, j].mean() - z[~y, j].mean()), rel=1e-5)

    write_latent_labels(model_dir, {j: "  long   arithmetic line "})
    m = artifact.read_manifest(model_dir)
    assert m["latent_labels"] == {str(j): "long arithmetic line"}
    assert m["ranker"] and m["sae"]  # the rest of the manifest is kept
    again = latent_associations(open_model(model_dir, sup_cfg), data["train"], top=1)
    assert again[0].label == "long arithmetic line"
    write_latent_labels(model_dir, {j: ""})
    assert artifact.read_manifest(model_dir)["latent_labels"] == {}
    with pytest.raises(ValueError, match="out of range"):
        write_latent_labels(model_dir, {10_000: "x"})


# ------------------------------------------------------------------------------ eval_report


def _doc() -> dict:
    rel = {"bins": 15, "count": [5, 3] + [0] * 13, "mean_p": [0.03, 0.1] + [None] * 13,
           "frac_pos": [0.0, 0.33] + [None] * 13}
    base = {"top1": 0.5, "top3": 0.75, "top5": 1.0, "auroc": 0.7, "brier": 0.12, "bss": 0.1, "ece": 0.04,
            "n_snippets": 4, "ci": {"top1": [0.25, 0.75]}, "topk_curve": [0.5, 0.6, 0.75, 0.9, 1.0],
            "reliability": rel}
    return {"results": {"humanevalpack-go": {
        "pttrust": {**base, "seeds": {"top1": {"mean": 0.5, "std": 0.02, "n": 2}}},
        "length": {**base, "top1": 0.25, "brier": 0.2, "ci": {}},
        "random": {**base, "top1": 0.1, "reliability": None}}}}


def test_render_table():
    from bot.eval_report import render_table

    text = render_table(_doc())
    lines = text.splitlines()
    assert lines[0] == "== humanevalpack-go"
    assert lines[1].split() == ["method", "top1", "top3", "top5", "auroc", "brier", "bss", "ece", "n_snippets",
                                "top1", "95%", "CI"]
    row = {ln.split()[0]: ln for ln in lines[3:6]}
    assert "0.500±0.020*" in row["pttrust"] and "[0.250, 0.750]" in row["pttrust"]
    assert "0.250 " in row["length"] and row["length"].rstrip().endswith("-")
    assert "0.120*" in row["pttrust"] and "0.200" in row["length"] and "0.200*" not in row["length"]
    with pytest.raises(ValueError, match="not an eval result"):
        render_table({"pttrust": {}})


def test_plots_and_html(tmp_path):
    import base64

    from bot.eval_report import write_plots

    paths = write_plots(_doc(), tmp_path, title="t")
    names = sorted(p.name for p in paths)
    assert names == ["reliability-length.png", "reliability-pttrust.png", "report.html", "topk-humanevalpack-go.png"]
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    b64 = base64.b64encode((tmp_path / "topk-humanevalpack-go.png").read_bytes()).decode()
    assert b64 in page and "<h2>humanevalpack-go</h2>" in page and "<b>0.500±0.020</b>" in page


def test_render_latents():
    from bot.eval_report import render_latents

    text = render_latents([{"latent": 7, "diff": 0.25, "mean_buggy": 0.5, "mean_correct": 0.25,
                            "fire_buggy": 0.5, "fire_correct": 0.1, "label": "loop bound",
                            "examples": [{"record_id": "r/1", "line": 3, "text": "  for i in x:",
                                          "activation": 1.5, "buggy": True}]}])
    assert text.splitlines() == [
        "latent     7  diff +0.2500  mean buggy 0.5000  correct 0.2500  fires on 50% buggy / 10% correct lines"
        "  [loop bound]",
        "    BUG   1.500  r/1:3  for i in x:"]


# ---------------------------------------------------------------------------------------- CLI


def _write_jsonl(path: Path, records: list[Record]) -> str:
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return str(path)


def test_cli_eval_and_features(data, model_dir, tiny_model_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ptbot.cli import cli

    monkeypatch.setenv("PTBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PTBOT_DEVICE", "cpu")
    train = _write_jsonl(tmp_path / "train-py.jsonl", data["train"])
    test = _write_jsonl(tmp_path / "synth-js.jsonl", data["test-js"])
    runner = CliRunner()
    res = runner.invoke(cli, ["eval", test, "--train", train, "--model", str(model_dir),
                              "--methods", "pttrust,length,random", "--boot", "10", "--ranker-epochs", "2",
                              "--json", str(tmp_path / "r.json"), "--plots", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    assert "== synth-js" in res.output and "pttrust" in res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert set(doc["results"]["synth-js"]) == {"pttrust", "length", "random"}
    assert (tmp_path / "plots" / "report.html").exists()

    res = runner.invoke(cli, ["eval", train, "--train", train, "--model", str(model_dir), "--methods", "length"])
    assert res.exit_code != 0 and "also training records" in res.output
    res = runner.invoke(cli, ["eval", test, "--methods", "nope", "--model", str(model_dir)])
    assert res.exit_code != 0 and "unknown methods" in res.output

    # Layer sweep of the SAE-free methods on the bare supervisor.
    docs = []
    for layer in ("1", "2"):
        out = tmp_path / f"layer{layer}.json"
        res = runner.invoke(cli, ["eval", test, "--train", train, "--supervisor", str(tiny_model_dir),
                                  "--layer", layer, "--methods", "probe", "--boot", "0", "--ranker-epochs", "2",
                                  "--no-snippet-auroc", "--json", str(out)])
        assert res.exit_code == 0, res.output
        docs.append(json.loads(out.read_text())["results"]["synth-js"]["probe"])
    assert docs[0]["auroc"] != docs[1]["auroc"]  # another layer, other states
    assert (tmp_path / "cache" / "states").exists() and len(list((tmp_path / "cache" / "states").iterdir())) >= 2
    for bad, msg in ((["--layer", "1", "--model", str(model_dir), "--methods", "length"], "cannot be combined"),
                     (["--layer", "1", "--methods", "pttrust"], "pttrust needs a model"),
                     (["--supervisor", "smollm2", "--methods", "length"], "goes with --layer")):
        res = runner.invoke(cli, ["eval", test, "--train", train, *bad])
        assert res.exit_code == 2 and msg in res.output, res.output

    res = runner.invoke(cli, ["features", train, "--model", str(model_dir), "--top", "3", "--examples", "1",
                              "--label", "0=first latent", "--json", str(tmp_path / "f.json")])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "f.json").read_text())["latents"]
    assert len(rows) == 3 and sum(ln.startswith("latent ") for ln in res.output.splitlines()) == 3
    assert artifact.read_manifest(model_dir)["latent_labels"]["0"] == "first latent"
    write_latent_labels(model_dir, {0: ""})
    res = runner.invoke(cli, ["features", train, "--model", str(model_dir), "--label", "x=y"])
    assert res.exit_code != 0 and "LATENT=TEXT" in res.output
