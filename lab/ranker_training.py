"""Training of the per-line ranker (``analyzer.ranker``): NeuralNDCG (listwise) plus a pointwise BCE
head, early stopping on a dev split, and the held-out logits a calibration map is fitted on.

Training mixes allRank's NeuralNDCG over each snippet's lines (what PtTrust's reference code
optimises) with a per-line BCE on the same logit: the ranking term orders lines within a snippet,
the BCE term keeps the logit on a log-odds scale so a calibration map can turn it into a
probability. Relevance is 1.0 for a buggy line and 0.0 for a correct one; PtTrust's length-ranked
relevances in [~0.9, 1] only reorder buggy lines among themselves and would tie the target to a
token-count artefact.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from analyzer.ranker import RankerConfig, RankerMLP
from lab.metrics import SnippetPrediction, topk_hit_rate

logger = logging.getLogger(__name__)

_EPS = 1e-10  # allRank DEFAULT_EPS


def _sinkhorn(mat: Tensor, pad: Tensor, tol: float = 1e-6, max_iter: int = 50) -> Tensor:
    """allRank ``sinkhorn_scaling``: alternate column/row normalisation; ``pad`` (B, L) marks trailing padding."""
    either = pad[:, None, :] | pad[:, :, None]
    mat = mat.masked_fill(either, 0.0).masked_fill(pad[:, None, :] & pad[:, :, None], 1.0)
    for _ in range(max_iter):
        mat = mat / mat.sum(dim=1, keepdim=True).clamp(min=_EPS)
        mat = mat / mat.sum(dim=2, keepdim=True).clamp(min=_EPS)
        if (mat.sum(dim=2) - 1).abs().max() < tol and (mat.sum(dim=1) - 1).abs().max() < tol:
            break
    return mat.masked_fill(either, 0.0)


def _neural_sort(s: Tensor, tau: float, pad: Tensor) -> Tensor:
    """allRank ``deterministic_neural_sort`` (Grover et al. 2019): soft permutation (B, L, L), row i = rank i.

    ``s`` is (B, L) and ``pad`` (B, L) marks trailing padding, as allRank assumes.
    """
    n = s.shape[1]
    s = s.unsqueeze(-1)  # (B, L, 1)
    either = pad[:, :, None] | pad[:, None, :]
    a_s = (s - s.transpose(1, 2)).abs().masked_fill(either, 0.0)  # |s_j - s_k| among real items
    b = a_s.sum(dim=2, keepdim=True)  # (B, L, 1): B_j = sum_k |s_j - s_k|
    n_real = (~pad).sum(dim=1, keepdim=True)  # (B, 1)
    i = torch.arange(n, device=s.device)[None, :]  # rank positions
    # scaling_i = n_real + 1 - 2(i+1) for real ranks, 0 for padded ones (allRank's ``temp`` list).
    scaling = torch.where(i < n_real, n_real + 1 - 2 * (i + 1), 0).to(s.dtype)  # (B, L)
    c = s.masked_fill(pad[:, :, None], 0.0) @ scaling.unsqueeze(-2)  # (B, L_item, L_rank)
    p_max = (c - b).transpose(1, 2)  # (B, L_rank, L_item)
    p_max = p_max.masked_fill(either, -torch.inf).masked_fill(pad[:, :, None] & pad[:, None, :], 1.0)
    return torch.softmax(p_max / tau, dim=-1)


def _dcg_ideal(gains: Tensor, discounts: Tensor, k: int) -> Tensor:
    """IDCG@k per slate from gains (B, L) that are already 0 on padding."""
    return (gains.sort(dim=1, descending=True).values * discounts)[:, :k].sum(dim=1)


def neural_ndcg(y_pred: Tensor, y_true: Tensor, mask: Tensor, temperature: float = 1.0,
                powered_relevancies: bool = True, k: int | None = None) -> Tensor:
    """allRank ``neuralNDCG`` (deterministic): returns ``-mean NDCG`` over slates with IDCG > 0.

    y_pred, y_true: (B, L) scores and relevances; mask: (B, L) bool, True for a real item. Padding
    may sit anywhere: items are first stably reordered real-first, which changes nothing (NeuralSort
    is permutation-equivariant) and gives allRank's trailing-padding layout. Gains are
    ``2**rel - 1`` (powered) or ``rel``; discounts ``1/log2(i+2)``; Sinkhorn 50 iterations, tol 1e-6.
    Returns 0 when no slate has a relevant item (like allRank).
    """
    if y_pred.shape != y_true.shape or y_pred.shape != mask.shape or y_pred.ndim != 2:
        raise ValueError(f"neural_ndcg: y_pred, y_true and mask must share a (B, L) shape, got "
                         f"{tuple(y_pred.shape)}, {tuple(y_true.shape)}, {tuple(mask.shape)}")
    if temperature <= 0:
        raise ValueError(f"neural_ndcg: temperature must be > 0, got {temperature}")
    mask = mask.bool()
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    y_pred, y_true, pad = y_pred.gather(1, order), y_true.gather(1, order), ~mask.gather(1, order)
    n = y_pred.shape[1]
    k = n if k is None else min(k, n)

    p_hat = _sinkhorn(_neural_sort(y_pred, temperature, pad), pad)
    rel = y_true.masked_fill(pad, 0.0)
    gains = torch.pow(2.0, rel) - 1.0 if powered_relevancies else rel
    discounts = 1.0 / torch.log2(torch.arange(n, dtype=y_pred.dtype, device=y_pred.device) + 2.0)
    expected_gains = (p_hat @ gains.unsqueeze(-1)).squeeze(-1)  # (B, L_rank): soft-sorted gains
    dcg = (expected_gains * discounts)[:, :k].sum(dim=1)
    idcg = _dcg_ideal(gains, discounts, k)
    valid = idcg > 0
    if not valid.any():
        return y_pred.sum() * 0.0  # keeps the graph so a caller's backward() still works
    return -(dcg[valid] / (idcg[valid] + _EPS)).mean()


@dataclass(frozen=True)
class Slate:
    """One snippet's candidate lines: the unit NeuralNDCG ranks and the dev metric averages over."""

    features: Tensor
    """(L, d_in) float line features."""
    labels: Tensor
    """(L,) float, 1.0 = buggy (relevance 1), 0.0 = correct (relevance 0)."""
    tokens: Tensor
    """(L,) int token count per line: the weight of a buggy line in the Top-K hit rate."""
    group: str
    """Problem id; dev and train splits must not share groups."""
    source: str = ""
    """Where the snippet came from (``Record.source``); ``held_out_logits`` holds each source out in turn."""

    def __post_init__(self) -> None:
        n = self.features.shape[0] if self.features.ndim == 2 else -1
        if n < 1:
            raise ValueError(f"Slate {self.group!r}: features must be a non-empty (L, d_in) tensor, "
                             f"got {tuple(self.features.shape)}")
        for name in ("labels", "tokens"):
            t = getattr(self, name)
            if t.ndim != 1 or t.shape[0] != n:
                raise ValueError(f"Slate {self.group!r}: {name} must have shape ({n},), got {tuple(t.shape)}")
        if not ((self.labels == 0) | (self.labels == 1)).all():
            raise ValueError(f"Slate {self.group!r}: labels must be 0/1")


