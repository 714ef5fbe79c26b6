"""The baselines PtTrust must beat, as line scorers (the PtTrust paper's, ``length``, ``random``).

- ``length``: the line's token count (longest line first). Under the token-weighted Top-K hit
  rate this is the strongest trivial baseline, because long buggy lines carry more weight.
- ``random``: every line tied. ``lab.metrics`` resolves ties by the expectation over all
  orderings, so a constant score *is* the exact expectation of the paper's 50 shuffles.
- ``uncertainty``: mean token log-probability of the line under the full supervisor, least
  confident first (score = minus the mean log-prob).
- ``lookback`` / ``lookback_mlp``: LookBack Lens as in its original paper (Chuang et al., 2407.07071;
  ``voidism/Lookback-Lens step01_extract_attns.py``): for every code token t and every (layer,
  head), ``ratio = mean attn(t -> context) / (mean attn(t -> context) + mean attn(t -> code tokens
  up to t))``; a line's feature vector is the ratio averaged over the line's tokens; a logistic
  regression (the paper's classifier) or a small MLP scores lines pointwise.

The probe (the ranker on raw states) and PtTrust itself live in ``lab.evaluate``, because
they share the ranker training code there.

One full-model forward per text gives both the log-probs and the attention ratios; the result is
cached on disk (``FullPassCache``), keyed like ``StateCache`` by weights hash and exact input
text, so a second evaluation never runs the model again. Attention is reduced to ratios inside a
forward hook per layer, so only one layer's (heads, T, T) attention map is alive at a time.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from analyzer.features import FeatureConfig, StateCache, supervisor_input
from analyzer.lines import LineSpan
from analyzer.supervisor import Supervisor
from analyzer.types import Record

log = logging.getLogger(__name__)

CONTEXT_KEYS = ("description", "docstring")
"""Record ``meta`` fields used, in order, as the LookBack context (the task the code answers)."""
MAX_CONTEXT_CHARS = 2000


# ------------------------------------------------------------------------------- trivial scores


def length_scores(lines: Sequence[LineSpan]) -> np.ndarray:
    """Token count per line: the longest line ranks first."""
    return np.array([float(s.n_tokens) for s in lines])


def random_scores(lines: Sequence[LineSpan]) -> np.ndarray:
    """All lines tied: the metrics turn ties into the exact expectation over random orders."""
    return np.zeros(len(lines))


# ------------------------------------------------------------------------- full-model features


class FullPassCache(StateCache):
    """Per-line [mean log-prob, lookback ratios...] on disk, keyed by weights hash and input text."""

    def __init__(self, root: Path, sup: Supervisor):
        # The layer is irrelevant here (every layer is read), so it is not part of the key.
        self.dir = Path(root) / "fullpass" / f"{sup.info.sha256[:16]}-v1"


@dataclass(frozen=True)
class FullPassLines:
    """What one full forward says about a text's scorable lines."""

    lines: list[LineSpan]
    logprob: np.ndarray
    """(n_lines,) mean token log-probability of each line."""
    lookback: np.ndarray
    """(n_lines, layers * heads) lookback ratio of each line, averaged over its tokens."""


