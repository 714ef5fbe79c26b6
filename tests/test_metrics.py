"""Every metric in lab.metrics against small hand-computed values (arithmetic in comments)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from lab.metrics import (
    SnippetPrediction,
    bootstrap_ci,
    brier,
    brier_skill_score,
    ece,
    ece_quantile,
    evaluate,
    expected_random_topk_hit_rate,
    line_auroc,
    random_topk_hit_rate,
    snippet_auroc,
    snippet_hit_rates,
    summarize_seeds,
    topk_hit_rate,
    topk_inclusion,
)


def snip(scores, labels, tokens, probabilities=None, group="g") -> SnippetPrediction:
    return SnippetPrediction(np.array(scores), np.array(labels), np.array(tokens), probabilities, group)


# A: ranking 0 (0.9) > 1 (0.5) > 3 (0.3) > 2 (0.1); buggy lines 1 (6 tokens) and 3 (10 tokens), 16 in all.
A = snip([0.9, 0.5, 0.1, 0.3], [0, 1, 0, 1], [4, 6, 2, 10], group="a")
# B: the buggy line (3 tokens) is ranked first.
B = snip([0.8, 0.2], [1, 0], [3, 5], group="b")
# C: no buggy line -> not counted by Top-K.
C = snip([0.4, 0.6, 0.5], [0, 0, 0], [2, 2, 2], group="c")


# --- Top-K hit rate ---------------------------------------------------------------------------


def test_topk_hit_rate_hand_computed():
    # A: top1 {0} -> 0/16 = 0;  top2 {0,1} -> 6/16 = 0.375;  top3 {0,1,3} -> 16/16 = 1
    # B: top1 {0} -> 3/3 = 1 for every k >= 1
    np.testing.assert_allclose(snippet_hit_rates([A, B, C], 1), [0.0, 1.0, np.nan])
    assert topk_hit_rate([A, B, C], 1) == pytest.approx((0.0 + 1.0) / 2)  # 0.5
    assert topk_hit_rate([A, B, C], 2) == pytest.approx((0.375 + 1.0) / 2)  # 0.6875
    assert topk_hit_rate([A, B, C], 3) == pytest.approx(1.0)
    assert topk_hit_rate([A, B, C], 10) == pytest.approx(1.0)  # K > L: every line selected


def test_topk_weights_by_tokens_not_lines():
    # Top-2 of A catches 1 of 2 buggy lines but only 6 of their 16 tokens: 0.375, not 0.5.
    assert topk_hit_rate([A], 2) == pytest.approx(6 / 16)


def test_topk_no_buggy_snippet_is_nan():
    assert math.isnan(topk_hit_rate([C], 1))
    # Buggy lines with zero tokens (e.g. punctuation-only lines dropped by the tokenizer) do not count.
    assert math.isnan(topk_hit_rate([snip([1.0, 0.0], [1, 0], [0, 3])], 1))


def test_topk_ties_take_expected_value():
    # Three lines tied on top, one slot for K=1: each is in with prob 1/3, so the buggy line
    # (whatever its tokens) contributes 1/3; K=2 -> 2/3; K=3 -> 1.
    s = snip([1.0, 1.0, 1.0, 0.0], [1, 0, 0, 0], [5, 1, 1, 1])
    np.testing.assert_allclose(topk_inclusion(s.scores, 1), [1 / 3, 1 / 3, 1 / 3, 0])
    assert topk_hit_rate([s], 1) == pytest.approx(1 / 3)
    assert topk_hit_rate([s], 2) == pytest.approx(2 / 3)
    assert topk_hit_rate([s], 3) == pytest.approx(1.0)


def test_topk_tie_in_the_middle_is_not_optimistic():
    # Line 0 alone on top; lines 1 and 2 tied; line 3 last. Buggy: line 1 (4 tokens), line 3 (6).
    # K=2: line 0 takes a slot, the tie group {1,2} shares 1 slot -> P = 1/2 each -> 4*0.5/10 = 0.2
    # (a stable "first index wins" rule would give the optimistic 4/10 = 0.4).
    # K=3: {0,1,2} -> 4/10 = 0.4; K=4 -> 1.
    s = snip([2.0, 1.0, 1.0, 0.0], [0, 1, 0, 1], [1, 4, 1, 6])
    np.testing.assert_allclose(topk_inclusion(s.scores, 2), [1.0, 0.5, 0.5, 0.0])
    assert topk_hit_rate([s], 2) == pytest.approx(0.2)
    assert topk_hit_rate([s], 3) == pytest.approx(0.4)
    assert topk_hit_rate([s], 4) == pytest.approx(1.0)


def test_topk_ties_equal_the_average_over_all_tie_orderings():
    scores = np.array([3.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0])
    labels = np.array([0, 1, 0, 1, 1, 0, 1])
    tokens = np.array([2, 3, 7, 1, 4, 4, 9])
    got = topk_hit_rate([SnippetPrediction(scores, labels, tokens)], 4)
    # Brute force: enumerate every permutation, break ties by that order, average the hit rate.
    rates = []
    for perm in itertools.permutations(range(len(scores))):
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], perm.index(i)))
        top = order[:4]
        rates.append(sum(tokens[i] * labels[i] for i in top) / (tokens * labels).sum())
    assert got == pytest.approx(float(np.mean(rates)))


def test_topk_does_not_depend_on_line_order():
    s = snip([2.0, 1.0, 1.0, 0.0], [0, 1, 0, 1], [1, 4, 1, 6])
    r = snip(s.scores[::-1], s.labels[::-1], s.tokens[::-1])
    for k in (1, 2, 3):
        assert topk_hit_rate([s], k) == pytest.approx(topk_hit_rate([r], k))


def test_topk_rejects_bad_k():
    with pytest.raises(ValueError, match="positive integer"):
        topk_hit_rate([A], 0)


# --- random baseline --------------------------------------------------------------------------


def test_expected_random_closed_form():
    # Each line is in the top K with prob min(K, L)/L, independent of tokens:
    # A (L=4): K=1 -> 1/4, K=3 -> 3/4;  B (L=2): K=1 -> 1/2, K=3 -> 1;  C not counted.
    assert expected_random_topk_hit_rate([A, B, C], 1) == pytest.approx((0.25 + 0.5) / 2)  # 0.375
    assert expected_random_topk_hit_rate([A, B, C], 3) == pytest.approx((0.75 + 1.0) / 2)  # 0.875


def test_constant_scores_earn_exactly_random():
    flat = [snip(np.zeros(len(s.scores)), s.labels, s.tokens) for s in (A, B)]
    for k in (1, 2, 3):
        assert topk_hit_rate(flat, k) == pytest.approx(expected_random_topk_hit_rate([A, B], k))


def test_random_shuffles_match_expectation_and_are_seeded():
    rng = np.random.default_rng(7)
    snippets = []
    for i in range(20):
        n = int(rng.integers(2, 12))
        labels = (rng.random(n) < 0.3).astype(int)
        labels[0] = 1
        snippets.append(snip(rng.random(n), labels, rng.integers(1, 20, size=n), group=str(i)))
    exact = expected_random_topk_hit_rate(snippets, 3)
    estimate = random_topk_hit_rate(snippets, 3, n_shuffles=4000, seed=1)
    # Standard error of the mean over 20 snippets x 4000 shuffles is ~0.002; allow 0.01.
    assert estimate == pytest.approx(exact, abs=0.01)
    assert random_topk_hit_rate(snippets, 3, seed=5) == random_topk_hit_rate(snippets, 3, seed=5)
    assert random_topk_hit_rate(snippets, 3, seed=5) != random_topk_hit_rate(snippets, 3, seed=6)


# --- AUROC ------------------------------------------------------------------------------------


def test_line_auroc_hand_computed():
    # Positives {0.35, 0.8} vs negatives {0.1, 0.4}: 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4.
    assert line_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_line_auroc_ties_count_half():
    # Positives {0.5, 0.9} vs negatives {0.5, 0.2}: tie (1/2) + 1 + 1 + 1 = 3.5 of 4 pairs.
    assert line_auroc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == pytest.approx(0.875)
    assert line_auroc([1.0, 1.0, 1.0], [1, 0, 0]) == pytest.approx(0.5)


def test_line_auroc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=40).astype(float)  # many ties on purpose
    labels = (rng.random(40) < 0.4).astype(int)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert line_auroc(scores, labels) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_auroc_empty_class_is_nan():
    assert math.isnan(line_auroc([0.1, 0.2], [0, 0]))
    assert math.isnan(line_auroc([0.1, 0.2], [1, 1]))
    assert math.isnan(snippet_auroc([], []))


def test_snippet_auroc_hand_computed():
    assert snippet_auroc([0.9, 0.1, 0.5], [1, 0, 0]) == pytest.approx(1.0)
    # 0.3 beats 0.1 but loses to 0.5 -> 1/2.
    assert snippet_auroc([0.3, 0.1, 0.5], [1, 0, 0]) == pytest.approx(0.5)


# --- Brier, BSS -------------------------------------------------------------------------------


def test_brier_hand_computed():
    # (0.9-1)^2 + (0.2-0)^2 + (0.6-0)^2 = 0.01 + 0.04 + 0.36 = 0.41; / 3
    assert brier([0.9, 0.2, 0.6], [1, 0, 0]) == pytest.approx(0.41 / 3)


def test_brier_skill_score_sign():
    # b = 0.25 -> reference b(1-b) = 0.1875.
    # Good forecaster: BS = 0.41/3 = 0.13667 -> BSS = 1 - 0.13667/0.1875 = 0.27111 (> 0)
    assert brier_skill_score([0.9, 0.2, 0.6], [1, 0, 0], 0.25) == pytest.approx(1 - (0.41 / 3) / 0.1875)
    # Confidently wrong: BS = 0.81 -> BSS = 1 - 0.81/0.1875 = -3.32 (< 0)
    assert brier_skill_score([0.1, 0.9, 0.9], [1, 0, 0], 0.25) == pytest.approx(-3.32)
    # Predicting the base rate when the test rate equals it: BS = (0.75^2 + 3*0.25^2)/4 = 0.1875 -> 0
    assert brier_skill_score([0.25] * 4, [1, 0, 0, 0], 0.25) == pytest.approx(0.0)


def test_bss_rejects_degenerate_base_rate():
    with pytest.raises(ValueError, match="base_rate"):
        brier_skill_score([0.5], [1], 0.0)
    with pytest.raises(ValueError, match="base_rate"):
        brier_skill_score([0.5], [1], 1.0)


def test_probabilities_outside_unit_interval_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier([1.2], [1])


# --- ECE --------------------------------------------------------------------------------------


def test_ece_hand_computed_and_left_closed_bins():
    # 2 bins: [0, 0.5) and [0.5, 1]. 0.5 belongs to the upper bin.
    # bin0 {0.2, 0.4}: mean p 0.3, mean y 0 -> gap 0.3, weight 2/4 -> 0.15
    # bin1 {0.5, 1.0}: mean p 0.75, mean y 1 -> gap 0.25, weight 2/4 -> 0.125;  ECE = 0.275
    # (had 0.5 gone to bin0: 0.75*|0.3667-0.3333| + 0 = 0.025)
    assert ece([0.2, 0.4, 0.5, 1.0], [0, 0, 1, 1], n_bins=2) == pytest.approx(0.275)


def test_ece_probability_one_goes_to_last_bin():
    # 15 bins: last is [14/15, 1]. 0.95 and 1.0 share it: mean p 0.975, mean y 0.5 -> 0.475.
    # (a 16th bin for p = 1.0 would give 0.5*|0.95-1| + 0.5*|1-0| = 0.525)
    assert ece([1.0, 0.95], [0, 1], n_bins=15) == pytest.approx(0.475)
    assert ece([0.0, 1.0], [0, 1]) == pytest.approx(0.0)


def test_ece_perfect_calibration_is_zero():
    # One bin holding p = 0.25 four times, one positive of four.
    assert ece([0.25] * 4, [1, 0, 0, 0]) == pytest.approx(0.0)


def test_ece_quantile_hand_computed():
    # 2 equal-mass bins split at the median 0.25:
    # {0.1, 0.2}: |0.15 - 0.5| = 0.35;  {0.3, 0.4}: |0.35 - 0.5| = 0.15;  ECE = (0.35 + 0.15)/2 = 0.25
    assert ece_quantile([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], n_bins=2) == pytest.approx(0.25)
    # All probabilities tied: one bin whatever n_bins, |0.5 - 0.25| = 0.25, independent of order.
    assert ece_quantile([0.5] * 4, [1, 0, 0, 0], n_bins=15) == pytest.approx(0.25)
    assert ece_quantile([0.5] * 4, [0, 0, 0, 1], n_bins=15) == pytest.approx(0.25)


# --- bootstrap --------------------------------------------------------------------------------


def test_bootstrap_is_deterministic_with_seed():
    snippets = [A, B, snip([0.1, 0.9], [1, 0], [2, 2], group="d"), snip([0.3, 0.2], [1, 0], [1, 1], group="e")]
    fn = lambda ss: topk_hit_rate(ss, 1)  # noqa: E731
    first = bootstrap_ci(snippets, fn, n_boot=200, seed=3)
    assert first == bootstrap_ci(snippets, fn, n_boot=200, seed=3)
    low, high = first
    assert 0.0 <= low <= topk_hit_rate(snippets, 1) <= high <= 1.0


def test_bootstrap_resamples_whole_groups():
    # Group "a" holds two snippets, group "b" one. Drawing 2 groups gives 4, 3 or 2 snippets;
    # resampling single snippets would always give 3.
    snippets = [snip([1.0], [1], [1], group="a"), snip([1.0], [1], [1], group="a"), snip([1.0], [0], [1], group="b")]
    assert bootstrap_ci(snippets, len, n_boot=1000, seed=0) == (2.0, 4.0)


def test_bootstrap_drops_undefined_replicates():
    # Two groups, one positive and one negative line: AUROC is NaN in replicates drawing one group twice.
    snippets = [snip([0.9], [1], [1], group="a"), snip([0.1], [0], [1], group="b")]
    fn = lambda ss: line_auroc(np.concatenate([s.scores for s in ss]), np.concatenate([s.labels for s in ss]))  # noqa: E731
    assert bootstrap_ci(snippets, fn, n_boot=100, seed=0) == (1.0, 1.0)


# --- evaluate ---------------------------------------------------------------------------------


def with_probs(s: SnippetPrediction, probs) -> SnippetPrediction:
    return SnippetPrediction(s.scores, s.labels, s.tokens, np.array(probs), s.group)


def test_evaluate_point_values_and_json():
    snippets = [with_probs(A, [0.9, 0.5, 0.1, 0.3]), with_probs(B, [0.8, 0.2]), with_probs(C, [0.4, 0.6, 0.5])]
    out = evaluate(snippets, base_rate=0.25, n_boot=50, snippet_scores=[0.9, 0.8, 0.6])
    assert out["top1"] == pytest.approx(0.5)  # (0 + 1) / 2, see test_topk_hit_rate_hand_computed
    assert out["top3"] == pytest.approx(1.0)
    assert out["top5"] == pytest.approx(1.0)
    scores = np.concatenate([s.scores for s in snippets])
    labels = np.concatenate([s.labels for s in snippets])
    assert out["auroc"] == pytest.approx(line_auroc(scores, labels))
    assert out["brier"] == pytest.approx(brier(scores, labels))  # probabilities == scores here
    assert out["bss"] == pytest.approx(1 - out["brier"] / 0.1875)
    assert out["ece"] == pytest.approx(ece(scores, labels))
    assert out["snippet_auroc"] == pytest.approx(1.0)  # buggy A, B (0.9, 0.8) above clean C (0.6)
    assert (out["n_snippets"], out["n_buggy_snippets"], out["n_lines"]) == (3, 2, 9)
    assert set(out["ci"]) == {"top1", "top3", "top5", "auroc", "brier", "bss", "ece", "snippet_auroc"}
    for lo, hi in out["ci"].values():
        assert lo <= hi
    json.dumps(out, allow_nan=False)  # plain numbers / None only


def test_evaluate_ci_equals_bootstrap_ci():
    snippets = [A, B, C, snip([0.1, 0.9, 0.5], [1, 0, 0], [2, 2, 4], group="a")]
    out = evaluate(snippets, base_rate=None, ks=(1, 2), n_boot=100, seed=4)
    assert tuple(out["ci"]["top2"]) == pytest.approx(bootstrap_ci(snippets, lambda ss: topk_hit_rate(ss, 2), 100, 0.05, 4))


def test_weights_equal_duplicated_lines():
    # Integer weights are what the bootstrap in evaluate() uses instead of copying lines.
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 4, size=12) / 4.0
    labels = np.array([0, 1] * 6)
    w = rng.integers(0, 3, size=12)
    dup_s, dup_y = np.repeat(scores, w), np.repeat(labels, w)
    assert line_auroc(scores, labels, w) == pytest.approx(line_auroc(dup_s, dup_y))
    assert brier(scores, labels, w) == pytest.approx(brier(dup_s, dup_y))
    assert ece(scores, labels, 4, w) == pytest.approx(ece(dup_s, dup_y, 4))


def test_evaluate_line_metric_ci_equals_bootstrap_ci():
    rng = np.random.default_rng(3)
    snippets = []
    for i in range(12):
        p = rng.random(5)
        labels = (rng.random(5) < p).astype(int)
        snippets.append(snip(p, labels, np.full(5, 2), probabilities=p, group=str(i % 7)))
    out = evaluate(snippets, base_rate=0.4, n_boot=60, seed=9)

    def pooled(fn):
        def metric(ss):
            p = np.concatenate([s.probabilities for s in ss])
            return fn(p, np.concatenate([s.labels for s in ss]))
        return metric

    for name, fn in [("auroc", line_auroc), ("brier", brier), ("ece", ece)]:
        assert out["ci"][name] == pytest.approx(list(bootstrap_ci(snippets, pooled(fn), 60, 0.05, 9)))


def test_evaluate_without_probabilities_and_undefined_auroc():
    out = evaluate([C], base_rate=0.2, n_boot=0)
    assert out["top1"] is None and out["auroc"] is None  # no buggy line at all
    assert out["brier"] is None and out["bss"] is None and out["ece"] is None
    assert out["ci"] == {}
    json.dumps(out, allow_nan=False)


def test_evaluate_rejects_mixed_probabilities():
    with pytest.raises(ValueError, match="every snippet has probabilities"):
        evaluate([with_probs(A, [0.5] * 4), B], base_rate=0.2, n_boot=0)


def test_summarize_seeds():
    runs = [{"top1": 0.2, "auroc": None, "ci": {}}, {"top1": 0.4, "auroc": 0.7, "ci": {}}]
    out = summarize_seeds(runs)
    # mean 0.3; sample std sqrt((0.1^2 + 0.1^2) / 1) = 0.14142
    assert out["top1"]["mean"] == pytest.approx(0.3)
    assert out["top1"]["std"] == pytest.approx(math.sqrt(0.02))
    assert out["auroc"] == {"mean": 0.7, "std": None, "n": 1}
    assert "ci" not in out


# --- input validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scores=[0.1, 0.2], labels=[1], tokens=[1, 1]), "same length"),
        (dict(scores=[np.nan, 0.2], labels=[1, 0], tokens=[1, 1]), "NaN"),
        (dict(scores=[0.1, 0.2], labels=[2, 0], tokens=[1, 1]), "0/1"),
        (dict(scores=[0.1, 0.2], labels=[1, 0], tokens=[1.5, 1]), "non-negative integers"),
        (dict(scores=[0.1, 0.2], labels=[1, 0], tokens=[1, 1], probabilities=[0.1]), "probabilities shape"),
    ],
)
def test_snippet_prediction_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SnippetPrediction(**kwargs)
