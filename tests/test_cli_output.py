"""ptbot speaks first and alone on stderr.

A first run converts the supervisor's GGUF file once; transformers draws two progress bars while
it does ("Converting and de-quantizing GGUF tensors", "Loading weights"). ptbot says what it is
doing instead, one line per stage, and shows the libraries' bars and warnings only with ``-v``.
The supervisor here is a tiny random Llama written as a real GGUF file, so the first run's whole
path (conversion, cache, scoring) takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SAMPLE_RECORDS, TINY_RANKER, TINY_SAE, tiny_records

from ptbot.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample-change"
THIRD_PARTY = ("Converting and de-quantizing", "Loading weights", "it/s]", "Warning", "warn(")


def _permute(w, n_head: int):
    """llama.cpp's row order for the rotary halves of Q and K, which transformers undoes on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    """``tiny_model_dir`` (weights and byte-level BPE tokenizer) written as an F32 GGUF file."""
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    bpe = json.loads((tiny_model_dir / "tokenizer.json").read_text())["model"]
    tokens = [t for t, _ in sorted(bpe["vocab"].items(), key=lambda kv: kv[1])]
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]) if getattr(cfg, "rope_parameters", None)
                         else float(getattr(cfg, "rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * len(tokens))
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in bpe["merges"]])
    for set_id in (w.add_bos_token_id, w.add_eos_token_id, w.add_pad_token_id):
        set_id(cfg.pad_token_id)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    for key, tensor in model.state_dict().items():
        array = tensor.float().numpy()
        if key in names:
            w.add_tensor(names[key], array)
            continue
        _, _, block, *middle, kind = key.split(".")
        part = ".".join(middle)
        if part == "self_attn.q_proj":
            array = _permute(array, cfg.num_attention_heads)
        elif part == "self_attn.k_proj":
            array = _permute(array, cfg.num_key_value_heads)
        w.add_tensor(f"blk.{block}.{parts[part]}.{kind}", array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def gguf_artifact_dir(tiny_gguf, tmp_path_factory) -> Path:
    """A trained model directory whose supervisor is ``tiny_gguf`` (its cache lives elsewhere:
    every CLI run below starts from an empty cache)."""
    from analyzer.supervisor import Supervisor, SupervisorConfig
    from lab.train import bind, pretrain

    root = tmp_path_factory.mktemp("gguf-artifact")
    sup = Supervisor.load(SupervisorConfig(model=str(tiny_gguf), device="cpu", cache_dir=root / "cache"))
    recs = tiny_records()
    pretrain(sup, recs, root / "model", sae_cfg=TINY_SAE, mutations=1, progress=False)
    bind(sup, root / "model", recs, ranker_cfg=TINY_RANKER, dev_fraction=0.3, progress=False)
    return root / "model"


def _ptbot(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    """ptbot in a fresh process, as a user runs it (the libraries read the environment on import)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TQDM_DISABLE")}
    env.update(PTBOT_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="default")  # warnings on, as a user's shell may have them
    return subprocess.run([sys.executable, "-m", "ptbot", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _review(model: Path) -> list[str]:
    return ["review", "--diff", str(SAMPLE / "change.diff"), "--repo", str(SAMPLE), "--model", str(model)]


def test_first_review_speaks_first_and_alone(gguf_artifact_dir, tmp_path):
    first = _ptbot(_review(gguf_artifact_dir), tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    assert not [t for t in THIRD_PARTY if t in first.stderr], first.stderr
    lines = [ln for ln in first.stderr.replace("\r", "\n").split("\n") if ln.strip()]
    assert lines[0].startswith("loading model "), lines
    assert lines[1].startswith("preparing the supervisor model tiny-llama.gguf, once: "), lines
    assert lines[2].startswith("supervisor model ready in "), lines
    assert "scoring 11 lines in 1 file" in lines, lines
    assert "restock" in first.stdout

    again = _ptbot(_review(gguf_artifact_dir), tmp_path / "cache")
    assert again.returncode == 0 and "preparing" not in again.stderr, again.stderr


def test_verbose_shows_the_libraries_bars(gguf_artifact_dir, tmp_path):
    r = _ptbot(["-v", *_review(gguf_artifact_dir)], tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "Converting and de-quantizing GGUF tensors" in r.stderr and "Loading weights" in r.stderr
    assert r.stderr.index("preparing the supervisor model") < r.stderr.index("Converting and de-quantizing")


def test_in_a_process_that_already_loaded_transformers(tiny_gguf, tmp_path, monkeypatch):
    """The switches flip even when transformers was imported before the command ran (a worker,
    this test session)."""
    from transformers.utils import logging as transformers_logging

    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        monkeypatch.delenv(var, raising=False)  # the command sets them; undone after the test
    monkeypatch.setenv("PTBOT_CACHE_DIR", str(tmp_path / "cache"))
    bars = transformers_logging.is_progress_bar_enabled()
    try:
        r = CliRunner().invoke(cli, ["extract", str(SAMPLE_RECORDS), "--out", str(tmp_path / "states"),
                                     "--supervisor", str(tiny_gguf), "--max-records", "4"])
    finally:
        (transformers_logging.enable_progress_bar if bars else transformers_logging.disable_progress_bar)()
    assert r.exit_code == 0, r.output
    assert "preparing the supervisor model tiny-llama.gguf" in r.stderr
    assert not [t for t in THIRD_PARTY if t in r.stderr], r.stderr
