"""bot.webhook at the edge: a signed payload of the wrong shape gets a one-line 400, never a 5xx.

Hypothesis mutates the real payloads in tests/fixtures/github/webhooks of every event ptbot
handles (fields deleted, values of another JSON type, 5,000-character strings, huge or negative
ids, another action or event, non-JSON bodies), signs each and sends it through the real Flask
app. Checked on every case: no exception escapes the app, the status is 200, 202 or 400, a 400
enqueues nothing and gives a one-line reason, a 202 enqueues exactly one job that a worker reads
back (``bot.jobs.read_job``). Whether a case must be refused is decided here, independently of
the schemas: a field ptbot cannot do without (``REQUIRED``) that was deleted or given another
JSON type must give 400 naming that field.

The case count comes from the Hypothesis profile named by ``PTBOT_HYPOTHESIS_PROFILE``: ``ci``
(the default, 500 cases, fixed seed) or ``nightly`` (10,000 cases, random);
``benchmarks/fuzz_webhook.py`` runs the nightly one and reports the count and wall time.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import check_golden
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import Settings
from bot.jobs import read_job
from bot.webhook import MemoryDeliveryDeduper, create_app, signature_for

ROOT = Path(__file__).resolve().parent
WEBHOOKS = ROOT / "fixtures" / "github" / "webhooks"
GOLDEN = ROOT / "golden" / "webhook"
SECRET = "payload-test-secret"

settings.register_profile("ci", max_examples=500, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", max_examples=10_000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("PTBOT_HYPOTHESIS_PROFILE", "ci")

# The fixtures of every event ptbot handles, with the event header GitHub sends them under.
HANDLED = {
    "pull_request/opened.payload.json": "pull_request",
    "pull_request/opened.with-null-body.json": "pull_request",
    "pull_request/synchronize.payload.json": "pull_request",
    "pull_request/reopened.payload.json": "pull_request",
    "pull_request/ready_for_review.with-installation.payload.json": "pull_request",
    "pull_request/closed.payload.json": "pull_request",
    "check_run/rerequested.payload.json": "check_run",
    "check_run/requested_action.payload.json": "check_run",
    "installation/created.payload.json": "installation",
    "installation/deleted.payload.json": "installation",
    "installation_repositories/added.payload.json": "installation_repositories",
    "installation_repositories/removed.payload.json": "installation_repositories",
    "pull_request_review_thread/resolved.payload.json": "pull_request_review_thread",
    "pull_request_review_thread/unresolved.payload.json": "pull_request_review_thread",
    "pull_request_review_comment/created.payload.json": "pull_request_review_comment",
}
REPLY = "pull_request_review_comment/created.as-reply"  # the recorded comment, made a reply

# What each handled event cannot do without: the job would name no PR, repository, commit or
# installation. Written from what the workers use, not from the schemas.
REQUIRED = {
    "pull_request": ["installation.id", "repository.name", "pull_request.head.sha"],
    "check_run": ["installation.id", "repository.name", "check_run.id", "check_run.head_sha"],
    "installation": ["installation.id"],
    "installation_repositories": ["installation.id"],
    "pull_request_review_thread": ["installation.id", "repository.name", "pull_request.number", "thread"],
    "pull_request_review_comment": ["installation.id", "repository.name", "pull_request.number", "comment.id"],
}


def fixture(name: str) -> dict[str, Any]:
    if name == REPLY:
        data = fixture("pull_request_review_comment/created.payload.json")
        data["comment"]["in_reply_to_id"] = 1
        return data
    return json.loads((WEBHOOKS / name).read_text())


EVENT_OF = {**HANDLED, REPLY: "pull_request_review_comment"}
PAYLOADS = {name: fixture(name) for name in EVENT_OF}

TALLY: Counter[str] = Counter()
"""Cases sent, by status and outcome ("400 bad_payload"); read by benchmarks/fuzz_webhook.py."""


class Queue:
    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def __call__(self, job: dict[str, Any]) -> str:
        self.jobs.append(job)
        return f"job-{len(self.jobs)}"


def make_client() -> tuple[Any, Queue]:
    queue = Queue()
    app = create_app(Settings(webhook_secret=SECRET), queue, MemoryDeliveryDeduper())
    app.testing = True  # an exception in the app is raised here instead of becoming a 500
    return app.test_client(), queue


def deliver(client: Any, event: str, body: bytes) -> Any:
    return client.post("/webhook", data=body, headers={
        "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature_for(SECRET.encode(), body), "Content-Type": "application/json"})


# ----- mutations ------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]
MISSING = object()


def paths(value: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every key and index path in a JSON document."""
    out: list[Path_] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append(prefix + (key,))
        out.extend(paths(child, prefix + (key,)))
    return out


