"""bot.pr_review: the PR pipeline against the fake GitHub (real HTTP through PyGithub).

The scorer is a FakeScorer (deterministic probabilities from markers in the code); the ledger
is in memory except where Redis itself is under test.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from conftest import AI_TRAILER, TEST_INSTALLATION_ID, FakeScorer, put_pull_request, app_on
from fake_github import FakeFile

from bot.config import Settings
from bot.github import GitHubApp
from bot.pr_review import (
    FAILURE_TITLE,
    JobKey,
    MemoryLedger,
    Prepared,
    RedisLedger,
    Scored,
    job_key,
    prepare,
    publish,
    run_review,
    score,
)
from bot.render import Renderer, parse_marker

HEAD = "a1" * 20
HEAD2 = "b2" * 20
AI_CALC = ("def total(items):\n"
           "    result = 0\n"
           "    for item in items:\n"
           "        result += item.price  # RISK-A\n"
           "    return result / len(items)  # RISK-B\n")
HUMAN_UTIL = ("def clamp(x, lo, hi):\n"
              "    return max(lo, min(x, hi))  # RISK-C\n")
RISKY = {"RISK-A": 0.9, "RISK-B": 0.8, "RISK-C": 0.7, "RISK-LOW": 0.3}


def job(head: str = HEAD, number: int = 7, **extra) -> dict:
    return {"event": "pull_request", "action": "opened", "kind": "review", "installation_id": TEST_INSTALLATION_ID,
            "owner": "octo", "repo": "shop", "repo_id": 1, "number": number, "head_sha": head,
            "draft": False, "delivery": str(uuid.uuid4()), **extra}


@pytest.fixture
def app(fake_github, app_private_key) -> GitHubApp:
    return app_on(fake_github, app_private_key, max_attempts=3, backoff_base=0.1)


@pytest.fixture
def scorer() -> FakeScorer:
    return FakeScorer(RISKY)


@pytest.fixture
def renderer() -> Renderer:
    return Renderer()


def review(app, scorer, renderer, ledger=None, j=None, defaults=None):
    j = j or job()
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", j["number"])
    return run_review(j, api, scorer, renderer, ledger if ledger is not None else MemoryLedger(),
                      defaults or Settings().repo_defaults)


def ai_pr(fake, head=HEAD, **kw):
    return put_pull_request(fake, 7, head, [("c1" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})], **kw)


def test_ai_pr_gets_one_review_with_ranked_comments_and_a_check_run(fake_github, app, scorer, renderer):
    ai_pr(fake_github)
    outcome = review(app, scorer, renderer)
    assert outcome.status == "posted" and outcome.comments == 2
    (posted,) = fake_github.reviews
    assert posted["state"] == "COMMENTED" and posted["commit_id"] == HEAD and outcome.review_id == posted["id"]
    comments = sorted(fake_github.review_comments, key=lambda c: c["line"])
    assert [(c["path"], c["line"], c["side"]) for c in comments] == [("src/calc.py", 4, "RIGHT"),
                                                                      ("src/calc.py", 5, "RIGHT")]
    first, second = comments
    assert "ptbot risk #1: 90%" in first["body"] and "ptbot risk #2: 80%" in second["body"]
    assert "Co-authored-by noreply@anthropic.com" in first["body"] and "fake pattern" in first["body"]
    assert parse_marker(first["body"])["sha"] == HEAD and parse_marker(first["body"])["model"] == "fake-model@test-1"
    assert "scored 5 of 5 AI-authored lines" in posted["body"]
    assert "fake-model@test-1" in posted["body"]
    # The check run went in_progress first, then completed neutral with the same coverage.
    (run,) = fake_github.check_runs.values()
    assert outcome.check_run_id == run["id"]
    assert (run["status"], run["conclusion"], run["head_sha"]) == ("completed", "neutral", HEAD)
    assert "scored 5 of 5 AI-authored lines" in run["output"]["summary"]
    assert run["output"]["title"].startswith("ptbot: 5 lines ranked, 2 high risk")
    (create,) = fake_github.requests_to("POST", r"/check-runs$")
    assert create.body["status"] == "in_progress"
    # The review is anchored on the head that was scored, and the scorer saw whole files.
    (req,) = scorer.calls[0]
    assert req.text == AI_CALC and req.lines == frozenset({1, 2, 3, 4, 5})


def test_a_review_asks_github_for_nothing_twice(fake_github, app, scorer, renderer):
    """Requests per endpoint over one whole review: each is made once, except the PR itself,
    which publish reads again on purpose (a push during scoring supersedes the job)."""
    put_pull_request(fake_github, 7, HEAD, [
        ("c1" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC}),
        ("c2" * 20, f"More\n\n{AI_TRAILER}", {"src/more.py": "z = load()  # RISK-C\n"}),
        ("c3" * 20, "Tidy", {"src/more.py": "z = load()  # RISK-C\n"})])
    assert review(app, scorer, renderer).status == "posted"
    seen: dict[tuple, int] = {}
    for r in fake_github.requests:
        # GraphQL is one URL: tell its documents apart (and their variables: the page cursor).
        doc = json.dumps(r.body, sort_keys=True) if r.path.endswith("/graphql") else ""
        key = (r.method, r.path, r.query, doc)
        seen[key] = seen.get(key, 0) + 1
    twice = {k: n for k, n in seen.items() if n > 1}
    assert twice == {("GET", "/repos/octo/shop/pulls/7", "", ""): 2}, twice
    assert sum(1 for k in seen if k[1] == "/graphql") == 2  # review threads, review summaries
    assert sum(1 for k in seen if k[1].startswith("/repos/octo/shop/commits/")) == 3


def test_mixed_pr_comments_only_on_ai_lines(fake_github, app, scorer, renderer):
    put_pull_request(fake_github, 7, HEAD, [
        ("d1" * 20, "Add clamp", {"src/util.py": HUMAN_UTIL}),
        ("d2" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    outcome = review(app, scorer, renderer)
    assert outcome.status == "posted"
    assert {c["path"] for c in fake_github.review_comments} == {"src/calc.py"}  # RISK-C is human
    (posted,) = fake_github.reviews
    assert "scored 5 of 5 AI-authored lines (2 other added lines not in scope)" in posted["body"]
    assert [r.path for r in scorer.calls[0]] == ["src/calc.py"]


def test_human_only_pr_posts_nothing_but_a_neutral_check_run(fake_github, app, scorer, renderer):
    put_pull_request(fake_github, 7, HEAD, [("e1" * 20, "Add clamp", {"src/util.py": HUMAN_UTIL})])
    outcome = review(app, scorer, renderer)
    assert outcome.status == "human_only"
    assert fake_github.reviews == [] and fake_github.review_comments == [] and scorer.calls == []
    (run,) = fake_github.check_runs.values()
    assert (run["status"], run["conclusion"]) == ("completed", "neutral")
    assert run["output"]["title"] == "ptbot: no AI-authored lines"
    assert "scored 0 of 0 AI-authored lines (2 other added lines not in scope)" in run["output"]["summary"]
    assert "mode = \"all\"" in run["output"]["summary"]


def test_mode_all_from_the_default_branch_reviews_human_lines(fake_github, app, scorer, renderer):
    put_pull_request(fake_github, 7, HEAD, [("e1" * 20, "Add clamp", {"src/util.py": HUMAN_UTIL})])
    fake_github.repos["octo/shop"].contents[("main", ".ptbot.toml")] = 'mode = "all"\n'
    outcome = review(app, scorer, renderer)
    assert outcome.status == "posted"
    (comment,) = fake_github.review_comments
    assert (comment["path"], comment["line"]) == ("src/util.py", 2)
    assert "no AI signal on commit" in comment["body"]
    assert "scored 2 of 2 added lines" in fake_github.reviews[0]["body"]


def test_a_pull_request_cannot_change_its_own_config(fake_github, app, scorer, renderer):
    ai_pr(fake_github)
    fake_github.repos["octo/shop"].contents[(HEAD, ".ptbot.toml")] = "top_k = 0\n"  # on the PR head only
    assert review(app, scorer, renderer).comments == 2


def test_top_k_per_file_cap_and_min_probability(fake_github, app, scorer, renderer):
    many = "".join(f"x{i} = {i}  # RISK-A\n" for i in range(4)) + "y = 1  # RISK-LOW\n"
    put_pull_request(fake_github, 7, HEAD, [("f1" * 20, f"Many\n\n{AI_TRAILER}",
                                              {"src/a.py": many, "src/b.py": many, "src/c.py": many})])
    # min_lift = 0: most lines here are risky, so none would stand out from the change's mean.
    fake_github.repos["octo/shop"].contents[("main", ".ptbot.toml")] = (
        "top_k = 4\nper_file_cap = 2\nmin_probability = 0.5\nmin_lift = 0\n")
    outcome = review(app, scorer, renderer)
    lines = [(c["path"], c["line"]) for c in fake_github.review_comments]
    assert outcome.comments == 4 and len(lines) == 4
    assert all(sum(1 for p, _ in lines if p == path) <= 2 for path in ("src/a.py", "src/b.py", "src/c.py"))
    assert all(line != 5 for _, line in lines)  # RISK-LOW (0.3) is below min_probability
    # The summary table still ranks lines beyond the inline budget.
    assert "scored 15 of 15 AI-authored lines" in fake_github.reviews[0]["body"]


def test_default_budget_speaks_when_a_line_stands_out_of_a_quiet_change(fake_github, app, scorer, renderer):
    """Small calibrated probabilities (no line near the old 0.5 floor): the line well above the
    change's own mean still gets its comment, and the summary states the rule."""
    text = "".join(f"v{i} = {i}\n" for i in range(16)) + "w = v1 - 1  # RISK-LOW\n"
    put_pull_request(fake_github, 7, HEAD, [("f1" * 20, f"Quiet\n\n{AI_TRAILER}", {"src/q.py": text})])
    outcome = review(app, scorer, renderer)
    assert outcome.status == "posted"
    (comment,) = fake_github.review_comments
    assert (comment["path"], comment["line"]) == ("src/q.py", 17)
    rule = ("**Comments:** ptbot comments inline on at most 3 of the 17 scored lines (one per 3 scored "
            "lines, at most 3 per review and 3 per file), and only on lines whose probability is at least "
            "1.5× the change's base rate (the mean of its other scored lines, with 4 more at 10%; the "
            "change's mean is 11%).")
    assert rule in fake_github.reviews[0]["body"]
    (run,) = fake_github.check_runs.values()
    assert rule in run["output"]["summary"]


