"""lab.train: pretrain (stage 1) and bind (stage 2) end to end on the tiny supervisor."""

from __future__ import annotations

import logging
import random
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from analyzer.artifact import ArtifactError, read_manifest
from analyzer.features import FeatureConfig, StateCache, extract
from analyzer.supervisor import Supervisor, SupervisorConfig
from conftest import TINY_RANKER, TINY_SAE, tiny_records
from lab.train import bind, pretrain, pretraining_texts


@pytest.fixture(scope="module")
def sup(tiny_model_dir, tmp_path_factory):
    return Supervisor.load(SupervisorConfig(model=str(tiny_model_dir), device="cpu",
                                            cache_dir=tmp_path_factory.mktemp("cache")))


def test_pretraining_texts_pair_fixed_and_buggy_lines_and_mutate():
    recs = tiny_records(6)
    texts, pairs = pretraining_texts(recs, mutations=2, seed=0)
    # fixed + buggy per record, then up to 2 mutations each
    assert 2 * len(recs) <= len(texts) <= 4 * len(recs)
    assert texts[0] == (recs[0].fixed, "python") and texts[1] == (recs[0].code, "python")
    n_lines = [len(t.split("\n")) for t, _ in texts]
    for a, la, b, lb in pairs:
        assert a != b and 1 <= la <= n_lines[a] and 1 <= lb <= n_lines[b]
    # the first record's real fix gives a (fixed line, buggy line) pair between texts 0 and 1
    assert any(a == 0 and b == 1 for a, _, b, _ in pairs)
    assert pretraining_texts(recs, mutations=2, seed=0) == (texts, pairs)  # seeded


def test_pretrain_then_bind_writes_a_complete_manifest(tiny_artifact_dir):
    m = read_manifest(tiny_artifact_dir)
    assert m["format"] == "ptbot-model"
    assert m["supervisor"]["layer"] == 1 and m["supervisor"]["hidden_size"] == 64
    assert len(m["supervisor"]["sha256"]) == 64
    assert m["features"] == FeatureConfig().to_dict()
    assert m["sae"]["n_latents"] == TINY_SAE["n_latents"] and m["sae"]["k"] == TINY_SAE["k"]
    assert m["sae_training"]["lines"] > 0 and m["sae_training"]["pairs"] > 0
    assert 0 <= m["sae_training"]["fvu"] < 2
    assert m["ranker"]["d_in"] == FeatureConfig().n_inputs(m["supervisor"]["hidden_size"])
    assert m["calibration"]["method"] == "centred"
    assert set(m["calibration"]) == {"method", "a", "b", "c"}
    rt = m["ranker_training"]
    assert rt["train_records"] + rt["dev_records"] == 24 and rt["dev_records"] > 0
    assert 1 <= rt["best_epoch"] <= TINY_RANKER["epochs"]
    for key in ("top1", "top3", "auroc", "ece", "n_lines"):
        assert key in m["dev_metrics"], key
    assert m["ptbot_version"]
    assert (tiny_artifact_dir / "sae.safetensors").exists()
    assert (tiny_artifact_dir / "ranker.safetensors").exists()


