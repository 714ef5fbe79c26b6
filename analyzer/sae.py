"""Stage 1: a TopK sparse autoencoder over per-line hidden states, with a paired contrastive term.

The recipe is Gao et al. 2024 ("Scaling and evaluating sparse autoencoders", arXiv 2406.04093) as
implemented in openai/sparse_autoencoder and EleutherAI/sparsify:

    x_n    = (x - mean) * scale                        # dataset normalisation, stored as buffers
    pre    = W_enc (x_n - b_dec) + b_enc
    z      = relu(topk(pre, k))                        # dense (N, n_latents), at most k non-zeros
    x_n^   = W_dec z + b_dec                           # W_dec columns have unit norm

The model and its persistence live here, because scoring encodes every line with it; the
training loop, whose loss adds a paired contrastive term to the reconstruction and AuxK losses,
is ``lab.sae_training``.

PtTrust's own "SAE" (reference code) is undercomplete, hard-tied, has no dead-latent handling and a
contrastive term whose effective weight is ~1/N; this module replaces all four.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analyzer.weights import load_state, save_state

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


# ------------------------------------------------------------------------------------------ persistence


def save_sae(model: SparseAutoencoder, directory: Path, name: str = "sae") -> dict[str, Any]:
    """Write ``<directory>/<name>.safetensors``; returns the config dict for manifest.json."""
    save_state(model, directory, name, "sae")
    return model.cfg.to_dict()


def load_sae(directory: Path, config: dict[str, Any], name: str = "sae") -> SparseAutoencoder:
    """Rebuild the SAE saved by ``save_sae`` from its directory and manifest config dict (eval mode)."""
    model = SparseAutoencoder(SAEConfig.from_dict(config))
    return load_state(model, directory, name, "SAE", "ptbot pretrain")
