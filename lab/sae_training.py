"""Training of the TopK sparse autoencoder (``analyzer.sae``): the paired contrastive term, the
optimiser step with dead-latent tracking, and the resumable training loop.

Loss per step (all terms are means, so no weight is diluted by the batch size):

    fvu(x_n, x_n^) + auxk_coef * auxk(dead latents) + contrastive_weight * contrastive(pairs)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from analyzer.sae import SAEConfig, SparseAutoencoder

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "sae_checkpoint.pt"
IDENTICAL_ATOL = 1e-4  # PT's pair filter threshold; PT's lacks abs() (drops large negative diffs)


def contrastive_loss(lat_correct: Tensor, lat_buggy: Tensor, margin: float) -> Tensor:
    """Per-pair cosine hinge ``mean_p relu(cos(a_p, b_p) - (1 - margin))``; a and b are (P, n_latents).

    Why this form: TopK latents are non-negative, so cos is in [0, 1] and ``1 - margin`` is an
    absolute similarity ceiling per pair. Cosine is scale-free, so the term cannot be satisfied by
    shrinking or inflating latent norms (which would fight the reconstruction), and each pair gets
    its own gradient, unlike PT's whole-matrix Frobenius normalisation whose hinge is always active
    and then divided by N. A pair already dissimilar enough costs nothing, so the
    term does not keep pushing apart lines whose difference the SAE already represents.
    """
    if lat_correct.shape != lat_buggy.shape or lat_correct.ndim != 2:
        raise ValueError(f"contrastive_loss needs two (P, n) tensors of equal shape, got "
                         f"{tuple(lat_correct.shape)} and {tuple(lat_buggy.shape)}")
    if lat_correct.shape[0] == 0:
        return lat_correct.new_zeros(())
    cos = F.cosine_similarity(lat_correct, lat_buggy, dim=1, eps=1e-8)
    return F.relu(cos - (1.0 - margin)).mean()


def drop_identical_pairs(x: Tensor, pairs: Tensor, atol: float = IDENTICAL_ATOL) -> Tensor:
    """Keep the (correct_row, buggy_row) pairs whose raw inputs differ by more than ``atol`` somewhere.

    A mutation that leaves the line's hidden state unchanged (e.g. the line before any edit) carries
    no contrastive signal; pushing its two identical inputs apart is impossible and only adds noise.
    """
    if pairs.numel() == 0:
        return pairs.reshape(0, 2)
    same = ((x[pairs[:, 0]] - x[pairs[:, 1]]).abs() <= atol).all(dim=1)
    return pairs[~same]



def _check_training_data(cfg: SAEConfig, x: Tensor, pairs: Tensor) -> None:
    if x.ndim != 2 or x.shape[1] != cfg.d_in:
        raise ValueError(f"train_sae: x must be (N, {cfg.d_in}), got {tuple(x.shape)}; set SAEConfig.d_in to x.shape[1]")
    if x.shape[0] < 2:
        raise ValueError(f"train_sae: need at least 2 lines, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError("train_sae: x contains NaN or inf; check the hidden-state extraction")
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"train_sae: pairs must be an integer (P, 2) tensor of (correct_row, buggy_row), "
                         f"got {tuple(pairs.shape)} {pairs.dtype}")
    if pairs.numel() and (pairs.min() < 0 or pairs.max() >= x.shape[0]):
        raise ValueError(f"train_sae: pair indices must be in [0, {x.shape[0]}), "
                         f"got range [{int(pairs.min())}, {int(pairs.max())}]")


def _fingerprint(x: Tensor, pairs: Tensor) -> list[float]:
    """Cheap identity of the training data, so a checkpoint is never resumed on different data."""
    return [float(x.shape[0]), float(x.double().sum()), float(x.double().abs().sum()), float(pairs.shape[0]),
            float(pairs.double().sum())]


def _resume_key(cfg: SAEConfig) -> dict[str, Any]:
    # ``epochs`` may grow between runs: extending a finished run is a legitimate resume.
    return {k: v for k, v in cfg.to_dict().items() if k != "epochs"}


def make_optimizer(model: SparseAutoencoder) -> torch.optim.Optimizer:
    """Adam without weight decay and OpenAI's tiny eps, as in Gao et al."""
    return torch.optim.Adam(model.parameters(), lr=model.cfg.lr, eps=6.25e-10)


