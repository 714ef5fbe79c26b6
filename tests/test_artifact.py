"""The model directory: manifest + safetensors round trips, and the refusals with their messages.

Built on the tiny random supervisor (tests/conftest.py), so every test here runs in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from analyzer import artifact
from analyzer.artifact import ArtifactError, check_supervisor, read_manifest, write_manifest
from analyzer.calibrate import Calibrator
from analyzer.ranker import RankerConfig, RankerMLP, load_ranker, save_ranker
from analyzer.sae import SAEConfig, load_sae, save_sae
from analyzer.score import RiskScorer
from analyzer.supervisor import Supervisor, SupervisorConfig, supervisor_ref
from conftest import TINY_CODE
from lab.calibration_fit import fit_calibrator
from lab.sae_training import train_sae


def copy_model(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------- round trips


def test_sae_round_trip_through_the_model_directory(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(300, 32) * 3 + 1
    pairs = torch.tensor([[i, i + 1] for i in range(0, 200, 2)])
    cfg = SAEConfig(d_in=32, n_latents=64, k=8, epochs=2, batch_size=64, pair_batch_size=16)
    model, _ = train_sae(cfg, x, pairs, progress=False)
    write_manifest(tmp_path, {"sae": save_sae(model, tmp_path)})
    manifest = read_manifest(tmp_path)  # JSON round trip of the config too
    loaded = load_sae(tmp_path, manifest["sae"])
    assert loaded.cfg == model.cfg
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k  # normalisation buffers included
    with torch.no_grad():
        assert torch.equal(model.encode(x), loaded.encode(x))


def test_ranker_round_trip_through_the_model_directory(tmp_path):
    torch.manual_seed(0)
    model = RankerMLP(RankerConfig(d_in=131, hidden=16, seed=3)).eval()
    write_manifest(tmp_path, {"ranker": save_ranker(model, tmp_path)})
    loaded = load_ranker(tmp_path, read_manifest(tmp_path)["ranker"])
    x, tokens = torch.randn(7, 131), torch.arange(1, 8)
    with torch.no_grad():
        assert torch.equal(model(x, tokens), loaded(x, tokens))
    assert not loaded.training


def test_calibrator_round_trip_through_the_manifest(tmp_path):
    rng = np.random.default_rng(0)
    s = rng.normal(size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-(2 * s - 1)))).astype(int)
    cal = fit_calibrator([s], [y], "platt")
    write_manifest(tmp_path, {"calibration": cal.to_dict()})
    again = Calibrator.from_dict(read_manifest(tmp_path)["calibration"])
    assert again == cal
    np.testing.assert_array_equal(again.predict(s), cal.predict(s))


def test_full_artifact_loads_and_scores_identically_twice(tiny_artifact_dir, tmp_path):
    manifest = read_manifest(tiny_artifact_dir)
    for section in ("supervisor", "features", "sae", "sae_training", "ranker", "calibration",
                    "ranker_training", "dev_metrics", "ptbot_version"):
        assert manifest.get(section), section
    cfg = SupervisorConfig(device="cpu", cache_dir=tmp_path)
    a = RiskScorer.load(tiny_artifact_dir, supervisor=cfg)
    b = RiskScorer.load(tiny_artifact_dir, supervisor=cfg)
    sa, sb = a.score(TINY_CODE, language="python"), b.score(TINY_CODE, language="python")
    assert sa == sb and sa
    assert [s.rank for s in sa] == list(range(1, len(sa) + 1))
    assert all(0 < s.probability < 1 for s in sa)
    assert sorted((s.score for s in sa), reverse=True) == [s.score for s in sa]
    # the loaded parts are the saved ones
    sae = load_sae(tiny_artifact_dir, manifest["sae"])
    for k, v in sae.state_dict().items():
        assert torch.equal(v, a.sae.state_dict()[k])
    assert a.calibrator == Calibrator.from_dict(manifest["calibration"])
    assert a.info.layer == manifest["supervisor"]["layer"]


def test_score_lines_subset_and_many_files_in_one_call(tiny_artifact_dir, tmp_path):
    from analyzer.types import ScoreRequest

    scorer = RiskScorer.load(tiny_artifact_dir, supervisor=SupervisorConfig(device="cpu", cache_dir=tmp_path))
    every = scorer.score(TINY_CODE, language="python")
    some = scorer.score(TINY_CODE, lines=[1, 2, 3, 4, 5], language="python")  # 2 is a docstring, 4, 5 blank
    assert {s.line for s in some} == {1, 3}
    assert 2 not in {s.line for s in every}  # a docstring is no risk candidate
    by_line = {s.line: s for s in every}
    for s in some:  # same whole-file context, so the same score; ranks restart in the subset
        assert s.score == pytest.approx(by_line[s.line].score, abs=1e-5)
    many = scorer.score_many([ScoreRequest("a.py", TINY_CODE), ScoreRequest("b.py", "\n\n}\n"),
                              ScoreRequest("c.py", TINY_CODE, frozenset({1}))])
    assert [len(r) for r in many] == [len(every), 0, 1]
    assert [s.score for s in many[0]] == pytest.approx([s.score for s in every], abs=1e-5)


# ----------------------------------------------------------------------------------- refusals


def test_missing_directory_and_missing_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="model directory not found"):
        read_manifest(tmp_path / "nope")
    with pytest.raises(ArtifactError, match=r"has no manifest\.json.*ptbot pretrain"):
        read_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        RiskScorer.load(tmp_path)


def test_broken_manifests(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ArtifactError, match="is not a ptbot model manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": artifact.FORMAT, "format_version": 99}))
    with pytest.raises(ArtifactError, match="newer ptbot"):
        read_manifest(tmp_path)


def test_a_model_built_by_an_older_ptbot_is_refused_with_how_to_rebuild_it(tiny_artifact_dir, tmp_path):
    """Format 1 (before the one recipe: ranker inputs and the prior's declaration rule were
    switches) is not translated: the model must be built again."""
    model = copy_model(tiny_artifact_dir, tmp_path)
    m = read_manifest(model)
    old = {**m, "format_version": 1, "features": {**m["features"], "inputs": "states", "declarations": True},
           "ranker": {**m["ranker"], "prior_skips_declarations": True}}
    (model / "manifest.json").write_text(json.dumps(old))
    for load in (read_manifest, RiskScorer.load):
        with pytest.raises(ArtifactError, match=r"built by an older ptbot \(format 1; this ptbot reads format 2\)"
                                                r".*ptbot recipe.*ptbot pretrain.*ptbot bind"):
            load(model)
    # A current-format manifest carrying a removed switch is refused too, never read as today's recipe.
    for section, config in (("features", "FeatureConfig"), ("ranker", "RankerConfig")):
        (model / "manifest.json").write_text(json.dumps({**m, section: old[section]}))
        with pytest.raises(ArtifactError, match=f"unknown {config} fields.*ptbot recipe"):
            RiskScorer.load(model, supervisor=SupervisorConfig(device="cpu", cache_dir=tmp_path))


def test_incomplete_artifact_is_refused(tiny_artifact_dir, tmp_path):
    model = copy_model(tiny_artifact_dir, tmp_path)
    m = read_manifest(model)
    m["ranker"] = None
    write_manifest(model, {k: v for k, v in m.items() if k not in ("format", "format_version")})
    with pytest.raises(ArtifactError, match=r"not fully trained.*ptbot bind"):
        RiskScorer.load(model)


@pytest.mark.parametrize("weights", ["sae.safetensors", "ranker.safetensors"])
def test_missing_weight_file_is_an_artifact_error(tiny_artifact_dir, tmp_path, weights):
    """A manifest whose weights file is gone must fail with ArtifactError (the CLI turns that into
    a one-line message), naming the file and the command that rebuilds it."""
    model = copy_model(tiny_artifact_dir, tmp_path)
    (model / weights).unlink()
    with pytest.raises(ArtifactError, match=r"(?i)cannot load model .*(sae|ranker) weights not found.*ptbot (pretrain|bind)"):
        RiskScorer.load(model, supervisor=SupervisorConfig(device="cpu", cache_dir=tmp_path))


def _other_tiny_supervisor(src: Path, dst: Path) -> Path:
    """Same architecture and tokenizer, different weights."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    g = torch.Generator().manual_seed(123)
    save_file({k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in state.items()},
              str(dst / "model.safetensors"))
    return dst


