"""The supervisor LLM: load any causal LM (hub id, local dir, GGUF), run only its first layers.

What it owns:
- resolving a model reference (an embedded name from ``analyzer.embedded``, a hub id, a local
  directory, a ``.gguf`` file) to weights on disk;
- the dequantized-weights cache: a GGUF load costs ~15-40 s of dequantization, so the first load
  writes ``config.json`` + tokenizer + ``model.safetensors`` under ``PTBOT_CACHE_DIR`` and later
  loads read that (safetensors refuses the tied embedding/lm_head pair, so the copy of lm_head is
  dropped when the config says the two are tied);
- the truncated forward: a base model built with ``num_hidden_layers = layer`` and ``norm =
  Identity``, so ``last_hidden_state`` is the pre-norm residual stream after block ``layer``
  (no LM head, no later block), which equals the full model's ``hidden_states[layer]``;
- token-budgeted, right-padded batches and overlapping windows for files longer than the window.

Line mapping (which token's state belongs to which line) lives in ``analyzer.lines``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from analyzer.artifact import SupervisorRef
from analyzer.embedded import DEFAULT_SUPERVISOR, REGISTRY, WeightsError, gguf_path, sha256_file

log = logging.getLogger(__name__)

_CACHE_FORMAT = 1


class SupervisorError(RuntimeError):
    """The supervisor model could not be found or loaded; the message says what to do."""


def default_cache_dir() -> Path:
    """``~/.cache/ptbot``: the fallback when no cache directory is passed down from settings."""
    return Path.home() / ".cache" / "ptbot"


@dataclass(frozen=True)
class SupervisorConfig:
    """How to load and run the supervisor LLM."""

    model: str = DEFAULT_SUPERVISOR
    """An embedded name (``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``, ``smollm2``,
    ``gemma3-270m``: offline, pinned by sha256), a Hugging Face hub id, a local model directory,
    or a path to a ``.gguf`` file."""
    layer: int | None = None
    """Decoder blocks to run; the probed state is the residual after this block. None: ceil(L/4)."""
    device: str = "auto"
    """``auto`` (cuda, then mps, then cpu), or an explicit torch device string."""
    dtype: str = "auto"
    """``auto`` (bfloat16 on GPU, float32 on CPU), ``float32``, ``bfloat16`` or ``float16``."""
    max_batch_tokens: int = 8192
    """Token budget of one padded batch (rows x longest row)."""
    window: int = 2048
    """Longest token sequence given to the model at once; longer files go in overlapping windows."""
    overlap: int = 512
    """Tokens of left context a window shares with the previous one (must be < window)."""
    cache_dir: Path = field(default_factory=default_cache_dir)
    """Where dequantized GGUF weights and tokenizer copies are cached."""
    full: bool = False
    """Load every layer and the LM head (needed only for token log-probabilities)."""

    def __post_init__(self) -> None:
        if self.layer is not None and self.layer < 1:
            raise ValueError(f"layer must be >= 1, got {self.layer}")
        if not 0 <= self.overlap < self.window:
            raise ValueError(f"overlap ({self.overlap}) must be in [0, window={self.window})")
        if self.max_batch_tokens < self.window:
            raise ValueError("max_batch_tokens must be at least one window")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"unknown dtype {self.dtype!r}")


class Encoded(NamedTuple):
    """One text after tokenization."""

    ids: list[int]
    """Token ids, no special tokens."""
    offsets: list[tuple[int, int]]
    """Character span [start, end) of each token in the text."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where weights came from, for the artifact manifest (an artifact is bound to one supervisor)."""

    source: str
    sha256: str
    num_layers: int
    hidden_size: int


def _resolve_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def _embedded_gguf(name: str, cache_dir: Path) -> Path:
    try:
        return gguf_path(name, cache_dir)
    except WeightsError as e:
        raise SupervisorError(str(e)) from e


class _Source(NamedTuple):
    load_dir: Path  # a directory from_pretrained (or our cache reader) can load
    info_source: str
    gguf: Path | None