@dataclass
class _TrainState:
    model: SparseAutoencoder
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    steps_since_fired: Tensor
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _new_state(cfg: SAEConfig, x: Tensor) -> _TrainState:
    gen = torch.Generator().manual_seed(cfg.seed)
    model = SparseAutoencoder(cfg)  # seeded random init; the generator then drives the data sample
    model.init_from_data(x, gen)
    return _TrainState(model, make_optimizer(model), gen, torch.zeros(cfg.n_latents, dtype=torch.long), 0, [])


def _save_checkpoint(path: Path, state: _TrainState, cfg: SAEConfig, fingerprint: list[float]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
        "steps_since_fired": state.steps_since_fired,
        "epoch": state.epoch,
        "history": state.history,
        "resume_key": _resume_key(cfg),
        "fingerprint": fingerprint,
    }, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint


def _load_checkpoint(path: Path, state: _TrainState, cfg: SAEConfig, fingerprint: list[float]) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt["resume_key"] != _resume_key(cfg):
        raise ValueError(f"checkpoint {path} was made with a different SAEConfig; delete it or use another "
                         f"--checkpoint-dir (checkpoint: {ckpt['resume_key']}, now: {_resume_key(cfg)})")
    if ckpt["fingerprint"] != fingerprint:
        raise ValueError(f"checkpoint {path} was made on different training data; delete it to start over")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.generator.set_state(ckpt["generator"])
    state.steps_since_fired = ckpt["steps_since_fired"]
    state.epoch = int(ckpt["epoch"])
    state.history = list(ckpt["history"])
    logger.info("resumed SAE training from %s at epoch %d", path, state.epoch)


def sae_step(model: SparseAutoencoder, optimizer: torch.optim.Optimizer, cfg: SAEConfig, xb: Tensor,
             pa: Tensor, pb: Tensor, steps_since_fired: Tensor) -> dict[str, float]:
    """One optimiser step on lines ``xb`` (B, d_in) and contrastive pairs ``pa``/``pb`` (P, d_in).

    ``steps_since_fired`` (n_latents,) long is updated in place; latents at or above
    ``cfg.dead_steps`` are dead and feed the AuxK loss. After the step the decoder columns are
    renormalised (the parallel gradient component was removed first, so Adam's moments stay sane).
    """
    dead_mask = steps_since_fired >= cfg.dead_steps if cfg.auxk_coef > 0 else None
    out = model(xb, dead_mask)
    loss = out.fvu + cfg.auxk_coef * out.auxk_loss
    loss_c = xb.new_zeros(())
    if cfg.contrastive_weight > 0 and pa.shape[0] > 0:
        loss_c = contrastive_loss(model.encode(pa), model.encode(pb), cfg.contrastive_margin)
        loss = loss + cfg.contrastive_weight * loss_c
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    model.remove_parallel_grad_()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    model.normalize_decoder_()
    fired = (out.latents > 0).any(0)
    steps_since_fired += 1
    steps_since_fired[fired] = 0
    return {"fvu": out.fvu.item(), "auxk": out.auxk_loss.item(), "contrastive": loss_c.item()}


@torch.no_grad()
def evaluate_sae(model: SparseAutoencoder, x: Tensor, pairs: Tensor, batch_size: int = 4096) -> dict[str, float]:
    """FVU over all of ``x`` and the contrastive loss / mean cosine of the (already filtered) pairs."""
    model.eval()
    xn = model.normalize(x)
    sse = sum(float((model.decode_normalized(model.encode(x[i:i + batch_size])) - xn[i:i + batch_size]).pow(2).sum())
              for i in range(0, x.shape[0], batch_size))
    total = float((xn - xn.mean(0)).pow(2).sum())
    metrics = {"fvu": sse / max(total, 1e-12), "contrastive": 0.0, "pair_cosine": float("nan")}
    if pairs.shape[0]:
        za, zb = model.encode(x[pairs[:, 0]]), model.encode(x[pairs[:, 1]])
        metrics["contrastive"] = float(contrastive_loss(za, zb, model.cfg.contrastive_margin))
        metrics["pair_cosine"] = float(F.cosine_similarity(za, zb, dim=1, eps=1e-8).mean())
    model.train()
    return metrics


