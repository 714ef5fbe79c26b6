"""Post-hoc calibration: turn ranker logits into P(line needs an edit).

A model's map is ``centred``, fitted on held-out logits (``lab.train.bind``); ``s`` is a line's logit:

    p = sigmoid(a * (s - mean of s over the file) + b + c * log n_lines)

It reads only how a line stands out within its file, and the file's size. Fitted on Python and
applied to other languages, a map of the raw logit (Platt's, ``sigmoid(a * s + b)``) carries over
the level of Python's scores, which shifts with the language; the centred map does not see that
shift, and ``log n_lines`` carries the base rate (most files have one or two lines to change, so
the share of such lines falls with the file's size). On mined fixes in five other languages it cut
the mean ECE from 0.065 (Platt) to 0.041 (0.3.0's ranker, three seeds). What it gives up: a file
whose lines all look risky gets no higher probabilities than a quiet one; with training data in
which every file has a bug, Platt learned no such file-level signal either.

``platt`` remains for the baselines only: ``ptbot eval``'s ``length``, ``uncertainty`` and
LookBack scores and ``ptbot adapt``'s ``length`` row are calibrated with it, so that they get a
Brier score too; their scores have no per-file meaning to centre.

The map and how it applies live here, because scoring turns every logit into a probability with
it; fitting it is ``lab.calibration_fit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Method = Literal["centred", "platt"]
_METHODS = ("centred", "platt")


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise, as float64."""
    # Split by sign so exp never overflows.
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def as_scores(scores: Any, what: str = "scores") -> np.ndarray:
    """Logits as a flat float64 array; NaN or inf is refused (a broken ranker, not a score)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(s).all():
        raise ValueError(f"calibration {what} contain NaN or inf; check the ranker output")
    return s


def centred_columns(s: np.ndarray) -> tuple[np.ndarray, float]:
    """One file's logits (n,) -> (s - mean, log n): the inputs of the ``centred`` map."""
    return s - s.mean(), math.log(len(s))


@dataclass(frozen=True)
class Calibrator:
    """A fitted map from ranker logits to probabilities (the module docstring gives each map)."""

    method: Method
    """'centred' (a model's map: a, b and c fitted on logits centred within their file) or 'platt'
    (a baseline's: a and b fitted on the raw score)."""
    a: float = 1.0
    """Slope on the logit; for 'centred', on the logit minus its file's mean."""
    b: float = 0.0
    """Intercept."""
    c: float = 0.0
    """'centred' only: slope on log(number of scored lines in the file); 0 for 'platt'."""

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"Calibrator.method must be one of {_METHODS}, got {self.method!r}")
        if not (math.isfinite(self.a) and math.isfinite(self.b) and math.isfinite(self.c)):
            raise ValueError(f"Calibrator parameters must be finite, got a={self.a}, b={self.b}, c={self.c}")
        if self.method != "centred" and self.c != 0.0:
            raise ValueError(f"Calibrator.c must be 0 for method {self.method!r}, got {self.c}")

    def predict(self, scores: Any) -> np.ndarray:
        """Probabilities (float64 array shaped like ``scores``) for logits from the same ranker.

        For 'centred', ``scores`` are the logits of every scored line of *one* file.
        """
        shape = np.shape(scores)
        s = as_scores(scores)
        if self.method == "centred":
            if s.size == 0:
                return s.reshape(shape)
            centred, log_n = centred_columns(s)
            return sigmoid(self.a * centred + self.b + self.c * log_n).reshape(shape)
        return sigmoid(self.a * s + self.b).reshape(shape)

    def to_dict(self) -> dict[str, Any]:
        d = {"method": self.method, "a": float(self.a), "b": float(self.b)}
        return {**d, "c": float(self.c)} if self.method == "centred" else d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        unknown = set(d) - {"method", "a", "b", "c"}
        if unknown or "method" not in d:
            raise ValueError(f"calibration config needs 'method', 'a', 'b' (unknown: {sorted(unknown)}); "
                             "was the artifact built by another ptbot version?")
        return cls(d["method"], float(d.get("a", 1.0)), float(d.get("b", 0.0)), float(d.get("c", 0.0)))