def dotted(path: Path_) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def lookup(doc: Any, path: Path_) -> Any:
    for key in path:
        if isinstance(doc, dict) and isinstance(key, str) and key in doc:
            doc = doc[key]
        elif isinstance(doc, list) and isinstance(key, int) and key < len(doc):
            doc = doc[key]
        else:
            return MISSING
    return doc


def kind(value: Any) -> str:
    return "missing" if value is MISSING else type(value).__name__  # bool and int differ


# The paths ptbot reads (with [] for any index) and the keys above them: mutations favour these,
# since most of a 28 KB payload is URLs ptbot never looks at.
READ = {"action", "number", "installation.id", "installation.account.login", "repository.id",
        "repository.name", "repository.full_name", "repository.owner.login", "repository.default_branch",
        "pull_request.number", "pull_request.head.sha", "pull_request.head.ref",
        "pull_request.head.repo.full_name", "pull_request.base.ref", "pull_request.draft",
        "pull_request.merged", "pull_request.user.login", "pull_request.labels[].name",
        "check_run.id", "check_run.head_sha", "check_run.external_id", "check_run.pull_requests[].number",
        "requested_action.identifier", "repositories[].full_name", "repositories_added[].full_name",
        "repositories_removed[].full_name", "thread.comments[].id", "thread.comments[].in_reply_to_id",
        "thread.comments[].user.login", "thread.comments[].user.type", "thread.comments[].body",
        "comment.id", "comment.in_reply_to_id", "comment.user.login", "comment.user.type", "comment.body",
        "sender.login", "sender.type"}


def is_read(path: Path_) -> bool:
    pattern = "".join("[]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return any(r == pattern or r.startswith(pattern + ".") or r.startswith(pattern + "[") for r in READ)


ALL_PATHS = {name: paths(doc) for name, doc in PAYLOADS.items()}
READ_PATHS = {name: [p for p in ps if is_read(p)] for name, ps in ALL_PATHS.items()}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**63, 2**63 - 1]), st.floats(), st.text(max_size=12),
    st.sampled_from(["", "a" * 40, "A" * 64, "\n", "\x00"]),
    st.sampled_from(["x", "é", "🙂"]).map(lambda c: c * 5000))  # 5,000-character strings
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
ACTIONS = ["opened", "closed", "synchronize", "created", "deleted", "resolved", "rerequested",
           "requested_action", "edited", "labeled", "", "x" * 5000]


@st.composite
def mutation(draw: Any, name: str) -> tuple:
    op = draw(st.sampled_from(["delete", "set", "set", "action"]))
    if op == "action":
        return ("set", ("action",), draw(st.sampled_from(ACTIONS) | json_values))
    path = draw(st.sampled_from(READ_PATHS[name]) | st.sampled_from(ALL_PATHS[name]))
    return ("delete", path) if op == "delete" else ("set", path, draw(json_values))


def apply(doc: Any, op: tuple) -> bool:
    """Apply one mutation in place; False when an earlier one removed its place."""
    parent = lookup(doc, op[1][:-1])
    key = op[1][-1]
    if isinstance(parent, dict) and isinstance(key, str):
        if op[0] == "delete":
            return parent.pop(key, MISSING) is not MISSING
        parent[key] = op[2]
        return True
    if isinstance(parent, list) and isinstance(key, int) and key < len(parent):
        if op[0] == "delete":
            del parent[key]
        else:
            parent[key] = op[2]
        return True
    return False


