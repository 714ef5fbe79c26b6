"""Evaluation metrics for ``ptbot eval``: Top-K hit rate, AUROC, Brier/BSS, ECE, bootstrap CIs.

Numpy only (no torch, no sklearn) so the metrics can be checked by hand and imported anywhere.

Conventions used throughout:
- A *snippet* is one ranked unit (a file or a generated answer); its candidate lines carry a
  score (higher = riskier), a 0/1 label and a token count.
- Top-K hit rate is the PtTrust paper's metric: per snippet, the share of the buggy
  lines' tokens that fall inside the K top-ranked lines, macro-averaged over snippets that have
  at least one buggy token.
- Ties in scores are resolved by the *expected value over all orderings of the tied lines*, so a
  method that outputs a constant score earns exactly the random baseline and never more. With it,
  the random baseline is simply "every line tied".
- A metric that is undefined (AUROC with one class empty, hit rate with no buggy snippet) is NaN;
  ``evaluate`` turns NaN into ``None`` so its result is valid JSON.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnippetPrediction:
    """One snippet's candidate lines as a method ranked them; all arrays are shape (L,)."""

    scores: np.ndarray
    """Risk score per line, higher = riskier; any real scale (only the order matters for Top-K)."""
    labels: np.ndarray
    """1 for a buggy line, 0 for a correct one."""
    tokens: np.ndarray
    """Token count of each line: the weight of a buggy line in the hit rate."""
    probabilities: np.ndarray | None = None
    """Calibrated P(buggy) per line in [0, 1], or None for methods that only rank."""
    group: str = ""
    """Problem id; the bootstrap resamples whole groups so variants of one problem stay together."""

    def __post_init__(self) -> None:
        # Coerce to arrays once here so every metric can trust dtype and shape.
        scores = np.asarray(self.scores, dtype=np.float64)
        labels = np.asarray(self.labels)
        tokens = np.asarray(self.tokens)
        n = scores.shape[0] if scores.ndim == 1 else -1
        for name, arr in (("scores", scores), ("labels", labels), ("tokens", tokens)):
            if arr.ndim != 1 or arr.shape[0] != n:
                raise ValueError(
                    f"SnippetPrediction({self.group!r}): {name} must be 1-D with the same length as "
                    f"scores ({n}), got shape {arr.shape}; pass one value per candidate line"
                )
        if np.isnan(scores).any():
            raise ValueError(f"SnippetPrediction({self.group!r}): scores contain NaN; fix the method")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(
                f"SnippetPrediction({self.group!r}): labels must be 0/1, got {np.unique(labels)}"
            )
        if n and (not np.issubdtype(tokens.dtype, np.integer) or (tokens < 0).any()):
            raise ValueError(f"SnippetPrediction({self.group!r}): tokens must be non-negative integers")
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels.astype(np.int64))
        object.__setattr__(self, "tokens", tokens.astype(np.int64))
        if self.probabilities is not None:
            probs = np.asarray(self.probabilities, dtype=np.float64)
            if probs.shape != scores.shape:
                raise ValueError(
                    f"SnippetPrediction({self.group!r}): probabilities shape {probs.shape} "
                    f"!= scores shape {scores.shape}"
                )
            _check_probabilities(probs)
            object.__setattr__(self, "probabilities", probs)

    @property
    def buggy_tokens(self) -> int:
        """Total tokens on buggy lines: the hit-rate denominator (0 = snippet not counted)."""
        return int((self.tokens * self.labels).sum())


# ---------------------------------------------------------------------------------------------
# Top-K hit rate


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def topk_inclusion(scores: np.ndarray, k: int) -> np.ndarray:
    """P(line is among the K top-ranked lines) when tied lines are ordered uniformly at random.

    A tie group with ``above`` lines strictly above it gets ``clip(k - above, 0, size)`` of the
    K slots, shared equally by its members. Untied scores give exactly 0 or 1.
    """
    _check_k(k)
    scores = np.asarray(scores, dtype=np.float64)
    # np.unique sorts ascending; negate so group 0 is the highest score.
    _, inverse, counts = np.unique(-scores, return_inverse=True, return_counts=True)
    above = np.cumsum(counts) - counts
    slots = np.clip(k - above, 0, counts)
    return (slots / counts)[inverse.reshape(-1)]