def context_for(rec: Record, keys: Sequence[str] = CONTEXT_KEYS) -> str:
    """The task statement a record's code answers (empty when the data has none)."""
    for key in keys:
        value = (rec.meta or {}).get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_CONTEXT_CHARS] + "\n"
    return ""


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder layer, in order."""
    mods = [m for name, m in model.named_modules() if name.endswith("self_attn")]
    if not mods:
        raise ValueError(f"{type(model).__name__} has no '*.self_attn' modules; LookBack Lens needs "
                         "a decoder whose attention modules are named self_attn (Llama, Gemma, ...)")
    return mods


@torch.inference_mode()
def _full_pass(sup: Supervisor, ids: list[int], n_context: int, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T,) token log-probs and (T, layers*heads) lookback ratios (0 for context tokens)."""
    ids = ids[:max_tokens]
    t_all = len(ids)
    c = min(n_context, t_all)
    mods = _attention_modules(sup.model)
    ratios: list[torch.Tensor] = []

    def hook(_module, _args, output):
        attn = output[1]  # (1, H, T, T) in eager mode
        if attn is None:
            raise RuntimeError("attention weights are None: the model is not in eager attention mode")
        a = attn[0].float()
        n = t_all - c
        if n <= 0 or c == 0:
            ratios.append(torch.zeros(t_all, a.shape[0]))
            return
        ctx = a[:, c:, :c].mean(dim=-1)                                   # (H, n)
        new = a[:, c:, c:].sum(dim=-1) / torch.arange(1, n + 1, device=a.device)  # causal: j <= t
        r = torch.zeros(a.shape[0], t_all, device=a.device)
        r[:, c:] = ctx / (ctx + new).clamp_min(1e-12)
        ratios.append(r.T.cpu())                                           # (T, H)

    handles = [m.register_forward_hook(hook) for m in mods]
    try:
        x = torch.tensor([ids], device=sup.device)
        logits = sup.model(input_ids=x, use_cache=False).logits[0].float()
    finally:
        for h in handles:
            h.remove()
    lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, x[0, 1:, None])[:, 0]
    lp = torch.cat([torch.zeros(1, device=lp.device), lp]).cpu()
    return lp, torch.cat(ratios, dim=1)


def read_full(sup: Supervisor, records: Sequence[Record], features: FeatureConfig,
              cache: FullPassCache | None = None, context_keys: Sequence[str] = CONTEXT_KEYS,
              progress: bool = False) -> list[FullPassLines]:
    """Log-prob and LookBack features of every scorable line of every record (one forward each).

    The model reads ``context + prefix + code``; lines are mapped exactly as ``features.extract``
    maps them (same tokenizer, same prefix, same ``map_lines``). Needs ``SupervisorConfig(full=True)``.
    Texts longer than ``sup.cfg.window`` tokens are cut there (lines beyond get log-prob 0 and
    ratio 0, i.e. they look confident and context-bound) with a warning.
    """
    if not sup.cfg.full:
        raise ValueError("read_full needs a supervisor loaded with SupervisorConfig(full=True)")
    if getattr(sup.model.config, "_attn_implementation", "eager") != "eager":
        sup.model.set_attn_implementation("eager")  # SDPA/flash kernels never return the weights
    n_heads = sup.model.config.get_text_config().num_attention_heads
    width = 1 + sup.info.num_layers * n_heads
    out = []
    for rec in tqdm(records, desc="reading code (full model)", unit="file", disable=not progress, leave=False):
        context = context_for(rec, context_keys)
        prefix = context + features.prefix_for(rec.language)
        key, enc, lines = supervisor_input(sup, rec.code, prefix)
        cached = cache.get(key) if cache is not None else None
        if cached is None or cached.shape != (len(lines), width):
            n_context = sum(1 for s, _ in enc.offsets if s < len(prefix))
            if len(enc.ids) > sup.cfg.window:
                log.warning("%s: %d tokens, reading only the first %d for uncertainty/lookback",
                            rec.id, len(enc.ids), sup.cfg.window)
            lp, ratio = _full_pass(sup, enc.ids, n_context, sup.cfg.window)
            rows = []
            for s in lines:
                toks = [t for t in range(s.first_token, s.first_token + s.n_tokens) if t < len(lp)]
                if toks:
                    rows.append(torch.cat([lp[toks].mean().reshape(1), ratio[toks].mean(dim=0)]))
                else:
                    rows.append(torch.zeros(width))
            cached = torch.stack(rows) if rows else torch.zeros(0, width)
            if cache is not None:
                cache.put(key, cached)
        arr = cached.numpy().astype(np.float64)
        out.append(FullPassLines(lines, arr[:, 0], arr[:, 1:]))
    return out


def uncertainty_scores(full: FullPassLines) -> np.ndarray:
    """Minus the mean token log-prob: the least confident line ranks first."""
    return -full.logprob


# ------------------------------------------------------------------- pointwise line classifiers