def test_artifact_for_another_supervisor_is_refused(tiny_model_dir, tiny_artifact_dir, tmp_path):
    other = _other_tiny_supervisor(tiny_model_dir, tmp_path / "other-sup")
    sup = Supervisor.load(SupervisorConfig(model=str(other), device="cpu", cache_dir=tmp_path))
    manifest = read_manifest(tiny_artifact_dir)
    with pytest.raises(ArtifactError, match=r"was built for supervisor .*but the loaded supervisor is"
                                            r".*ptbot pretrain"):
        check_supervisor(manifest, supervisor_ref(sup), tiny_artifact_dir)
    # Loading the artifact: the manifest names the supervisor; if the weights found there are not
    # the ones it was built on (here: replaced in place), loading is refused.
    model = copy_model(tiny_artifact_dir, tmp_path)
    m = read_manifest(model)
    m["supervisor"]["model"] = str(other)
    write_manifest(model, {k: v for k, v in m.items() if k not in ("format", "format_version")})
    with pytest.raises(ArtifactError, match="was built for supervisor"):
        RiskScorer.load(model, supervisor=SupervisorConfig(device="cpu", cache_dir=tmp_path))


def test_artifact_for_another_layer_is_refused(tiny_model_dir, tiny_artifact_dir, tmp_path):
    sup = Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), layer=2, device="cpu",
                                           cache_dir=tmp_path))
    with pytest.raises(ArtifactError, match="probes layer 1, not 2"):
        check_supervisor(read_manifest(tiny_artifact_dir), supervisor_ref(sup), tiny_artifact_dir)