def train_sae(cfg: SAEConfig, x: Tensor, pairs: Tensor, *, checkpoint_dir: Path | None = None,
              progress: bool = True) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train a TopK SAE on line vectors ``x`` (N, d_in) with contrastive ``pairs`` (P, 2) of row indices.

    Every epoch shuffles the lines into batches of ``cfg.batch_size``; each step also samples
    ``cfg.pair_batch_size`` pairs (with replacement) for the contrastive term. With
    ``checkpoint_dir`` the full training state is saved after every epoch and, if a checkpoint is
    already there, training resumes from it and ends bit-identical to an uninterrupted run.
    Returns the model (in eval mode) and metrics: final ``fvu``, ``dead_fraction``,
    ``contrastive``, ``pair_cosine``, pair counts and a per-epoch ``history``.
    """
    x = x.detach().float().cpu()
    pairs = pairs.detach().long().cpu()
    _check_training_data(cfg, x, pairs)
    n_pairs_in = pairs.shape[0]
    pairs = drop_identical_pairs(x, pairs)
    if n_pairs_in - pairs.shape[0]:
        logger.info("dropped %d of %d contrastive pairs whose inputs are identical",
                    n_pairs_in - pairs.shape[0], n_pairs_in)
    if cfg.contrastive_weight > 0 and pairs.shape[0] == 0:
        logger.warning("contrastive_weight=%s but no usable pairs: training on reconstruction only",
                       cfg.contrastive_weight)

    state = _new_state(cfg, x)
    fingerprint = _fingerprint(x, pairs)
    ckpt_path = None
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = checkpoint_dir / CHECKPOINT_NAME
        if ckpt_path.exists():
            _load_checkpoint(ckpt_path, state, cfg, fingerprint)

    n = x.shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=state.epoch * steps_per_epoch,
               disable=not progress, desc="sae", unit="step")
    state.model.train()
    while state.epoch < cfg.epochs:
        order = torch.randperm(n, generator=state.generator)
        sums = {"fvu": 0.0, "auxk": 0.0, "contrastive": 0.0}
        for i in range(steps_per_epoch):
            xb = x[order[i * cfg.batch_size:(i + 1) * cfg.batch_size]]
            if pairs.shape[0]:
                pick = pairs[torch.randint(pairs.shape[0], (cfg.pair_batch_size,), generator=state.generator)]
                pa, pb = x[pick[:, 0]], x[pick[:, 1]]
            else:
                pa = pb = x[:0]
            step = sae_step(state.model, state.optimizer, cfg, xb, pa, pb, state.steps_since_fired)
            for key in sums:
                sums[key] += step[key]
            bar.update(1)
            bar.set_postfix(fvu=f"{step['fvu']:.3f}", dead=int((state.steps_since_fired >= cfg.dead_steps).sum()))
        state.epoch += 1
        state.history.append({"epoch": state.epoch, **{k: v / steps_per_epoch for k, v in sums.items()},
                              "dead_fraction": float((state.steps_since_fired >= cfg.dead_steps).float().mean())})
        logger.info("sae epoch %d/%d: %s", state.epoch, cfg.epochs, state.history[-1])
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, state, cfg, fingerprint)
    bar.close()

    model = state.model
    metrics: dict[str, Any] = evaluate_sae(model, x, pairs)
    metrics.update({
        "dead_fraction": float((state.steps_since_fired >= cfg.dead_steps).float().mean()),
        "n_lines": n,
        "n_pairs": int(pairs.shape[0]),
        "n_pairs_dropped_identical": int(n_pairs_in - pairs.shape[0]),
        "history": list(state.history),
    })
    model.eval()
    return model, metrics
