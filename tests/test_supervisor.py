"""analyzer.supervisor on a tiny random Llama (every code path, fast) and on the real SmolLM2.

Tolerances. Every comparison is in float32 on CPU. The truncated model runs exactly the same
blocks on exactly the same weights as the full model, so the only differences are kernel-level
(a different batch shape may pick a different matmul/SDPA path): we allow an absolute error of
1e-4 x the largest activation of the reference (SmolLM2's attention-sink token reaches ~1e2-1e3,
ordinary tokens ~1) plus a relative error of 1e-4, via ``assert_close_scaled``.

Tuple-vs-tensor decoder layer outputs: ``Supervisor`` never calls decoder layers itself; it runs
the transformers base model built with ``num_hidden_layers = layer`` and reads
``last_hidden_state``, so whatever a layer returns is handled by the model's own forward. The
equality-with-the-full-model tests below are what would catch a regression there.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from analyzer.embedded import REGISTRY
from analyzer.supervisor import (Supervisor, SupervisorConfig, SupervisorError,
                                 _token_batches, _windows)
from conftest import TINY_CODE

REL = 1e-4


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rel: float = REL) -> None:
    """|actual - expected| <= rel * max|expected| + rel * |expected|, elementwise."""
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * scale)


def full_hidden_states(model_dir: Path, ids: list[int], layer: int) -> torch.Tensor:
    """Reference: the unmodified causal LM from ``from_pretrained``, hidden_states[layer]."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    return out.hidden_states[layer][0].float()


def tiny(model_dir: Path, tmp_path: Path, **kw) -> Supervisor:
    return Supervisor.load(SupervisorConfig(model=str(model_dir), device="cpu",
                                            cache_dir=tmp_path / "cache", **kw))


# ------------------------------------------------------------------------- tiny model: exactness


def test_tiny_truncated_forward_equals_full_model_hidden_state(tiny_model_dir, tmp_path):
    sup = tiny(tiny_model_dir, tmp_path)
    assert sup.layer == math.ceil(4 / 4) == 1
    # Only the probed blocks are built: the truncated model has `layer` decoder layers, no head.
    assert len(sup.model.layers) == sup.layer
    assert not hasattr(sup.model, "lm_head")
    ids = sup.encode(TINY_CODE).ids
    got = sup.states([ids])[0]
    assert got.shape == (len(ids), 64)
    assert_close_scaled(got, full_hidden_states(tiny_model_dir, ids, sup.layer))


@pytest.mark.parametrize("layer", [2, 3])
def test_tiny_truncated_forward_at_other_layers(tiny_model_dir, tmp_path, layer):
    sup = tiny(tiny_model_dir, tmp_path, layer=layer)
    ids = sup.encode(TINY_CODE).ids
    assert len(sup.model.layers) == layer
    assert_close_scaled(sup.states([ids])[0], full_hidden_states(tiny_model_dir, ids, layer))


def test_tiny_full_mode_gives_the_same_states_and_logprobs(tiny_model_dir, tmp_path):
    trunc = tiny(tiny_model_dir, tmp_path, layer=2)
    full = tiny(tiny_model_dir, tmp_path, layer=2, full=True)
    ids = trunc.encode(TINY_CODE).ids
    assert_close_scaled(trunc.states([ids])[0], full.states([ids])[0])
    lp = full.token_logprobs(ids)
    assert lp.shape == (len(ids),) and lp[0] == 0 and (lp[1:] < 0).all()
    with pytest.raises(RuntimeError, match="full=True"):
        trunc.token_logprobs(ids)


def test_tiny_padding_invariance(tiny_model_dir, tmp_path):
    """A sequence alone, and right-padded in one batch with a longer one, gets the same states."""
    sup = tiny(tiny_model_dir, tmp_path)
    short = sup.encode("def add(a, b):\n    return a + b\n").ids
    long = sup.encode(TINY_CODE * 2).ids
    assert len(long) > 2 * len(short)
    alone = sup.states([short])[0]
    # one padded batch (budget allows both rows), and both orders of the inputs
    both = sup.states([short, long])
    rev = sup.states([long, short])
    assert_close_scaled(both[0], alone)
    assert_close_scaled(rev[1], alone)
    assert_close_scaled(both[1], sup.states([long])[0])


