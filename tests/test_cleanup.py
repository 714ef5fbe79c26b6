"""bot.cleanup: ptbot resolves its own stale threads and minimises its replaced summaries.

The deciding functions are tested on GraphQL-shaped nodes; the rest runs through PyGithub over
real HTTP against the fake GitHub (``tests/fake_graphql.py`` answers its GraphQL endpoint), from a
first review to a push, a redelivery and a second push. Nothing may ever be deleted.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from conftest import AI_TRAILER, TEST_APP_ID, TEST_INSTALLATION_ID, FakeScorer, put_pull_request, app_on
from fake_github import BOT_LOGIN
from fake_graphql import add_reaction, add_review_comment

from analyzer.types import LineScore, ModelInfo, Report
from bot.cleanup import (
    ReviewSummary,
    ReviewThread,
    clean_up,
    same_login,
    summaries_to_minimize,
    threads_to_resolve,
)
from bot.config import Settings
from bot.github import GitHubApp, GitHubToken, GraphQLError, RetryPolicy, ReviewComment, graphql_url
from bot.pr_review import MemoryLedger, Policy, current_flags, run_review
from bot.render import Renderer, marker, parse_marker

BOT = "ptbot-test"  # GraphQL spells the App's bot without REST's "[bot]"
HEAD1, HEAD2, HEAD3 = "a1" * 20, "b2" * 20, "c3" * 20
AI_CALC = ("def total(items):\n"
           "    result = 0\n"
           "    for item in items:\n"
           "        result += item.price  # RISK-A\n"
           "    return result / len(items)  # RISK-B\n")
RISKY = {"RISK-A": 0.9, "RISK-B": 0.8, "RISK-C": 0.7}


# ----- the decisions, on GraphQL-shaped nodes ---------------------------------------------------


def comment(author: str | None, body: str, reactions: int = 0, database_id: int = 1) -> dict:
    return {"databaseId": database_id, "body": body, "author": {"login": author} if author else None,
            "reactionGroups": [{"content": "THUMBS_DOWN", "reactors": {"totalCount": reactions}},
                               {"content": "HEART", "reactors": {"totalCount": 0}}]}


def thread(tid: str, *comments: dict, resolved: bool = False, outdated: bool = False) -> ReviewThread:
    return ReviewThread.from_graphql({"id": tid, "isResolved": resolved, "isOutdated": outdated, "path": "a.py",
                                      "line": None if outdated else 3, "comments": {"nodes": list(comments)}})


def ptbot_body(fp: str) -> str:
    return "ptbot risk #1: 90%\n\n" + marker(fp=fp, model="m@1", sha=HEAD1)


def test_same_login_ignores_the_bot_suffix_and_case():
    assert same_login("ptbot-test[bot]", "ptbot-test") and same_login("PtBot-Test", "ptbot-test[bot]")
    assert not same_login("ptbot-test", "ptbot-test2") and not same_login(None, "ptbot-test")
    assert not same_login("", "")


def test_only_ptbots_own_stale_open_threads_are_resolved():
    threads = [
        thread("PRRT_stale_outdated", comment(BOT, ptbot_body("f1")), outdated=True),
        thread("PRRT_still_flagged", comment(BOT, ptbot_body("f2"))),
        thread("PRRT_no_longer_flagged", comment(BOT, ptbot_body("f3"))),
        thread("PRRT_already_resolved", comment(BOT, ptbot_body("f4")), resolved=True, outdated=True),
        # A person quoting ptbot's marker, another bot's marker, a ptbot comment without a marker.
        thread("PRRT_human", comment("alice", ptbot_body("f5")), outdated=True),
        thread("PRRT_other_bot", comment("dependabot", ptbot_body("f6")), outdated=True),
        thread("PRRT_unmarked", comment(BOT, "just text"), outdated=True),
        # A person started it and ptbot replied: still a person's thread.
        thread("PRRT_human_then_ptbot", comment("bob", "why?"), comment(BOT, ptbot_body("f7"), database_id=2),
               outdated=True),
        # Deleted account: no author at all.
        thread("PRRT_ghost", comment(None, ptbot_body("f8")), outdated=True),
    ]
    chosen = threads_to_resolve(threads, {"f2", "f4"}, "ptbot-test[bot]")
    assert [t.id for t in chosen] == ["PRRT_stale_outdated", "PRRT_no_longer_flagged"]
    # Outdated by GitHub (its hunk changed) but the same line content is still flagged: a live
    # finding, kept open (it would never be posted again once resolved).
    moved = thread("PRRT_moved", comment(BOT, ptbot_body("f2")), outdated=True)
    assert threads_to_resolve([moved], {"f2"}, BOT) == []


def test_feedback_is_detected_but_does_not_stop_resolution():
    replied = thread("PRRT_r", comment(BOT, ptbot_body("f1")), comment("alice", "fixed", database_id=2), outdated=True)
    reacted = thread("PRRT_x", comment(BOT, ptbot_body("f2"), reactions=2), outdated=True)
    quiet = thread("PRRT_q", comment(BOT, ptbot_body("f3")), outdated=True)
    assert replied.has_feedback(BOT) and reacted.has_feedback(BOT) and not quiet.has_feedback(BOT)
    assert reacted.comments[0].reactions == 2
    assert {t.id for t in threads_to_resolve([replied, reacted, quiet], set(), BOT)} == {"PRRT_r", "PRRT_x", "PRRT_q"}


def summary(rid: int, author: str, sha: str, kind: str | None = "review", minimized: bool = False) -> ReviewSummary:
    body = "summary\n\n" + (marker(kind=kind, model="m@1", sha=sha) if kind else "no marker")
    return ReviewSummary.from_graphql({"id": f"PRR_{rid}", "databaseId": rid, "body": body, "isMinimized": minimized,
                                       "author": {"login": author}, "commit": {"oid": sha}})


def test_summaries_replaced_by_a_newer_ptbot_summary_are_minimised():
    reviews = [summary(1, BOT, HEAD1), summary(2, "alice", HEAD1), summary(3, BOT, HEAD1, kind=None),
               summary(4, "dependabot", HEAD1), summary(5, BOT, HEAD2, minimized=True), summary(6, BOT, HEAD2),
               summary(7, BOT, HEAD3)]
    assert [r.database_id for r in summaries_to_minimize(reviews, HEAD3, BOT)] == [1, 6]
    # No review for the new head (nothing new to say): the newest summary stays visible.
    assert [r.database_id for r in summaries_to_minimize(reviews[:6], HEAD3, BOT)] == [1]
    # Two summaries of the head itself (a forced re-review): neither is hidden.
    assert summaries_to_minimize([summary(8, BOT, HEAD3), summary(9, BOT, HEAD3)], HEAD3, BOT) == []
    # Findings moved into the body follow the review's own marker with theirs: still a summary.
    moved = summary(10, BOT, HEAD1)
    moved = ReviewSummary(moved.id, 10, moved.body + "\n\n**`a.py` line 9**\n\nrisk " + marker(fp="ab", sha=HEAD1),
                          BOT, HEAD1)
    assert parse_marker(moved.body).get("kind") is None
    assert [r.database_id for r in summaries_to_minimize([moved, summary(11, BOT, HEAD2)], HEAD2, BOT)] == [10]


def test_current_flags_ignore_the_inline_budget_but_not_the_threshold():
    lines = tuple(LineScore("a.py", n, f"x{n}", p, p, rank, ()) for rank, (n, p) in
                  enumerate([(1, 0.9), (2, 0.6), (3, 0.3)], 1))
    report = Report(ModelInfo("m", "s", 1, "1"), lines)
    fps = {("a.py", n): f"fp{n}" for n in (1, 2, 3)}
    # top_k = 1: line 2 gets no new comment, but its open thread is not stale either.
    assert current_flags(report, Policy("ai-only", 1, 0.5, 3, min_lift=0), fps) == {"fp1", "fp2"}
    # The lift rule is part of the threshold: at a lift of 3, 0.6 does not stand out of the rest.
    assert current_flags(report, Policy("ai-only", 1, 0.0, 3, min_lift=3), fps) == {"fp1"}


def test_graphql_url_for_github_and_enterprise():
    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://ghe.example.com/api/v3/") == "https://ghe.example.com/api/graphql"


# ----- GitHubPullRequest's GraphQL, against the fake -------------------------------------------


@pytest.fixture
def app(fake_github, app_private_key) -> GitHubApp:
    return app_on(fake_github, app_private_key, max_attempts=3, backoff_base=0.05)


@pytest.fixture
def scorer() -> FakeScorer:
    return FakeScorer(RISKY)


def job(head: str, action: str = "opened") -> dict:
    return {"event": "pull_request", "action": action, "kind": "review", "installation_id": TEST_INSTALLATION_ID,
            "owner": "octo", "repo": "shop", "repo_id": 1, "number": 7, "head_sha": head, "draft": False,
            "delivery": str(uuid.uuid4())}


def push(fake, head: str, text: str):
    return put_pull_request(fake, 7, head, [("c1" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": text})])


def review(app, scorer, head: str, ledger=None, action: str = "synchronize"):
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    return run_review(job(head, action), api, scorer, Renderer(), ledger if ledger is not None else MemoryLedger(),
                      Settings().repo_defaults)


def by_line(fake, head: str | None = None) -> dict[int, dict]:
    return {c["line"]: c for c in fake.review_comments
            if c["user"]["login"] == BOT_LOGIN and (head is None or c["commit_id"] == head)}


def test_threads_and_summaries_through_graphql(fake_github, app):
    push(fake_github, HEAD1, AI_CALC)
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    api.post_review(marker(kind="review", sha=HEAD1), [
        ReviewComment("src/calc.py", 4, "a " + marker(fp="00000000000000a4")),
        ReviewComment("src/calc.py", 5, "b " + marker(fp="00000000000000a5"))])
    first = min(c["id"] for c in fake_github.review_comments)
    add_review_comment(fake_github, "octo", "shop", 7, body="good catch", login="alice", in_reply_to=first)
    add_reaction(fake_github, first, "-1", "carol")

    fake_github.graphql.page_size = 1  # one thread per page: the cursor is followed
    threads = api.review_threads()
    assert [(t.path, t.line, t.fingerprint) for t in threads] == [("src/calc.py", 4, "00000000000000a4"),
                                                                   ("src/calc.py", 5, "00000000000000a5")]
    assert all(t.id.startswith("PRRT_") and not t.is_resolved and not t.is_outdated for t in threads)
    assert [c.author for c in threads[0].comments] == ["ptbot-test", "alice"]  # GraphQL's spelling
    assert threads[0].comments[0].reactions == 1 and threads[0].has_feedback(api.bot_login())
    assert len(fake_github.requests_to("POST", r"^/graphql$")) == 2  # one request per page
    assert api.bot_login() == BOT_LOGIN and len(fake_github.requests_to("GET", r"^/app$")) == 1  # cached

    api.resolve_thread(threads[0].id)
    assert [t.is_resolved for t in api.review_threads()] == [True, False]
    (rev,) = api.review_summaries()
    assert rev.id.startswith("PRR_") and rev.commit_sha == HEAD1 and parse_marker(rev.body)["kind"] == "review"
    api.minimize_comment(rev.id)
    assert api.review_summaries()[0].is_minimized
    assert fake_github.graphql.minimized == {rev.id: "OUTDATED"}

    # A comment's node id is not a thread id: GitHub answers 200 with errors, ptbot raises.
    with pytest.raises(GraphQLError, match="NOT_FOUND.*PullRequestReviewThread") as err:
        api.resolve_thread(f"PRRC_fake{first}")
    assert not err.value.forbidden
    fake_github.graphql.forbidden.add("minimizeComment")
    with pytest.raises(GraphQLError, match="Resource not accessible by integration") as err:
        api.minimize_comment(rev.id)
    assert err.value.forbidden


def test_graphql_reads_are_retried_and_mutations_pass_the_write_gate(fake_github, app_private_key):
    class CountingGate:
        def __init__(self) -> None:
            self.writes = 0

        def defer(self, seconds: float) -> None:
            pass

        def run(self, fn, sleep):
            self.writes += 1
            return fn()

    gate = CountingGate()
    settings = Settings(app_id=str(TEST_APP_ID), private_key=app_private_key, github_api_url=fake_github.base_url)
    app = GitHubApp.from_settings(settings, retry=RetryPolicy(max_attempts=3, backoff_base=0.01,
                                                              server_error_base=0.01, jitter=0.0),
                                  write_gate=lambda _installation: gate)
    push(fake_github, HEAD1, AI_CALC)
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    api.post_review("S", [ReviewComment("src/calc.py", 4, "a " + marker(fp="00000000000000a4"))])
    assert gate.writes == 1
    fake_github.secondary_rate_limit_next("POST", r"^/graphql$", retry_after=0)
    (t,) = api.review_threads()
    assert [r.status for r in fake_github.requests_to("POST", r"^/graphql$")] == [403, 200]
    api.resolve_thread(t.id)
    assert gate.writes == 2  # the mutation was a write; the queries were not


def test_enterprise_graphql_endpoint_with_a_plain_token(fake_github):
    push(fake_github, HEAD1, AI_CALC)
    fake_github.tokens["ghp_enterprise"] = TEST_INSTALLATION_ID
    gh = GitHubToken("ghp_enterprise", fake_github.base_url + "/api/v3", seconds_between_writes=0.0)
    api = gh.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    assert api.review_threads() == []
    assert api.bot_login() == BOT_LOGIN  # GraphQL viewer: /user refuses App tokens
    assert {r.path for r in fake_github.requests_to("POST", "graphql")} == {"/api/graphql"}


# ----- end to end: opened, push, redelivery, push ----------------------------------------------


def test_a_push_resolves_stale_ptbot_threads_and_minimises_the_old_summary(fake_github, app, scorer):
    push(fake_github, HEAD1, AI_CALC)
    first = review(app, scorer, HEAD1, action="opened")
    assert first.status == "posted" and first.comments == 2
    risk_a, risk_b = by_line(fake_github)[4], by_line(fake_github)[5]
    # Reviewers at work: a reply and a thumbs-down on ptbot's RISK-A comment, and their own thread
    # that quotes a ptbot marker (it must still never count as ptbot's).
    reply = add_review_comment(fake_github, "octo", "shop", 7, body="will fix", login="alice", in_reply_to=risk_a["id"])
    add_reaction(fake_github, risk_a["id"], "-1", "carol")
    human = add_review_comment(fake_github, "octo", "shop", 7, path="src/calc.py", line=2, login="bob",
                               body="rename this? " + marker(fp=parse_marker(risk_b["body"])["fp"]))
    assert fake_github.graphql.mutations == []  # the first review had nothing to tidy

    # The push rewrites the RISK-A line (now a RISK-C finding) and touches the human's line 2.
    fixed = AI_CALC.replace("result += item.price  # RISK-A", "result += item.cost  # RISK-C") \
                   .replace("result = 0", "result = 0.0")
    push(fake_github, HEAD2, fixed)
    second = review(app, scorer, HEAD2)
    assert second.status == "posted" and second.comments == 1  # only the new RISK-C line

    g = fake_github.graphql
    threads = {t["id"]: t for t in (g.thread_of(c["id"]) for c in (risk_a, risk_b, human))}
    old_a, old_b, bobs = (f"PRRT_fake{c['id']}" for c in (risk_a, risk_b, human))
    assert threads[old_a]["isResolved"] and threads[old_a]["isOutdated"]
    assert not threads[old_b]["isResolved"]  # RISK-B is unchanged and still flagged
    assert threads[bobs]["isOutdated"] and not threads[bobs]["isResolved"]  # a person's thread: untouched
    new_a = by_line(fake_github, HEAD2)[4]
    assert not g.thread_of(new_a["id"])["isResolved"]
    # The resolved thread keeps every comment and reaction.
    assert [c["databaseId"] for c in threads[old_a]["comments"]["nodes"]] == [risk_a["id"], reply["id"]]
    assert g.thread_of(risk_a["id"])["comments"]["nodes"][0]["reactionGroups"][1]["reactors"]["totalCount"] == 1
    old_review, new_review = fake_github.reviews
    assert g.minimized == {f"PRR_fake{old_review['id']}": "OUTDATED"}
    assert [name for name, _ in g.mutations] == ["resolveReviewThread", "minimizeComment"]

    # A redelivery after a crash (the ledger forgot): nothing posted, nothing resolved twice.
    assert review(app, scorer, HEAD2, ledger=MemoryLedger()).status == "check_only"
    assert len(g.mutations) == 2 and len(fake_github.reviews) == 2

    # Another push that fixes RISK-B and adds nothing new: its thread is resolved, and the newest
    # summary (HEAD2's) stays visible, since no newer one replaced it.
    push(fake_github, HEAD3, fixed.replace("  # RISK-B", ""))
    assert review(app, scorer, HEAD3).status == "check_only"
    assert g.thread_of(risk_b["id"])["isResolved"]
    assert not g.thread_of(new_a["id"])["isResolved"]
    assert f"PRR_fake{new_review['id']}" not in g.minimized
    assert [name for name, _ in g.mutations] == ["resolveReviewThread", "minimizeComment", "resolveReviewThread"]

    # Never a deletion: no DELETE reached GitHub, every comment and reaction is still there.
    assert fake_github.requests_to("DELETE", ".*") == []
    assert {c["id"] for c in fake_github.review_comments} >= {risk_a["id"], risk_b["id"], reply["id"], human["id"]}
    assert len(fake_github.reactions[risk_a["id"]]) == 1


def test_a_push_that_leaves_no_ai_line_resolves_ptbots_threads(fake_github, app, scorer):
    push(fake_github, HEAD1, AI_CALC)
    assert review(app, scorer, HEAD1, action="opened").status == "posted"
    flagged = list(by_line(fake_github).values())
    # A person rewrites the change in their own commit (no agent trailer): nothing is AI-authored.
    put_pull_request(fake_github, 7, HEAD2, [("d4" * 20, "Rewrite total by hand",
                                              {"src/calc.py": AI_CALC.replace("item.price", "item.cost")})])
    assert review(app, scorer, HEAD2).status == "human_only"
    g = fake_github.graphql
    assert all(g.thread_of(c["id"])["isResolved"] for c in flagged) and len(flagged) == 2
    assert fake_github.requests_to("DELETE", ".*") == []
    assert len(fake_github.reviews) == 1 and g.minimized == {}  # the only summary stays visible


def test_missing_permission_degrades_to_a_warning(fake_github, app, scorer, caplog):
    push(fake_github, HEAD1, AI_CALC)
    review(app, scorer, HEAD1, action="opened")
    fake_github.graphql.forbidden.update({"resolveReviewThread", "minimizeComment"})
    push(fake_github, HEAD2, AI_CALC.replace("  # RISK-A", "  # RISK-C"))
    with caplog.at_level(logging.WARNING, logger="bot.cleanup"):
        outcome = review(app, scorer, HEAD2)
    assert outcome.status == "posted" and outcome.comments == 1
    (run,) = [r for r in fake_github.check_runs.values() if r["head_sha"] == HEAD2]
    assert run["status"] == "completed"
    # One refused attempt per kind of mutation, then the step stops; each said why.
    assert [name for name, _ in fake_github.graphql.mutations] == ["resolveReviewThread", "minimizeComment"]
    assert sum("Pull requests: write" in r.getMessage() for r in caplog.records) == 2
    assert fake_github.graphql.resolved == set() and fake_github.graphql.minimized == {}


def test_clean_up_never_raises_when_graphql_is_down(fake_github, app):
    push(fake_github, HEAD1, AI_CALC)
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    fake_github.fail_next("POST", r"^/graphql$", 502, times=10)
    result = clean_up(api, HEAD1, set(), where="octo/shop#7")
    assert result.resolved == [] and result.minimized == [] and len(result.errors) == 2
