"""Post-hoc calibration: turn ranker logits into P(line needs an edit).

Logistic maps fitted on held-out (dev) logits; ``s`` is a line's logit:

- ``platt``:        p = sigmoid(a * s + b)
- ``temperature``:  p = sigmoid(a * s)        (Guo et al. 2017; binary temperature scaling, a = 1/T)
- ``centred``:      p = sigmoid(a * (s - mean of s over the file) + b + c * log n_lines)

``centred`` reads only how a line stands out within its file, and the file's size. Fitted on Python
and applied to other languages, Platt carries over the level of Python's scores, which shifts with
the language; the centred map does not see that shift, and ``log n_lines`` carries the base rate
(most files have one or two lines to change, so the share of such lines falls with the file's size).
On mined fixes in five other languages it cut the mean ECE from 0.065 (Platt) to 0.041
(0.3.0's ranker, three seeds). What it gives up: a file whose lines all look risky gets no higher
probabilities than a quiet one; with training data in which every file has a bug, Platt learned
no such file-level signal either.

All are fitted by Newton's method on the mean negative log-likelihood plus a tiny L2 penalty
``l2/2 * |theta|^2``. The penalty only matters when the held-out scores separate the classes
perfectly, where the unpenalised optimum is at infinity. Isotonic regression is left out on
purpose: sklearn advises against it below ~1000 calibration samples, and it is not monotone-smooth.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

Method = Literal["platt", "temperature", "centred", "identity"]
_METHODS = ("platt", "temperature", "centred", "identity")
FITTED = ("platt", "temperature", "centred")
"""The methods ``Calibrator.fit`` / ``fit_files`` can fit (``identity`` has no parameters)."""
DEFAULT_METHOD: Method = "centred"
"""What ``bind``, ``rebind`` and ``eval`` fit unless told otherwise (lowest ECE on mined fixes)."""


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows.
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _as_scores(scores: Any, what: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(s).all():
        raise ValueError(f"calibration {what} contain NaN or inf; check the ranker output")
    return s


def _objective(theta: np.ndarray, design: np.ndarray, y: np.ndarray, l2: float) -> float:
    z = design @ theta
    # mean of log(1 + e^z) - y z, written stably
    nll = np.mean(np.logaddexp(0.0, z) - y * z)
    return float(nll + 0.5 * l2 * float(theta @ theta))


def _newton(design: np.ndarray, y: np.ndarray, l2: float, theta: np.ndarray, max_iter: int = 100,
            tol: float = 1e-10) -> tuple[np.ndarray, bool]:
    """Damped Newton on the penalised mean NLL of ``sigmoid(design @ theta)``; design (N, k), y (N,).

    Returns (theta, converged); ``theta`` is the starting point (k,).
    """
    n = len(y)
    f = _objective(theta, design, y, l2)
    for _ in range(max_iter):
        p = _sigmoid(design @ theta)
        grad = design.T @ (p - y) / n + l2 * theta
        w = p * (1 - p)
        hess = (design * w[:, None]).T @ design / n + l2 * np.eye(len(theta))
        step = np.linalg.solve(hess, grad)
        # Backtracking keeps every iterate a descent step even far from the optimum.
        t = 1.0
        while t > 1e-8:
            cand = theta - t * step
            f_cand = _objective(cand, design, y, l2)
            if f_cand <= f:
                break
            t *= 0.5
        else:
            return theta, True  # no descent direction left: at the optimum to machine precision
        theta, f_prev, f = cand, f, f_cand
        if np.max(np.abs(t * step)) < tol or f_prev - f < tol * 1e-3:
            return theta, True
    return theta, False


def _centred_columns(s: np.ndarray) -> tuple[np.ndarray, float]:
    """One file's logits (n,) -> (s - mean, log n): the inputs of the ``centred`` map."""
    return s - s.mean(), math.log(len(s))


