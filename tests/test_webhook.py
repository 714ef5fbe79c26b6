"""bot.webhook: signatures, de-duplication in real Redis, event routing, metrics.

Payloads are the real examples in tests/fixtures/github/webhooks, signed with a test secret.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import redis
from werkzeug.serving import make_server

from bot.config import Settings
from bot.webhook import (
    MemoryDeliveryDeduper,
    RedisDeliveryDeduper,
    create_app,
    signature_for,
    verify_signature,
)

WEBHOOKS = Path(__file__).resolve().parent / "fixtures" / "github" / "webhooks"
SECRET = "test-webhook-secret"


def payload(name: str, installation_id: int | None = 777) -> bytes:
    data = json.loads((WEBHOOKS / name).read_text())
    if installation_id is not None and "installation" not in data:
        data["installation"] = {"id": installation_id}  # App deliveries carry one (fixtures README)
    return json.dumps(data).encode()


class Queue:
    """Stands in for Celery's send_task: records jobs, can be told to fail."""

    def __init__(self) -> None:
        self.jobs: list[dict] = []
        self.fail = False

    def __call__(self, job: dict) -> str:
        if self.fail:
            raise ConnectionError("broker down")
        self.jobs.append(job)
        return f"job-{len(self.jobs)}"


@pytest.fixture
def deduper(redis_url):
    client = redis.Redis.from_url(redis_url)
    prefix = f"ptbot-test:{uuid.uuid4().hex}:"
    yield RedisDeliveryDeduper(client, ttl_seconds=60, prefix=prefix)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


@pytest.fixture
def queue() -> Queue:
    return Queue()


@pytest.fixture
def client(queue, deduper):
    app = create_app(Settings(webhook_secret=SECRET), queue, deduper)
    return app.test_client()


def deliver(client, event: str, body: bytes, delivery: str | None = None, secret: str | None = SECRET,
            signature: str | None = None):
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    elif secret is not None:
        headers["X-Hub-Signature-256"] = signature_for(secret.encode(), body)
    return client.post("/webhook", data=body, headers=headers)


def test_official_signature_vector():
    # The test vector GitHub documents for webhook signatures.
    sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature_for(b"It's a Secret to Everybody", b"Hello, World!") == sig
    assert verify_signature(b"It's a Secret to Everybody", b"Hello, World!", sig)
    assert not verify_signature(b"It's a Secret to Everybody", b"Hello, World!!", sig)
    assert not verify_signature(b"It's a Secret to Everybody", b"Hello, World!", sig.replace("sha256=", "sha1="))
    assert not verify_signature(b"", b"Hello, World!", sig)


def test_opened_is_enqueued_with_identifiers_only(client, queue):
    body = payload("pull_request/opened.payload.json")
    resp = deliver(client, "pull_request", body, delivery="d-opened")
    assert resp.status_code == 202 and resp.json == {"outcome": "enqueued", "job_id": "job-1"}
    (job,) = queue.jobs
    raw = json.loads(body)
    assert job["kind"] == "review" and job["action"] == "opened" and job["delivery"] == "d-opened"
    assert job["installation_id"] == raw["installation"]["id"]
    assert (job["owner"], job["repo"], job["repo_id"]) == ("Codertocat", "Hello-World", raw["repository"]["id"])
    assert job["number"] == raw["pull_request"]["number"]
    assert job["head_sha"] == raw["pull_request"]["head"]["sha"]
    assert job["author"] == raw["pull_request"]["user"]["login"]
    assert json.loads(json.dumps(job)) == job  # a plain JSON document for the queue


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "sha1=abc", "garbage"])
def test_unsigned_or_wrongly_signed_is_refused_and_not_enqueued(client, queue, signature):
    body = payload("pull_request/opened.payload.json")
    resp = deliver(client, "pull_request", body, secret=None, signature=signature)
    assert resp.status_code == 401
    assert queue.jobs == []


def test_signed_with_another_secret_is_refused(client, queue):
    resp = deliver(client, "pull_request", payload("pull_request/opened.payload.json"), secret="other")
    assert resp.status_code == 401 and queue.jobs == []


def test_body_changed_after_signing_is_refused(client, queue):
    body = payload("pull_request/opened.payload.json")
    sig = signature_for(SECRET.encode(), body)
    resp = deliver(client, "pull_request", body.replace(b'"opened"', b'"closed"', 1), signature=sig)
    assert resp.status_code == 401 and queue.jobs == []


def test_no_secret_configured_fails_closed(queue, deduper):
    client = create_app(Settings(webhook_secret=""), queue, deduper).test_client()
    body = payload("pull_request/opened.payload.json")
    resp = deliver(client, "pull_request", body, secret="")
    assert resp.status_code == 500 and queue.jobs == []
    assert client.get("/healthz").json["secret_configured"] is False


def test_redelivery_is_enqueued_once(client, queue):
    body = payload("pull_request/synchronize.payload.json")
    first = deliver(client, "pull_request", body, delivery="same-guid")
    again = deliver(client, "pull_request", body, delivery="same-guid")
    assert first.status_code == 202
    assert again.status_code == 200 and again.json["outcome"] == "duplicate"
    assert len(queue.jobs) == 1


def test_failed_enqueue_lets_a_redelivery_through(client, queue):
    body = payload("pull_request/opened.payload.json")
    queue.fail = True
    assert deliver(client, "pull_request", body, delivery="retry-me").status_code == 503
    queue.fail = False
    assert deliver(client, "pull_request", body, delivery="retry-me").status_code == 202
    assert len(queue.jobs) == 1


