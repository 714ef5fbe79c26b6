"""The comment budget: which scored lines of one change earn an inline comment, and how well a
budget setting does on changes whose buggy lines are known.

A calibrated probability that a line needs an edit is small by nature (few lines of a change are
wrong), so a fixed floor on it keeps ptbot silent on most changes. The budget asks instead whether
a line stands out from its own change: its probability must be at least ``min_lift`` times the
change's base rate, the mean probability of its other scored lines smoothed by a small prior
(and at least the optional ``min_probability`` floor). Of those lines, the best ranked get a comment, one per ``lines_per_comment`` scored lines
(at least one, at most ``top_k``) and at most ``per_file_cap`` on any one file.

``bot.pr_review`` applies the rule to a review; ``evaluate`` replays it on labelled changes so
settings can be compared (posted-comment precision, share of buggy changes with a comment on a
buggy line). The settings themselves are ``bot.config.RepoConfig`` fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.config import RepoConfig

# Float noise must not decide whether a line sits exactly on its bar (0.4 * 1.5 is not 0.6).
_TOLERANCE = 1e-9

PREVIOUS_DEFAULTS = RepoConfig(top_k=5, lines_per_comment=1, min_lift=0.0, min_probability=0.5, per_file_cap=3)
"""The budget ptbot used before the lift rule: a 0.5 floor, five comments whatever the change's
size; kept so ``evaluate`` can tabulate old against new defaults."""


class BudgetRule(Protocol):
    """The settings the budget reads (``bot.config.RepoConfig``, ``bot.pr_review.Policy``)."""

    @property
    def top_k(self) -> int: ...

    @property
    def lines_per_comment(self) -> int: ...

    @property
    def min_lift(self) -> float: ...

    @property
    def base_rate_prior(self) -> float: ...

    @property
    def base_rate_prior_lines(self) -> int: ...

    @property
    def min_probability(self) -> float: ...

    @property
    def per_file_cap(self) -> int: ...


def comment_limit(rule: BudgetRule, scored: int) -> int:
    """How many inline comments a change with ``scored`` scored lines may get."""
    if scored <= 0:
        return 0
    return min(rule.top_k, math.ceil(scored / rule.lines_per_comment))


def mean_probability(probabilities: Sequence[float]) -> float:
    """The change's base rate: the mean probability of its scored lines (0 when none)."""
    return math.fsum(probabilities) / len(probabilities) if probabilities else 0.0


def bars(rule: BudgetRule, probabilities: Sequence[float]) -> list[float]:
    """For each scored line of a change, the probability it needs for a comment: the larger of
    the floor and ``min_lift`` times the change's base rate as that line sees it.

    The base rate is the mean of the change's OTHER scored lines together with
    ``base_rate_prior_lines`` lines at ``base_rate_prior``. The line itself is left out, or in a
    small change it would mostly be compared with itself; the prior gives a change of one or two
    lines a base rate at all (with neither, only the floor applies).
    """
    total, n = math.fsum(probabilities), len(probabilities)
    floor, lift = float(rule.min_probability), float(rule.min_lift)
    prior_sum = rule.base_rate_prior_lines * float(rule.base_rate_prior)
    out = []
    for p in probabilities:
        weight = n - 1 + rule.base_rate_prior_lines
        base = (total - p + prior_sum) / weight if weight > 0 else 0.0
        out.append(max(floor, lift * base))
    return out


def stands_out(rule: BudgetRule, probabilities: Sequence[float]) -> list[bool]:
    """For each scored line of a change, whether it reaches its bar (``bars``). Float noise does
    not decide a line that sits exactly on its bar."""
    return [p >= bar - _TOLERANCE * max(1.0, bar) for p, bar in zip(probabilities, bars(rule, probabilities))]


