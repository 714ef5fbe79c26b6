"""workers: the Celery app's settings, the delivery cap, job fan-out (bot.rescore) and the --eager runner."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from conftest import AI_TRAILER, TEST_APP_ID, TEST_INSTALLATION_ID, FakeScorer, put_pull_request

from analyzer.artifact import write_manifest
from bot.config import Settings
from bot.github import GitHubApp, RetryPolicy
from bot.pr_review import MemoryLedger, RedisLedger, prepare, score
from bot.render import Renderer
from bot.rescore import review_jobs
from bot.webhook import MemoryDeliveryDeduper, create_app, signature_for
from workers.celery_app import make_celery, worker_argv
from workers.producer import (
    PUBLISH_TASK,
    REVIEW_TASK,
    SCORE_TASK,
    WorkerConfig,
    celery_enqueue,
    make_producer,
)
from workers.tasks import (
    InProcessQueue,
    PoisonJob,
    WorkerRuntime,
    eager_runtime,
    expected_model_version,
)

AI_CALC = "def total(items):\n    return sum(items) / len(items)  # RISK-A\n"


def test_celery_settings_for_at_least_once_delivery():
    app = make_celery(Settings(), WorkerConfig(soft_time_limit=100, time_limit=200))
    c = app.conf
    assert c.task_acks_late is True and c.task_reject_on_worker_lost is True
    assert c.worker_prefetch_multiplier == 1
    assert (c.task_soft_time_limit, c.task_time_limit) == (100, 200)
    assert c.broker_transport_options["visibility_timeout"] > c.task_time_limit
    assert {q.name for q in c.task_queues} == {"cpu", "gpu"}
    assert c.broker_url == Settings().redis_url
    assert {REVIEW_TASK, SCORE_TASK, PUBLISH_TASK} <= set(app.tasks)


def test_the_web_process_sends_by_name_without_tasks():
    producer = make_producer(Settings(), WorkerConfig(key_prefix="p:"))
    assert not any(name.startswith("ptbot.") for name in producer.tasks)
    assert producer.conf.broker_transport_options["global_keyprefix"] == "p:"


@pytest.mark.parametrize("kwargs, message", [
    ({"soft_time_limit": 300, "time_limit": 300}, "soft_time_limit < time_limit"),
    ({"soft_time_limit": 0}, "soft_time_limit < time_limit"),
    ({"max_deliveries": 0}, "max_deliveries"),
    ({"gpu_queue": ""}, "queue"),
])
def test_worker_config_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WorkerConfig(**kwargs)


def test_worker_argv():
    assert worker_argv("cpu, gpu", 2) == ["worker", "--queues=cpu,gpu", "--concurrency=2", "--loglevel=INFO",
                                          "--without-gossip", "--without-mingle"]
    with pytest.raises(ValueError, match="at least one queue"):
        worker_argv(" , ", 1)


def test_a_task_delivered_too_often_fails_for_good(redis_url):
    client = redis.Redis.from_url(redis_url)
    prefix = f"ptbot-test:{uuid.uuid4().hex}:"
    ledger = RedisLedger(client, prefix)
    runtime = WorkerRuntime(Settings(), ledger_factory=lambda: ledger)
    app = make_celery(Settings(), WorkerConfig(max_deliveries=2), runtime)
    job = {"kind": "closed", "delivery": "d"}  # needs no GitHub: only the cap is exercised
    try:
        results = [app.tasks[REVIEW_TASK].apply(args=[job], task_id="same-task") for _ in range(3)]
        assert [r.successful() for r in results] == [True, True, False]
        assert isinstance(results[2].result, PoisonJob)
        assert "delivered 3 times (cap 2)" in str(results[2].result)
        assert app.tasks[REVIEW_TASK].apply(args=[job], task_id="another-task").successful()
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)


def test_review_jobs_fan_out_rescores():
    review = {"kind": "review", "number": 7}
    assert review_jobs(review) == [review]
    rescore = {"kind": "rescore", "numbers": [3, 4], "head_sha": "a" * 40}
    assert [(j["number"], j["force"]) for j in review_jobs(rescore)] == [(3, True), (4, True)]
    assert review_jobs({"kind": "rescore", "numbers": [], "head_sha": "a" * 40}) == []  # fork PR
    assert review_jobs({"kind": "closed"}) == [] and review_jobs({"kind": "installation"}) == []


def test_runtime_builds_each_resource_once_per_process():
    made = []
    runtime = WorkerRuntime(Settings(), scorer_factory=lambda: made.append(1) or FakeScorer(),
                            ledger_factory=MemoryLedger)
    assert runtime.scorer() is runtime.scorer() and len(made) == 1
    runtime.reset()  # what worker_process_init does in a new child
    runtime.scorer()
    assert len(made) == 2


def test_expected_model_version_reads_the_manifest_only(tmp_path):
    write_manifest(tmp_path, {"name": "smol-risk", "version": "2026.11"})
    assert expected_model_version(Settings(model=str(tmp_path))) == "smol-risk@2026.11"
    write_manifest(tmp_path, {"name": "smol-risk"})  # no version: the write time stands in
    assert expected_model_version(Settings(model=str(tmp_path))).startswith("smol-risk@20")
    assert expected_model_version(Settings(model=str(tmp_path / "missing"))) is None


def test_serve_eager_reviews_in_process(fake_github, app_private_key):
    """``ptbot serve --eager``: webhook -> in-process queue -> review, with no Redis at all."""
    settings = Settings(app_id=str(TEST_APP_ID), private_key=app_private_key, webhook_secret="s",
                        github_api_url=fake_github.base_url, seconds_between_writes=0.0,
                        redis_url="redis://127.0.0.1:1/0")  # nothing listens there: must not be used
    runtime = eager_runtime(settings, scorer_factory=lambda: FakeScorer({"RISK-A": 0.9}),
                            github_factory=lambda: GitHubApp.from_settings(settings, retry=RetryPolicy(jitter=0.0)))
    queue = InProcessQueue(runtime)
    client = create_app(settings, queue, MemoryDeliveryDeduper()).test_client()
    put_pull_request(fake_github, 7, "a" * 40, [("c" * 40, f"Add\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    payload = json.dumps({"action": "opened", "installation": {"id": TEST_INSTALLATION_ID},
                          "repository": {"id": 1, "name": "shop", "owner": {"login": "octo"}},
                          "pull_request": {"number": 7, "head": {"sha": "a" * 40, "ref": "f"}, "base": {"ref": "main"},
                                           "user": {"login": "ada"}, "labels": []}}).encode()
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "eager-1",
               "X-Hub-Signature-256": signature_for(b"s", payload)}
    try:
        resp = client.post("/webhook", data=payload, headers=headers)
        assert resp.status_code == 202 and resp.json["job_id"].startswith("eager-")
        assert client.post("/webhook", data=payload, headers=headers).json["outcome"] == "duplicate"
        queue.join()
        assert [o.status for o in queue.outcomes] == ["posted"]
        (comment,) = fake_github.review_comments
        assert comment["line"] == 2 and "90%" in comment["body"]
    finally:
        queue.close()


class FailingScorer(FakeScorer):
    def score_many(self, requests, progress=False):
        raise RuntimeError("the GPU fell off the bus")


@pytest.mark.parametrize("stage", ["prepare", "score", "publish"])
def test_a_failing_queued_stage_completes_the_check_run(fake_github, app_private_key, stage):
    """Each Celery stage that raises completes the job's check run as a failure, with the reason."""
    settings = Settings(app_id=str(TEST_APP_ID), private_key=app_private_key, github_api_url=fake_github.base_url,
                        seconds_between_writes=0.0)
    ledger = MemoryLedger()
    runtime = WorkerRuntime(
        settings, scorer_factory=lambda: FailingScorer(), ledger_factory=lambda: ledger,
        model_version="fake-model@test-1",
        github_factory=lambda: GitHubApp.from_settings(settings, retry=RetryPolicy(max_attempts=2, jitter=0.0)))
    app = make_celery(settings, WorkerConfig(), runtime)
    head = "a" * 40
    put_pull_request(fake_github, 7, head, [("c" * 40, f"Add\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    job = {"event": "pull_request", "action": "opened", "kind": "review", "installation_id": TEST_INSTALLATION_ID,
           "owner": "octo", "repo": "shop", "number": 7, "head_sha": head, "delivery": "d"}
    if stage == "prepare":
        fake_github.fail_next("GET", r"/contents/src/calc.py$", 403, body={"message": "Resource not accessible"})
        result = app.tasks[REVIEW_TASK].apply(args=[job])
        reason = "prepare failed: GitHub answered 403 (Resource not accessible)"
    else:
        prepared = prepare(job, runtime.pull_request(job), settings.repo_defaults, ledger, Renderer())
        if stage == "score":
            result = app.tasks[SCORE_TASK].apply(args=[prepared.to_dict()])
            reason = "score failed: RuntimeError: the GPU fell off the bus"
        else:
            fake_github.fail_next("POST", r"/pulls/7/reviews$", 502)
            scored = score(prepared, FakeScorer({"RISK-A": 0.9}))
            result = app.tasks[PUBLISH_TASK].apply(args=[scored.to_dict()])
            reason = "publish failed: GitHub answered 502"
    assert result.failed()
    (run,) = fake_github.check_runs.values()
    assert (run["status"], run["conclusion"], run["output"]["title"]) == ("completed", "failure",
                                                                          "ptbot: review failed")
    assert reason in run["output"]["summary"]


def test_a_failing_eager_job_completes_its_check_run_and_the_queue_goes_on(fake_github, app_private_key):
    settings = Settings(app_id=str(TEST_APP_ID), private_key=app_private_key, github_api_url=fake_github.base_url,
                        seconds_between_writes=0.0)
    runtime = eager_runtime(settings, scorer_factory=FailingScorer,
                            github_factory=lambda: GitHubApp.from_settings(settings, retry=RetryPolicy(jitter=0.0)))
    queue = InProcessQueue(runtime)
    put_pull_request(fake_github, 7, "a" * 40, [("c" * 40, f"Add\n\n{AI_TRAILER}", {"src/calc.py": AI_CALC})])
    put_pull_request(fake_github, 8, "b" * 40, [("d" * 40, "Add", {"src/util.py": "x = 1\n"})])  # human-only
    job = {"event": "pull_request", "action": "opened", "kind": "review", "installation_id": TEST_INSTALLATION_ID,
           "owner": "octo", "repo": "shop", "number": 7, "head_sha": "a" * 40}
    try:
        queue(job)
        queue(dict(job, number=8, head_sha="b" * 40))
        queue.join()
        runs = {r["head_sha"]: r for r in fake_github.check_runs.values()}
        assert (runs["a" * 40]["status"], runs["a" * 40]["conclusion"]) == ("completed", "failure")
        assert "score failed: RuntimeError: the GPU fell off the bus" in runs["a" * 40]["output"]["summary"]
        assert [o.status for o in queue.outcomes] == ["human_only"]  # the next job still ran
    finally:
        queue.close()


def test_celery_enqueue_sends_to_the_cpu_queue(redis_url):
    prefix = f"ptbot-test-{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(redis_url)
    producer = make_producer(Settings(redis_url=redis_url), WorkerConfig(key_prefix=prefix))
    try:
        task_id = celery_enqueue(producer)({"kind": "review", "number": 1})
        (raw,) = client.lrange(prefix + "cpu", 0, -1)
        message = json.loads(raw)
        assert message["headers"]["id"] == task_id and message["headers"]["task"] == REVIEW_TASK
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