def test_default_budget_grows_with_the_change_and_stays_silent_when_nothing_stands_out(
        fake_github, app, scorer, renderer):
    risky = "".join(f"r{i} = {i}  # RISK-A\n" for i in range(3))
    small = risky + "".join(f"q{i} = {i}\n" for i in range(2))   # 5 lines: 2 comments
    large = risky + "".join(f"q{i} = {i}\n" for i in range(9))   # 12 lines: 3 comments (top_k)
    put_pull_request(fake_github, 7, HEAD, [("f1" * 20, f"Small\n\n{AI_TRAILER}", {"src/s.py": small})])
    put_pull_request(fake_github, 8, HEAD, [("f2" * 20, f"Large\n\n{AI_TRAILER}", {"src/l.py": large})])
    flat = "".join(f"x{i} = {i}  # RISK-LOW\n" for i in range(6))   # every line alike
    put_pull_request(fake_github, 9, HEAD, [("f3" * 20, f"Flat\n\n{AI_TRAILER}", {"src/f.py": flat})])
    assert review(app, scorer, renderer).comments == 2
    assert review(app, scorer, renderer, j=job(number=8)).comments == 3
    assert review(app, scorer, renderer, j=job(number=9)).status == "check_only"
    assert len(fake_github.reviews) == 2