def snippet_hit_rates(snippets: Sequence[SnippetPrediction], k: int) -> np.ndarray:
    """Per-snippet token-weighted Top-K hit rate, shape (N,); NaN for snippets with no buggy token."""
    out = np.full(len(snippets), np.nan)
    for i, s in enumerate(snippets):
        denom = s.buggy_tokens
        if denom > 0:
            weights = s.tokens * s.labels
            out[i] = float((weights * topk_inclusion(s.scores, k)).sum()) / denom
    return out


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def topk_hit_rate(snippets: Sequence[SnippetPrediction], k: int) -> float:
    """The paper's Top-K hit rate, macro-averaged over snippets with at least one buggy token."""
    return _nanmean(snippet_hit_rates(snippets, k))


def expected_random_topk_hit_rate(snippets: Sequence[SnippetPrediction], k: int) -> float:
    """Exact expectation of the random ranking: each line is in the top K with prob min(K, L)/L."""
    tied = [SnippetPrediction(np.zeros(len(s.scores)), s.labels, s.tokens, None, s.group) for s in snippets]
    return topk_hit_rate(tied, k)


def random_topk_hit_rate(
    snippets: Sequence[SnippetPrediction], k: int, n_shuffles: int = 50, seed: int = 0
) -> float:
    """The paper's ``random`` mode: shuffle each snippet's lines ``n_shuffles`` times, take the top K."""
    _check_k(k)
    if n_shuffles < 1:
        raise ValueError(f"n_shuffles must be >= 1, got {n_shuffles}")
    rng = np.random.default_rng(seed)
    rates = []
    for s in snippets:
        denom = s.buggy_tokens
        if denom == 0:
            continue
        weights = (s.tokens * s.labels).astype(np.float64)
        # (n_shuffles, L) random keys -> argsort is a uniform permutation per row; keep the first K.
        picked = np.argsort(rng.random((n_shuffles, len(weights))), axis=1)[:, :k]
        rates.append(float(weights[picked].sum(axis=1).mean()) / denom)
    return float(np.mean(rates)) if rates else math.nan


# ---------------------------------------------------------------------------------------------
# Discrimination and calibration over lines
#
# Each line metric takes optional non-negative ``weights``; an integer weight w is the same as
# the line appearing w times, which is how the bootstrap in ``evaluate`` reuses one array per
# replicate instead of concatenating resampled copies.


def _weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n,) or (w < 0).any():
        raise ValueError(f"weights must be {n} non-negative numbers, got shape {w.shape}")
    return w


def line_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """AUROC = P(buggy line scores above a correct one), a tie counting 1/2 (Mann-Whitney U).

    NaN when either class is empty (or has zero weight).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in length: {scores.shape} vs {labels.shape}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; fix the method's output")
    w = _weights(weights, scores.size)
    pos_w = w * (labels == 1)
    _, value_id = np.unique(scores, return_inverse=True)  # ascending distinct scores
    value_id = value_id.reshape(-1)
    pos = np.bincount(value_id, weights=pos_w)
    neg = np.bincount(value_id, weights=w - pos_w)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Each buggy line beats every correct line with a strictly lower score and ties half of the
    # correct lines with an equal score.
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def snippet_auroc(snippet_scores: Sequence[float], snippet_labels: Sequence[int]) -> float:
    """Snippet-level AUROC ("is this snippet buggy at all"): one score and 0/1 label per snippet."""
    return line_auroc(np.asarray(snippet_scores), np.asarray(snippet_labels))


def _check_probabilities(p: np.ndarray) -> None:
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must lie in [0, 1] (calibrate the scores first)")


def _prob_arrays(
    p: np.ndarray, y: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"p and y differ in length: {p.shape} vs {y.shape}")
    if p.size == 0:
        raise ValueError("no lines to score: p and y are empty")
    _check_probabilities(p)
    return p, y, _weights(weights, p.size)


def brier(p: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Brier score: mean squared error of the probabilities (0 is perfect)."""
    p, y, w = _prob_arrays(p, y, weights)
    total = w.sum()
    return float((w * (p - y) ** 2).sum() / total) if total > 0 else math.nan


