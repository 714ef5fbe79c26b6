"""Post-hoc calibration: turn ranker logits into P(line needs an edit).

Two one-dimensional logistic maps fitted on held-out (dev) logits, method.md §2.4:

- ``platt``:        p = sigmoid(a * s + b)
- ``temperature``:  p = sigmoid(a * s)        (Guo et al. 2017; binary temperature scaling, a = 1/T)

Both are fitted by Newton's method on the mean negative log-likelihood plus a tiny L2 penalty
``l2/2 * (a^2 + b^2)``. The penalty only matters when the held-out scores separate the classes
perfectly, where the unpenalised optimum is at infinity. Isotonic regression is left out on
purpose: sklearn advises against it below ~1000 calibration samples, and it is not monotone-smooth.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

Method = Literal["platt", "temperature", "identity"]
_METHODS = ("platt", "temperature", "identity")


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


def _objective(theta: np.ndarray, s: np.ndarray, y: np.ndarray, l2: float, fit_bias: bool) -> float:
    z = theta[0] * s + (theta[1] if fit_bias else 0.0)
    # mean of log(1 + e^z) - y z, written stably
    nll = np.mean(np.logaddexp(0.0, z) - y * z)
    return float(nll + 0.5 * l2 * float(theta @ theta))


def _newton(s: np.ndarray, y: np.ndarray, l2: float, fit_bias: bool, max_iter: int = 100,
            tol: float = 1e-10) -> tuple[np.ndarray, bool]:
    """Damped Newton on the penalised mean NLL; returns (theta, converged). theta = [a, b] or [a]."""
    # Start at the base-rate intercept and unit slope: the identity map shifted to the prior.
    base = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    theta = np.array([1.0, math.log(base / (1 - base))]) if fit_bias else np.array([1.0])
    design = np.stack([s, np.ones_like(s)], axis=1) if fit_bias else s[:, None]
    n = len(s)
    f = _objective(theta, s, y, l2, fit_bias)
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
            f_cand = _objective(cand, s, y, l2, fit_bias)
            if f_cand <= f:
                break
            t *= 0.5
        else:
            return theta, True  # no descent direction left: at the optimum to machine precision
        theta, f_prev, f = cand, f, f_cand
        if np.max(np.abs(t * step)) < tol or f_prev - f < tol * 1e-3:
            return theta, True
    return theta, False


@dataclass(frozen=True)
class Calibrator:
    """A fitted map from ranker logits to probabilities: ``p = sigmoid(a * score + b)``."""

    method: Method = "identity"
    """'platt' (a and b fitted), 'temperature' (b = 0) or 'identity' (a = 1, b = 0: plain sigmoid)."""
    a: float = 1.0
    """Slope on the logit (1/temperature)."""
    b: float = 0.0
    """Intercept (0 for 'temperature' and 'identity')."""

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"Calibrator.method must be one of {_METHODS}, got {self.method!r}")
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError(f"Calibrator parameters must be finite, got a={self.a}, b={self.b}")
        if self.method != "platt" and self.b != 0.0:
            raise ValueError(f"Calibrator.b must be 0 for method {self.method!r}, got {self.b}")
        if self.method == "identity" and self.a != 1.0:
            raise ValueError(f"Calibrator.a must be 1 for method 'identity', got {self.a}")

    @classmethod
    def identity(cls) -> Calibrator:
        """The uncalibrated sigmoid of the logit (for models trained without held-out data)."""
        return cls("identity", 1.0, 0.0)

    @classmethod
    def fit(cls, scores: Any, labels: Any, method: Method = "platt", l2: float = 1e-4) -> Calibrator:
        """Fit on held-out logits (N,) and 0/1 labels (N,); both classes must be present."""
        if method not in ("platt", "temperature"):
            raise ValueError(f"Calibrator.fit: method must be 'platt' or 'temperature', got {method!r}")
        if l2 < 0:
            raise ValueError(f"Calibrator.fit: l2 must be >= 0, got {l2}")
        s = _as_scores(scores)
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        if s.size == 0:
            raise ValueError("Calibrator.fit: no scores; calibrate on a non-empty held-out split")
        if y.shape != s.shape:
            raise ValueError(f"Calibrator.fit: {s.size} scores but {y.size} labels; pass one label per score")
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("Calibrator.fit: labels must be 0 or 1")
        if y.min() == y.max():
            raise ValueError(f"Calibrator.fit: all {y.size} labels are {int(y[0])}; the held-out split needs "
                             "both buggy and correct lines to fit a calibration")
        theta, converged = _newton(s, y, l2, fit_bias=method == "platt")
        if not converged:
            logger.warning("calibration (%s) did not converge in 100 Newton steps; using the last iterate", method)
        cal = cls(method, float(theta[0]), float(theta[1]) if method == "platt" else 0.0)
        logger.info("calibration %s fitted on %d lines (%.1f%% buggy): a=%.4f b=%.4f",
                    method, s.size, 100 * y.mean(), cal.a, cal.b)
        return cal

    def predict(self, scores: Any) -> np.ndarray:
        """Probabilities (float64 array shaped like ``scores``) for logits from the same ranker."""
        shape = np.shape(scores)
        s = _as_scores(scores)
        return _sigmoid(self.a * s + self.b).reshape(shape)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": float(self.a), "b": float(self.b)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        unknown = set(d) - {"method", "a", "b"}
        if unknown or "method" not in d:
            raise ValueError(f"calibration config needs 'method', 'a', 'b' (unknown: {sorted(unknown)}); "
                             "was the artifact built by another ptbot version?")
        return cls(d["method"], float(d.get("a", 1.0)), float(d.get("b", 0.0)))