def test_tiny_windows_match_a_single_pass_where_left_context_fits(tiny_model_dir, tmp_path):
    """A sequence longer than ``window`` is read in overlapping windows: tokens in the first window
    equal the single full-context pass; each later token equals a single pass over the window
    it was kept from (its left context is exactly that window's), i.e. stitching is right."""
    window, overlap = 48, 16
    sup_w = tiny(tiny_model_dir, tmp_path, window=window, overlap=overlap)
    sup_1 = tiny(tiny_model_dir, tmp_path)  # window 2048: one pass
    ids = sup_1.encode(TINY_CODE * 3).ids
    assert len(ids) > 3 * window
    got = sup_w.states([ids])[0]
    single = sup_1.states([ids])[0]
    assert_close_scaled(got[:window], single[:window])
    pieces = list(_windows(ids, window, overlap))
    assert pieces[0][0] == 0 and pieces[-1][0] + len(pieces[-1][1]) == len(ids)
    for start, chunk in pieces[1:]:
        own = sup_1.states([chunk])[0]
        assert_close_scaled(got[start + overlap:start + len(chunk)], own[overlap:])
    # With a long left context lost, later tokens do differ from the single pass: the windows
    # are real, not a pass-through.
    assert not torch.allclose(got[window:], single[window:], atol=1e-3)


def test_windows_and_token_batches_cover_everything():
    ids = list(range(100))
    pieces = list(_windows(ids, 30, 10))
    assert [s for s, _ in pieces] == [0, 20, 40, 60, 80]
    assert all(c == ids[s:s + 30] for s, c in pieces)
    assert list(_windows(ids[:30], 30, 10)) == [(0, ids[:30])]
    lengths = [30, 30, 20, 10, 5]
    batches = list(_token_batches(list(range(5)), lengths, 64))
    assert sorted(j for b in batches for j in b) == [0, 1, 2, 3, 4]
    for b in batches:
        assert max(lengths[j] for j in b) * len(b) <= 64


def test_code_that_spells_a_special_token_is_read_as_text(tiny_model_dir, tmp_path):
    sup = tiny(tiny_model_dir, tmp_path)
    code = 'EOS = "<|endoftext|>"\nx = EOS\n'
    enc = sup.encode(code)
    special = set(sup.tokenizer.all_special_ids)
    assert special and not special & set(enc.ids)
    assert sup.tokenizer.decode(enc.ids) == code
    # offsets still cover the text, so the line map is unchanged
    assert "".join(code[s:e] for s, e in enc.offsets) == code


def test_empty_and_one_token_sequences(tiny_model_dir, tmp_path):
    sup = tiny(tiny_model_dir, tmp_path)
    ids = sup.encode("x = 1\n").ids
    out = sup.states([ids, ids[:1]])
    assert out[1].shape == (1, 64)
    assert_close_scaled(out[1][0], out[0][0])


def test_config_validation():
    with pytest.raises(ValueError, match="layer must be >= 1"):
        SupervisorConfig(layer=0)
    with pytest.raises(ValueError, match="overlap"):
        SupervisorConfig(window=64, overlap=64)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        SupervisorConfig(window=4096, max_batch_tokens=1024)
    with pytest.raises(ValueError, match="unknown dtype"):
        SupervisorConfig(dtype="int8")


# --------------------------------------------------------------------------- bad references


