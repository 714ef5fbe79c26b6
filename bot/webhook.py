"""The GitHub App's front door: verify, de-duplicate, turn the event into a small job, enqueue.

No GitHub API call happens here: GitHub gives up on a delivery after 10 s,
so the request path is signature check -> schema (``bot.events``) -> Redis ``SET NX`` ->
``enqueue(job)`` -> 202.
This module must stay light (no torch, no PyGithub): the web process only imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from flask import Flask, Response, jsonify, request

from bot.config import Settings
from bot.events import (
    CheckRunEvent,
    InstallationEvent,
    PullRequest,
    PullRequestEvent,
    ReviewCommentEvent,
    ReviewThreadEvent,
    read_action,
    read_event,
)
from bot.jobs import (
    Job,
    check_run_job,
    feedback_job_for,
    installation_job,
    pull_request_facts,
    pull_request_job,
)
from bot.schema import PayloadError, read

log = logging.getLogger(__name__)

DELIVERY_TTL_SECONDS = 7 * 24 * 3600  # a redelivery reuses its GUID; a week outlasts any redelivery


def signature_for(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of ``X-Hub-Signature-256`` over the raw body; False when absent."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(signature_for(secret, body), header)


class DeliveryDeduper(Protocol):
    """Remembers delivery ids so a redelivery is enqueued once."""

    def first_time(self, delivery_id: str) -> bool:
        """Record ``delivery_id``; True only the first time it is seen."""
        ...

    def forget(self, delivery_id: str) -> None:
        """Drop ``delivery_id`` (enqueue failed, so a redelivery must go through)."""
        ...


class RedisDeliveryDeduper:
    """``SET ptbot:delivery:<guid> 1 NX EX 604800``: shared by every web process."""

    def __init__(self, client: Any, ttl_seconds: int = DELIVERY_TTL_SECONDS,
                 prefix: str = "ptbot:delivery:") -> None:
        self.client, self.ttl, self.prefix = client, ttl_seconds, prefix

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisDeliveryDeduper:
        import redis  # only the Redis-backed deployment needs the client

        return cls(redis.Redis.from_url(url, socket_timeout=2), **kwargs)

    def first_time(self, delivery_id: str) -> bool:
        return bool(self.client.set(self.prefix + delivery_id, b"1", nx=True, ex=self.ttl))

    def forget(self, delivery_id: str) -> None:
        self.client.delete(self.prefix + delivery_id)


class MemoryDeliveryDeduper:
    """In-process de-duplication for ``ptbot serve --eager`` (one process, no Redis)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        with self._lock:
            if delivery_id in self._seen:
                return False
            self._seen.add(delivery_id)
            return True

    def forget(self, delivery_id: str) -> None:
        with self._lock:
            self._seen.discard(delivery_id)


def pull_request_fields(pr: Any) -> dict[str, Any]:
    """What a review job says about its PR, from a webhook's ``pull_request`` object or the same
    object as the REST API returns it (a fork's check-run re-run finds its PR that way); read
    through the same schema, so PayloadError names a field that does not fit. Plain JSON values."""
    facts = pull_request_facts(read(PullRequest, pr, "pull_request"))
    return {**facts, "labels": list(facts["labels"])}


def job_for_event(event: str, payload: Any, settings: Settings, *,
                  installation_id: int | None = None) -> tuple[Job | None, str]:
    """The typed job for one delivery, or ``(None, why)`` when there is nothing to do.

    Raises PayloadError (a ValueError naming the field) when a delivery ptbot handles does not
    fit its schema (``bot.events``). ``installation_id`` stands in when the payload names no
    installation (a workflow's event payload); a GitHub App delivery always names one.
    """
    action = read_action(payload)
    ev = read_event(event, payload)
    if isinstance(ev, PullRequestEvent):
        if action != "closed" and ev.pull_request.draft and not settings.review_drafts:
            return None, "draft pull request (drafts are not reviewed on this deployment)"
        inst = ev.installation.id if ev.installation else installation_id
        if inst is None:
            raise PayloadError("installation", "is required (deliveries to a GitHub App name their installation)")
        return pull_request_job(ev, inst), "ok"
    if isinstance(ev, CheckRunEvent):
        return check_run_job(ev), "ok"
    if isinstance(ev, InstallationEvent):
        return installation_job(event, ev), "ok"
    if isinstance(ev, (ReviewThreadEvent, ReviewCommentEvent)):
        job = feedback_job_for(ev)
        return (job, "ok") if job else (None, f"{event}.{action} carries no feedback")
    if event in ("pull_request", "check_run"):
        return None, f"{event}.{action} is not handled"
    if event in ("pull_request_review_thread", "pull_request_review_comment"):
        return None, f"{event}.{action} carries no feedback"
    return None, f"event {event!r} is not handled"


