"""Fitting a calibration map (``analyzer.calibrate.Calibrator``) on held-out ranker logits.

Every map is fitted by Newton's method on the mean negative log-likelihood plus a tiny L2 penalty
``l2/2 * |theta|^2``. The penalty only matters when the held-out scores separate the classes
perfectly, where the unpenalised optimum is at infinity. Isotonic regression is left out on
purpose: sklearn advises against it below ~1000 calibration samples, and it is not monotone-smooth.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from analyzer.calibrate import Calibrator, as_scores, centred_columns, sigmoid

logger = logging.getLogger(__name__)

FITTED = ("centred", "platt")
"""The maps ``fit_calibrator`` fits: ``centred``, every model's; ``platt``, the baselines' only
(``analyzer.calibrate``)."""


def fit_calibrator(scores: Sequence[Any], labels: Sequence[Any], method: str = "centred",
                   l2: float = 1e-4) -> Calibrator:
    """Fit ``method`` on held-out logits and 0/1 labels given file by file: one (n_i,) array per file.

    Both classes must be present. For ``platt`` the files only pool; the ``centred`` map needs
    them, because it reads each logit against its file's mean.
    """
    if len(scores) != len(labels):
        raise ValueError(f"fit_calibrator: {len(scores)} files of scores but {len(labels)} of labels")
    files = [as_scores(s) for s in scores]
    ys = [np.asarray(y, dtype=np.float64).reshape(-1) for y in labels]
    if method not in FITTED:
        raise ValueError(f"fit_calibrator: method must be one of {FITTED}, got {method!r}")
    if l2 < 0:
        raise ValueError(f"fit_calibrator: l2 must be >= 0, got {l2}")
    for s, y in zip(files, ys):
        if y.shape != s.shape:
            raise ValueError(f"fit_calibrator: {s.size} scores but {y.size} labels; pass one label per score")
    files = [s for s in files if s.size]
    if not files:
        raise ValueError("fit_calibrator: no scores; calibrate on a non-empty held-out split")
    y = np.concatenate(ys)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("fit_calibrator: labels must be 0 or 1")
    if y.min() == y.max():
        raise ValueError(f"fit_calibrator: all {y.size} labels are {int(y[0])}; the held-out split needs "
                         "both buggy and correct lines to fit a calibration")
    # Start at unit slope and the base-rate intercept: the identity map shifted to the prior.
    base = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    prior = math.log(base / (1 - base))
    if method == "centred":
        cols = [centred_columns(s) for s in files]
        design = np.stack([np.concatenate([c for c, _ in cols]), np.ones(y.size),
                           np.concatenate([np.full(len(c), ln) for c, ln in cols])], axis=1)
        start = np.array([1.0, prior, 0.0])
    else:
        s = np.concatenate(files)
        design = np.stack([s, np.ones_like(s)], axis=1)
        start = np.array([1.0, prior])
    theta, converged = _newton(design, y, l2, start)
    if not converged:
        logger.warning("calibration (%s) did not converge in 100 Newton steps; using the last iterate", method)
    params = [float(t) for t in theta] + [0.0] * (3 - len(theta))
    cal = Calibrator(method, *params)
    logger.info("calibration %s fitted on %d lines (%.1f%% buggy): a=%.4f b=%.4f c=%.4f",
                method, y.size, 100 * y.mean(), cal.a, cal.b, cal.c)
    return cal


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
        p = sigmoid(design @ theta)
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
