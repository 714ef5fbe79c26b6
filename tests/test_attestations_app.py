"""Line attestations read by the App through the fake GitHub (real HTTP, PyGithub): git-ai notes
from the Git database API (``refs/notes/ai`` -> commit -> tree -> blob) and
``.agent-trace/traces.jsonl`` from the contents API at the PR head."""

from __future__ import annotations

import uuid

import pytest
from conftest import AI_TRAILER, TEST_INSTALLATION_ID, FakeScorer, put_pull_request, app_on
from test_attestations import MODEL, TOOL, note, trace

from bot.config import Settings
from bot.github import GitHubApp
from bot.pr_review import MemoryLedger, run_review
from bot.render import Renderer

HEAD = "a1" * 20
C1 = "c1" * 20
C2 = "c2" * 20
CALC = ("def total(items):\n"
        "    result = 0\n"
        "    for item in items:\n"
        "        result += item.price  # RISK-A\n"
        "    return result / len(items)  # RISK-B\n")
UTIL = ("def clamp(x, lo, hi):\n"
        "    return max(lo, min(x, hi))  # RISK-C\n")


@pytest.fixture
def app(fake_github, app_private_key) -> GitHubApp:
    return app_on(fake_github, app_private_key, max_attempts=2, backoff_base=0.1)


def review(app, owner="octo", name="shop"):
    job = {"event": "pull_request", "action": "opened", "kind": "review", "installation_id": TEST_INSTALLATION_ID,
           "owner": owner, "repo": name, "repo_id": 1, "number": 7, "head_sha": HEAD, "draft": False,
           "delivery": str(uuid.uuid4())}
    api = app.pull_request(TEST_INSTALLATION_ID, owner, name, 7)
    scorer = FakeScorer({"RISK-A": 0.9, "RISK-B": 0.8, "RISK-C": 0.7})
    return run_review(job, api, scorer, Renderer(), MemoryLedger(), Settings().repo_defaults), scorer, api


def human_pr(fake, **kw):
    """Two commits by a person, no trailers: only attestations can make lines AI."""
    return put_pull_request(fake, 7, HEAD, [(C1, "Add total", {"src/calc.py": CALC}),
                                            (C2, "Add clamp", {"src/util.py": UTIL})], **kw)


def test_a_git_ai_note_alone_puts_its_lines_in_scope(fake_github, app):
    human_pr(fake_github)
    fake_github.put_git_notes("octo", "shop", {C1: note({"src/calc.py": "4-5"})})
    outcome, scorer, _ = review(app)
    assert outcome.status == "posted"
    (req,) = scorer.calls[0]
    assert (req.path, req.lines) == ("src/calc.py", frozenset({4, 5}))
    # Both noted lines are scored; of two, only the one standing out from the other gets a comment.
    comments = sorted(fake_github.review_comments, key=lambda c: c["line"])
    assert [(c["path"], c["line"]) for c in comments] == [("src/calc.py", 4)]
    assert f"git-ai note (tool={TOOL}, model={MODEL}) in {C1[:7]}" in comments[0]["body"]
    assert "scored 2 of 2 AI-authored lines (5 other added lines not in scope)" in fake_github.reviews[0]["body"]
    # One walk: ref -> notes commit -> tree -> the one note blob; C2 has no note.
    assert len(fake_github.requests_to("GET", r"/git/ref/notes/ai$")) == 1
    assert len(fake_github.requests_to("GET", r"/git/blobs/")) == 1


def test_notes_of_a_fork_pr_are_read_from_the_fork_even_with_fanout(fake_github, app):
    fake_github.add_repo("forker", "shop")
    human_pr(fake_github, head_repo="forker/shop")
    fake_github.put_git_notes("forker", "shop", {C2: note({"src/util.py": "2"}), "ff" * 20: note({"x.py": "1"})},
                              fanout=True)
    fake_github.put_git_notes("octo", "shop", {C1: note({"src/calc.py": "1-5"})})  # not the head's
    outcome, scorer, _ = review(app)
    assert outcome.status == "posted"
    assert [(r.path, r.lines) for r in scorer.calls[0]] == [("src/util.py", frozenset({2}))]
    # The root tree, then the one fan-out directory on the way to C2's note ("c2/c2c2…").
    assert len(fake_github.requests_to("GET", r"^/repos/forker/shop/git/trees/")) == 2
    assert not fake_github.requests_to("GET", r"^/repos/octo/shop/git/")


def test_agent_trace_at_the_head_marks_lines(fake_github, app):
    human_pr(fake_github)
    traces = trace(C2, "src/util.py", 1, 2) + "\n" + trace(C1, "src/calc.py", 4, 4, kind="human") + "\n"
    fake_github.repos["octo/shop"].contents[(HEAD, ".agent-trace/traces.jsonl")] = traces
    outcome, scorer, api = review(app)
    assert outcome.status == "posted"
    assert [(r.path, r.lines) for r in scorer.calls[0]] == [("src/util.py", frozenset({1, 2}))]
    prov = api.line_provenance(())
    assert prov[("src/util.py", 2)].reason == (
        f"agent-trace (tool=cursor, model=anthropic/claude-opus-4-5-20251101) in {C2[:7]}")
    assert prov[("src/calc.py", 4)].reason == f"agent-trace: written by a known human in {C1[:7]}"


def test_a_human_attestation_takes_a_line_out_of_an_ai_commit(fake_github, app):
    put_pull_request(fake_github, 7, HEAD, [(C1, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": CALC})])
    fake_github.put_git_notes("octo", "shop", {C1: note({"src/calc.py": "4"}, human=True)})
    outcome, scorer, _ = review(app)
    assert outcome.status == "posted"
    assert [(r.path, r.lines) for r in scorer.calls[0]] == [("src/calc.py", frozenset({1, 2, 3, 5}))]


def test_without_notes_or_traces_nothing_changes(fake_github, app):
    human_pr(fake_github)
    outcome, scorer, _ = review(app)
    assert outcome.status == "human_only" and scorer.calls == []
    (ref_get,) = fake_github.requests_to("GET", r"/git/ref/notes/ai$")
    assert ref_get.status == 404
    (trace_get,) = fake_github.requests_to("GET", r"/contents/.agent-trace/traces.jsonl$")
    assert trace_get.status == 404 and "ref=" + HEAD in trace_get.query


def test_a_pr_level_signal_skips_the_attestation_reads(fake_github, app):
    human_pr(fake_github, head_ref="claude/fix-totals")
    fake_github.put_git_notes("octo", "shop", {C1: note({"src/calc.py": "4"}, human=True)})
    outcome, scorer, _ = review(app)
    assert outcome.status == "posted"
    assert {r.path: r.lines for r in scorer.calls[0]} == {"src/calc.py": frozenset(range(1, 6)),
                                                          "src/util.py": frozenset({1, 2})}
    assert not fake_github.requests_to("GET", r"/git/") and not fake_github.requests_to("GET", r"agent-trace")
