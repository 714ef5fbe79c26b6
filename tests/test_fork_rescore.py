"""A check run re-run on a fork PR: GitHub sends ``check_run.pull_requests: []``,
so the worker finds the PR by head SHA (``GET /commits/{sha}/pulls``, else the open PRs)
and reviews it, or completes the check run neutral saying why it could not.

End to end: signed webhook -> Flask app -> real Redis -> Celery worker (in a thread, the stack of
``test_e2e_app``) -> fake GitHub.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qsl

import pytest
from conftest import AI_TRAILER, TEST_APP_ID, TEST_INSTALLATION_ID, put_pull_request
from test_e2e_app import AI_CALC, SECRET, WEBHOOKS, key_prefix, make_stack  # noqa: F401 - fixtures

from bot.github import GitHubApp, RetryPolicy
from bot.webhook import signature_for

FORK_HEAD = "f0" * 20
OTHER_HEAD = "e1" * 20
FORK = "forker/shop"


def check_run_payload(head_sha: str, run_id: int, action: str = "rerequested") -> bytes:
    """The recorded ``check_run.rerequested`` (its ``pull_requests`` is empty, as for a fork),
    pointed at octo/shop and ``head_sha``."""
    data = json.loads((WEBHOOKS / "check_run" / "rerequested.payload.json").read_text())
    assert data["check_run"]["pull_requests"] == []
    data["action"] = action
    data["installation"] = {"id": TEST_INSTALLATION_ID}
    data["repository"].update(name="shop", full_name="octo/shop")
    data["repository"]["owner"]["login"] = "octo"
    data["check_run"].update(head_sha=head_sha, id=run_id)
    return json.dumps(data).encode()


def deliver_check_run(stack, body: bytes):
    headers = {"X-GitHub-Event": "check_run", "X-GitHub-Delivery": str(uuid.uuid4()),
               "Content-Type": "application/json",
               "X-Hub-Signature-256": signature_for(SECRET.encode(), body)}
    return stack.web.post("/webhook", data=body, headers=headers)


def fork_pr(fake, number: int = 9, head: str = FORK_HEAD):
    if FORK not in fake.repos:
        fake.add_repo(*FORK.split("/"))
    return put_pull_request(fake, number, head, [("c9" * 20, f"Add total\n\n{AI_TRAILER}",
                                                  {"src/calc.py": AI_CALC})], head_repo=FORK)


@pytest.fixture
def app(fake_github, app_private_key):
    return GitHubApp(str(TEST_APP_ID), app_private_key, fake_github.base_url, seconds_between_writes=0,
                     retry=RetryPolicy(max_attempts=2, jitter=0.0))


def numbers(pulls) -> list[int]:
    return [p["number"] for p in pulls]


def test_the_commit_pulls_endpoint_finds_a_fork_pr(app, fake_github):
    fork_pr(fake_github)
    put_pull_request(fake_github, 3, OTHER_HEAD, [("c3" * 20, "x", {"a.py": "a = 1\n"})])
    pulls = app.open_pulls_with_head(TEST_INSTALLATION_ID, "octo", "shop", FORK_HEAD)
    assert numbers(pulls) == [9] and pulls[0]["head"]["repo"]["full_name"] == FORK
    assert fake_github.requests_to("GET", r"^/repos/octo/shop/pulls$") == []  # no listing needed


def test_open_pulls_are_paged_through_when_the_commit_lists_no_pr(app, fake_github):
    fake_github.commit_pulls_list_forks = False  # what GitHub may answer for a fork's commit
    for n in range(1, 6):
        put_pull_request(fake_github, n, f"{n:02d}" * 20, [(f"{n:02d}" * 20, "x", {"a.py": "a = 1\n"})])
    fork_pr(fake_github, number=2, head=FORK_HEAD)  # newest first: #5 #4 on page 1, #3 #2 on page 2
    pulls = app.open_pulls_with_head(TEST_INSTALLATION_ID, "octo", "shop", FORK_HEAD, per_page=2)
    assert numbers(pulls) == [2]
    (by_commit,) = fake_github.requests_to("GET", rf"^/repos/octo/shop/commits/{FORK_HEAD}/pulls$")
    assert by_commit.status == 200
    pages = [dict(parse_qsl(r.query)) for r in fake_github.requests_to("GET", r"^/repos/octo/shop/pulls$")]
    assert pages == [{"state": "open", "per_page": "2", "page": str(n)} for n in (1, 2)]  # stopped on a hit


def test_closed_prs_and_other_heads_do_not_match(app, fake_github):
    fork_pr(fake_github).state = "closed"
    assert app.open_pulls_with_head(TEST_INSTALLATION_ID, "octo", "shop", FORK_HEAD) == []
    assert app.open_pulls_with_head(TEST_INSTALLATION_ID, "octo", "shop", "9" * 40) == []


@pytest.mark.parametrize("listed_by_commit", [True, False], ids=["by-commit", "by-listing"])
def test_fork_check_run_rerun_reviews_the_pr(make_stack, fake_github, listed_by_commit):  # noqa: F811
    fake_github.commit_pulls_list_forks = listed_by_commit
    put_pull_request(fake_github, 3, OTHER_HEAD, [("c3" * 20, "x", {"a.py": "a = 1\n"})])
    fork_pr(fake_github)
    stack = make_stack()
    resp = deliver_check_run(stack, check_run_payload(FORK_HEAD, run_id=4))
    assert resp.status_code == 202
    stack.settle()
    first = stack.results("ptbot.review")[0]
    assert first["status"] == "fanned_out" and len(first["tasks"]) == 1
    (review,) = fake_github.reviews
    assert review["pull_request_url"].endswith("/repos/octo/shop/pulls/9") and review["commit_id"] == FORK_HEAD
    assert sorted(c["line"] for c in fake_github.review_comments) == [4, 5]
    (run,) = fake_github.check_runs.values()
    assert (run["head_sha"], run["status"], run["conclusion"]) == (FORK_HEAD, "completed", "neutral")
    listed = fake_github.requests_to("GET", r"^/repos/octo/shop/pulls$")
    assert bool(listed) is not listed_by_commit


def test_a_rerun_is_forced_past_a_done_job_key(make_stack, fake_github):  # noqa: F811
    fork_pr(fake_github)
    stack = make_stack()
    deliver_check_run(stack, check_run_payload(FORK_HEAD, run_id=4))
    stack.settle()
    assert stack.results("ptbot.publish")[-1]["status"] == "posted"
    deliver_check_run(stack, check_run_payload(FORK_HEAD, run_id=4, action="requested_action"))
    stack.settle()
    # Not "already_done": the job ran again, found its lines already commented on, posted nothing new.
    assert [r["status"] for r in stack.results("ptbot.publish")] == ["posted", "check_only"]
    assert len(fake_github.reviews) == 1


def test_no_pr_for_the_head_completes_the_check_run_neutral(make_stack, fake_github, app):  # noqa: F811
    fork_pr(fake_github).state = "closed"
    run_id = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 9).create_check_run(
        head_sha=FORK_HEAD, title="ptbot: 2 risky lines", summary="earlier review")
    stack = make_stack()
    deliver_check_run(stack, check_run_payload(FORK_HEAD, run_id=run_id))
    stack.settle()
    assert stack.results("ptbot.review") == [{"status": "ignored", "tasks": []}]
    (run,) = fake_github.check_runs.values()
    assert (run["id"], run["status"], run["conclusion"]) == (run_id, "completed", "neutral")
    assert run["output"]["title"] == "ptbot: no pull request to review"
    assert f"no open pull request in octo/shop whose head commit is `{FORK_HEAD}`" in run["output"]["summary"]
    assert fake_github.reviews == []


def test_no_pr_and_no_check_run_id_creates_a_neutral_run(app, fake_github):
    from bot.rescore import fork_rescore_jobs

    fake_github.add_repo("octo", "shop")
    job = {"kind": "rescore", "installation_id": TEST_INSTALLATION_ID, "owner": "octo", "repo": "shop",
           "head_sha": FORK_HEAD, "numbers": [], "check_run_id": None}
    assert fork_rescore_jobs(app, job) == []
    (run,) = fake_github.check_runs.values()
    assert (run["head_sha"], run["conclusion"], run["name"]) == (FORK_HEAD, "neutral", "ptbot")


def test_fork_jobs_have_the_pull_request_job_shape(app, fake_github):
    from bot.rescore import fork_rescore_jobs

    fork_pr(fake_github)
    job = {"event": "check_run", "action": "rerequested", "kind": "rescore", "delivery": "d",
           "installation_id": TEST_INSTALLATION_ID, "owner": "octo", "repo": "shop", "repo_id": 1,
           "default_branch": "main", "head_sha": FORK_HEAD, "numbers": [], "check_run_id": 4,
           "external_id": "", "requested_action": None}
    (j,) = fork_rescore_jobs(app, job)
    assert j["force"] is True and j["number"] == 9 and j["check_run_id"] == 4
    assert (j["head_sha"], j["head_repo"], j["head_ref"], j["base_ref"]) == (FORK_HEAD, FORK, "feature", "main")
    assert (j["draft"], j["merged"], j["author"], j["labels"]) == (False, False, "developer", [])


def test_serve_eager_resolves_a_fork_rerun_too(fake_github, app_private_key):
    """``ptbot serve --eager`` runs the same lookup in-process (no Redis, no Celery)."""
    from conftest import FakeScorer

    from bot.config import Settings
    from bot.webhook import MemoryDeliveryDeduper, create_app
    from workers.tasks import InProcessQueue, eager_runtime

    settings = Settings(app_id=str(TEST_APP_ID), private_key=app_private_key, webhook_secret=SECRET,
                        github_api_url=fake_github.base_url, seconds_between_writes=0.0,
                        redis_url="redis://127.0.0.1:1/0")  # nothing listens there: must not be used
    fake_github.commit_pulls_list_forks = False
    fork_pr(fake_github)
    queue = InProcessQueue(eager_runtime(settings, scorer_factory=lambda: FakeScorer({"RISK-A": 0.9})))
    web = create_app(settings, queue, MemoryDeliveryDeduper()).test_client()
    try:
        body = check_run_payload(FORK_HEAD, run_id=4)
        resp = web.post("/webhook", data=body, headers={
            "X-GitHub-Event": "check_run", "X-GitHub-Delivery": "eager-fork",
            "X-Hub-Signature-256": signature_for(SECRET.encode(), body)})
        assert resp.status_code == 202
        queue.join()
        assert [o.status for o in queue.outcomes] == ["posted"]
        (review,) = fake_github.reviews
        assert review["pull_request_url"].endswith("/pulls/9")
    finally:
        queue.close()
