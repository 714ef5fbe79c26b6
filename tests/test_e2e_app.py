"""End to end: signed webhook -> Flask app -> real Redis -> Celery worker -> fake GitHub.

The worker runs in a thread of this process (celery's ``start_worker``, solo pool) for most
tests, and as a real prefork worker in a subprocess for the crash tests (``kill -9`` of the
process running a task; a task that kills its process every time). Every Redis key of a test
(Celery's included, through kombu's ``global_keyprefix``) lives under a prefix of its own.
The scorer is a FakeScorer except in the one ``slow`` test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.signals import after_task_publish, task_postrun
from conftest import AI_TRAILER, TEST_APP_ID, TEST_INSTALLATION_ID, FakeScorer, put_pull_request
from fake_github import FakeFile

from bot.config import Settings
from bot.github import GitHubApp, RetryPolicy
from bot.pr_review import RedisLedger
from bot.webhook import RedisDeliveryDeduper, create_app, signature_for
from workers.celery_app import make_celery
from workers.producer import WorkerConfig, celery_enqueue
from workers.tasks import WorkerRuntime

ROOT = Path(__file__).resolve().parents[1]
WEBHOOKS = ROOT / "tests" / "fixtures" / "github" / "webhooks"
SECRET = "e2e-secret"
RISKY = {"RISK-A": 0.9, "RISK-B": 0.8, "RISK-C": 0.7}
AI_CALC = ("def total(items):\n"
           "    result = 0\n"
           "    for item in items:\n"
           "        result += item.price  # RISK-A\n"
           "    return result / len(items)  # RISK-B\n")
HUMAN_UTIL = "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))  # RISK-C\n"


def pr_payload(action: str, number: int, head: str, head_ref: str = "feature") -> bytes:
    """The recorded ``pull_request.opened`` example, pointed at octo/shop#number@head."""
    data = json.loads((WEBHOOKS / "pull_request" / "opened.payload.json").read_text())
    data["action"] = action
    data["installation"] = {"id": TEST_INSTALLATION_ID}
    data["repository"].update(name="shop", full_name="octo/shop")
    data["repository"]["owner"]["login"] = "octo"
    pr = data["pull_request"]
    pr.update(number=number, draft=False, labels=[])
    pr["head"].update(sha=head, ref=head_ref)
    data["number"] = number
    return json.dumps(data).encode()


@dataclass
class Stack:
    fake: Any
    web: Any
    ledger: RedisLedger
    sent: list[str] = field(default_factory=list)
    done: list[tuple[str, Any]] = field(default_factory=list)

    def deliver(self, action: str, number: int, head: str, delivery: str | None = None,
                signed: bool = True) -> Any:
        body = pr_payload(action, number, head)
        headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
                   "Content-Type": "application/json"}
        if signed:
            headers["X-Hub-Signature-256"] = signature_for(SECRET.encode(), body)
        return self.web.post("/webhook", data=body, headers=headers)

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until every task sent so far (and every task those sent) has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.done) >= len(self.sent):
                time.sleep(0.2)
                if len(self.done) >= len(self.sent):
                    return
            time.sleep(0.05)
        raise AssertionError(f"tasks did not finish: sent {self.sent}, done {[d[0] for d in self.done]}")

    def results(self, name: str) -> list[Any]:
        return [r for n, r in self.done if n == name]


def settings_for(fake, private_key: str, redis_url: str) -> Settings:
    return Settings(app_id=str(TEST_APP_ID), private_key=private_key, github_api_url=fake.base_url,
                    webhook_secret=SECRET, redis_url=redis_url, seconds_between_writes=0.0)


@pytest.fixture
def key_prefix(redis_url) -> Iterator[str]:
    prefix = f"ptbot-test-{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