def test_bad_model_references_raise_supervisor_error(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"

    def load(ref: str, **kw) -> None:
        Supervisor.load(SupervisorConfig(model=ref, device="cpu", cache_dir=cache, **kw))

    with pytest.raises(SupervisorError, match="GGUF file not found"):
        load(str(tmp_path / "missing.gguf"))
    stray = tmp_path / "weights.bin.txt"
    stray.write_text("not a model")
    with pytest.raises(SupervisorError, match="neither a model directory nor a .gguf file"):
        load(str(stray))
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(SupervisorError, match="cannot load supervisor"):
        load(str(empty))
    # HF_HUB_OFFLINE=1 (conftest): an unknown hub id fails at once, naming the embedded choices.
    with pytest.raises(SupervisorError, match=r"cannot find supervisor 'nobody/no-such-model'.*smollm2"):
        load("nobody/no-such-model")
    with pytest.raises(SupervisorError, match=r"layer 9 > the model's 4 decoder layers"):
        load(str(tiny_model_dir), layer=9)


def test_missing_weight_tensors_are_named(tiny_model_dir, tmp_path):
    """A directory whose safetensors lack the blocks we need fails with the missing names."""
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    state = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in state.items() if ".layers.0." not in k}, str(broken / "model.safetensors"))
    with pytest.raises(SupervisorError, match=r"lack \d+ tensors, e\.g\. \['layers\.0\."):
        Supervisor.load(SupervisorConfig(model=str(broken), device="cpu", cache_dir=tmp_path))


# --------------------------------------------------------------------------- real SmolLM2


SNIPPET = '''def mean(xs):
    """Average of a non-empty list."""
    total = 0
    for x in xs:
        total += x
    return total / len(xs)
'''


@pytest.mark.slow
def test_smollm2_truncated_forward_equals_full_model(smollm2_supervisor):
    sup = smollm2_supervisor
    assert sup.info.num_layers == 30 and sup.layer == math.ceil(30 / 4) == 8
    assert sup.info.hidden_size == 576 and len(sup.model.layers) == 8
    ids = sup.encode("```python\n" + SNIPPET).ids
    got = sup.states([ids])[0]
    # the cache directory written on first load is a plain HF model dir: load it in full
    ref = full_hidden_states(_cache_entry(sup), ids, sup.layer)
    assert_close_scaled(got, ref)


@pytest.mark.slow
def test_smollm2_padding_invariance(smollm2_supervisor):
    sup = smollm2_supervisor
    short = sup.encode("```python\n" + SNIPPET).ids
    long = sup.encode("```python\n" + SNIPPET * 4).ids
    alone = sup.states([short])[0]
    batched = sup.states([long, short])[1]
    assert_close_scaled(batched, alone)


@pytest.mark.slow
def test_gguf_cache_second_load_reads_the_cache(smollm2_supervisor, ptbot_cache_dir, caplog):
    entry = _cache_entry(smollm2_supervisor)
    names = {p.name for p in entry.iterdir()}
    assert {"config.json", "model.safetensors", "ptbot-supervisor.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    # no half-written copies are left next to the cache entry
    assert not [p for p in entry.parent.iterdir() if ".tmp" in p.name]
    # tied embedding / lm_head: only one copy stored
    from safetensors import safe_open

    with safe_open(str(entry / "model.safetensors"), framework="pt") as st:
        keys = set(st.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    before = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    with caplog.at_level(logging.INFO, logger="analyzer.supervisor"):
        again = Supervisor.load(SupervisorConfig(model="smollm2", cache_dir=ptbot_cache_dir, device="cpu"))
    assert not [r for r in caplog.records if "dequantizing" in r.getMessage()]
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == before
    assert again.info == smollm2_supervisor.info
    # the weights hash of the GGUF file is recorded, not recomputed from the cache
    assert len(again.info.sha256) == 64 and again.info.source == REGISTRY["smollm2"].upstream


def _cache_entry(sup: Supervisor) -> Path:
    entries = [p for p in (sup.cfg.cache_dir / "supervisors").iterdir()
               if p.name.startswith("smollm2-135m-instruct") and ".tmp" not in p.name]
    assert len(entries) == 1, entries
    return entries[0]