@pytest.mark.parametrize("name, action, kind", [
    ("pull_request/synchronize.payload.json", "synchronize", "review"),
    ("pull_request/reopened.payload.json", "reopened", "review"),
    ("pull_request/ready_for_review.with-installation.payload.json", "ready_for_review", "review"),
    ("pull_request/opened.with-null-body.json", "opened", "review"),
    ("pull_request/closed.payload.json", "closed", "closed"),
])
def test_pull_request_actions(client, queue, name, action, kind):
    assert deliver(client, "pull_request", payload(name)).status_code == 202
    assert (queue.jobs[0]["action"], queue.jobs[0]["kind"]) == (action, kind)


def test_synchronize_carries_the_new_head(client, queue):
    body = payload("pull_request/synchronize.payload.json")
    deliver(client, "pull_request", body)
    assert queue.jobs[0]["head_sha"] == json.loads(body)["pull_request"]["head"]["sha"]


def draft_payload() -> bytes:
    data = json.loads(payload("pull_request/opened.payload.json"))
    data["pull_request"]["draft"] = True
    return json.dumps(data).encode()


def test_drafts_are_skipped_unless_configured(queue, deduper):
    client = create_app(Settings(webhook_secret=SECRET), queue, deduper).test_client()
    resp = deliver(client, "pull_request", draft_payload())
    assert resp.status_code == 200 and "draft" in resp.json["reason"] and queue.jobs == []
    client = create_app(Settings(webhook_secret=SECRET, review_drafts=True), queue, deduper).test_client()
    assert deliver(client, "pull_request", draft_payload()).status_code == 202
    assert queue.jobs[0]["draft"] is True


def test_unhandled_actions_and_events_are_ignored(client, queue):
    resp = deliver(client, "pull_request", payload("pull_request/converted_to_draft.with-installation.payload.json"))
    assert resp.status_code == 200 and resp.json["outcome"] == "ignored"
    resp = deliver(client, "issue_comment", payload("issue_comment/created.with-installation.payload.json"))
    assert resp.status_code == 200 and resp.json["outcome"] == "ignored"
    assert queue.jobs == []


def test_check_run_rerequested_and_requested_action(client, queue):
    for name in ("check_run/rerequested.payload.json", "check_run/requested_action.payload.json"):
        raw = json.loads(payload(name))
        assert deliver(client, "check_run", payload(name)).status_code == 202
        job = queue.jobs[-1]
        assert job["kind"] == "rescore" and job["head_sha"] == raw["check_run"]["head_sha"]
        assert job["numbers"] == [p["number"] for p in raw["check_run"]["pull_requests"]]
    assert queue.jobs[-1]["requested_action"] == raw["requested_action"]["identifier"]


def test_installation_events(client, queue):
    for event, name in (("installation", "installation/created.payload.json"),
                        ("installation", "installation/deleted.payload.json"),
                        ("installation_repositories", "installation_repositories/added.payload.json"),
                        ("installation_repositories", "installation_repositories/removed.payload.json")):
        raw = json.loads((WEBHOOKS / name).read_text())
        assert deliver(client, event, payload(name)).status_code == 202
        job = queue.jobs[-1]
        assert job["kind"] == "installation" and job["installation_id"] == raw["installation"]["id"]
    assert queue.jobs[2]["repositories_added"] == [
        r["full_name"] for r in json.loads((WEBHOOKS / "installation_repositories/added.payload.json").read_text())
        ["repositories_added"]]


def test_ping(client, queue):
    for name in ("ping/payload.json", "ping/with-app_id.payload.json"):
        resp = deliver(client, "ping", payload(name, installation_id=None))
        assert resp.status_code == 200 and resp.json["outcome"] == "pong"
    assert queue.jobs == []


def test_healthz_and_metrics(client):
    deliver(client, "pull_request", payload("pull_request/opened.payload.json"), delivery="m1")
    deliver(client, "pull_request", payload("pull_request/opened.payload.json"), delivery="m1")
    deliver(client, "pull_request", payload("pull_request/opened.payload.json"), secret="wrong")
    assert client.get("/healthz").json == {"status": "ok", "secret_configured": True}
    text = client.get("/metrics").get_data(as_text=True)
    assert "# TYPE ptbot_webhook_deliveries_total counter" in text
    assert 'ptbot_webhook_deliveries_total{event="pull_request",outcome="enqueued"} 1' in text
    assert 'ptbot_webhook_deliveries_total{event="pull_request",outcome="duplicate"} 1' in text
    assert 'ptbot_webhook_deliveries_total{event="pull_request",outcome="bad_signature"} 1' in text


def test_memory_deduper():
    d = MemoryDeliveryDeduper()
    assert d.first_time("a") and not d.first_time("a")
    d.forget("a")
    assert d.first_time("a")


def test_answers_fast_over_real_http(queue, deduper):
    app = create_app(Settings(webhook_secret=SECRET), queue, deduper)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body = payload("pull_request/opened.payload.json")
        latencies = []
        for i in range(10):
            req = urllib.request.Request(
                f"http://127.0.0.1:{server.server_port}/webhook", data=body, method="POST",
                headers={"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": f"fast-{uuid.uuid4()}",
                         "X-Hub-Signature-256": signature_for(SECRET.encode(), body),
                         "Content-Type": "application/json"})
            start = time.perf_counter()
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 202
            latencies.append(time.perf_counter() - start)
        assert len(queue.jobs) == 10
        assert sorted(latencies)[-1] < 1.0  # GitHub's limit is 10 s; ptbot aims well under 1 s
    finally:
        server.shutdown()
        server.server_close()
