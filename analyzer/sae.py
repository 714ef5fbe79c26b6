"""Stage 1: a TopK sparse autoencoder over per-line hidden states, with a paired contrastive term.

The recipe is Gao et al. 2024 ("Scaling and evaluating sparse autoencoders", arXiv 2406.04093) as
implemented in openai/sparse_autoencoder and EleutherAI/sparsify:

    x_n    = (x - mean) * scale                        # dataset normalisation, stored as buffers
    pre    = W_enc (x_n - b_dec) + b_enc
    z      = relu(topk(pre, k))                        # dense (N, n_latents), at most k non-zeros
    x_n^   = W_dec z + b_dec                           # W_dec columns have unit norm

Loss per step (all terms are means, so no weight is diluted by the batch size):

    fvu(x_n, x_n^) + auxk_coef * auxk(dead latents) + contrastive_weight * contrastive(pairs)

PtTrust's own "SAE" (reference code) is undercomplete, hard-tied, has no dead-latent handling and a
contrastive term whose effective weight is ~1/N; this module replaces all four.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from analyzer.weights import load_state, save_state

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "sae_checkpoint.pt"
IDENTICAL_ATOL = 1e-4  # PT's pair filter threshold; PT's lacks abs() (drops large negative diffs)
_INIT_SAMPLE = 32768  # rows used for normalisation and b_dec (OpenAI uses the same cap)


@dataclass(frozen=True)
class SAEConfig:
    """Architecture and training settings of the TopK SAE; ``None`` fields are derived from others."""

    d_in: int
    """Width of the input vectors (the supervisor's hidden size, or 2x with line-mean features)."""
    n_latents: int | None = None
    """Dictionary size; None = 4 * d_in. 2-8x fits ptbot's data; SAE libraries' 32x is far past it."""
    k: int = 32
    """Active latents per line (TopK)."""
    auxk: int | None = None
    """k_aux: how many dead latents the AuxK loss may use; None = d_in // 2 (Gao et al. App. B.1)."""
    auxk_coef: float = 1 / 32
    """Weight of the AuxK loss (0 disables dead-latent revival)."""
    dead_steps: int = 100
    """A latent that has not fired for this many optimiser steps counts as dead."""
    contrastive_weight: float = 0.5
    """Explicit weight of the paired contrastive loss in the total loss (0 disables it)."""
    contrastive_margin: float = 0.5
    """A pair costs nothing once cos(z_correct, z_buggy) <= 1 - margin; in (0, 1]."""
    lr: float | None = None
    """Adam learning rate; None = 2e-4 / sqrt(n_latents / 2**14) (the 1/sqrt(n) scaling law)."""
    epochs: int = 10
    """Passes over the lines."""
    batch_size: int = 1024
    """Lines per optimiser step."""
    pair_batch_size: int = 256
    """Pairs sampled per step for the contrastive term."""
    bias_init: Literal["geometric_median", "mean"] = "geometric_median"
    """How b_dec is initialised from the (normalised) data."""
    seed: int = 0
    """Seed of the initialisation, shuffling and pair sampling."""

    def __post_init__(self) -> None:
        if self.d_in < 1:
            raise ValueError(f"SAEConfig.d_in must be >= 1, got {self.d_in}")
        # Resolve the derived defaults once so to_dict() records the values actually used.
        if self.n_latents is None:
            object.__setattr__(self, "n_latents", 4 * self.d_in)
        if self.auxk is None:
            object.__setattr__(self, "auxk", max(1, self.d_in // 2))
        if self.lr is None:
            object.__setattr__(self, "lr", 2e-4 / math.sqrt(self.n_latents / 2**14))
        if not 1 <= self.k <= self.n_latents:
            raise ValueError(f"SAEConfig.k must be in [1, n_latents={self.n_latents}], got {self.k}")
        if self.auxk < 1:
            raise ValueError(f"SAEConfig.auxk must be >= 1, got {self.auxk}")
        for name in ("auxk_coef", "contrastive_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"SAEConfig.{name} must be >= 0 (0 disables the term), got {getattr(self, name)}")
        if not 0 < self.contrastive_margin <= 1:
            raise ValueError(f"SAEConfig.contrastive_margin must be in (0, 1], got {self.contrastive_margin}")
        for name in ("dead_steps", "epochs", "batch_size", "pair_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SAEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"SAEConfig.lr must be > 0, got {self.lr}")
        if self.bias_init not in ("geometric_median", "mean"):
            raise ValueError(f"SAEConfig.bias_init must be 'geometric_median' or 'mean', got {self.bias_init!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SAEConfig fields {sorted(unknown)}; was the artifact built by a newer ptbot?")
        return cls(**d)


class SAEOutput(NamedTuple):
    recon: Tensor
    """Reconstruction in the caller's (un-normalised) input space, shape (N, d_in)."""
    latents: Tensor
    """Dense TopK latents, shape (N, n_latents), at most k non-zeros per row."""
    fvu: Tensor
    """Fraction of variance unexplained in the normalised space (scalar)."""
    auxk_loss: Tensor
    """AuxK loss (scalar); 0 when no dead mask was given or no latent is dead."""


def geometric_median(points: Tensor, max_iter: int = 100, tol: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to ``points`` (N, d)."""
    median = points.mean(0)
    for _ in range(max_iter):
        # Clamp so a median landing exactly on a data point does not divide by zero.
        w = 1.0 / torch.linalg.vector_norm(points - median, dim=1).clamp_min(1e-8)
        new = (w[:, None] * points).sum(0) / w.sum()
        if torch.linalg.vector_norm(new - median) <= tol * (1 + torch.linalg.vector_norm(median)):
            return new
        median = new
    return median


def fvu(x: Tensor, x_hat: Tensor) -> Tensor:
    """Fraction of variance unexplained: SSE / total variance of ``x`` around its batch mean (both (N, d))."""
    total = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    return (x_hat - x).pow(2).sum() / total


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


class SparseAutoencoder(nn.Module):
    """TopK SAE with dataset normalisation buffers, unit-norm decoder columns and a data-initialised b_dec."""

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        d, n = cfg.d_in, cfg.n_latents
        # Normalisation: x_n = (x - x_mean) * x_scale with x_scale chosen so E||x_n||^2 = d_in on the
        # training data. Residual streams have a large shared offset and layer-dependent norms; fixing
        # them here makes k, lr and the AuxK coefficient transfer across supervisors.
        self.register_buffer("x_mean", torch.zeros(d))
        self.register_buffer("x_scale", torch.ones(()))
        self.encoder = nn.Linear(d, n)
        # OpenAI layout: (d_in, n_latents); column j is latent j's direction in input space.
        self.W_dec = nn.Parameter(torch.empty(d, n))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.reset_parameters(torch.Generator().manual_seed(cfg.seed))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Random encoder, decoder = encoder.T (tied *init*, not a tie), unit-norm columns."""
        bound = 1.0 / math.sqrt(self.cfg.d_in)
        self.encoder.weight.copy_(torch.rand(self.encoder.weight.shape, generator=generator) * 2 * bound - bound)
        self.encoder.bias.zero_()
        self.W_dec.copy_(self.encoder.weight.T)
        self.normalize_decoder_()

    @torch.no_grad()
    def init_from_data(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Set the normalisation buffers and b_dec from (a sample of at most 32768 rows of) ``x`` (N, d_in)."""
        self._check_input(x)
        if x.shape[0] > _INIT_SAMPLE:
            x = x[torch.randperm(x.shape[0], generator=generator)[:_INIT_SAMPLE]]
        x = x.float()
        mean = x.mean(0)
        sq = (x - mean).pow(2).sum(1).mean()
        self.x_mean.copy_(mean)
        self.x_scale.copy_(torch.sqrt(self.cfg.d_in / sq.clamp_min(1e-12)))
        xn = (x - mean) * self.x_scale
        self.b_dec.copy_(geometric_median(xn) if self.cfg.bias_init == "geometric_median" else xn.mean(0))

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=0, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Project out the gradient component along each decoder column (it would only change its norm)."""
        if self.W_dec.grad is None:
            return
        parallel = (self.W_dec.grad * self.W_dec).sum(0, keepdim=True)
        self.W_dec.grad.sub_(parallel * self.W_dec)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.cfg.d_in:
            raise ValueError(f"SAE expects (N, {self.cfg.d_in}) inputs, got {tuple(x.shape)}; "
                             "was the SAE trained on another supervisor layer or feature set?")

    def normalize(self, x: Tensor) -> Tensor:
        return (x.to(self.x_mean.dtype) - self.x_mean) * self.x_scale

    def pre_acts(self, xn: Tensor) -> Tensor:
        """Encoder pre-activations of normalised inputs, (N, n_latents)."""
        return self.encoder(xn - self.b_dec)

    def _topk(self, pre: Tensor) -> Tensor:
        values, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, F.relu(values))

    def encode(self, x: Tensor) -> Tensor:
        """Dense TopK latents of raw inputs ``x`` (N, d_in) -> (N, n_latents); ReLU after TopK."""
        self._check_input(x)
        return self._topk(self.pre_acts(self.normalize(x)))

    def decode_normalized(self, latents: Tensor) -> Tensor:
        return latents @ self.W_dec.T + self.b_dec

    def forward(self, x: Tensor, dead_mask: Tensor | None = None) -> SAEOutput:
        """Encode and decode ``x`` (N, d_in); ``dead_mask`` (n_latents,) bool enables the AuxK loss."""
        self._check_input(x)
        xn = self.normalize(x)
        pre = self.pre_acts(xn)
        latents = self._topk(pre)
        recon_n = self.decode_normalized(latents)
        loss_fvu = fvu(xn, recon_n)
        auxk_loss = self._auxk_loss(xn, recon_n, pre, dead_mask)
        recon = recon_n / self.x_scale + self.x_mean
        return SAEOutput(recon, latents, loss_fvu, auxk_loss)

    def _auxk_loss(self, xn: Tensor, recon_n: Tensor, pre: Tensor, dead_mask: Tensor | None) -> Tensor:
        """Let the top-k_aux *dead* latents model the residual, so they get gradient and can revive."""
        n_dead = int(dead_mask.sum()) if dead_mask is not None else 0
        if n_dead == 0:
            return pre.new_zeros(())
        k_aux = min(self.cfg.auxk, n_dead)
        # sparsify: scale down when few latents are dead so the term fades out gracefully.
        scale = min(n_dead / self.cfg.auxk, 1.0)
        values, idx = pre.masked_fill(~dead_mask, -torch.inf).topk(k_aux, dim=-1, sorted=False)
        aux = torch.zeros_like(pre).scatter_(-1, idx, F.relu(values))
        residual = xn - recon_n.detach()
        # Both sides exclude b_dec: the residual is what the live latents failed to explain.
        # Normalised by the input's total variance (as sparsify does), so it reads on the FVU scale.
        total = (xn - xn.mean(0)).pow(2).sum().clamp_min(1e-12)
        return scale * (aux @ self.W_dec.T - residual).pow(2).sum() / total


# --------------------------------------------------------------------------------------------- training


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


# ------------------------------------------------------------------------------------------ persistence


def save_sae(model: SparseAutoencoder, directory: Path, name: str = "sae") -> dict[str, Any]:
    """Write ``<directory>/<name>.safetensors``; returns the config dict for manifest.json."""
    save_state(model, directory, name, "sae")
    return model.cfg.to_dict()


def load_sae(directory: Path, config: dict[str, Any], name: str = "sae") -> SparseAutoencoder:
    """Rebuild the SAE saved by ``save_sae`` from its directory and manifest config dict (eval mode)."""
    model = SparseAutoencoder(SAEConfig.from_dict(config))
    return load_state(model, directory, name, "SAE", "ptbot pretrain")