@dataclass(frozen=True)
class ClassifierConfig:
    """A pointwise line classifier on standardised features (the LookBack Lens head)."""

    kind: str = "logistic"
    """``logistic`` (the paper's LogisticRegression) or ``mlp`` (two ReLU layers)."""
    hidden: int = 64
    """Hidden width of the MLP."""
    l2: float = 1e-3
    """L2 penalty on the weights (mean-loss scale)."""
    epochs: int = 200
    """Full-batch optimiser steps (LBFGS for logistic, Adam for the MLP)."""
    lr: float = 1e-2
    """Adam learning rate of the MLP."""
    seed: int = 0
    """Initialisation seed."""

    def __post_init__(self) -> None:
        if self.kind not in ("logistic", "mlp"):
            raise ValueError(f"ClassifierConfig.kind must be 'logistic' or 'mlp', got {self.kind!r}")
        if self.hidden < 1 or self.epochs < 1:
            raise ValueError("ClassifierConfig.hidden and .epochs must be >= 1")
        if self.l2 < 0 or not self.lr > 0:
            raise ValueError("ClassifierConfig.l2 must be >= 0 and .lr > 0")


class LineClassifier:
    """Standardise, then logistic regression or MLP; ``logits`` gives one log-odds per line."""

    def __init__(self, cfg: ClassifierConfig, mean: torch.Tensor, std: torch.Tensor, net: nn.Module):
        self.cfg, self.mean, self.std, self.net = cfg, mean, std, net

    @classmethod
    def fit(cls, cfg: ClassifierConfig, x: np.ndarray, y: np.ndarray,
            dev: tuple[np.ndarray, np.ndarray] | None = None) -> LineClassifier:
        """Fit on (N, F) features and 0/1 labels; the MLP keeps the step with the best dev loss."""
        x_t = torch.as_tensor(x, dtype=torch.float32)
        y_t = torch.as_tensor(y, dtype=torch.float32)
        if x_t.ndim != 2 or x_t.shape[0] != y_t.shape[0] or x_t.shape[0] == 0:
            raise ValueError(f"LineClassifier.fit: need (N, F) features and N labels, got "
                             f"{tuple(x_t.shape)} and {tuple(y_t.shape)}")
        mean, std = x_t.mean(dim=0), x_t.std(dim=0).clamp_min(1e-6)
        xs = (x_t - mean) / std
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            if cfg.kind == "logistic":
                net: nn.Module = nn.Linear(x_t.shape[1], 1)
            else:
                net = nn.Sequential(nn.Linear(x_t.shape[1], cfg.hidden), nn.ReLU(),
                                    nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))
            loss_fn = nn.BCEWithLogitsLoss()

            def objective() -> torch.Tensor:
                weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
                return loss_fn(net(xs)[:, 0], y_t) + 0.5 * cfg.l2 * sum((w ** 2).sum() for w in weights)

            if cfg.kind == "logistic":
                opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=cfg.epochs,
                                        line_search_fn="strong_wolfe")

                def closure() -> torch.Tensor:
                    opt.zero_grad()
                    loss = objective()
                    loss.backward()
                    return loss

                opt.step(closure)
            else:
                opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
                dev_t = None if dev is None else (
                    (torch.as_tensor(dev[0], dtype=torch.float32) - mean) / std,
                    torch.as_tensor(dev[1], dtype=torch.float32))
                best, best_state = float("inf"), None
                for _ in range(cfg.epochs):
                    opt.zero_grad()
                    loss = objective()
                    loss.backward()
                    opt.step()
                    if dev_t is not None:
                        with torch.no_grad():
                            d = float(loss_fn(net(dev_t[0])[:, 0], dev_t[1]))
                        if d < best:
                            best, best_state = d, copy.deepcopy(net.state_dict())
                if best_state is not None:
                    net.load_state_dict(best_state)
        net.eval()
        return cls(cfg, mean, std, net)

    @torch.no_grad()
    def logits(self, x: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N,) log-odds of "buggy"."""
        x_t = torch.as_tensor(x, dtype=torch.float32)
        if x_t.shape[0] == 0:
            return np.zeros(0)
        return self.net((x_t - self.mean) / self.std)[:, 0].double().numpy()