@pytest.fixture
def make_stack(fake_github, app_private_key, redis_url, key_prefix) -> Iterator[Callable[..., Stack]]:
    """Build web app + in-thread Celery worker; ``make_stack(scorer_factory)`` inside a test."""
    stack_ctx: list[Any] = []

    def build(scorer_factory: Callable[[], Any] = lambda: FakeScorer(RISKY),
              model_version: str | None = "fake-model@test-1") -> Stack:
        settings = settings_for(fake_github, app_private_key, redis_url)
        client = redis.Redis.from_url(redis_url)
        ledger = RedisLedger(client, key_prefix + "ledger:")
        runtime = WorkerRuntime(
            settings, scorer_factory=scorer_factory, ledger_factory=lambda: ledger, model_version=model_version,
            github_factory=lambda: GitHubApp.from_settings(settings, retry=RetryPolicy(
                max_attempts=3, backoff_base=0.2, server_error_base=0.05, jitter=0.0)))
        app = make_celery(settings, WorkerConfig(key_prefix=key_prefix, soft_time_limit=100, time_limit=120),
                          runtime)
        web = create_app(settings, celery_enqueue(app),
                         RedisDeliveryDeduper(client, ttl_seconds=600, prefix=key_prefix + "delivery:"))
        stack = Stack(fake_github, web.test_client(), ledger)

        def on_publish(sender: str | None = None, **_: Any) -> None:
            if sender and sender.startswith("ptbot."):
                stack.sent.append(sender)

        def on_postrun(sender: Any = None, retval: Any = None, **_: Any) -> None:
            if sender is not None and sender.app is app:
                stack.done.append((sender.name, retval))

        after_task_publish.connect(on_publish)
        task_postrun.connect(on_postrun)
        worker = start_worker(app, pool="solo", perform_ping_check=False, queues=["cpu", "gpu"],
                              shutdown_timeout=30, loglevel="WARNING")
        worker.__enter__()
        stack_ctx.append((worker, on_publish, on_postrun))
        return stack

    yield build
    for worker, on_publish, on_postrun in stack_ctx:
        worker.__exit__(None, None, None)
        after_task_publish.disconnect(on_publish)
        task_postrun.disconnect(on_postrun)


HEAD1, HEAD2 = "a1" * 20, "b2" * 20


def test_opened_redelivery_reopened_and_synchronize(make_stack, fake_github):
    stack = make_stack()
    put_pull_request(fake_github, 7, HEAD1, [("c1" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])

    assert stack.deliver("opened", 7, HEAD1, delivery="d-1").status_code == 202
    stack.settle()
    (review,) = fake_github.reviews
    assert review["commit_id"] == HEAD1 and review["state"] == "COMMENTED"
    comments = sorted(fake_github.review_comments, key=lambda c: c["line"])
    assert [c["line"] for c in comments] == [4, 5]
    assert "ptbot risk #1: 90%" in comments[0]["body"] and "ptbot risk #2: 80%" in comments[1]["body"]
    (run,) = fake_github.check_runs.values()
    assert (run["status"], run["conclusion"]) == ("completed", "neutral")
    assert "scored 5 of 5 AI-authored lines" in run["output"]["summary"]
    assert [n for n, _ in stack.done] == ["ptbot.review", "ptbot.score", "ptbot.publish"]

    # A redelivery (same GUID) is not even enqueued; another event for the same head is a no-op.
    again = stack.deliver("opened", 7, HEAD1, delivery="d-1")
    assert again.status_code == 200 and again.json["outcome"] == "duplicate"
    assert stack.deliver("reopened", 7, HEAD1).status_code == 202
    stack.settle()
    assert stack.results("ptbot.review")[-1]["status"] == "already_done"
    assert len(fake_github.reviews) == 1 and len(fake_github.check_runs) == 1

    # A push: one more risky AI line. One more review with just that comment, no duplicates.
    put_pull_request(fake_github, 7, HEAD2, [
        ("c1" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC}),
        ("c2" * 20, f"More\n\n{AI_TRAILER}", {"src/more.py": "z = load()  # RISK-C\n"})])
    assert stack.deliver("synchronize", 7, HEAD2).status_code == 202
    stack.settle()
    assert len(fake_github.reviews) == 2
    new = [(c["path"], c["line"]) for c in fake_github.review_comments if c["commit_id"] == HEAD2]
    assert new == [("src/more.py", 1)]
    assert len(fake_github.review_comments) == 3