class DeliveryMetrics:
    """Counters of deliveries by event and outcome, rendered as Prometheus text."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def count(self, event: str, outcome: str) -> None:
        with self._lock:
            self._counts[(event, outcome)] += 1

    def render(self) -> str:
        lines = ["# HELP ptbot_webhook_deliveries_total Webhook deliveries by event and outcome.",
                 "# TYPE ptbot_webhook_deliveries_total counter"]
        with self._lock:
            for (event, outcome), n in sorted(self._counts.items()):
                lines.append(f'ptbot_webhook_deliveries_total{{event="{_label(event)}",'
                             f'outcome="{outcome}"}} {n}')
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def create_app(settings: Settings, enqueue: Callable[[dict[str, Any]], str],
               dedupe: DeliveryDeduper) -> Flask:
    """The webhook app: ``POST /webhook``, ``GET /healthz``, ``GET /metrics``.

    ``enqueue(job) -> job id`` hands the job's JSON document (``bot.jobs``: typed fields only,
    never the raw payload) to the queue (Celery ``send_task`` or an in-process runner);
    ``dedupe`` remembers delivery ids. A handled delivery whose payload does not fit its schema
    gets 400 with a one-line reason naming the field, and nothing is enqueued.
    """
    app = Flask(__name__)
    metrics = DeliveryMetrics()
    app.extensions["ptbot_metrics"] = metrics
    secret = settings.webhook_secret.encode()
    if not secret:
        log.error("PTBOT_WEBHOOK_SECRET is not set: every webhook delivery will be refused")

    def answer(event: str, outcome: str, status: int, **body: Any) -> tuple[Response, int]:
        metrics.count(event, outcome)
        return jsonify({"outcome": outcome, **body}), status

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        event = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        raw = request.get_data(cache=False)  # raw bytes: the signature is over exactly these
        if not secret:
            log.error("refusing delivery %s: PTBOT_WEBHOOK_SECRET is not configured", delivery)
            return answer(event, "no_secret", 500, error="webhook secret not configured")
        if not verify_signature(secret, raw, request.headers.get("X-Hub-Signature-256")):
            log.warning("delivery %s (%s): missing or wrong X-Hub-Signature-256", delivery, event)
            return answer(event, "bad_signature", 401, error="bad signature")
        try:
            payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError("payload is not a JSON object")
        except (ValueError, RecursionError) as e:  # RecursionError: arrays nested thousands deep
            log.warning("delivery %s (%s): refused, invalid JSON: %s", delivery, event, e)
            return answer(event, "bad_payload", 400, error=f"invalid JSON: {e}")
        if not event or not delivery:
            return answer(event, "bad_payload", 400, error="X-GitHub-Event and X-GitHub-Delivery are required")
        if event == "ping":
            return answer(event, "pong", 200, zen=payload.get("zen", ""))

        try:
            job, why = job_for_event(event, payload, settings)
        except PayloadError as e:
            # Signed, so it came from GitHub: a shape ptbot does not know, not an attack. Nothing
            # is enqueued; the 400 and its reason show up in the App's delivery log.
            log.warning("delivery %s (%s): refused, the payload does not fit: %s", delivery, event, e)
            return answer(event, "bad_payload", 400, error=str(e))
        if job is None:
            log.info("delivery %s ignored: %s", delivery, why)
            return answer(event, "ignored", 200, reason=why)
        if not dedupe.first_time(delivery):
            log.info("delivery %s already seen: not enqueued again", delivery)
            return answer(event, "duplicate", 200)
        try:
            job_id = enqueue(job.replace(delivery=delivery).to_json())
        except Exception:
            # Let a manual redelivery through: the delivery was never queued.
            dedupe.forget(delivery)
            log.exception("delivery %s: enqueue failed", delivery)
            return answer(event, "error", 503, error="could not enqueue")
        log.info("delivery %s (%s.%s) enqueued as %s", delivery, event, job.action, job_id)
        return answer(event, "enqueued", 202, job_id=job_id)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"status": "ok", "secret_configured": bool(secret)}), 200

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    return app