@dataclass(frozen=True)
class Calibrator:
    """A fitted map from ranker logits to probabilities (the module docstring gives each map)."""

    method: Method = "identity"
    """'platt' (a and b fitted), 'temperature' (b = 0), 'centred' (a, b and c fitted on logits
    centred within their file) or 'identity' (a = 1, b = 0: plain sigmoid)."""
    a: float = 1.0
    """Slope on the logit (1/temperature); for 'centred', on the logit minus its file's mean."""
    b: float = 0.0
    """Intercept (0 for 'temperature' and 'identity')."""
    c: float = 0.0
    """'centred' only: slope on log(number of scored lines in the file); 0 otherwise."""

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"Calibrator.method must be one of {_METHODS}, got {self.method!r}")
        if not (math.isfinite(self.a) and math.isfinite(self.b) and math.isfinite(self.c)):
            raise ValueError(f"Calibrator parameters must be finite, got a={self.a}, b={self.b}, c={self.c}")
        if self.method in ("temperature", "identity") and self.b != 0.0:
            raise ValueError(f"Calibrator.b must be 0 for method {self.method!r}, got {self.b}")
        if self.method != "centred" and self.c != 0.0:
            raise ValueError(f"Calibrator.c must be 0 for method {self.method!r}, got {self.c}")
        if self.method == "identity" and self.a != 1.0:
            raise ValueError(f"Calibrator.a must be 1 for method 'identity', got {self.a}")

    @classmethod
    def identity(cls) -> Calibrator:
        """The uncalibrated sigmoid of the logit (for models trained without held-out data)."""
        return cls("identity", 1.0, 0.0)

    @classmethod
    def fit(cls, scores: Any, labels: Any, method: Method = "platt", l2: float = 1e-4) -> Calibrator:
        """Fit 'platt' or 'temperature' on held-out logits (N,) and 0/1 labels (N,) of any files.

        Both classes must be present. 'centred' needs to know which lines share a file: ``fit_files``.
        """
        if method == "centred":
            raise ValueError("Calibrator.fit: 'centred' needs the logits file by file; use Calibrator.fit_files")
        return cls._fit([_as_scores(scores)], [np.asarray(labels, dtype=np.float64).reshape(-1)], method, l2)

    @classmethod
    def fit_files(cls, scores: Sequence[Any], labels: Sequence[Any], method: Method = "platt",
                  l2: float = 1e-4) -> Calibrator:
        """Fit any method on held-out logits and 0/1 labels given file by file: (n_i,) arrays."""
        if len(scores) != len(labels):
            raise ValueError(f"Calibrator.fit_files: {len(scores)} files of scores but {len(labels)} of labels")
        return cls._fit([_as_scores(s) for s in scores],
                        [np.asarray(y, dtype=np.float64).reshape(-1) for y in labels], method, l2)

    @classmethod
    def _fit(cls, files: list[np.ndarray], labels: list[np.ndarray], method: str, l2: float) -> Calibrator:
        if method not in FITTED:
            raise ValueError(f"Calibrator.fit: method must be one of {FITTED}, got {method!r}")
        if l2 < 0:
            raise ValueError(f"Calibrator.fit: l2 must be >= 0, got {l2}")
        for s, y in zip(files, labels):
            if y.shape != s.shape:
                raise ValueError(f"Calibrator.fit: {s.size} scores but {y.size} labels; pass one label per score")
        files = [s for s in files if s.size]
        if not files:
            raise ValueError("Calibrator.fit: no scores; calibrate on a non-empty held-out split")
        y = np.concatenate(labels)
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("Calibrator.fit: labels must be 0 or 1")
        if y.min() == y.max():
            raise ValueError(f"Calibrator.fit: all {y.size} labels are {int(y[0])}; the held-out split needs "
                             "both buggy and correct lines to fit a calibration")
        # Start at unit slope and the base-rate intercept: the identity map shifted to the prior.
        base = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        prior = math.log(base / (1 - base))
        if method == "centred":
            cols = [_centred_columns(s) for s in files]
            design = np.stack([np.concatenate([c for c, _ in cols]), np.ones(y.size),
                               np.concatenate([np.full(len(c), ln) for c, ln in cols])], axis=1)
            start = np.array([1.0, prior, 0.0])
        else:
            s = np.concatenate(files)
            design = np.stack([s, np.ones_like(s)], axis=1) if method == "platt" else s[:, None]
            start = np.array([1.0, prior]) if method == "platt" else np.array([1.0])
        theta, converged = _newton(design, y, l2, start)
        if not converged:
            logger.warning("calibration (%s) did not converge in 100 Newton steps; using the last iterate", method)
        params = [float(t) for t in theta] + [0.0] * (3 - len(theta))
        cal = cls(method, *params)
        logger.info("calibration %s fitted on %d lines (%.1f%% buggy): a=%.4f b=%.4f c=%.4f",
                    method, y.size, 100 * y.mean(), cal.a, cal.b, cal.c)
        return cal

    def predict(self, scores: Any) -> np.ndarray:
        """Probabilities (float64 array shaped like ``scores``) for logits from the same ranker.

        For 'centred', ``scores`` are the logits of every scored line of *one* file.
        """
        shape = np.shape(scores)
        s = _as_scores(scores)
        if self.method == "centred":
            if s.size == 0:
                return s.reshape(shape)
            centred, log_n = _centred_columns(s)
            return _sigmoid(self.a * centred + self.b + self.c * log_n).reshape(shape)
        return _sigmoid(self.a * s + self.b).reshape(shape)

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