def choose(rule: BudgetRule, ranked: Sequence[tuple[str, float]],
           already_posted: Callable[[int], bool] | None = None) -> list[int]:
    """Indices into ``ranked`` (every scored line of the change as ``(path, probability)``, best
    first) of the lines that get a comment.

    ``already_posted(i)`` marks lines commented on before: they get no new comment and do not use
    the change's budget, but still use their file's share, so re-pushes do not let a noisy file
    fill up with lower-ranked lines.
    """
    # A higher probability means a lower bar (the others' mean drops), so once a line in
    # probability order falls short, every line after it does too.
    out = stands_out(rule, [p for _, p in ranked])
    limit = comment_limit(rule, len(ranked))
    chosen: list[int] = []
    per_file: dict[str, int] = {}
    for i, (path, _) in enumerate(ranked):
        if len(chosen) >= limit or not out[i]:
            break
        if per_file.get(path, 0) >= rule.per_file_cap:
            continue
        per_file[path] = per_file.get(path, 0) + 1
        if already_posted is not None and already_posted(i):
            continue
        chosen.append(i)
    return chosen


def rule_sentence(rule: BudgetRule, probabilities: Sequence[float]) -> str:
    """The rule as applied to this change, in one sentence for the review summary."""
    n = len(probabilities)
    limit = comment_limit(rule, n)
    wanted = []
    if rule.min_lift > 0 and n - 1 + rule.base_rate_prior_lines > 0:
        prior = (f", with {rule.base_rate_prior_lines} more at {_pct(float(rule.base_rate_prior))}"
                 if rule.base_rate_prior_lines else "")
        wanted.append(f"at least {float(rule.min_lift):g}× the change's base rate (the mean of its other "
                      f"scored lines{prior}; the change's mean is {_pct(mean_probability(probabilities))})")
    if rule.min_probability > 0:
        wanted.append(f"at least {_pct(float(rule.min_probability))}")
    which = f"lines whose probability is {' and '.join(wanted)}" if wanted else "the top-ranked lines"
    per = f"one per {rule.lines_per_comment} scored lines" if rule.lines_per_comment > 1 else "one per scored line"
    return (f"ptbot comments inline on at most {limit} of the {n} scored line{'' if n == 1 else 's'} "
            f"({per}, at most {rule.top_k} per review and {rule.per_file_cap} per file), "
            f"and only on {which}.")


def _pct(probability: float) -> str:
    p = 100.0 * probability
    return f"{p:.1f}%" if 0 < p < 1 else f"{p:.0f}%"


# ----- replaying a budget on labelled changes --------------------------------------------------


@dataclass(frozen=True)
class BudgetResult:
    """What one budget setting would have posted on a set of labelled changes."""

    changes: int
    """Changes replayed."""
    buggy_changes: int
    """Changes with at least one buggy scored line."""
    silent_changes: int
    """Changes that would have got no inline comment at all."""
    comments: int
    """Inline comments the budget would have posted."""
    buggy_comments: int
    """Of those, comments on buggy lines."""
    buggy_changes_hit: int
    """Buggy changes with at least one comment on a buggy line."""

    @property
    def precision(self) -> float | None:
        """Share of posted comments that sit on a buggy line (None when nothing was posted)."""
        return self.buggy_comments / self.comments if self.comments else None

    @property
    def hit_rate(self) -> float | None:
        """Share of buggy changes with at least one comment on a buggy line (None without any)."""
        return self.buggy_changes_hit / self.buggy_changes if self.buggy_changes else None


def evaluate(changes: Iterable[Sequence[tuple[str, float, bool]]], rule: BudgetRule) -> BudgetResult:
    """Replay ``rule`` on labelled changes: each change is every scored line of it as
    ``(path, calibrated probability, is_buggy)``, in any order (ranked here by probability, as a
    review ranks them; ties keep the given order).
    """
    n = buggy_changes = silent = comments = buggy_comments = hit = 0
    for change in changes:
        lines = sorted(change, key=lambda x: -x[1])
        for path, probability, _ in lines:
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"probability of a line in {path} must be from 0 to 1, got {probability}")
        picked = choose(rule, [(path, p) for path, p, _ in lines])
        on_bugs = sum(1 for i in picked if lines[i][2])
        n += 1
        buggy_changes += any(bug for _, _, bug in lines)
        silent += not picked
        comments += len(picked)
        buggy_comments += on_bugs
        hit += on_bugs > 0
    return BudgetResult(n, buggy_changes, silent, comments, buggy_comments, hit)