def brier_skill_score(
    p: np.ndarray, y: np.ndarray, base_rate: float, weights: np.ndarray | None = None
) -> float:
    """BSS = 1 - BS / (b (1 - b)), b = the TRAINING base rate; > 0 beats always predicting b.

    b(1-b) is the Brier score of the constant forecast b only when the test rate equals b; using
    the training rate on purpose charges a method for a base-rate shift it did not predict.
    """
    if not 0.0 < base_rate < 1.0:
        raise ValueError(f"base_rate must be in (0, 1), got {base_rate}; use the training share of buggy lines")
    return 1.0 - brier(p, y, weights) / (base_rate * (1.0 - base_rate))


def _binned_ece(p: np.ndarray, y: np.ndarray, w: np.ndarray, bins: np.ndarray) -> float:
    """Sum over bins of (share of lines) * |mean p - mean y| (L1 expected calibration error)."""
    # sum_b (n_b/N) |sum p_b/n_b - sum y_b/n_b| = sum_b |sum p_b - sum y_b| / N; empty bins add 0.
    sum_p = np.bincount(bins, weights=w * p)
    sum_y = np.bincount(bins, weights=w * y)
    total = w.sum()
    return float(np.abs(sum_p - sum_y).sum() / total) if total > 0 else math.nan


def _check_bins(n_bins: int) -> None:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")


