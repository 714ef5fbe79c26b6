"""Stage 2: per-line MLPs that turn one snippet's line features into risk logits.

Each line of a snippet is scored independently (``RankerMLP``: features -> one logit per member
MLP, averaged; higher = riskier), plus an optional fixed length prior. The model and its persistence live here, because
scoring runs it on every file; its training (NeuralNDCG over each snippet's lines with a
pointwise BCE head on the same logit, so ``calibrate.Calibrator`` can turn the logit into a
probability) is ``lab.ranker_training``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from analyzer.artifact import config_fields
from analyzer.weights import load_state, save_state


@dataclass(frozen=True)
class RankerConfig:
    """Architecture and training settings of the per-line ranker."""

    d_in: int
    """Width of the per-line feature vectors (``analyzer.features.FeatureConfig.n_inputs``)."""
    hidden: int = 64
    """Width of the hidden layers."""
    layers: int = 2
    """Number of hidden layers (PT: 4 of width 32)."""
    dropout: float = 0.1
    """Dropout after each hidden layer."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    epochs: int = 60
    """Maximum passes over the training snippets."""
    batch_snippets: int = 16
    """Snippets (slates) per optimiser step."""
    temperature: float = 1.0
    """NeuralSort temperature of the NeuralNDCG term."""
    ndcg_weight: float = 1.0
    """Weight of the NeuralNDCG loss (0 = pointwise BCE only)."""
    bce_weight: float = 1.0
    """Weight of the per-line BCE loss (0 = pure PtTrust-style ranking; logits then need calibration)."""
    pos_weight: float | None = None
    """BCE weight of buggy lines (e.g. n_correct / n_buggy); None = unweighted."""
    patience: int = 10
    """Stop after this many epochs without a better dev score."""
    seed: int = 0
    """Seed of the initialisation, dropout and shuffling."""
    length_prior: float = 3.0
    """Weight of a fixed prior added to every *scoring* logit except a declaration line's: the
    line's log(1 + token count) centred on its snippet (``length_prior_term``). Longest-line-first
    is the ranking that transfers best across languages, and a ranker trained on a few languages
    leans on cues that do not carry over. 3 was chosen on the corpus's validation repositories
    (weights 2/3/4 gave mean Top-1 0.231/0.242/0.245 with five members; 3 has the higher AUROC).
    Declaration lines (imports, function and type headers: the last input column,
    ``analyzer.features.ranker_inputs``) get no prior: they are long for reasons that say nothing
    about their risk (a wrapped signature, a long ``use`` list). Training ignores the prior
    (trained with it, the MLP learned to cancel it and transferred worse). 0 = none."""
    members: int = 5
    """Independently initialised MLPs (seeds ``seed``, ``seed + 1``, ...), each trained and
    early-stopped on its own, whose logits are averaged. On a few thousand training files the
    spread between seeds is as large as the gaps between recipes, and averaging removes most of it
    (validation repositories, mean Top-1: one MLP 0.231 over four seeds, five averaged 0.241)."""

    def __post_init__(self) -> None:
        for name in ("d_in", "hidden", "layers", "epochs", "batch_snippets", "patience", "members"):
            if getattr(self, name) < 1:
                raise ValueError(f"RankerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"RankerConfig.dropout must be in [0, 1), got {self.dropout}")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RankerConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "ndcg_weight", "bce_weight", "length_prior"):
            if getattr(self, name) < 0:
                raise ValueError(f"RankerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.ndcg_weight == 0 and self.bce_weight == 0:
            raise ValueError("RankerConfig: ndcg_weight and bce_weight are both 0; set at least one > 0")
        if self.pos_weight is not None and not self.pos_weight > 0:
            raise ValueError(f"RankerConfig.pos_weight must be > 0 or None, got {self.pos_weight}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RankerConfig:
        """Read a manifest's ``ranker``, as ``to_dict`` wrote it."""
        return cls(**config_fields(cls, d, "RankerConfig"))


class RankerMLP(nn.Module):
    """``cfg.members`` MLPs, each Linear(d_in, h) -> [ReLU, Dropout, Linear(h, h)] * (layers - 1)
    -> ReLU, Dropout -> Linear(h, 1); the ranker's logit is their mean."""

    def __init__(self, cfg: RankerConfig):
        super().__init__()
        self.cfg = cfg
        self.members = nn.ModuleList(_mlp(cfg) for _ in range(cfg.members))

    def mlp_logits(self, x: Tensor) -> Tensor:
        """The MLPs' mean logit for lines ``x`` (..., d_in) -> (...): what training optimises."""
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"ranker expects {self.cfg.d_in}-d line features, got {tuple(x.shape)}")
        return torch.stack([m(x).squeeze(-1) for m in self.members]).mean(dim=0)

    def forward(self, x: Tensor, tokens: Tensor | None = None) -> Tensor:
        """Risk logits of one snippet's lines ``x`` (L, d_in) -> (L,); higher = riskier.

        ``x`` as ``analyzer.features.ranker_inputs`` makes it (its last column marks declaration
        lines); ``tokens`` (L,): each line's token count, needed when ``cfg.length_prior`` is set.
        """
        logits = self.mlp_logits(x)
        if self.cfg.length_prior:
            if tokens is None or tokens.shape != logits.shape:
                raise ValueError(f"this ranker adds a length prior: pass the token count of each of the "
                                 f"{tuple(logits.shape)} lines")
            # The last input column is 1.0 on declaration lines, which get no prior.
            term = length_prior_term(tokens) * (1.0 - x[..., -1])
            logits = logits + self.cfg.length_prior * term
        return logits


def _mlp(cfg: RankerConfig) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Linear(cfg.d_in, cfg.hidden)]
    for _ in range(cfg.layers - 1):
        mods += [nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.hidden)]
    mods += [nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, 1)]
    return nn.Sequential(*mods)


def length_prior_term(tokens: Tensor) -> Tensor:
    """(L,) token counts -> (L,) log(1 + count) minus its mean over the snippet.

    Centred, so the prior only orders lines within a file and leaves the logit's level (the file's
    overall risk, as far as a Platt calibrator reads it) unchanged.
    """
    ll = torch.log1p(tokens.to(torch.float32))
    return ll - ll.mean(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------- persistence


def save_ranker(model: RankerMLP, directory: Path, name: str = "ranker") -> dict[str, Any]:
    """Write ``<directory>/<name>.safetensors``; returns the config dict for manifest.json."""
    save_state(model, directory, name, "ranker")
    return model.cfg.to_dict()


def load_ranker(directory: Path, config: dict[str, Any], name: str = "ranker") -> RankerMLP:
    """Rebuild the ranker saved by ``save_ranker`` (eval mode)."""
    model = RankerMLP(RankerConfig.from_dict(config))
    return load_state(model, directory, name, "ranker", "ptbot bind")
