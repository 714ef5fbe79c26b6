"""bot.budget: the comment budget of one change, and its replay on labelled changes."""

from __future__ import annotations

import pytest

from bot.budget import (
    PREVIOUS_DEFAULTS,
    BudgetResult,
    choose,
    comment_limit,
    evaluate,
    bars,
    rule_sentence,
    stands_out,
)
from bot.config import RepoConfig

DEFAULTS = RepoConfig()


@pytest.mark.parametrize("scored, limit", [(0, 0), (1, 1), (3, 1), (4, 2), (6, 2), (7, 3), (17, 3), (400, 3)])
def test_the_comment_limit_grows_with_the_change(scored, limit):
    assert comment_limit(DEFAULTS, scored) == limit
    assert comment_limit(PREVIOUS_DEFAULTS, scored) == min(5, scored)


def test_a_line_must_stand_out_from_the_rest_of_its_change():
    ranked = [("a.py", 0.9), ("a.py", 0.6), ("a.py", 0.3), ("a.py", 0.1), ("a.py", 0.1)]
    probabilities = [p for _, p in ranked]
    # Each line's bar is 1.5x the mean of the OTHER lines with 4 prior lines at 0.1:
    # the 0.6 line needs 1.5 * (0.9 + 0.3 + 0.1 + 0.1 + 4 * 0.1) / 8.
    assert bars(DEFAULTS, probabilities) == pytest.approx([0.28125, 0.3375, 0.39375, 0.43125, 0.43125])
    assert stands_out(DEFAULTS, probabilities) == [True, True, False, False, False]
    assert choose(DEFAULTS, ranked) == [0, 1]
    # Without the prior: the other lines alone. Exactly on the bar counts, whatever float rounding
    # says (0.4 * 1.5 is 0.6000000000000001).
    no_prior = RepoConfig(base_rate_prior_lines=0)
    assert bars(no_prior, probabilities)[1] == pytest.approx(1.5 * 1.4 / 4)
    assert stands_out(no_prior, [0.6, 0.4]) == [True, False]
    # The floor applies as well when it is the higher bar.
    assert choose(RepoConfig(min_probability=0.7), ranked) == [0]
    # Every line alike: nothing stands out, nothing is said.
    assert choose(DEFAULTS, [("a.py", 0.3)] * 6) == []
    # A small change is measured against the prior: a risky line speaks, a quiet one does not.
    assert choose(DEFAULTS, [("a.py", 0.9)]) == [0]
    assert choose(DEFAULTS, [("a.py", 0.9), ("a.py", 0.8)]) == [0]  # both stand out, 1 earned
    assert choose(DEFAULTS, [("a.py", 0.02)]) == []
    # No prior and a lone line: no base rate at all, only the floor.
    assert choose(no_prior, [("a.py", 0.02)]) == [0]
    # Lift off and no floor: the top-ranked lines, as many as the change's size earns.
    assert choose(RepoConfig(min_lift=0), [("a.py", 0.3)] * 6) == [0, 1]
    assert choose(DEFAULTS, []) == []


def test_the_per_file_cap_and_lines_already_posted():
    rule = RepoConfig(top_k=5, lines_per_comment=1, per_file_cap=2, min_lift=0)
    ranked = [("a.py", 0.9), ("a.py", 0.8), ("a.py", 0.7), ("b.py", 0.6), ("b.py", 0.5), ("b.py", 0.4)]
    assert choose(rule, ranked) == [0, 1, 3, 4]
    # An earlier comment uses its file's share, not the change's budget.
    assert choose(rule, ranked, lambda i: i == 0) == [1, 3, 4]


def test_the_rule_in_one_sentence():
    probabilities = [0.3] + [0.1] * 16
    assert rule_sentence(DEFAULTS, probabilities) == (
        "ptbot comments inline on at most 3 of the 17 scored lines (one per 3 scored lines, at most 3 "
        "per review and 3 per file), and only on lines whose probability is at least 1.5× the change's "
        "base rate (the mean of its other scored lines, with 4 more at 10%; the change's mean is 11%).")
    assert rule_sentence(PREVIOUS_DEFAULTS, [0.004]) == (
        "ptbot comments inline on at most 1 of the 1 scored line (one per scored line, at most 5 per "
        "review and 3 per file), and only on lines whose probability is at least 50%.")
    assert rule_sentence(RepoConfig(min_lift=2, min_probability=0.05, base_rate_prior_lines=0),
                         [0.004, 0.004]).endswith(
        "at least 2× the change's base rate (the mean of its other scored lines; the change's mean is "
        "0.4%) and at least 5%.")
    assert rule_sentence(RepoConfig(min_lift=0), [0.2]).endswith("and only on the top-ranked lines.")


CHANGES = [
    # A quiet change whose bug stands out but never reaches 0.5: only the new budget speaks.
    [("calc.py", 0.1, False)] * 16 + [("calc.py", 0.25, True)],
    # A loud change: three lines over 0.5, the bug among them.
    [("a.py", 0.9, False), ("a.py", 0.8, True), ("a.py", 0.7, False)] + [("a.py", 0.1, False)] * 9,
    # No bug at all (a clean change): comments there are false alarms.
    [("b.py", 0.6, False), ("b.py", 0.1, False), ("b.py", 0.1, False)],
]


def test_evaluate_old_and_new_defaults():
    new = evaluate(CHANGES, DEFAULTS)
    # 1: one comment, on the bug. 2: three lines stand out, 3 earned (12 lines) -> 3 comments, one
    # on the bug. 3: 0.6 stands out of 0.1s, 1 earned -> 1 false alarm.
    assert new == BudgetResult(changes=3, buggy_changes=2, silent_changes=0, comments=5,
                               buggy_comments=2, buggy_changes_hit=2)
    assert (new.precision, new.hit_rate) == (pytest.approx(0.4), 1.0)
    old = evaluate(CHANGES, PREVIOUS_DEFAULTS)
    assert old == BudgetResult(changes=3, buggy_changes=2, silent_changes=1, comments=4,
                               buggy_comments=1, buggy_changes_hit=1)
    assert (old.precision, old.hit_rate) == (0.25, 0.5)


def test_evaluate_ranks_by_probability_and_says_when_a_ratio_is_undefined():
    shuffled = [("a.py", 0.1, False), ("a.py", 0.9, True), ("a.py", 0.1, False), ("a.py", 0.1, False)]
    assert evaluate([shuffled], DEFAULTS).buggy_changes_hit == 1
    silent = evaluate([[("a.py", 0.2, False)] * 4], DEFAULTS)
    assert (silent.comments, silent.silent_changes, silent.precision, silent.hit_rate) == (0, 1, None, None)
    assert evaluate([], DEFAULTS) == BudgetResult(0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="from 0 to 1"):
        evaluate([[("a.py", 1.5, True)]], DEFAULTS)
