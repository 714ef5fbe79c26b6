"""``ptbot extract`` and ``pretrain --shards``: line states in safetensors shards (lab.shards).

On the tiny random supervisor (conftest ``tiny_model_dir``): shards hold the states
``analyzer.features.extract`` computes, stage 1 on the shards gives the very SAE stage 1 on the
records gives, a real Celery worker (gpu queue, real Redis) writes the same shards, and shards of
another supervisor or layer are refused.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis
import torch
from celery.contrib.testing.worker import start_worker
from click.testing import CliRunner
from conftest import TINY_SAE, tiny_records
from safetensors.torch import load_file

from analyzer.artifact import read_manifest
from analyzer.features import FeatureConfig, extract
from analyzer.sae import load_sae
from analyzer.supervisor import Supervisor, SupervisorConfig, supervisor_ref
from bot.config import Settings
from bot.pr_review import RedisLedger
from lab import shards
from lab.train import (
    plan_line_states,
    pretrain,
    pretrain_from_shards,
    pretraining_plan,
    pretraining_records,
)
from ptbot.cli import cli
from workers.celery_app import make_celery
from workers.producer import WorkerConfig
from workers.scaleout import extract_on_queue
from workers.tasks import WorkerRuntime


@pytest.fixture(scope="module")
def sup(tiny_model_dir, tmp_path_factory):
    return Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), device="cpu",
                                            cache_dir=tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def records():
    return tiny_records(24)


def _extract_locally(sup, records, out, **kwargs):
    plan_line_states(records, out, supervisor_ref(sup), **kwargs)
    for i in shards.pending_shards(out):
        shards.extract_shard(sup, out, i)
    return shards.finish(out)


def _shard_tensors(out):
    parts = [load_file(str(out / e["name"])) for e in shards.read_manifest(out)["shards"]]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def test_a_crlf_or_bom_file_is_read_as_the_same_code(sup):
    lf = "def f(x):\n    y = x + 1\n    return y\n"
    crlf = lf.replace("\n", "\r\n")
    a, b, c = extract(sup, [lf, crlf, "\ufeff" + crlf], ["python"] * 3, FeatureConfig())
    for other in (b, c):  # CRLF endings, and CRLF after a UTF-8 byte-order mark
        assert [(s.line, s.text) for s in other.lines] == [(s.line, s.text) for s in a.lines]
        torch.testing.assert_close(other.states, a.states)


def test_shards_hold_the_states_extract_computes(sup, records, tmp_path):
    out = tmp_path / "states"
    m = _extract_locally(sup, records, out, mutations=1, seed=0, holdout=0.2,
                         settings=shards.ExtractSettings(shard_size=10))
    assert m["complete"] and len(m["shards"]) > 2
    selected = pretraining_records(records, 0.2, 0, None)
    texts, pairs = pretraining_plan(selected, 1, 0)
    snippets = extract(sup, [t.code for t in texts], [t.language for t in texts], FeatureConfig())
    want = torch.cat([sn.states for sn in snippets])
    got = _shard_tensors(out)
    assert got["states"].dtype == torch.float32 and got["states"].shape == want.shape
    # Other shard boundaries batch the texts differently: equal up to float rounding.
    torch.testing.assert_close(got["states"], want, rtol=1e-5, atol=1e-5)
    assert got["text"].tolist() == [i for i, sn in enumerate(snippets) for _ in sn.lines]
    assert got["line"].tolist() == [s.line for sn in snippets for s in sn.lines]
    assert got["record"].tolist() == [texts[i].record for i, sn in enumerate(snippets) for _ in sn.lines]
    assert got["label"].tolist() == [int(s.line in texts[i].buggy) for i, sn in enumerate(snippets)
                                     for s in sn.lines]
    assert got["label"].sum() > 0
    assert [tuple(p) for p in got["pairs"].tolist()] == pairs
    assert m["counts"] == {"records": len(selected), "texts": len(texts), "pairs": len(pairs),
                           "lines": want.shape[0], "languages": ["python"]}
    assert m["supervisor"]["sha256"] == sup.info.sha256 and m["supervisor"]["layer"] == sup.layer
    assert m["selection"] == {"holdout": 0.2, "max_records": None, "mutations": 1,
                              "fine_mutations": False, "seed": 0}


def test_pretrain_on_shards_equals_pretrain_on_records(sup, records, tmp_path):
    # Shards of 64 texts = extract's chunks: the states are bit-identical, and so is the SAE.
    _extract_locally(sup, records, tmp_path / "states", mutations=1, settings=shards.ExtractSettings(shard_size=64))
    a = pretrain(sup, records, tmp_path / "from-records", sae_cfg=TINY_SAE, mutations=1, progress=False)
    b = pretrain_from_shards(tmp_path / "states", tmp_path / "from-shards", expect=supervisor_ref(sup),
                             sae_cfg=TINY_SAE, progress=False)
    for key in ("records", "texts", "lines", "pairs", "holdout", "mutations_per_snippet", "languages", "fvu"):
        assert a["sae_training"][key] == b["sae_training"][key], key
    assert a["supervisor"] == b["supervisor"] and a["features"] == b["features"] and a["sae"] == b["sae"]
    wa, wb = load_file(str(tmp_path / "from-records" / "sae.safetensors")), \
        load_file(str(tmp_path / "from-shards" / "sae.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    load_sae(tmp_path / "from-shards", read_manifest(tmp_path / "from-shards")["sae"])  # loadable


def test_extract_resumes_and_refuses_other_extractions(sup, records, tmp_path, tiny_model_dir):
    out = tmp_path / "states"
    kwargs = dict(mutations=1, settings=shards.ExtractSettings(shard_size=16))
    _extract_locally(sup, records[:12], out, **kwargs)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.safetensors")}
    plan_line_states(records[:12], out, supervisor_ref(sup), **kwargs)  # same plan: nothing to redo
    assert shards.pending_shards(out) == []
    (out / "shard-00001.safetensors").unlink()
    assert shards.pending_shards(out) == [1]
    with pytest.raises(shards.ShardError, match="unfinished.*shard-00001"):
        shards.read_states(out)
    shards.extract_shard(sup, out, 1)
    shards.finish(out)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.safetensors")}.keys() == first.keys()
    assert (out / "shard-00000.safetensors").stat().st_mtime_ns == first["shard-00000.safetensors"]
    # Another supervisor layer (or any other plan) never mixes into this directory.
    layer2 = Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), layer=2, device="cpu",
                                              cache_dir=tmp_path / "cache"))
    with pytest.raises(shards.ShardError, match="another extraction"):
        plan_line_states(records[:12], out, supervisor_ref(layer2), **kwargs)
    with pytest.raises(shards.ShardError, match="from layer 1, not layer 2.*--layer 1"):
        shards.read_states(out, expect=supervisor_ref(layer2))
    with pytest.raises(shards.ShardError, match="layer 1, not layer 2"):
        shards.extract_shard(layer2, out, 0)
    other = supervisor_ref(sup).__class__(**{**supervisor_ref(sup).to_dict(), "sha256": "f" * 64,
                                             "source": "other/model"})
    with pytest.raises(shards.ShardError, match="read by supervisor .* not by 'other/model'"):
        shards.read_states(out, expect=other)
    # Shards written by an older ptbot (format 1: features with ``inputs`` and ``declarations``) are refused.
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(shards.ShardError, match=r"older ptbot \(format 1.*extract again"):
        shards.read_states(out)


def test_cli_extract_then_pretrain_on_the_shards(records, tmp_path, tiny_model_dir):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records[:12]))
    runner = CliRunner(env={"PTBOT_CACHE_DIR": str(tmp_path / "cache"), "PTBOT_DEVICE": "cpu"})
    res = runner.invoke(cli, ["extract", str(data), "--out", str(tmp_path / "states"), "--supervisor",
                              str(tiny_model_dir), "--mutations", "1", "--shard-size", "8", "--dtype", "float16"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "states" / "manifest.json").read_text())
    assert m["complete"] and m["dtype"] == "float16" and m["sources"][0]["path"] == str(data)
    assert len(m["sources"][0]["sha256"]) == 64
    assert load_file(str(tmp_path / "states" / "shard-00000.safetensors"))["states"].dtype == torch.float16
    train = ["pretrain", "--shards", str(tmp_path / "states"), "--out", str(tmp_path / "model"),
             "--latents", "64", "--k", "8", "--epochs", "2"]
    res = runner.invoke(cli, train)
    assert res.exit_code == 0, res.output
    manifest = read_manifest(tmp_path / "model")
    assert manifest["sae_training"]["lines"] == m["counts"]["lines"] and manifest["supervisor"] == m["supervisor"]
    load_sae(tmp_path / "model", manifest["sae"])
    # Options the extraction fixed, and a supervisor at another layer, are refused with the reason.
    res = runner.invoke(cli, train + ["--mutations", "3"])
    assert res.exit_code != 0 and "--mutations: fixed when the shards were extracted" in res.output
    res = runner.invoke(cli, train + ["--supervisor", str(tiny_model_dir), "--layer", "2"])
    assert res.exit_code != 0 and "from layer 1, not layer 2" in res.output
    res = runner.invoke(cli, ["pretrain", "--out", str(tmp_path / "m2")])
    assert res.exit_code != 0 and "--shards DIR" in res.output


def test_extract_on_a_gpu_worker_writes_the_same_shards(sup, records, tmp_path, redis_url):
    prefix = f"ptbot-test-{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, device="cpu", cache_dir=str(tmp_path / "cache"))
    runtime = WorkerRuntime(settings, ledger_factory=lambda: RedisLedger(client, prefix + "ledger:"))
    app = make_celery(settings, WorkerConfig(key_prefix=prefix), runtime)
    kwargs = dict(mutations=1, settings=shards.ExtractSettings(shard_size=16))
    local = _extract_locally(sup, records[:12], tmp_path / "local", **kwargs)
    plan_line_states(records[:12], tmp_path / "queued", supervisor_ref(sup), **kwargs)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=["gpu"], shutdown_timeout=30,
                          loglevel="WARNING"):
            queued = extract_on_queue(app, tmp_path / "queued", progress=False, timeout=120)
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
    assert queued["complete"] and queued["counts"] == local["counts"]
    a, b = _shard_tensors(tmp_path / "local"), _shard_tensors(tmp_path / "queued")
    assert all(torch.equal(a[k], b[k]) for k in a)