def ece(p: np.ndarray, y: np.ndarray, n_bins: int = 15, weights: np.ndarray | None = None) -> float:
    """ECE with equal-width bins [0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1] (last bin closed)."""
    p, y, w = _prob_arrays(p, y, weights)
    _check_bins(n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    return _binned_ece(p, y, w, bins)


def ece_quantile(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """ECE with equal-mass bins cut at the quantiles of p; equal p always share a bin.

    With many tied probabilities some quantile edges coincide, so fewer than ``n_bins`` bins may
    be non-empty; that keeps the result independent of the order of the lines.
    """
    p, y, w = _prob_arrays(p, y, None)
    _check_bins(n_bins)
    inner = np.unique(np.quantile(p, np.linspace(0.0, 1.0, n_bins + 1))[1:-1])
    bins = np.searchsorted(inner, p, side="right")
    return _binned_ece(p, y, w, bins)


# ---------------------------------------------------------------------------------------------
# Bootstrap and the full report


def _group_resamples(
    snippets: Sequence[SnippetPrediction], n_boot: int, seed: int
) -> Iterator[np.ndarray]:
    """Yield, per bootstrap replicate, how many times each snippet is drawn, shape (N,).

    Groups are drawn with replacement and kept whole, so a snippet's count is its group's.
    """
    names = [s.group for s in snippets]
    _, group_of = np.unique(names, return_inverse=True)
    group_of = group_of.reshape(-1)
    n_groups = int(group_of.max()) + 1
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        drawn = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)
        yield drawn[group_of]


def _percentile_ci(values: Sequence[float], alpha: float) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]  # replicates where the metric is undefined (e.g. one class drawn)
    if arr.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(arr, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def bootstrap_ci(
    snippets: Sequence[SnippetPrediction],
    metric_fn: Callable[[list[SnippetPrediction]], float],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile (1 - alpha) interval of ``metric_fn`` over group-resampled snippet lists.

    Groups (problem ids) are resampled, not lines: lines of one snippet and snippets of one
    problem are correlated, so resampling them independently would make the interval too narrow.
    Replicates where the metric is NaN are dropped.
    """
    if not snippets:
        raise ValueError("bootstrap_ci needs at least one snippet")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = []
    for counts in _group_resamples(snippets, n_boot, seed):
        values.append(metric_fn([snippets[i] for i in np.repeat(np.arange(len(snippets)), counts)]))
    return _percentile_ci(values, alpha)


def _json_float(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def evaluate(
    snippets: Sequence[SnippetPrediction],
    base_rate: float | None,
    ks: Sequence[int] = (1, 3, 5),
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    n_bins: int = 15,
    snippet_scores: Sequence[float] | None = None,
) -> dict:
    """All metrics of one method on one dataset, as plain floats (None where undefined).

    Keys: ``top{k}`` per k, ``auroc`` (on ``scores`` over all lines of all snippets), ``brier``,
    ``bss`` (against ``base_rate`` when given, else against the dataset's own share of buggy
    lines), ``ece`` (the last three only when every snippet has probabilities),
    ``snippet_auroc`` (only with ``snippet_scores``, one per snippet; a snippet is positive when
    it has a buggy line), ``n_snippets``, ``n_buggy_snippets`` (those counted by Top-K),
    ``n_lines``, and ``ci``: {metric: [lo, hi]} from the same group bootstrap as
    :func:`bootstrap_ci` (empty when ``n_boot`` is 0).
    """
    if not snippets:
        raise ValueError("evaluate needs at least one snippet")
    with_probs = [s.probabilities is not None for s in snippets]
    if any(with_probs) and not all(with_probs):
        raise ValueError("either every snippet has probabilities or none does; check the method's output")
    for k in ks:
        _check_k(k)
    if snippet_scores is not None and len(snippet_scores) != len(snippets):
        raise ValueError(f"snippet_scores has {len(snippet_scores)} values for {len(snippets)} snippets")

    # Everything is computed once on the original data; a bootstrap replicate only reweights it
    # (snippet drawn c times = weight c), which equals concatenating the resampled snippets.
    hits = {k: snippet_hit_rates(snippets, k) for k in ks}
    lengths = np.array([len(s.scores) for s in snippets])
    scores = np.concatenate([s.scores for s in snippets])
    labels = np.concatenate([s.labels for s in snippets])
    probs = np.concatenate([s.probabilities for s in snippets]) if all(with_probs) else None
    snippet_labels = np.array([int(s.labels.any()) for s in snippets])

    def metrics(counts: np.ndarray) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for k in ks:
            counted = ~np.isnan(hits[k]) & (counts > 0)
            mean = (counts * hits[k])[counted].sum() / counts[counted].sum() if counted.any() else math.nan
            out[f"top{k}"] = float(mean)
        w = np.repeat(counts, lengths)
        out["auroc"] = line_auroc(scores, labels, w)
        out.update(dict.fromkeys(("brier", "bss", "ece", "snippet_auroc")))
        if probs is not None:
            out["brier"] = brier(probs, labels, w)
            out["ece"] = ece(probs, labels, n_bins, w)
            # Against the set's own base rate unless one is given: a training base rate flatters
            # a set whose bugs are sparser than the training data's.
            rate = base_rate if base_rate is not None else float((w * labels).sum() / max(w.sum(), 1e-12))
            if 0.0 < rate < 1.0:
                out["bss"] = brier_skill_score(probs, labels, rate, w)
        if snippet_scores is not None:
            out["snippet_auroc"] = line_auroc(np.asarray(snippet_scores), snippet_labels, counts)
        return out

    result: dict = {name: _json_float(v) for name, v in metrics(np.ones(len(snippets))).items()}
    result["n_snippets"] = len(snippets)
    result["n_buggy_snippets"] = sum(s.buggy_tokens > 0 for s in snippets)
    result["n_lines"] = int(lengths.sum())

    replicates: dict[str, list[float]] = {}
    for counts in _group_resamples(snippets, n_boot, seed):
        for name, v in metrics(counts).items():
            if v is not None:
                replicates.setdefault(name, []).append(v)
    result["ci"] = {
        name: [_json_float(v) for v in _percentile_ci(vals, alpha)] for name, vals in replicates.items()
    }
    logger.debug("evaluated %d snippets (%d bootstrap replicates)", len(snippets), n_boot)
    return result


def summarize_seeds(results: Sequence[dict]) -> dict[str, dict[str, float | None]]:
    """Mean and sample standard deviation over seeds of every numeric metric in ``evaluate`` outputs.

    Metrics that are None in some seed are averaged over the seeds where they are defined; the
    spread is None with fewer than two defined values.
    """
    if not results:
        raise ValueError("summarize_seeds needs at least one evaluate() result")
    out: dict[str, dict[str, float | None]] = {}
    for name in results[0]:
        values = [r.get(name) for r in results]
        if name == "ci" or not all(v is None or isinstance(v, (int, float)) for v in values):
            continue
        defined = np.array([v for v in values if v is not None], dtype=np.float64)
        out[name] = {
            "mean": float(defined.mean()) if defined.size else None,
            "std": float(defined.std(ddof=1)) if defined.size > 1 else None,
            "n": int(defined.size),
        }
    return out