@st.composite
def cases(draw: Any) -> tuple[str, str, bytes, dict[str, Any] | None, list[tuple]]:
    """(fixture name, event header, body, mutated document or None for a non-document, mutations)."""
    name = draw(st.sampled_from(sorted(PAYLOADS)))
    event = EVENT_OF[name]
    if draw(st.integers(0, 19)) == 0:  # one case in twenty: a body that is not a JSON object
        body = draw(st.one_of(
            st.binary(max_size=64),
            st.just(json.dumps(PAYLOADS[name]).encode()).flatmap(
                lambda full: st.integers(0, len(full) - 1).map(lambda n: full[:n])),  # truncated
            json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
            st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n)))  # nested very deep
        return name, event, body, None, []
    if draw(st.integers(0, 9)) == 0:  # a payload delivered under another handled event
        event = draw(st.sampled_from(sorted(set(EVENT_OF.values()))))
    doc = copy.deepcopy(PAYLOADS[name])
    ops = [op for op in draw(st.lists(mutation(name), min_size=1, max_size=3)) if apply(doc, op)]
    return name, event, json.dumps(doc).encode(), doc, ops


def broken_field(name: str, event: str, doc: dict[str, Any]) -> str | None:
    """The first place where a field ``event`` needs was deleted or given another JSON type, or
    None; only meaningful while the delivery keeps its recorded event and action."""
    original = PAYLOADS[name]
    for required in REQUIRED[event]:
        keys = tuple(required.split("."))
        for n in range(1, len(keys) + 1):
            was, now = lookup(original, keys[:n]), lookup(doc, keys[:n])
            if kind(now) != kind(was):
                return ".".join(keys[:n])
    return None


# ----- the property -----------------------------------------------------------------------------


def check_case(client: Any, queue: Queue, name: str, event: str, body: bytes, doc: Any, ops: list) -> None:
    queue.jobs.clear()
    resp = deliver(client, event, body)
    answer = resp.json
    TALLY[f"{resp.status_code} {answer['outcome']}"] += 1
    assert resp.status_code in (200, 202, 400), (resp.status_code, answer)
    if resp.status_code == 400:
        assert queue.jobs == [] and answer["outcome"] == "bad_payload"
        error = answer["error"]
        assert error and "\n" not in error and len(error) < 400, error
    elif resp.status_code == 202:
        (job,) = queue.jobs
        assert json.loads(json.dumps(job)) == job  # a plain JSON document crosses the queue
        assert read_job(job).delivery == job["delivery"]  # ... and a worker reads it back
    else:
        assert queue.jobs == [] and answer["outcome"] in ("ignored", "pong")

    if doc is None:
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, dict):  # random bytes may still spell an object: "{}"
            assert resp.status_code == 400 and answer["error"].startswith("invalid JSON"), answer
        return
    action, recorded_action = doc.get("action", MISSING), PAYLOADS[name].get("action", MISSING)
    if action is not MISSING and action is not None and not isinstance(action, str):
        assert resp.status_code == 400 and answer["error"].startswith("action: "), answer
        return
    if event != EVENT_OF[name] or action != recorded_action:
        return  # another event or action: handled or not, the invariants above are what holds
    broken = broken_field(name, event, doc)
    if broken is not None:
        assert resp.status_code == 400, (broken, resp.status_code, answer)
        if len(ops) == 1:  # one mutation: the reason names exactly that field
            assert answer["error"].startswith(broken + ":"), (broken, answer["error"])


CLIENT, QUEUE = make_client()


@settings(settings.get_profile(PROFILE))
@given(cases())
def test_mutated_payloads_get_4xx_never_5xx(case: tuple) -> None:
    check_case(CLIENT, QUEUE, *case)


# ----- the real payloads, and hand-written bad ones ---------------------------------------------

EXPECTED = {  # fixture -> (status, outcome) when delivered as recorded
    **{name: (202, "enqueued") for name in HANDLED},
    "pull_request_review_comment/created.payload.json": (200, "ignored"),  # a comment, not a reply
    REPLY: (202, "enqueued"),
}


def all_fixtures() -> list[tuple[str, str]]:
    out = [(str(p.relative_to(WEBHOOKS)), p.parent.name) for p in sorted(WEBHOOKS.rglob("*.json"))]
    return out + [(REPLY, "pull_request_review_comment")]


