"""bot.review.review: the library call a Python caller reviews a repository or a diff with."""

from __future__ import annotations

import pytest
from conftest import FakeScorer
from gitrepo import commit, git, write

from analyzer.diff import DiffError
from bot.localrepo import RepoError
from bot.review import Review, ReviewLimits, review

V1 = "def mean(xs):\n    return sum(xs) / len(xs)\n"
V2 = ("def mean(xs):\n    if not xs:\n        return 0.0  # RISK\n    return sum(xs) / len(xs)\n"
      "\n# a comment\n")


@pytest.fixture()
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    write(root, "stats.py", V1)
    commit(root)
    write(root, "stats.py", V2)
    return root


def test_reviews_the_working_tree_against_head(repo):
    scorer = FakeScorer({"RISK": 0.9})
    said: list[str] = []
    result = review(scorer, repo, progress=True, say=said.append)
    assert isinstance(result, Review)
    assert [(ln.path, ln.line, ln.rank) for ln in result.report.lines] == [
        ("stats.py", 3, 1), ("stats.py", 2, 2)]
    assert result.report.lines[0].probability == 0.9
    assert result.changed == {"stats.py": frozenset({2, 3})}
    assert result.texts["stats.py"] == V2
    # Four added lines: two scored, a blank and a comment line counted as not scored.
    assert (result.coverage.scored, result.coverage.candidates) == (2, 4)
    assert dict(result.coverage.not_scored) == {"comment": 1, "blank": 1}
    assert said == ["scoring 2 lines in 1 file"]


def test_reviews_a_range_of_revisions_and_applies_the_limits(repo):
    first = git(repo, "rev-parse", "HEAD").strip()
    head = commit(repo)
    result = review(FakeScorer({"RISK": 0.9}), repo, base=first, head=head,
                    limits=ReviewLimits(top_k=1))
    assert [(ln.path, ln.line) for ln in result.report.lines] == [("stats.py", 3)]
    assert result.coverage.scored == 2  # the limit hides lines, it does not unscore them


def test_reviews_a_unified_diff_with_texts_from_the_tree(repo):
    diff = git(repo, "diff")
    scorer = FakeScorer({"RISK": 0.7})
    result = review(scorer, repo, diff=diff)
    assert [ln.line for ln in result.report.lines] == [3, 2]
    assert review(scorer, repo, diff=diff.encode()).report.lines == result.report.lines


def test_loads_the_scorer_only_after_the_change_is_read(repo, tmp_path):
    loads: list[int] = []

    def load() -> FakeScorer:
        loads.append(1)
        return FakeScorer()

    with pytest.raises(RepoError):
        review(load, tmp_path / "not-a-repo")
    with pytest.raises(DiffError):
        review(load, repo, diff="@@ -1 +1 @@\n+x\n")
    assert loads == []
    review(load, repo)
    assert loads == [1]


def test_an_empty_change_says_so_and_scores_nothing(repo):
    commit(repo)
    said: list[str] = []
    result = review(FakeScorer(), repo, say=said.append)
    assert result.report.lines == () and result.report.skipped == ()
    assert said == ["nothing to review: the diff is empty"]


def test_a_diff_does_not_combine_with_revisions(repo):
    with pytest.raises(ValueError, match="base/head"):
        review(FakeScorer(), repo, diff="", base="HEAD")
