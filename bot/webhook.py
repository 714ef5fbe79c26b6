"""The GitHub App's front door: verify, de-duplicate, turn the event into a small job, enqueue.

No GitHub API call happens here: GitHub gives up on a delivery after 10 s (github-bot.md §3.3),
so the request path is signature check -> Redis ``SET NX`` -> ``enqueue(job)`` -> 202.
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

log = logging.getLogger(__name__)

PR_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review", "closed"})
CHECK_RUN_ACTIONS = frozenset({"rerequested", "requested_action"})
INSTALLATION_EVENTS = frozenset({"installation", "installation_repositories"})
DELIVERY_TTL_SECONDS = 7 * 24 * 3600  # github-bot.md §3.2


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


def _repo_fields(payload: dict[str, Any]) -> dict[str, Any]:
    repo = payload.get("repository") or {}
    owner = (repo.get("owner") or {}).get("login") or repo.get("full_name", "/").split("/")[0]
    return {"repo_id": repo.get("id"), "owner": owner, "repo": repo.get("name"),
            "default_branch": repo.get("default_branch")}


def pull_request_fields(pr: dict[str, Any]) -> dict[str, Any]:
    """What a review job says about its PR, from a webhook's ``pull_request`` object or the same
    object as the REST API returns it (a fork's check-run re-run finds its PR that way)."""
    head, base_ref = pr.get("head") or {}, pr.get("base") or {}
    return {"number": pr.get("number"),
            "head_sha": head.get("sha"), "head_ref": head.get("ref", ""),
            "head_repo": (head.get("repo") or {}).get("full_name"),
            "base_ref": base_ref.get("ref", ""),
            "draft": bool(pr.get("draft")),
            "merged": bool(pr.get("merged")),
            "author": (pr.get("user") or {}).get("login"),
            "labels": [lab.get("name", "") for lab in pr.get("labels") or []]}


def job_for_event(event: str, payload: dict[str, Any], settings: Settings) -> tuple[dict[str, Any] | None, str]:
    """The job dict for one delivery, or ``(None, why)`` when there is nothing to do.

    Jobs carry identifiers only (never tokens or diff text); workers fetch the rest.
    """
    action = payload.get("action", "")
    base = {"event": event, "action": action,
            "installation_id": (payload.get("installation") or {}).get("id")}
    if event == "pull_request":
        if action not in PR_ACTIONS:
            return None, f"pull_request.{action} is not handled"
        pr = payload.get("pull_request") or {}
        if action != "closed" and pr.get("draft") and not settings.review_drafts:
            return None, "draft pull request (drafts are not reviewed on this deployment)"
        return {**base, **_repo_fields(payload),
                "kind": "closed" if action == "closed" else "review",
                **pull_request_fields(pr), "number": pr.get("number", payload.get("number"))}, "ok"
    if event == "check_run":
        if action not in CHECK_RUN_ACTIONS:
            return None, f"check_run.{action} is not handled"
        run = payload.get("check_run") or {}
        # Fork PRs come with an empty pull_requests list; the worker maps head_sha -> PR.
        numbers = [p.get("number") for p in run.get("pull_requests") or [] if p.get("number")]
        return {**base, **_repo_fields(payload), "kind": "rescore",
                "check_run_id": run.get("id"), "head_sha": run.get("head_sha"),
                "external_id": run.get("external_id"), "numbers": numbers,
                "requested_action": (payload.get("requested_action") or {}).get("identifier")}, "ok"
    if event in INSTALLATION_EVENTS:
        inst = payload.get("installation") or {}
        repos = {key: [r.get("full_name") for r in payload.get(key) or []]
                 for key in ("repositories", "repositories_added", "repositories_removed")}
        return {**base, "kind": "installation",
                "account": (inst.get("account") or {}).get("login"), **repos}, "ok"
    if event in ("pull_request_review_thread", "pull_request_review_comment"):
        from bot.feedback import feedback_job  # SQLAlchemy, but neither torch nor PyGithub

        job = feedback_job(event, payload)
        return (job, "ok") if job else (None, f"{event}.{action} carries no feedback")
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

    ``enqueue(job) -> job id`` hands the job to the queue (Celery ``send_task`` or an in-process
    runner); ``dedupe`` remembers delivery ids.
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
        except ValueError as e:
            return answer(event, "bad_payload", 400, error=f"invalid JSON: {e}")
        if not event or not delivery:
            return answer(event, "bad_payload", 400, error="X-GitHub-Event and X-GitHub-Delivery are required")
        if event == "ping":
            return answer(event, "pong", 200, zen=payload.get("zen", ""))

        job, why = job_for_event(event, payload, settings)
        if job is None:
            log.info("delivery %s ignored: %s", delivery, why)
            return answer(event, "ignored", 200, reason=why)
        if not dedupe.first_time(delivery):
            log.info("delivery %s already seen: not enqueued again", delivery)
            return answer(event, "duplicate", 200)
        job["delivery"] = delivery
        try:
            job_id = enqueue(job)
        except Exception:
            # Let a manual redelivery through: the delivery was never queued.
            dedupe.forget(delivery)
            log.exception("delivery %s: enqueue failed", delivery)
            return answer(event, "error", 503, error="could not enqueue")
        log.info("delivery %s (%s.%s) enqueued as %s", delivery, event, job.get("action"), job_id)
        return answer(event, "enqueued", 202, job_id=job_id)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        return jsonify({"status": "ok", "secret_configured": bool(secret)}), 200

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    return app