@pytest.mark.parametrize("name, event", all_fixtures(), ids=lambda v: v)
def test_every_real_payload_passes_unchanged(name: str, event: str) -> None:
    client, queue = make_client()
    body = json.dumps(fixture(name)).encode() if name == REPLY else (WEBHOOKS / name).read_bytes()
    resp = deliver(client, event, body)
    expected = EXPECTED.get(name)
    if expected is None:  # events and actions ptbot does not act on
        expected = (200, "pong" if event == "ping" else "ignored")
    assert (resp.status_code, resp.json["outcome"]) == expected, resp.json
    assert len(queue.jobs) == (expected[0] == 202)


def edited(name: str, path: str, value: Any = MISSING) -> bytes:
    """The recorded payload ``name`` with ``path`` (dotted, [i] for an index) set or deleted."""
    doc = fixture(name)
    keys: list[str | int] = []
    for part in path.replace("[", ".[").split("."):
        keys.append(int(part[1:-1]) if part.startswith("[") else part)
    apply(doc, ("delete", tuple(keys)) if value is MISSING else ("set", tuple(keys), value))
    return json.dumps(doc).encode()


PR, RUN = "pull_request/opened.payload.json", "check_run/rerequested.payload.json"
BAD = [  # (case, event header, body)
    ("pr-number-as-string", "pull_request", edited(PR, "pull_request.number", "7")),
    ("pr-head-sha-deleted", "pull_request", edited(PR, "pull_request.head.sha")),
    ("pr-head-sha-a-branch-name", "pull_request", edited(PR, "pull_request.head.sha", "main")),
    ("pr-repository-as-string", "pull_request", edited(PR, "repository", "Codertocat/Hello-World")),
    ("pr-without-installation", "pull_request", edited(PR, "installation")),
    ("pr-label-as-string", "pull_request", edited(PR, "pull_request.labels", ["x" * 5000])),
    ("pr-draft-as-string", "pull_request", edited(PR, "pull_request.draft", "false")),
    ("pr-action-as-number", "pull_request", edited(PR, "action", 7)),
    ("run-pr-number-true", "check_run", edited(RUN, "check_run.pull_requests", [{"number": True}])),
    ("run-id-a-float", "check_run", edited(RUN, "check_run.id", 4.0)),
    ("installation-id-negative", "installation", edited("installation/created.payload.json", "installation.id", -1)),
    ("repositories-added-number", "installation_repositories",
     edited("installation_repositories/added.payload.json", "repositories_added", [{"full_name": 5}])),
    ("thread-comment-id-null", "pull_request_review_thread",
     edited("pull_request_review_thread/resolved.payload.json", "thread.comments[0].id", None)),
    ("reply-comment-an-array", "pull_request_review_comment", edited(REPLY, "comment", [])),
    ("body-not-json", "pull_request", b"not json"),
    ("body-a-json-array", "pull_request", b"[1, 2]"),
]


def test_golden_400_reasons() -> None:
    client, queue = make_client()
    lines = []
    for case, event, body in BAD:
        resp = deliver(client, event, body)
        assert resp.status_code == 400 and queue.jobs == [], (case, resp.json)
        lines.append(f"{case}: {resp.json['error']}")
    check_golden(GOLDEN / "bad_payloads.txt", "\n".join(lines) + "\n")


def test_a_json_array_nested_beyond_the_recursion_limit_is_a_400() -> None:
    client, queue = make_client()
    resp = deliver(client, "pull_request", b"[" * 100_000 + b"]" * 100_000)
    assert resp.status_code == 400 and resp.json["error"].startswith("invalid JSON") and queue.jobs == []


def test_the_refusal_is_logged_with_the_delivery_id(caplog: pytest.LogCaptureFixture) -> None:
    client, _ = make_client()
    body = edited(PR, "pull_request.head.sha")
    client.post("/webhook", data=body, headers={
        "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "d-malformed-1",
        "X-Hub-Signature-256": signature_for(SECRET.encode(), body)})
    (record,) = [r for r in caplog.records if r.name == "bot.webhook"]
    assert "d-malformed-1" in record.getMessage() and "pull_request.head.sha" in record.getMessage()