def test_unsigned_delivery_is_refused_and_nothing_runs(make_stack, fake_github):
    stack = make_stack()
    put_pull_request(fake_github, 7, HEAD1, [("c1" * 20, f"Add\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    assert stack.deliver("opened", 7, HEAD1, signed=False).status_code == 401
    time.sleep(0.5)
    assert stack.sent == [] and stack.done == [] and fake_github.requests == []


def test_mixed_and_human_only_prs(make_stack, fake_github):
    stack = make_stack()
    put_pull_request(fake_github, 7, HEAD1, [
        ("d1" * 20, "Add clamp", {"src/util.py": HUMAN_UTIL}),
        ("d2" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    put_pull_request(fake_github, 8, HEAD2, [("e1" * 20, "Add clamp", {"src/util.py": HUMAN_UTIL})])
    assert stack.deliver("opened", 7, HEAD1).status_code == 202
    assert stack.deliver("opened", 8, HEAD2).status_code == 202
    stack.settle()
    # Mixed: only the AI-authored file is commented on; the human lines are counted, not scored.
    (review,) = fake_github.reviews
    assert review["pull_request_url"].endswith("/pulls/7")
    assert {c["path"] for c in fake_github.review_comments} == {"src/calc.py"}
    assert "(2 other added lines not in scope)" in review["body"]
    # Human-only: no review, a neutral check run that says why.
    runs = {r["head_sha"]: r for r in fake_github.check_runs.values()}
    assert runs[HEAD2]["conclusion"] == "neutral" and runs[HEAD2]["output"]["title"] == "ptbot: no AI-authored lines"
    assert sorted(r["status"] for r in stack.results("ptbot.review")) == ["human_only", "scoring"]


def test_ai_only_pr_from_an_agent_branch(make_stack, fake_github):
    stack = make_stack()
    put_pull_request(fake_github, 9, HEAD1, [("f1" * 20, "Add clamp", {"src/util.py": HUMAN_UTIL})],
                     head_ref="copilot/fix-clamp")
    body = json.loads(pr_payload("opened", 9, HEAD1))
    assert stack.deliver("opened", 9, HEAD1).status_code == 202 and body["pull_request"]["number"] == 9
    stack.settle()
    (comment,) = fake_github.review_comments
    assert "agent branch 'copilot/fix-clamp'" in comment["body"]


def test_a_422_on_one_anchor_still_posts_the_review(make_stack, fake_github):
    """GitHub's diff moved under the worker: the first POST gets 422, the retry drops the anchor."""
    stack = make_stack()
    pull = put_pull_request(fake_github, 7, HEAD1, [("c1" * 20, f"Add\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    stale = list(pull.files)
    pull.files[0] = FakeFile("src/calc.py", "@@ -0,0 +1,4 @@\n+a\n+b\n+c\n+d", status="added")
    stale_reads = [2]  # prepare's read and publish's first read see the old diff
    original = fake_github._repo_endpoint

    def endpoint(repo, method, rest):
        if method == "GET" and rest == "pulls/7/files" and stale_reads[0] > 0:
            stale_reads[0] -= 1
            current, pull.files = pull.files, stale
            try:
                return original(repo, method, rest)
            finally:
                pull.files = current
        return original(repo, method, rest)

    fake_github._repo_endpoint = endpoint
    stack.deliver("opened", 7, HEAD1)
    stack.settle()
    assert [r.status for r in fake_github.requests_to("POST", r"/pulls/7/reviews$")] == [422, 200]
    (review,) = fake_github.reviews
    assert [c["line"] for c in fake_github.review_comments] == [4]
    assert "`src/calc.py` line 5" in review["body"]
    assert stack.results("ptbot.publish")[0]["moved_to_body"] == 1


def test_a_secondary_rate_limit_is_honoured(make_stack, fake_github):
    stack = make_stack()
    put_pull_request(fake_github, 7, HEAD1, [("c1" * 20, f"Add\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    fake_github.secondary_rate_limit_next("POST", r"/pulls/7/reviews$", retry_after=1)
    stack.deliver("opened", 7, HEAD1)
    stack.settle()
    first, second = fake_github.requests_to("POST", r"/pulls/7/reviews$")
    assert (first.status, second.status) == (403, 200) and second.at - first.at >= 1.0
    assert len(fake_github.reviews) == 1


# ----- crashes: a real prefork worker in a subprocess ----------------------------------------

WORKER_SCRIPT = r'''
import json, os, sys, time
cfg = json.loads(sys.argv[1])
sys.path[:0] = [cfg["root"], cfg["tests"]]
from conftest import FakeScorer
from bot.config import Settings
from bot.github import GitHubApp, RetryPolicy
from bot.pr_review import RedisLedger
from workers.celery_app import make_celery
from workers.producer import WorkerConfig
from workers.tasks import WorkerRuntime


class CrashTestScorer(FakeScorer):
    """Notes its pid; pauses on the first call (so the test can kill it); a CRASH file kills it."""

    def score_many(self, requests, progress=False):
        with open(cfg["events"], "a") as f:
            f.write(f"score {os.getpid()}\n")
        if any("CRASH" in r.text for r in requests):
            os._exit(3)
        if not os.path.exists(cfg["events"] + ".paused"):
            open(cfg["events"] + ".paused", "w").close()
            time.sleep(30)
        return super().score_many(requests, progress)


settings = Settings(app_id=cfg["app_id"], private_key=open(cfg["key_file"]).read(),
                    github_api_url=cfg["github"], redis_url=cfg["redis"], seconds_between_writes=0.0)
runtime = WorkerRuntime(
    settings, scorer_factory=lambda: CrashTestScorer(cfg["risky"]), model_version="fake-model@test-1",
    ledger_factory=lambda: RedisLedger.from_url(cfg["redis"], cfg["prefix"] + "ledger:"),
    github_factory=lambda: GitHubApp.from_settings(settings, retry=RetryPolicy(max_attempts=2, jitter=0.0)))
app = make_celery(settings, WorkerConfig(key_prefix=cfg["prefix"], soft_time_limit=50, time_limit=60,
                                         max_deliveries=cfg["max_deliveries"]), runtime)
app.worker_main(["worker", "--queues=cpu,gpu", "--concurrency=1", "--pool=prefork", "--loglevel=INFO",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"])
'''


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pool_child(pid: int) -> int | None:
    """The one pool process of a prefork worker with --concurrency=1."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if len(children) == 1 else None


@pytest.fixture
def subprocess_worker(fake_github, app_private_key, redis_url, key_prefix, tmp_path):
    """Start ``WORKER_SCRIPT`` (prefork, one child); yields (stack-like webhook, events file, proc)."""
    procs: list[subprocess.Popen] = []

    def start(max_deliveries: int = 3) -> tuple[Stack, Path, subprocess.Popen]:
        (tmp_path / "key.pem").write_text(app_private_key)
        (tmp_path / "worker.py").write_text(WORKER_SCRIPT)
        events = tmp_path / "events.log"
        cfg = {"root": str(ROOT), "tests": str(ROOT / "tests"), "app_id": str(TEST_APP_ID),
               "key_file": str(tmp_path / "key.pem"), "github": fake_github.base_url, "redis": redis_url,
               "prefix": key_prefix, "risky": RISKY, "events": str(events), "max_deliveries": max_deliveries}
        log = open(tmp_path / "worker.log", "w")
        proc = subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), json.dumps(cfg)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        procs.append(proc)
        settings = settings_for(fake_github, app_private_key, redis_url)
        client = redis.Redis.from_url(redis_url)
        producer = make_celery(settings, WorkerConfig(key_prefix=key_prefix, soft_time_limit=50, time_limit=60))
        web = create_app(settings, celery_enqueue(producer),
                         RedisDeliveryDeduper(client, ttl_seconds=600, prefix=key_prefix + "delivery:"))
        wait_for(lambda: pool_child(proc.pid), 30, "the worker's pool process")
        return Stack(fake_github, web.test_client(), RedisLedger(client, key_prefix + "ledger:")), events, proc

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_kill_9_mid_review_posts_the_review_exactly_once(subprocess_worker, fake_github, tmp_path):
    stack, events, proc = subprocess_worker()
    put_pull_request(fake_github, 7, HEAD1, [("c1" * 20, f"Add\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    # GitHub creates the review, then is slow to answer: the worker dies waiting for the answer.
    answered_late = threading.Event()
    create_review = fake_github._create_review

    def slow_create_review(repo, pull, data):
        resp = create_review(repo, pull, data)
        if not answered_late.is_set():
            answered_late.set()
            time.sleep(2)
        return resp

    fake_github._create_review = slow_create_review
    assert stack.deliver("opened", 7, HEAD1).status_code == 202

    # 1. Killed while scoring: the score task goes back to the queue and runs in a new process.
    wait_for(lambda: events.exists() and "score" in events.read_text(), 30, "scoring to start")
    scoring = int(events.read_text().split()[1])
    assert scoring == pool_child(proc.pid)
    os.kill(scoring, signal.SIGKILL)
    # 2. Killed after GitHub created the review, before the worker heard back.
    assert answered_late.wait(30), (tmp_path / "worker.log").read_text()[-3000:]
    posting = pool_child(proc.pid)
    assert posting and posting != scoring
    os.kill(posting, signal.SIGKILL)

    # The publish task is redelivered, finds its own review on GitHub and only completes the check.
    wait_for(lambda: any(r["status"] == "completed" for r in fake_github.check_runs.values()), 30,
             "the check run to complete")
    time.sleep(0.5)
    assert len(fake_github.reviews) == 1
    assert len(fake_github.requests_to("POST", r"/pulls/7/reviews$")) == 1
    assert sorted(c["line"] for c in fake_github.review_comments) == [4, 5]
    (run,) = fake_github.check_runs.values()
    assert run["conclusion"] == "neutral" and "scored 5 of 5" in run["output"]["summary"]
    assert events.read_text().count("score") == 2
    assert proc.poll() is None  # the worker itself survived both losses


def test_a_job_that_kills_its_worker_fails_after_max_deliveries(subprocess_worker, fake_github, redis_url,
                                                                 key_prefix):
    stack, events, proc = subprocess_worker(max_deliveries=2)
    put_pull_request(fake_github, 7, HEAD1, [("c1" * 20, f"Add\n\n{AI_TRAILER}",
                                              {"src/crash.py": "x = 1  # CRASH\n"})])
    assert stack.deliver("opened", 7, HEAD1).status_code == 202
    wait_for(lambda: any(r.get("output", {}).get("title") == "ptbot: review failed"
                         for r in fake_github.check_runs.values()), 45, "the failure to be reported")
    assert events.read_text().count("score") == 2  # two deliveries ran (and crashed), the third did not
    client = redis.Redis.from_url(redis_url)
    counts = sorted(int(client.get(k)) for k in client.scan_iter(key_prefix + "ledger:deliveries:*"))
    assert counts == [1, 3]  # ptbot.review once; ptbot.score delivered 3 times, failed on the 3rd
    (run,) = fake_github.check_runs.values()
    assert "delivered 3 times (cap 2)" in run["output"]["summary"]
    assert fake_github.reviews == []
    assert proc.poll() is None


# ----- the real model ------------------------------------------------------------------------

MANIFEST = ROOT / "analyzer" / "default_model" / "manifest.json"


@pytest.mark.slow
@pytest.mark.skipif(not MANIFEST.exists(), reason="the default model is not trained yet "
                                                  "(analyzer/default_model/manifest.json is missing)")
def test_opened_with_the_real_scorer(make_stack, fake_github):
    from analyzer.score import RiskScorer

    stack = make_stack(scorer_factory=lambda: RiskScorer.load(), model_version=None)
    put_pull_request(fake_github, 7, HEAD1, [("c1" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    stack.deliver("opened", 7, HEAD1)
    stack.settle(timeout=300)
    (run,) = fake_github.check_runs.values()
    assert run["conclusion"] == "neutral" and "AI-authored lines" in run["output"]["summary"]
    # The default comment budget speaks: one review with at least one inline comment (calibrated
    # probabilities are small, so the old 0.5 floor left this change with a check run alone).
    publish = stack.results("ptbot.publish")[0]
    assert publish["status"] == "posted" and publish["comments"] >= 1
    (review,) = fake_github.reviews
    assert "**Comments:** ptbot comments inline on at most 2 of the 5 scored lines" in review["body"]
    assert len(fake_github.review_comments) == publish["comments"]
    for c in fake_github.review_comments:
        assert c["path"] == "src/calc.py" and 1 <= c["line"] <= 5 and "ptbot risk #" in c["body"]
