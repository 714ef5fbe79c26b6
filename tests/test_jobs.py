"""bot.schema's reading rules, bot.events on the recorded payloads, and bot.jobs across the queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import Settings
from bot.events import PullRequestEvent, read_event
from bot.jobs import FeedbackJob, ReviewJob, read_job
from bot.pr_review import MemoryLedger
from bot.rescore import review_jobs
from bot.schema import Id, PayloadError, read, schema
from bot.webhook import job_for_event
from workers.celery_app import make_celery
from workers.producer import REVIEW_TASK, WorkerConfig
from workers.tasks import WorkerRuntime

WEBHOOKS = Path(__file__).resolve().parent / "fixtures" / "github" / "webhooks"


def recorded(name: str) -> dict:
    return json.loads((WEBHOOKS / name).read_text())


@schema
class Inner:
    id: Id
    name: str = "none"


@schema
class Outer:
    inner: Inner
    tags: tuple[str, ...] = ()
    flag: bool = False
    note: str | None = None


def test_reading_is_strict_about_types_and_tolerant_about_absence():
    got = read(Outer, {"inner": {"id": 3, "extra": [1]}, "tags": ["a"], "flag": None, "unknown": 1})
    assert got == Outer(inner=Inner(id=3), tags=("a",))  # unknown keys ignored, null takes the default
    for data, message in [
        ({}, "inner: is required"),
        ({"inner": None}, "inner: expected an object, got null"),
        ({"inner": {"id": "3"}}, "inner.id: expected an integer, got a string"),
        ({"inner": {"id": True}}, "inner.id: expected an integer, got a boolean"),
        ({"inner": {"id": 3.0}}, "inner.id: expected an integer, got a number"),
        ({"inner": {"id": 0}}, "inner.id: expected a positive 64-bit integer, got 0"),
        ({"inner": {"id": 1}, "tags": ["a", 2]}, "tags[1]: expected a string, got an integer"),
        ({"inner": {"id": 1}, "note": 5}, "note: expected a string, got an integer"),
        ([], "payload: expected an object, got an array"),
    ]:
        with pytest.raises(PayloadError) as e:
            read(Outer, data)
        assert str(e.value) == message


def test_the_recorded_pull_request_reads_into_its_schema():
    data = recorded("pull_request/opened.payload.json")
    ev = read_event("pull_request", data)
    assert isinstance(ev, PullRequestEvent)
    assert (ev.repository.owner_login, ev.repository.name, ev.pr_number) == ("Codertocat", "Hello-World", 2)
    assert ev.pull_request.head.sha == data["pull_request"]["head"]["sha"]
    with pytest.raises(AttributeError):
        ev.action = "closed"  # type: ignore[misc]  # frozen
    assert read_event("pull_request", dict(data, action="labeled")) is None  # not an action ptbot handles
    data["repository"]["owner"] = None  # older payloads: the owner comes from full_name
    assert read_event("pull_request", data).repository.owner_login == "Codertocat"


def test_a_job_is_typed_frozen_and_reads_like_a_dict():
    job, why = job_for_event("pull_request", recorded("pull_request/opened.payload.json"), Settings())
    assert isinstance(job, ReviewJob) and why == "ok"
    assert job["owner"] == job.owner == "Codertocat" and job.get("force") is False and job.get("nope") is None
    assert dict(job)["number"] == 2 and "head_sha" in job
    with pytest.raises(AttributeError):
        job.number = 3  # type: ignore[misc]
    doc = job.to_json()
    assert json.loads(json.dumps(doc)) == doc and read_job(doc) == job
    assert job.replace(number=5, force=True).number == 5
    with pytest.raises(PayloadError, match="number: expected an integer"):
        job.replace(number="5")


def test_rescores_fan_out_into_typed_jobs():
    data = recorded("check_run/rerequested.payload.json")
    data["check_run"]["pull_requests"] = [{"number": 2}, {"number": 3}, {"number": None}]
    job, _ = job_for_event("check_run", data, Settings())
    assert job.numbers == (2, 3)
    fanned = review_jobs(job)
    assert [(j.number, j.force, j.kind) for j in fanned] == [(2, True, "rescore"), (3, True, "rescore")]
    assert all(isinstance(j, ReviewJob) for j in fanned)


def test_feedback_jobs_carry_typed_comments():
    data = recorded("pull_request_review_thread/resolved.payload.json")
    job, _ = job_for_event("pull_request_review_thread", data, Settings())
    assert isinstance(job, FeedbackJob) and job.comments[0]["id"] == data["thread"]["comments"][0]["id"]
    assert dict(job.comments[0]["marker"]) == {} and read_job(job.to_json()) == job


@pytest.mark.parametrize("raw, reason", [
    ({"kind": "review", "number": "7"}, "kind review"),
    ({"kind": "surprise"}, "unknown kind"),
    ("not a job", "not an object"),
])
def test_a_worker_drops_a_job_that_does_not_fit(raw, reason, caplog):
    runtime = WorkerRuntime(Settings(), ledger_factory=MemoryLedger)
    app = make_celery(Settings(), WorkerConfig(), runtime)
    result = app.tasks[REVIEW_TASK].apply(args=[raw])
    assert result.successful() and result.result == {"status": "invalid_job"}, reason
    assert any("does not fit its schema" in r.getMessage() for r in caplog.records)