def _pad(slates: list[Slate]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack slates into padded (B, L, d) features, (B, L) labels and (B, L) bool mask."""
    n = max(s.features.shape[0] for s in slates)
    d = slates[0].features.shape[1]
    x = torch.zeros(len(slates), n, d)
    y = torch.zeros(len(slates), n)
    mask = torch.zeros(len(slates), n, dtype=torch.bool)
    for i, s in enumerate(slates):
        m = s.features.shape[0]
        x[i, :m], y[i, :m], mask[i, :m] = s.features.float(), s.labels.float(), True
    return x, y, mask


def ranker_loss(logits: Tensor, y: Tensor, mask: Tensor, cfg: RankerConfig) -> Tensor:
    """``ndcg_weight * neural_ndcg + bce_weight * BCEWithLogits`` over the real lines of a padded batch."""
    loss = logits.new_zeros(())
    if cfg.ndcg_weight > 0:
        loss = loss + cfg.ndcg_weight * neural_ndcg(logits, y, mask, cfg.temperature)
    if cfg.bce_weight > 0:
        pw = None if cfg.pos_weight is None else logits.new_tensor(cfg.pos_weight)
        loss = loss + cfg.bce_weight * F.binary_cross_entropy_with_logits(logits[mask], y[mask], pos_weight=pw)
    return loss


@torch.no_grad()
def evaluate_ranker(model: RankerMLP, slates: list[Slate], batch_snippets: int = 64) -> dict[str, float]:
    """Mean loss over batches and token-weighted Top-1 hit rate (NaN if no slate has a buggy line)."""
    was_training = model.training
    model.eval()
    losses, preds = [], []
    for i in range(0, len(slates), batch_snippets):
        chunk = slates[i:i + batch_snippets]
        x, y, mask = _pad(chunk)
        logits = model.mlp_logits(x)
        losses.append(float(ranker_loss(logits, y, mask, model.cfg)) * len(chunk))
        for j, s in enumerate(chunk):
            m = s.features.shape[0]
            preds.append(SnippetPrediction(logits[j, :m].double().numpy(), s.labels.numpy().astype(np.int64),
                                           s.tokens.numpy(), None, s.group))
    model.train(was_training)
    return {"loss": sum(losses) / len(slates), "top1": topk_hit_rate(preds, 1)}


def _check_splits(cfg: RankerConfig, train: list[Slate], dev: list[Slate]) -> None:
    if not train:
        raise ValueError("train_ranker: the training split is empty")
    if not dev:
        raise ValueError("train_ranker: the dev split is empty; hold out some problems (grouped) for early stopping")
    for s in (*train, *dev):
        if s.features.shape[1] != cfg.d_in:
            raise ValueError(f"train_ranker: slate {s.group!r} has {s.features.shape[1]}-d features, "
                             f"RankerConfig.d_in is {cfg.d_in}")
    shared = {s.group for s in train} & {s.group for s in dev}
    if shared:
        logger.warning("train and dev share %d groups (e.g. %r): dev scores will be optimistic",
                       len(shared), sorted(shared)[0])


def _dev_key(metrics: dict[str, float]) -> tuple[float, float]:
    """Higher is better: Top-1 hit rate first (NaN counts as 0), then lower dev loss."""
    top1 = metrics["top1"]
    return (0.0 if math.isnan(top1) else top1, -metrics["loss"])


def _length_batches(slates: list[Slate], size: int, gen: torch.Generator, pool: int = 8) -> list[list[int]]:
    """Shuffled batches of slates of similar length.

    NeuralNDCG's soft permutation is (L, L) per slate, so one 150-line snippet padded into a batch
    of 10-line ones costs 200x its neighbours. Shuffle, sort within pools of ``pool`` batches by
    length, cut into batches, then shuffle the batch order: every epoch still sees every slate once
    in a random context.
    """
    order = torch.randperm(len(slates), generator=gen).tolist()
    batches: list[list[int]] = []
    for p in range(0, len(order), size * pool):
        chunk = sorted(order[p:p + size * pool], key=lambda j: len(slates[j].labels))
        batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def train_ranker(cfg: RankerConfig, train: list[Slate], dev: list[Slate], progress: bool = True,
                 init: RankerMLP | None = None) -> tuple[RankerMLP, dict[str, Any]]:
    """Train on ``train`` with early stopping on ``dev``; returns the best model (eval mode) and its history.

    Each of ``cfg.members`` MLPs is trained on its own (``_train_member``, seed ``cfg.seed + k``,
    fine-tuned from ``init``'s member k when given); the history is member 0's, with every
    member's under ``"members"`` and ``"best_epoch"`` the list of their best epochs.
    """
    if init is not None and _architecture(init.cfg) != _architecture(cfg):
        raise ValueError(f"train_ranker: init is a {_architecture(init.cfg)} ranker, cfg asks for "
                         f"{_architecture(cfg)}")
    one = replace(cfg, members=1)
    with torch.random.fork_rng(devices=[]):  # the container's own initialisation is overwritten below
        model, histories = RankerMLP(cfg), []
    for k, member in enumerate(model.members):
        start = None
        if init is not None:
            start = RankerMLP(one)
            start.members[0].load_state_dict(init.members[k].state_dict())
        trained, history = _train_member(replace(one, seed=cfg.seed + k), train, dev, progress, start)
        member.load_state_dict(trained.members[0].state_dict())
        histories.append(history)
    model.eval()
    if cfg.members == 1:
        return model, histories[0]
    return model, {**histories[0], "best_epoch": [h["best_epoch"] for h in histories], "members": histories}


def _train_member(cfg: RankerConfig, train: list[Slate], dev: list[Slate], progress: bool = True,
                  init: RankerMLP | None = None) -> tuple[RankerMLP, dict[str, Any]]:
    """One MLP (``cfg.members == 1``): the best epoch on ``dev`` (eval mode) and its history.

    The loss and early stopping see the MLP's own logits, without the length prior: trained with
    the prior, the MLP learned to cancel it and transferred worse (``RankerConfig.length_prior``).

    ``init``: a trained ranker to continue from (fine-tuning; its architecture must be ``cfg``'s).
    It is judged on ``dev`` before the first step, as epoch 0, so when no epoch of fine-tuning
    beats it the starting weights come back unchanged: fine-tuning on a few hundred records can
    only be chosen when it helps on held-out records of the same kind.

    Deterministic for a given seed: the global RNG is forked, so callers' random state is untouched.
    History: ``{"epochs": [{"epoch", "train_loss", "dev_loss", "dev_top1"}...], "best_epoch",
    "best_dev_loss", "best_dev_top1", "stopped_early"}`` (epochs count from 1; 0 is ``init``).
    """
    _check_splits(cfg, train, dev)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model = RankerMLP(cfg)
        if init is not None:
            model.load_state_dict(init.state_dict())
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best_key, best_state, best_epoch, since_best = None, None, 0, 0
        epochs: list[dict[str, float]] = []
        if init is not None:
            start = evaluate_ranker(model, dev)
            epochs.append({"epoch": 0, "train_loss": float("nan"), "dev_loss": start["loss"],
                           "dev_top1": start["top1"]})
            best_key, best_state = _dev_key(start), copy.deepcopy(model.state_dict())
        bar = tqdm(range(1, cfg.epochs + 1), disable=not progress, desc="ranker", unit="epoch")
        for epoch in bar:
            model.train()
            total = 0.0
            for batch in _length_batches(train, cfg.batch_snippets, gen):
                chunk = [train[j] for j in batch]
                x, y, mask = _pad(chunk)
                loss = ranker_loss(model.mlp_logits(x), y, mask, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(chunk)
            dev_metrics = evaluate_ranker(model, dev)
            epochs.append({"epoch": epoch, "train_loss": total / len(train),
                           "dev_loss": dev_metrics["loss"], "dev_top1": dev_metrics["top1"]})
            bar.set_postfix(dev_top1=f"{dev_metrics['top1']:.3f}", dev_loss=f"{dev_metrics['loss']:.3f}")
            key = _dev_key(dev_metrics)
            if best_key is None or key > best_key:
                best_key, best_state, best_epoch, since_best = key, copy.deepcopy(model.state_dict()), epoch, 0
            else:
                since_best += 1
                if since_best >= cfg.patience:
                    logger.info("ranker: no dev improvement for %d epochs, stopping at epoch %d", cfg.patience, epoch)
                    break
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    best = next(e for e in epochs if e["epoch"] == best_epoch)
    history = {"epochs": epochs, "best_epoch": best_epoch, "best_dev_loss": best["dev_loss"],
               "best_dev_top1": best["dev_top1"],
               "stopped_early": sum(e["epoch"] > 0 for e in epochs) < cfg.epochs}
    logger.info("ranker: best epoch %d (dev top1 %.3f, loss %.4f)", best_epoch, best["dev_top1"], best["dev_loss"])
    return model, history


def _architecture(cfg: RankerConfig) -> tuple[int, int, int, int]:
    return cfg.d_in, cfg.hidden, cfg.layers, cfg.members


def held_out_logits(model: RankerMLP, train: list[Slate], dev: list[Slate], progress: bool = False,
                    ) -> tuple[list[Tensor], list[Tensor], dict[str, Any]]:
    """Logits and labels, one (L,) pair per slate, to fit the calibration map on; and what they are.

    ``model`` was trained on ``train`` and early-stopped on ``dev``. For each source (``Slate.source``),
    the logits of all its slates (train and dev) come from a ranker with ``model``'s settings trained
    and early-stopped on the other sources only. The product scores languages and projects it never
    saw labels for; a ranker scoring a source it never saw is shifted the same way, so the map
    learns the confidence it has there (on mined fixes in five other languages: ECE 0.041 with the
    dev split's logits, 0.027 with these). Costs one ranker per source.

    A source that would leave the others without a train or dev slate is not held out; with fewer
    than two sources held out (records of one repository, say) the logits are ``model``'s own on
    ``dev`` instead, the slates that picked its epoch.

    Info: ``{"calibrated_on": "cross-source" | "dev", "held_out_sources": [...]}``.
    """
    sources = sorted({s.source for s in (*train, *dev)})
    usable = [src for src in sources
              if any(s.source != src for s in train) and any(s.source != src for s in dev)]
    if len(usable) < 2:
        logger.warning("cross-source calibration needs records from at least two sources that can each be "
                       "held out (found %s); calibrating on the dev split instead", sources)
        with torch.no_grad():
            return ([model(s.features, s.tokens).float() for s in dev], [s.labels for s in dev],
                    {"calibrated_on": "dev", "held_out_sources": []})
    logits, labels = [], []
    for src in usable:
        logger.info("cross-source calibration: ranker without %r", src)
        other, _ = train_ranker(model.cfg, [s for s in train if s.source != src], [s for s in dev if s.source != src],
                                progress=progress)
        with torch.no_grad():
            for s in (*train, *dev):
                if s.source == src:
                    logits.append(other(s.features, s.tokens).float())
                    labels.append(s.labels)
    return logits, labels, {"calibrated_on": "cross-source", "held_out_sources": usable}