def test_exclude_patterns_are_reported_as_skipped(fake_github, app, scorer, renderer):
    put_pull_request(fake_github, 7, HEAD, [("f2" * 20, f"Add\n\n{AI_TRAILER}",
                                              {"src/calc.py": AI_CALC, "gen/out.py": AI_CALC, "notes.txt": "hi\n"})])
    fake_github.repos["octo/shop"].contents[("main", ".ptbot.toml")] = 'exclude = ["gen/*"]\n'
    review(app, scorer, renderer)
    body = fake_github.reviews[0]["body"]
    assert "excluded by .ptbot.toml" in body and "gen/out.py" in body
    assert "unknown language" in body and "notes.txt" in body
    assert {c["path"] for c in fake_github.review_comments} == {"src/calc.py"}


def test_invalid_config_is_a_visible_neutral_check_run(fake_github, app, scorer, renderer):
    ai_pr(fake_github)
    fake_github.repos["octo/shop"].contents[("main", ".ptbot.toml")] = "top_k = 'many'\n"
    outcome = review(app, scorer, renderer)
    assert outcome.status == "config_error" and fake_github.reviews == []
    (run,) = fake_github.check_runs.values()
    assert run["conclusion"] == "neutral" and "top_k must be an integer" in run["output"]["summary"]