def _gguf_cache(gguf: Path, display: str, cache_dir: Path, progress: bool,
                digest: str | None = None) -> tuple[Path, str]:
    """Dequantize a GGUF file once into a safetensors cache; returns (cache dir, file sha256).

    ``digest``: the file's sha256 when the caller has verified it already (embedded supervisors)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    key_src = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    slug = gguf.stem.lower().replace(".", "-")[:40] + "-" + hashlib.sha256(key_src.encode()).hexdigest()[:12]
    target = cache_dir / "supervisors" / slug
    meta_path = target / "ptbot-supervisor.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("format") == _CACHE_FORMAT:
            return target, meta["sha256"]
    log.info("first load of %s: dequantizing GGUF weights into %s (once)", display, target)
    if progress:
        print(f"preparing the supervisor model {display}, once: {_first_load_estimate(stat.st_size)}",
              file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    # transformers' GGUF converter draws its bar with plain tqdm, deaf to transformers' own
    # progress-bar switch: when that switch is off, the bar (and the converter's chatter) goes too.
    with _third_party_stderr():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
    tok.save_pretrained(tmp)
    model.config.save_pretrained(tmp)
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        # safetensors refuses two names for one storage; the tie is restored at load time.
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(tmp / "model.safetensors"))
    digest = digest or sha256_file(gguf)
    (tmp / "ptbot-supervisor.json").write_text(json.dumps(
        {"format": _CACHE_FORMAT, "source": display, "gguf": str(gguf), "sha256": digest}, indent=2))
    if target.exists():  # a concurrent process won the race; keep its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(target)
    log.info("cached %s in %.1fs", display, time.perf_counter() - t0)
    if progress:
        print(f"supervisor model ready in {time.perf_counter() - t0:.0f} s (cached in {target})",
              file=sys.stderr, flush=True)
    return target, digest


def _first_load_estimate(gguf_bytes: int) -> str:
    """How long the one-time GGUF conversion takes, roughly (SmolLM2's 98 MB file: about a minute
    on a laptop CPU, most of it converting the tokenizer)."""
    if gguf_bytes < 20_000_000:
        return "a few seconds"
    return "~1 min" if gguf_bytes < 150_000_000 else "a few minutes"


def _third_party_stderr() -> contextlib.AbstractContextManager:
    """Swallow stderr while transformers' progress bars are switched off, else leave it alone."""
    from transformers.utils import logging as transformers_logging

    if transformers_logging.is_progress_bar_enabled():
        return contextlib.nullcontext()
    return contextlib.redirect_stderr(io.StringIO())