def test_pretrain_resumes_from_its_checkpoint_bit_identically(sup, tmp_path, caplog):
    recs = tiny_records(12)
    kw = dict(mutations=1, progress=False, holdout=None)
    whole = tmp_path / "whole"
    pretrain(sup, recs, whole, sae_cfg={**TINY_SAE, "epochs": 3}, **kw)
    # "interrupted" after one epoch, then run again asking for three
    part = tmp_path / "part"
    pretrain(sup, recs, part, sae_cfg={**TINY_SAE, "epochs": 1}, **kw)
    assert (part / "checkpoints" / "sae_checkpoint.pt").exists()
    with caplog.at_level(logging.INFO, logger="lab.sae_training"):
        m = pretrain(sup, recs, part, sae_cfg={**TINY_SAE, "epochs": 3}, **kw)
    assert any("resumed SAE training" in r.getMessage() and "epoch 1" in r.getMessage()
               for r in caplog.records)
    a, b = load_file(str(whole / "sae.safetensors")), load_file(str(part / "sae.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert m["sae"]["epochs"] == 3
    # a checkpoint made with another SAE config is refused, not silently mixed in
    with pytest.raises(ValueError, match="different SAEConfig"):
        pretrain(sup, recs, part, sae_cfg={**TINY_SAE, "k": 4}, **kw)


def test_state_cache_is_reused_and_equal(sup, tmp_path):
    recs = tiny_records(4)
    cache = StateCache(tmp_path, sup)
    texts, langs = [r.code for r in recs], [r.language for r in recs]
    first = extract(sup, texts, langs, FeatureConfig(), cache=cache)
    files = sorted(cache.dir.rglob("*.pt"))
    assert len(files) == len(recs)
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = extract(sup, texts, langs, FeatureConfig(), cache=cache)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    for x, y in zip(first, second):
        assert x.lines == y.lines and torch.equal(x.states, y.states)


def test_bind_before_pretrain_and_other_bad_inputs(sup, tiny_artifact_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        bind(sup, tmp_path / "empty", tiny_records(8), progress=False)
    with pytest.raises(ValueError, match="no training records"):
        pretrain(sup, [], tmp_path / "x", sae_cfg=TINY_SAE, progress=False)
    model = tmp_path / "model"
    shutil.copytree(tiny_artifact_dir, model)
    one_problem = tiny_records(1)
    with pytest.raises(ValueError, match="both sides of the problem split"):
        bind(sup, model, one_problem, ranker_cfg=TINY_RANKER, progress=False)


def test_bind_calibrates_each_source_as_scored_by_a_ranker_trained_without_it(sup, tiny_artifact_dir, tmp_path):
    """Two sources: each is held out in turn; one source (one repository's records, say): the map
    is fitted on the dev split's logits instead (``test_ranker`` checks which logits)."""
    one = tiny_records(24)
    two = [replace(r, source="left" if i % 2 else "right") for i, r in enumerate(one)]
    cross, dev = tmp_path / "cross", tmp_path / "dev"
    shutil.copytree(tiny_artifact_dir, cross)
    shutil.copytree(tiny_artifact_dir, dev)
    mc = bind(sup, cross, two, ranker_cfg=TINY_RANKER, dev_fraction=0.3, progress=False)
    md = bind(sup, dev, one, ranker_cfg=TINY_RANKER, dev_fraction=0.3, progress=False)
    assert len({r.source for r in one}) == 1
    assert mc["ranker_training"]["calibrated_on"] == "cross-source"
    assert mc["ranker_training"]["held_out_sources"] == ["left", "right"]
    assert md["ranker_training"]["calibrated_on"] == "dev" and md["ranker_training"]["held_out_sources"] == []
    assert mc["calibration"]["method"] == md["calibration"]["method"] == "centred"
    for gone in ("calibration", "calibrate_on", "keep_ranker", "ranker_sources", "features_update"):
        with pytest.raises(TypeError, match=gone):
            bind(sup, dev, one, progress=False, **{gone: None})


def test_pretrain_holdout_keeps_dev_problems_out_of_stage_1(sup, tmp_path):
    from lab.records import split_by_problem

    recs = tiny_records(24)
    _, dev = split_by_problem(recs, 0.3, 0)
    assert dev
    m = pretrain(sup, recs, tmp_path / "m", sae_cfg={**TINY_SAE, "epochs": 1}, mutations=0,
                 progress=False, holdout=0.3)
    assert m["sae_training"]["records"] == len(recs) - len(dev)
    rng = random.Random(0)
    sub = pretrain(sup, rng.sample(recs, 10), tmp_path / "s", sae_cfg={**TINY_SAE, "epochs": 1},
                   mutations=0, progress=False, holdout=None, max_records=5)
    assert sub["sae_training"]["records"] == 5


# ------------------------------------------------------------------------------ ranker inputs


def test_ranker_inputs_columns_and_relative_shape():
    import math

    from analyzer.features import ranker_inputs
    from analyzer.lines import LineSpan

    lines = [LineSpan(1, 0, 0, 1, "def f(x):"), LineSpan(2, 1, 3, 3, "return foo(x)"), LineSpan(3, 4, 6, 7, "y")]
    states = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]])  # (3 lines, 2-d states)
    absolute_shape = FeatureConfig(prefix="", relative_shape=False)
    # 2 centred states + [log tokens, position, log chars] + the declaration column, last
    x = ranker_inputs(states, lines, absolute_shape)
    assert x.shape == (3, 6) == (3, absolute_shape.n_inputs(2))
    torch.testing.assert_close(x[:, :2], states - states.mean(0))
    toks = torch.tensor([math.log1p(1), math.log1p(3), math.log1p(7)])
    chars = torch.tensor([math.log1p(9), math.log1p(13), math.log1p(1)])
    torch.testing.assert_close(x[:, 2], toks)
    torch.testing.assert_close(x[:, 3], torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(x[:, 4], chars)
    assert x[:, 5].tolist() == [1.0, 0.0, 0.0]  # 1.0 on the function header

    rel = ranker_inputs(states, lines, FeatureConfig(prefix=""))
    assert FeatureConfig().relative_shape is True
    torch.testing.assert_close(rel[:, 2], toks - toks.mean())  # shape relative to the file
    torch.testing.assert_close(rel[:, 3], x[:, 3])              # position unchanged
    torch.testing.assert_close(rel[:, 4], chars - chars.mean())
    torch.testing.assert_close(rel[:, 5], x[:, 5])              # declarations unchanged
    assert FeatureConfig.from_dict(FeatureConfig().to_dict()) == FeatureConfig()


def test_feature_manifests_name_every_field_and_no_other():
    """A manifest's features are read as written: a removed switch (``inputs``, ``declarations``,
    the uncentred ``absolute``) or a missing field is refused, never read as today's default."""
    from analyzer.artifact import default_model_dir

    shipped = read_manifest(default_model_dir())["features"]
    assert FeatureConfig.from_dict(shipped) == FeatureConfig()
    for old in ({"inputs": "states"}, {"declarations": True}, {"absolute": False, "centre": True}):
        with pytest.raises(ArtifactError, match="built by another ptbot version.*ptbot recipe"):
            FeatureConfig.from_dict({**shipped, **old})
    with pytest.raises(ArtifactError, match=r"lacks \['relative_shape'\]"):
        FeatureConfig.from_dict({k: v for k, v in shipped.items() if k != "relative_shape"})


def test_bind_reads_raw_states_and_the_prior_skips_declarations(sup, tiny_artifact_dir, tmp_path):
    """The ranker reads the supervisor's states (the SAE only explains), and the length prior
    leaves declaration lines (last feature column) alone; the scorer reads both back."""
    from analyzer.declarations import declares
    from analyzer.ranker import length_prior_term
    from analyzer.score import RiskScorer
    from analyzer.types import ScoreRequest

    model = tmp_path / "model"
    shutil.copytree(tiny_artifact_dir, model)
    m = bind(sup, model, tiny_records(), dev_fraction=0.3, progress=False,
             ranker_cfg={**TINY_RANKER, "length_prior": 6.0})
    assert m["ranker"]["d_in"] == sup.info.hidden_size + 4  # states, 3 shape columns, declarations

    scorer = RiskScorer.load(model, supervisor=sup.cfg)
    code = "import os\ndef f(a, b):\n    x = a + b * 2 - len(os.sep)\n    return x\n"
    lines = scorer.score_many([ScoreRequest(path="f.py", text=code, language="python")])[0]
    assert {ln.line for ln in lines} == {1, 2, 3, 4} and all(ln.features for ln in lines[:1])
    # The prior moved code lines only: with it switched off, declaration logits are unchanged.
    sn = extract(sup, [code], ["python"], scorer.features)[0]
    x = torch.cat([sn.states - sn.states.mean(0), torch.zeros(len(sn.lines), 4)], dim=1)
    x[:, -1] = torch.tensor([float(declares(s.text)) for s in sn.lines])
    tokens = torch.tensor([s.n_tokens for s in sn.lines])
    delta = scorer.ranker(x, tokens) - scorer.ranker.mlp_logits(x)
    expect = 6.0 * length_prior_term(tokens) * (1 - x[:, -1])
    assert torch.allclose(delta, expect, atol=1e-5) and x[:, -1].sum() >= 1


def test_the_recipe_is_the_library_default_and_the_shipped_models(tiny_artifact_dir):
    """``Recipe`` names the defaults of ``RankerConfig`` and ``FeatureConfig``, and the shipped
    manifest was built with it: the product code knows one recipe."""
    from dataclasses import fields

    from analyzer.artifact import default_model_dir
    from analyzer.ranker import RankerConfig
    from lab.recipe import Recipe

    recipe, shipped = Recipe(), read_manifest(default_model_dir())
    ranker = RankerConfig(d_in=1)
    assert (recipe.length_prior, recipe.members) == (ranker.length_prior, ranker.members) == (3.0, 5)
    assert shipped["recipe"] == recipe.to_dict()
    assert FeatureConfig.from_dict(shipped["features"]) == FeatureConfig()
    bound = RankerConfig.from_dict(shipped["ranker"])
    assert (bound.length_prior, bound.members) == (recipe.length_prior, recipe.members)
    assert {f.name for f in fields(RankerConfig)} == set(shipped["ranker"])
    assert shipped["supervisor"]["model"] == recipe.supervisor and shipped["supervisor"]["layer"] == recipe.layer
    assert shipped["sae"]["n_latents"] == recipe.latents
    assert shipped["calibration"]["method"] == "centred"
    assert shipped["ranker_training"]["calibrated_on"] == "cross-source"
    # the shipped manifest says what bind writes today, no more
    assert set(shipped["ranker_training"]) == set(read_manifest(tiny_artifact_dir)["ranker_training"])