def test_the_same_job_twice_posts_once(fake_github, app, scorer, renderer):
    ai_pr(fake_github)
    ledger = MemoryLedger()
    assert review(app, scorer, renderer, ledger).status == "posted"
    again = review(app, scorer, renderer, ledger)
    assert again.status == "already_done"
    assert len(fake_github.reviews) == 1 and len(fake_github.check_runs) == 1
    assert len(scorer.calls) == 1  # a finished key stops before reading the PR again


def test_a_crash_after_posting_does_not_post_again(fake_github, app, scorer, renderer):
    """The ledger never heard of the first review (the worker died): GitHub's copy tells."""
    ai_pr(fake_github)
    assert review(app, scorer, renderer, MemoryLedger()).status == "posted"
    outcome = review(app, scorer, renderer, MemoryLedger())
    assert outcome.status == "check_only"
    assert len(fake_github.reviews) == 1 and len(fake_github.review_comments) == 2


def test_synchronize_comments_only_on_new_findings(fake_github, app, scorer, renderer):
    ai_pr(fake_github)
    ledger = MemoryLedger()
    review(app, scorer, renderer, ledger)
    # A push: the same file moved down by one line (content fingerprints survive) and a new file.
    moved = "import math\n" + AI_CALC
    put_pull_request(fake_github, 7, HEAD2, [
        ("c1" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": moved}),
        ("c2" * 20, f"Add more\n\n{AI_TRAILER}", {"src/more.py": "z = load()  # RISK-C\n"})])
    outcome = review(app, scorer, renderer, ledger, job(HEAD2, action="synchronize"))
    assert outcome.status == "posted" and outcome.comments == 1
    second = [c for c in fake_github.review_comments if c["commit_id"] == HEAD2]
    assert [(c["path"], c["line"]) for c in second] == [("src/more.py", 1)]
    bodies = [parse_marker(c["body"])["fp"] for c in fake_github.review_comments]
    assert len(bodies) == len(set(bodies)) == 3
    # Nothing new after another push: no review at all, the check run carries the summary.
    put_pull_request(fake_github, 7, "c3" * 20, [
        ("c1" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": moved}),
        ("c2" * 20, f"Add more\n\n{AI_TRAILER}", {"src/more.py": "z = load()  # RISK-C\n"})])
    outcome = review(app, scorer, renderer, ledger, job("c3" * 20, action="synchronize"))
    assert outcome.status == "check_only" and len(fake_github.reviews) == 2


def test_an_older_head_is_superseded(fake_github, app, scorer, renderer):
    ai_pr(fake_github, head=HEAD2)  # the PR has moved on to HEAD2
    outcome = review(app, scorer, renderer, j=job(HEAD))
    assert outcome.status == "superseded" and "moved" in outcome.detail
    assert fake_github.reviews == [] and fake_github.check_runs == {} and scorer.calls == []


def test_a_push_between_scoring_and_posting_supersedes(fake_github, app, scorer, renderer):
    ai_pr(fake_github)
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    ledger = MemoryLedger()
    prepared = prepare(job(), api, Settings().repo_defaults, ledger, renderer)
    scored = score(prepared, scorer)
    fake_github.repos["octo/shop"].pulls[7].head_sha = HEAD2
    assert publish(scored, api, renderer, ledger, owner="t1").status == "superseded"
    assert fake_github.reviews == []
    (run,) = fake_github.check_runs.values()  # the old head's check does not spin forever
    assert (run["status"], run["output"]["title"]) == ("completed", "ptbot: superseded by a newer push")


def test_one_bad_anchor_after_a_push_is_moved_to_the_body(fake_github, app, scorer, renderer):
    pull = ai_pr(fake_github)
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    ledger = MemoryLedger()
    scored = score(prepare(job(), api, Settings().repo_defaults, ledger, renderer), scorer)
    # The diff GitHub holds changes under us (force-push keeping the SHA, or a stale cache):
    # line 5 is no longer part of it, so GitHub refuses the whole review with 422 once.
    pull.files[0] = FakeFile("src/calc.py", "@@ -0,0 +1,4 @@\n+a\n+b\n+c\n+d", status="added")
    outcome = publish(scored, api, renderer, ledger, owner="t1")
    assert outcome.status == "posted" and (outcome.comments, outcome.moved_to_body) == (1, 1)
    assert [r.status for r in fake_github.requests_to("POST", r"/pulls/7/reviews$")] == [422, 200]
    assert [c["line"] for c in fake_github.review_comments] == [4]
    assert "`src/calc.py` line 5" in fake_github.reviews[0]["body"]


def test_a_locked_key_is_left_to_its_owner(fake_github, app, scorer, renderer):
    ai_pr(fake_github)
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    ledger = MemoryLedger()
    scored = score(prepare(job(), api, Settings().repo_defaults, ledger, renderer), scorer)
    key = str(job_key(job(), "fake-model@test-1"))
    assert ledger.claim(key, "someone-else")
    assert publish(scored, api, renderer, ledger, owner="me").status == "busy"
    ledger.release(key, "someone-else")
    assert publish(scored, api, renderer, ledger, owner="me").status == "posted"


def test_stage_payloads_survive_json(fake_github, app, scorer, renderer):
    put_pull_request(fake_github, 7, HEAD, [
        ("d1" * 20, "Add clamp", {"src/util.py": HUMAN_UTIL}),
        ("d2" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    prepared = prepare(job(), api, Settings().repo_defaults, MemoryLedger(), renderer)
    assert isinstance(prepared, Prepared)
    assert Prepared.from_dict(json.loads(json.dumps(prepared.to_dict()))) == prepared
    scored = score(prepared, scorer)
    assert Scored.from_dict(json.loads(json.dumps(scored.to_dict()))) == scored


class Boom(FakeScorer):
    def score_many(self, requests, progress=False):
        raise RuntimeError("CUDA out of memory\nTried to allocate 2.00 GiB")


@pytest.mark.parametrize("stage, inject, reason", [
    # GitHub refuses the PR itself: the job fails before it opened a check run.
    ("prepare", lambda fake: fake.fail_next("GET", r"/pulls/7$", 403, body={"message": "Forbidden"}),
     "prepare failed: GitHub answered 403 (Forbidden)"),
    # A file read fails after the check run went in_progress.
    ("prepare", lambda fake: fake.fail_next("GET", r"/contents/src/calc.py$", 403, body={"message": "nope"}),
     "prepare failed: GitHub answered 403 (nope)"),
    ("score", None, "score failed: RuntimeError: CUDA out of memory"),
    # A 5xx on a write is not retried (the review may exist): the job fails.
    ("publish", lambda fake: fake.fail_next("POST", r"/pulls/7/reviews$", 502), "publish failed: GitHub answered 502"),
])
def test_a_failing_stage_completes_the_check_run_with_the_reason(fake_github, app, scorer, renderer, stage,
                                                                  inject, reason):
    """``ptbot serve --eager`` runs ``run_review``: no exception leaves the check run in_progress."""
    ai_pr(fake_github)
    if inject:
        inject(fake_github)
    with pytest.raises(Exception):
        review(app, Boom(RISKY) if stage == "score" else scorer, renderer)
    (run,) = fake_github.check_runs.values()
    assert (run["status"], run["conclusion"], run["head_sha"]) == ("completed", "failure", HEAD)
    assert run["output"]["title"] == FAILURE_TITLE
    assert reason in run["output"]["summary"] and "Re-run the check" in run["output"]["summary"]
    assert "Tried to allocate" not in run["output"]["summary"]  # one line, no traceback
    assert fake_github.reviews == []


def test_a_push_before_a_redelivery_completes_the_run_an_earlier_delivery_opened(fake_github, app, scorer,
                                                                                renderer):
    ai_pr(fake_github)
    ledger = MemoryLedger()
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    assert isinstance(prepare(job(), api, Settings().repo_defaults, ledger, renderer), Prepared)
    # The worker died after prepare; the PR moved on before the job came round again.
    fake_github.repos["octo/shop"].pulls[7].head_sha = HEAD2
    assert review(app, scorer, renderer, ledger).status == "superseded"
    (run,) = fake_github.check_runs.values()
    assert (run["status"], run["output"]["title"]) == ("completed", "ptbot: superseded by a newer push")


def test_job_key():
    key = job_key(job(), "m@1")
    assert key == JobKey(TEST_INSTALLATION_ID, "octo/shop", 7, HEAD, "m@1")
    assert str(key) == f"{TEST_INSTALLATION_ID}:octo/shop#7@{HEAD}:m@1"
    assert key.review_fingerprint() != job_key(job(HEAD2), "m@1").review_fingerprint()
    assert key.review_fingerprint() != job_key(job(), "m@2").review_fingerprint()
    with pytest.raises(ValueError, match="installation"):
        job_key(dict(job(), installation_id=None), "m@1")


@pytest.fixture
def redis_ledger(redis_url):
    client = redis.Redis.from_url(redis_url)
    prefix = f"ptbot-test:{uuid.uuid4().hex}:"
    yield RedisLedger(client, prefix)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


def test_redis_ledger(redis_ledger):
    assert redis_ledger.claim("k", "task-1", ttl=30)
    assert redis_ledger.claim("k", "task-1", ttl=30)  # the same task, redelivered, takes it over
    assert not redis_ledger.claim("k", "task-2", ttl=30)
    redis_ledger.release("k", "task-2")  # not the owner: no effect
    assert not redis_ledger.claim("k", "task-2", ttl=30)
    redis_ledger.release("k", "task-1")
    assert redis_ledger.claim("k", "task-2", ttl=30)
    assert not redis_ledger.is_done("k")
    redis_ledger.mark_done("k", ttl=30)
    assert redis_ledger.is_done("k")
    assert redis_ledger.check_run("k") is None
    redis_ledger.remember_check_run("k", 42)
    assert redis_ledger.check_run("k") == 42
    assert [redis_ledger.count_delivery("t") for _ in range(3)] == [1, 2, 3]


def test_pipeline_with_the_redis_ledger(fake_github, app, scorer, renderer, redis_ledger):
    ai_pr(fake_github)
    assert review(app, scorer, renderer, redis_ledger).status == "posted"
    assert review(app, scorer, renderer, redis_ledger).status == "already_done"
    assert len(fake_github.reviews) == 1