def _weights_digest(model_dir: Path) -> str:
    """Hash of a model directory's weight files (name, size and content), cached beside them."""
    files = sorted(p for p in model_dir.iterdir()
                   if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        raise SupervisorError(f"no weight files (*.safetensors, *.bin) in {model_dir}")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


class Supervisor:
    """A loaded supervisor: tokenizer + truncated (or full) model on one device."""

    def __init__(self, cfg: SupervisorConfig, tokenizer, model: nn.Module, info: WeightsInfo,
                 layer: int, device: torch.device, dtype: torch.dtype):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.model = model
        self.info = info
        self.layer = layer
        self.device = device
        self.dtype = dtype

    # ----------------------------------------------------------------- loading
    @classmethod
    def load(cls, cfg: SupervisorConfig = SupervisorConfig(), progress: bool = False) -> Supervisor:
        """Load tokenizer and the first ``layer`` decoder blocks (all of them when ``cfg.full``)."""
        from transformers import AutoConfig, AutoTokenizer

        device = _resolve_device(cfg.device)
        dtype = _resolve_dtype(cfg.dtype, device)
        src = cls._source(cfg, progress)
        try:
            hf_cfg = AutoConfig.from_pretrained(str(src.load_dir))
            tokenizer = AutoTokenizer.from_pretrained(str(src.load_dir))
        except (OSError, ValueError) as e:
            raise SupervisorError(f"cannot load supervisor {cfg.model!r}: {e}") from e
        if not getattr(tokenizer, "is_fast", False):
            raise SupervisorError(f"{cfg.model!r} has no fast tokenizer; line mapping needs offsets")
        text_cfg = hf_cfg.get_text_config()
        n_total = text_cfg.num_hidden_layers
        layer = cfg.layer or math.ceil(n_total / 4)
        if layer > n_total:
            raise SupervisorError(f"layer {layer} > the model's {n_total} decoder layers")
        digest = src.info_source.split("@", 1)[1] if "@" in src.info_source else \
            _cached_digest(src.load_dir)
        info = WeightsInfo(source=src.info_source.split("@", 1)[0], sha256=digest,
                           num_layers=n_total, hidden_size=text_cfg.hidden_size)
        model = _build_model(src.load_dir, hf_cfg, layer, cfg.full)
        model.to(device=device, dtype=dtype).eval()
        return cls(cfg, tokenizer, model, info, layer, device, dtype)

    @staticmethod
    def _source(cfg: SupervisorConfig, progress: bool) -> _Source:
        ref = cfg.model
        if ref in REGISTRY:
            gguf = _embedded_gguf(ref, cfg.cache_dir)
            d, digest = _gguf_cache(gguf, REGISTRY[ref].upstream, cfg.cache_dir, progress, REGISTRY[ref].sha256)
            return _Source(d, f"{REGISTRY[ref].upstream}@{digest}", gguf)
        path = Path(ref).expanduser()
        if path.suffix == ".gguf":
            if not path.is_file():
                raise SupervisorError(f"GGUF file not found: {path}")
            d, digest = _gguf_cache(path, path.name, cfg.cache_dir, progress)
            return _Source(d, f"{path.name}@{digest}", path)
        if path.is_dir():
            return _Source(path, str(path.resolve()), None)
        if path.exists():
            raise SupervisorError(f"{path} is neither a model directory nor a .gguf file")
        try:  # a hub id: resolved from the local HF cache when offline
            from huggingface_hub import snapshot_download

            local = snapshot_download(ref, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                           "*.txt", "tokenizer*"])
        except Exception as e:  # noqa: BLE001 — hub errors come in many classes; the message matters
            raise SupervisorError(
                f"cannot find supervisor {ref!r}: not an embedded name ({', '.join(REGISTRY)}), "
                f"not a local path, and the hub download failed ({type(e).__name__}: {e})") from e
        return _Source(Path(local), ref, None)

    # ---------------------------------------------------------------- tokenize
    def encode(self, text: str) -> Encoded:
        """Tokenize without special tokens, keeping character offsets.

        Text that spells a special token (``<|endoftext|>`` in a tokenizer test, ``<|im_start|>``
        in a prompt template) is read as the characters it is: code under review is data, and
        the special token would make the model read a document boundary in the middle of a file.
        """
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                             split_special_tokens=True)
        return Encoded(list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]])

    # ----------------------------------------------------------------- forward
    @torch.inference_mode()
    def states(self, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Probed-layer states for each token sequence: a list of (T_i, d) float32 CPU tensors.

        Long sequences are cut into windows of ``cfg.window`` tokens that overlap by
        ``cfg.overlap``; each token keeps the state from the window that gave it the most left
        context. Windows from all sequences are packed into right-padded, token-budgeted batches.
        """
        pieces: list[tuple[int, int, list[int]]] = []  # (seq index, first token, ids)
        for i, ids in enumerate(sequences):
            for start, chunk in _windows(list(ids), self.cfg.window, self.cfg.overlap):
                pieces.append((i, start, chunk))
        d = self.info.hidden_size
        out = [torch.empty(len(ids), d) for ids in sequences]
        order = sorted(range(len(pieces)), key=lambda j: -len(pieces[j][2]))
        for batch in _token_batches(order, [len(p[2]) for p in pieces], self.cfg.max_batch_tokens):
            rows = [pieces[j][2] for j in batch]
            h = self._forward(rows)  # (B, T, d)
            for b, j in enumerate(batch):
                seq, start, chunk = pieces[j]
                keep_from = 0 if start == 0 else self.cfg.overlap
                out[seq][start + keep_from:start + len(chunk)] = \
                    h[b, keep_from:len(chunk)].float().cpu()
        return out

    def _forward(self, rows: list[list[int]]) -> torch.Tensor:
        """Right-padded batch -> probed-layer states (B, T, d)."""
        t = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(rows), t), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.cfg.full:
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                             use_cache=False)
            return out.hidden_states[self.layer]
        return self.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

    @torch.inference_mode()
    def token_logprobs(self, ids: Sequence[int]) -> torch.Tensor:
        """log p(token_t | tokens_<t) for t >= 1 (index 0 gets 0.0); needs ``cfg.full``. Shape (T,)."""
        if not self.cfg.full:
            raise RuntimeError("token_logprobs needs a supervisor loaded with full=True")
        x = torch.tensor([list(ids)], device=self.device)
        logits = self.model(input_ids=x, use_cache=False).logits[0].float()  # (T, V)
        lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, x[0, 1:, None])[:, 0]
        return torch.cat([torch.zeros(1, device=lp.device), lp]).cpu()

    def with_layer(self, layer: int) -> SupervisorConfig:
        """A config for the same supervisor probed at another layer (for layer sweeps)."""
        return replace(self.cfg, layer=layer)


def supervisor_ref(sup: Supervisor) -> SupervisorRef:
    """What a model's manifest records about the supervisor it is built on; loading a model
    compares it with the supervisor at hand (``artifact.check_supervisor``)."""
    return SupervisorRef(model=sup.cfg.model, source=sup.info.source, sha256=sup.info.sha256, layer=sup.layer,
                         num_layers=sup.info.num_layers, hidden_size=sup.info.hidden_size,
                         tokenizer=type(sup.tokenizer).__name__)


def _cached_digest(model_dir: Path) -> str:
    meta = model_dir / "ptbot-supervisor.json"
    if meta.exists():
        return json.loads(meta.read_text())["sha256"]
    return _weights_digest(model_dir)


def _build_model(model_dir: Path, hf_cfg, layer: int, full: bool) -> nn.Module:
    """Build the truncated base model (or the full causal LM) and load only the weights it uses."""
    from transformers import AutoModel, AutoModelForCausalLM

    cfg = hf_cfg.__class__.from_dict(hf_cfg.to_dict())
    text_cfg = cfg.get_text_config()
    if not full:
        text_cfg.num_hidden_layers = layer
        # Per-layer lists (Gemma-3 sliding/full attention pattern) must match the new depth.
        for name in ("layer_types",):
            value = getattr(text_cfg, name, None)
            if isinstance(value, list):
                setattr(text_cfg, name, value[:layer])
    model = (AutoModelForCausalLM if full else AutoModel).from_config(text_cfg)
    state = _read_weights(model_dir, model, full)
    missing = [k for k in model.state_dict() if k not in state]
    if full and "lm_head.weight" in missing and getattr(text_cfg, "tie_word_embeddings", False):
        missing.remove("lm_head.weight")  # tied: the embedding is the head
    if missing:
        raise SupervisorError(f"weights in {model_dir} lack {len(missing)} tensors, e.g. {missing[:3]}")
    model.load_state_dict(state, strict=False)
    if full and getattr(text_cfg, "tie_word_embeddings", False):
        model.tie_weights()
    if not full:
        model.norm = nn.Identity()  # pre-norm residual stream, as PtTrust's hook sees it
    return model


def _read_weights(model_dir: Path, model: nn.Module, full: bool) -> dict[str, torch.Tensor]:
    """Read only the tensors the (possibly truncated) model needs, renaming to its key space."""
    from safetensors import safe_open

    wanted = set(model.state_dict().keys())
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise SupervisorError(f"no *.safetensors weights in {model_dir}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                name = _rename(key, full)
                if name in wanted:
                    state[name] = st.get_tensor(key)
    return state


def _rename(key: str, full: bool) -> str:
    """Checkpoint key (causal-LM layout, maybe multimodal) -> key of the model we built."""
    for prefix in ("model.language_model.", "language_model.model.", "model.text_model."):
        if key.startswith(prefix):
            key = "model." + key[len(prefix):]
    if full:
        return key
    return key[len("model."):] if key.startswith("model.") else key


def _windows(ids: list[int], window: int, overlap: int):
    """Yield (start, chunk) windows covering ids; consecutive windows share ``overlap`` tokens."""
    if len(ids) <= window:
        yield 0, ids
        return
    step = window - overlap
    start = 0
    while True:
        yield start, ids[start:start + window]
        if start + window >= len(ids):
            return
        start += step


def _token_batches(order: list[int], lengths: list[int], budget: int):
    """Group indices (longest first) so that rows x longest row stays within the token budget."""
    batch: list[int] = []
    longest = 0
    for j in order:
        longest_if = max(longest, lengths[j])
        if batch and longest_if * (len(batch) + 1) > budget:
            yield batch
            batch, longest_if = [], lengths[j]
        batch.append(j)
        longest = longest_if
    if batch:
        yield batch
