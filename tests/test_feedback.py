"""bot.feedback end to end: the review pipeline on the fake GitHub records scored lines in the
label store (SQLite and PostgreSQL), reviewers react / resolve / reply / push / merge, and the
harvest, webhook handlers and implicit labels turn that into label events and an export."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from conftest import AI_TRAILER, TEST_APP_ID, TEST_INSTALLATION_ID, FakeScorer, put_pull_request, app_on, shared_data

from bot.config import Settings
from bot.feedback import (
    FeedbackSettings,
    GitHubFeedbackAPI,
    StoreFeedback,
    apply_push,
    feedback_job,
    feedback_stats,
    handle_feedback_job,
    handle_pull_request_job,
    harvest_due,
    harvest_pull_request,
    line_labels,
    next_poll_at,
    plot_stats,
    pr_text_reader,
    suppressed_fingerprints,
    unchanged_lines,
    write_export,
)
from bot.github import GitHubApp
from bot.pr_review import RedisLedger, run_review
from bot.render import Renderer, parse_marker
from bot.store import LabelStore

WEBHOOKS = Path(__file__).resolve().parent / "fixtures" / "github" / "webhooks"
HEAD, HEAD2, HEAD3 = "a1" * 20, "b2" * 20, "c3" * 20
CALC = ("def total(items):\n"
        "    result = 0\n"
        "    for item in items:\n"
        "        result += item.price  # RISK-A\n"
        "    return result / len(items)  # RISK-B\n")
# The push after review fixes the RISK-B line (division by zero) and leaves RISK-A alone.
CALC_FIXED = ("def total(items):\n"
              "    result = 0\n"
              "    for item in items:\n"
              "        result += item.price  # RISK-A\n"
              "    return result / max(len(items), 1)\n")
RISKY = {"RISK-A": 0.9, "RISK-B": 0.8}
FAST = FeedbackSettings(record_permission=True)


@pytest.fixture
def app(fake_github, app_private_key) -> GitHubApp:
    return app_on(fake_github, app_private_key, max_attempts=2, backoff_base=0.1)


@pytest.fixture
def ledger(redis_url):
    led = RedisLedger.from_url(redis_url, prefix=f"ptbot-test-feedback:{uuid.uuid4().hex}:")
    yield led
    for key in led.client.scan_iter(f"{led.prefix}*"):
        led.client.delete(key)


def job(head: str, action: str = "opened", **extra) -> dict:
    return {"event": "pull_request", "action": action, "kind": "review", "installation_id": TEST_INSTALLATION_ID,
            "owner": "octo", "repo": "shop", "repo_id": 1, "number": 7, "head_sha": head, "draft": False,
            "author": "developer", "delivery": str(uuid.uuid4()), **extra}


def push(fake, head: str, calc: str):
    return put_pull_request(fake, 7, head, [("c1" * 20, f"Add total\n\n{AI_TRAILER}", {"src/calc.py": calc})])


def review(app, store, ledger, j):
    api = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    return run_review(j, api, FakeScorer(RISKY), Renderer(), ledger, Settings().repo_defaults,
                      feedback=StoreFeedback(store))


def react(fake, comment_id: int, login: str, content: str, user_type: str = "User") -> None:
    """A reaction as a GitHub user would add it in the UI (the fake's state, directly)."""
    r = copy.deepcopy(fake.templates["reaction"])
    r.update(id=next(fake._ids), content=content)
    r["user"] = dict(r["user"], login=login, type=user_type)
    with fake._lock:
        fake.reactions.setdefault(comment_id, []).append(r)


RISK_LINE = {"RISK-A": 4, "RISK-B": 5}


def comment_for(fake, risk: str) -> dict:
    """ptbot's inline comment on the RISK-A (line 4) or RISK-B (line 5) line of src/calc.py."""
    return next(c for c in fake.review_comments if c["line"] == RISK_LINE[risk])


def thread_payload(comment: dict, action: str, sender: str) -> dict:
    d = json.loads((WEBHOOKS / "pull_request_review_thread" / f"{action}.payload.json").read_text())
    d["repository"]["full_name"] = "octo/shop"
    d["pull_request"]["number"] = 7
    d["pull_request"]["user"]["login"] = "developer"
    d["installation"] = {"id": TEST_INSTALLATION_ID}
    d["sender"]["login"] = sender
    root = dict(d["thread"]["comments"][0], id=comment["id"], body=comment["body"],
                user=dict(d["thread"]["comments"][0]["user"], login=comment["user"]["login"], type="Bot"))
    d["thread"]["comments"] = [root]
    return d


def reply_payload(parent_id: int, reply_id: int, login: str, body: str) -> dict:
    d = json.loads((WEBHOOKS / "pull_request_review_comment" / "created.payload.json").read_text())
    d["repository"]["full_name"] = "octo/shop"
    d["pull_request"]["number"] = 7
    d["pull_request"]["user"]["login"] = "developer"
    d["comment"].update(id=reply_id, in_reply_to_id=parent_id, body=body)
    d["comment"]["user"] = dict(d["comment"]["user"], login=login, type="User")
    return d


def open_api(app, store):
    return lambda row: GitHubFeedbackAPI(app.pull_request(row.installation_id, *row.repo.split("/"), row.number),
                                         store)


# ----- pure parts -----------------------------------------------------------------------------


def test_poll_schedule_decays_and_stops_after_the_last_sweep():
    s = FeedbackSettings()
    assert next_poll_at(1000.0, 1000.0, "open", None, s) == 1000.0 + 600
    assert next_poll_at(1000.0 + 3 * 3600, 1000.0, "open", None, s) == 1000.0 + 3 * 3600 + 3600
    assert next_poll_at(1000.0 + 5 * 86400, 1000.0, "open", None, s) == 1000.0 + 6 * 86400
    assert next_poll_at(2000.0, 1000.0, "closed", 2000.0, s) == 2000.0 + 7 * 86400
    assert next_poll_at(2000.0 + 7 * 86400, 1000.0, "closed", 2000.0, s) is None
    with pytest.raises(ValueError, match="intervals"):
        FeedbackSettings(fast_interval=0)


def test_unchanged_lines_follow_moved_code():
    old = "a\nb\nc\nd\n"
    assert unchanged_lines(old, "x\na\nb\nC\nd\n") == {1, 2, 4, 5}  # line 5 is the final ""
    assert 3 not in unchanged_lines(old, "a\nb\nd\n")


def test_feedback_jobs_from_the_recorded_webhooks():
    thread = json.loads((WEBHOOKS / "pull_request_review_thread" / "resolved.payload.json").read_text())
    j = feedback_job("pull_request_review_thread", thread)
    assert j["kind"] == "feedback" and j["action"] == "resolved" and j["number"] == 2
    assert j["repo_full_name"] == "Codertocat/Hello-World" and j["comments"][0]["id"] == 284312630
    created = json.loads((WEBHOOKS / "pull_request_review_comment" / "created.payload.json").read_text())
    assert feedback_job("pull_request_review_comment", created) is None  # not a reply
    created["comment"]["in_reply_to_id"] = 1
    assert feedback_job("pull_request_review_comment", created)["comment"]["in_reply_to_id"] == 1
    assert feedback_job("pull_request_review_comment",
                        json.loads((WEBHOOKS / "pull_request_review_comment" / "deleted.payload.json").read_text())) is None
    assert feedback_job("issue_comment", {"action": "created"}) is None


# ----- end to end --------------------------------------------------------------------------------


def test_feedback_lifecycle_end_to_end(fake_github, app, ledger, label_store: LabelStore, tmp_path):
    push(fake_github, HEAD, CALC)
    outcome = review(app, label_store, ledger, job(HEAD))
    assert outcome.status == "posted" and outcome.comments == 2
    lines = label_store.lines("octo/shop", 7)
    assert len(lines) == 5 and sum(ln.posted for ln in lines) == 2
    assert {ln.model_version for ln in lines} == {"fake-model@test-1"} and all(ln.ai_authored for ln in lines)
    assert label_store.snapshot("octo/shop", HEAD, "src/calc.py") == CALC

    # Reactions: alice changes her mind (latest counts), bob 👎, a bot and a laugh are ignored.
    a, b = comment_for(fake_github, "RISK-A"), comment_for(fake_github, "RISK-B")
    react(fake_github, b["id"], "alice", "-1")
    react(fake_github, b["id"], "alice", "+1")
    react(fake_github, b["id"], "renovate[bot]", "+1", user_type="Bot")
    react(fake_github, b["id"], "carol", "laugh")
    react(fake_github, a["id"], "bob", "-1")
    react(fake_github, a["id"], "developer", "+1")  # the PR author
    results = harvest_due(label_store, open_api(app, label_store), FeedbackSettings(ignore_pr_author=True))
    assert [(r.comments, r.linked, r.votes) for r in results] == [(2, 2, 2)]
    votes = {(e.user_login, e.value) for e in label_store.events("octo/shop", 7, kind="reaction")}
    assert votes == {("alice", "+1"), ("bob", "-1")}
    assert {ln.comment_id for ln in label_store.lines() if ln.posted} == {a["id"], b["id"]}

    # Harvested exactly once: a second poll gets 304s and writes nothing.
    before = len(fake_github.requests)
    events_before = [(e.id, e.updated_at) for e in label_store.events()]
    again = harvest_pull_request(label_store, open_api(app, label_store)(label_store.pull_request("octo/shop", 7)),
                                 "octo/shop", 7, FeedbackSettings(ignore_pr_author=True), "developer")
    assert again.votes == 0 and again.unchanged == 2
    polled = [r for r in fake_github.requests[before:] if "/comments" in r.path]
    assert polled and all(r.status == 304 for r in polled)
    assert [(e.id, e.updated_at) for e in label_store.events()] == events_before
    # ... and the schedule moved on: nothing is due now.
    assert harvest_due(label_store, open_api(app, label_store), FAST) == []

    # A retracted vote disappears on the next poll.
    with fake_github._lock:
        fake_github.reactions[a["id"]] = []
    harvest_due(label_store, open_api(app, label_store), FAST, force=True)
    assert {e.user_login for e in label_store.events(kind="reaction")} == {"alice"}
    react(fake_github, a["id"], "bob", "-1")
    harvest_due(label_store, open_api(app, label_store), FAST, force=True)

    # A thread resolution and a reply arrive as webhooks.
    assert handle_feedback_job(label_store, feedback_job(
        "pull_request_review_thread", thread_payload(a, "resolved", "dana"))) == "thread resolved"
    assert handle_feedback_job(label_store, feedback_job(
        "pull_request_review_comment", reply_payload(b["id"], 99001, "erin", "Good catch, fixing."))) == "reply"
    # Redelivered webhooks change nothing.
    handle_feedback_job(label_store, feedback_job(
        "pull_request_review_comment", reply_payload(b["id"], 99001, "erin", "Good catch, fixing.")))
    kinds = sorted((e.kind, e.value, e.user_login) for e in label_store.events())
    assert kinds == [("reaction", "+1", "alice"), ("reaction", "-1", "bob"), ("reply", "replied", "erin"),
                     ("thread", "resolved", "dana")]
    # 👎 and resolved-as-wrong: RISK-A's fingerprint is suppressed on this PR.
    fp_a = parse_marker(a["body"])["fp"]
    assert suppressed_fingerprints(label_store, "octo/shop", 7) == {fp_a}

    # A push that fixes the RISK-B line: positive label for it, RISK-A stays open.
    push(fake_github, HEAD2, CALC_FIXED)
    pr = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    counts = handle_pull_request_job(label_store, job(HEAD2, "synchronize"), pr_text_reader(pr))
    assert counts["changed"] == 1
    changed = label_store.events(kind="edit")
    assert [(e.value, e.detail) for e in changed] == [("changed", HEAD2)]
    assert {ln.line for ln in label_store.lines() if ln.id == changed[0].scored_line_id} == {5}
    # The review of the new head: RISK-A is neither re-posted (already on GitHub) nor re-scored twice.
    review(app, label_store, ledger, job(HEAD2, "synchronize"))
    # Merge with RISK-A untouched: weak negative for it (and the other unchanged scored lines).
    counts = handle_pull_request_job(label_store, job(HEAD2, "closed", kind="closed", merged=True),
                                     pr_text_reader(pr))
    assert counts["unchanged_at_merge"] == 4 and counts["changed"] == 0
    risk_a = next(ln for ln in label_store.lines() if ln.head_sha == HEAD and ln.line == 4)
    assert [e.value for e in label_store.events(kind="edit") if e.scored_line_id == risk_a.id] == ["unchanged_at_merge"]
    assert label_store.pull_request("octo/shop", 7).state == "closed"

    labels = line_labels(label_store)
    risk_b = next(ln for ln in label_store.lines() if ln.head_sha == HEAD and ln.line == 5)
    assert labels[risk_b.id].positive is True and labels[risk_a.id].positive is False

    # Export in the shared schema; check_data.py accepts it.
    out = tmp_path / "feedback.jsonl"
    summary = write_export(label_store, out)
    assert summary.records == 1 and summary.positive_lines == 1
    rec = json.loads(out.read_text())
    assert rec["code"] == CALC and rec["fixed"] == CALC_FIXED and rec["buggy_lines"] == [5]
    assert rec["language"] == "python" and 4 in rec["meta"]["negative_lines"]
    check = subprocess.run([sys.executable, str(shared_data("check_data.py")), str(out)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    stats = feedback_stats(label_store, k=2)
    assert stats.per_model[("octo/shop", "fake-model@test-1")]["precision_at_k"] == 0.5
    assert stats.events["edit:changed"] == 1
    png = plot_stats(stats, tmp_path / "stats.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The closed PR gets its sweep now and one more later, then polling stops.
    harvest_due(label_store, open_api(app, label_store), FAST)
    assert label_store.pull_request("octo/shop", 7).state == "closed"
    harvest_due(label_store, open_api(app, label_store), FAST, now=1e12)
    assert label_store.pull_request("octo/shop", 7).state == "done"


def test_suppressed_fingerprints_are_not_posted_again(fake_github, app, ledger, label_store):
    push(fake_github, HEAD, CALC)
    review(app, label_store, ledger, job(HEAD))
    a = comment_for(fake_github, "RISK-A")
    react(fake_github, a["id"], "bob", "-1")
    harvest_due(label_store, open_api(app, label_store), FAST)
    # The reviewer deleted ptbot's comments (so GitHub no longer shows the fingerprints); a new
    # push must still not bring back the refused one, while the other comes back.
    with fake_github._lock:
        fake_github.review_comments.clear()
        fake_github.reviews.clear()
    push(fake_github, HEAD2, "import math\n" + CALC)
    outcome = review(app, label_store, ledger, job(HEAD2, "synchronize"))
    assert outcome.status == "posted" and outcome.comments == 1
    # The file moved down one line: RISK-B is now line 6; RISK-A (line 5) is not commented.
    assert [(c["path"], c["line"]) for c in fake_github.review_comments] == [("src/calc.py", 6)]


def test_a_merge_without_edits_gives_weak_negatives_only(fake_github, app, ledger, label_store, tmp_path):
    push(fake_github, HEAD, CALC)
    review(app, label_store, ledger, job(HEAD))
    pr = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    counts = handle_pull_request_job(label_store, job(HEAD3, "closed", kind="closed", merged=True),
                                     lambda path, sha: CALC)
    assert counts["unchanged_at_merge"] == 5
    # Nothing needed an edit, so there is nothing to export (the schema needs a buggy line).
    summary = write_export(label_store, tmp_path / "none.jsonl")
    assert summary.records == 0 and summary.skipped["no_positive_line"] == 1
    # A PR closed without merge gets no implicit labels; an untracked PR is reported as such.
    assert handle_pull_request_job(label_store, dict(job(HEAD3, "closed", kind="closed"), number=8),
                                   pr_text_reader(pr)) == {"untracked": 1}


# ----- concurrency ------------------------------------------------------------------------------


def test_concurrent_harvesters_and_webhook_handlers_lose_and_duplicate_nothing(
        fake_github, app, ledger, label_store):
    push(fake_github, HEAD, CALC)
    review(app, label_store, ledger, job(HEAD))
    a, b = comment_for(fake_github, "RISK-A"), comment_for(fake_github, "RISK-B")
    voters = [f"user{i}" for i in range(12)]
    for i, login in enumerate(voters):
        react(fake_github, (a if i % 2 else b)["id"], login, "+1" if i % 3 else "-1")
    n_replies = 24
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def harvester() -> None:
        try:
            start.wait()
            for _ in range(3):
                row = label_store.pull_request("octo/shop", 7)
                harvest_pull_request(label_store, open_api(app, label_store)(row), row.repo, row.number,
                                     FeedbackSettings(record_permission=False), row.author)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    def webhooks(part: int) -> None:
        try:
            api = open_api(app, label_store)(label_store.pull_request("octo/shop", 7))
            start.wait()
            for i in range(part, n_replies, 4):
                # Every reply is delivered twice (GitHub redelivery); the first ones may arrive
                # before any harvest tied ptbot's comment to its line (then the handler does).
                for _ in range(2):
                    outcome = handle_feedback_job(label_store, feedback_job(
                        "pull_request_review_comment", reply_payload(b["id"], 50000 + i, f"r{i}", "ok")), api)
                    assert outcome == "reply", outcome
                handle_feedback_job(label_store, feedback_job(
                    "pull_request_review_thread", thread_payload(a, "resolved", f"r{i}")))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=harvester) for _ in range(4)]
    threads += [threading.Thread(target=webhooks, args=(p,)) for p in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert label_store.counts() == {"pull_requests": 1, "snapshots": 1, "scored_lines": 5,
                                    "label_events": len(voters) + n_replies + 1}
    votes = {(e.user_login, e.value) for e in label_store.events(kind="reaction")}
    assert votes == {(login, "+1" if i % 3 else "-1") for i, login in enumerate(voters)}
    assert len(label_store.events(kind="reply")) == n_replies
    assert len(label_store.events(kind="thread")) == 1


def test_implicit_labels_from_concurrent_workers_are_written_once(label_store):
    from bot.store import ScoredLineIn

    label_store.save_snapshot("octo/shop", HEAD, "src/calc.py", CALC)
    label_store.watch_pull_request(1, "octo/shop", 7, HEAD, "developer")
    label_store.record_lines([ScoredLineIn(1, "octo/shop", 7, HEAD, "src/calc.py", n, line, "c", f"{n:016x}",
                                           "m@1", 0.5, 0.5, n) for n, line in enumerate(CALC.splitlines(), 1)])
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            apply_push(label_store, "octo/shop", 7, HEAD2, lambda p, s: CALC_FIXED, at_merge=True)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    edits = label_store.events(kind="edit")
    assert len(edits) == 5 and sorted(e.value for e in edits).count("changed") == 1


# ----- workers and the CLI ----------------------------------------------------------------------


def test_worker_feedback_tasks_and_beat_schedule(fake_github, app, ledger, store_url):
    from workers.celery_app import enable_feedback, make_celery
    from workers.producer import FEEDBACK_TASK, HARVEST_TASK, WorkerConfig
    from workers.tasks import (
        WorkerRuntime,
        feedback_sink,
        feedback_store,
        feedback_wanted,
        harvest_feedback,
        run_feedback_job,
    )

    settings = Settings(app_id=str(TEST_APP_ID), github_api_url=fake_github.base_url)
    runtime = WorkerRuntime(settings, github_factory=lambda: app, ledger_factory=lambda: ledger,
                            scorer_factory=lambda: FakeScorer(RISKY))
    celery = make_celery(settings, WorkerConfig(), runtime)
    assert feedback_sink(runtime) is None and not feedback_wanted(runtime, job(HEAD2, "synchronize"))
    enable_feedback(celery, store_url, FeedbackSettings(ignore_pr_author=True), every=60)
    assert {FEEDBACK_TASK, HARVEST_TASK} <= set(celery.tasks)
    assert celery.conf.beat_schedule["ptbot-harvest-feedback"] == {
        "task": HARVEST_TASK, "schedule": 60, "options": {"queue": "cpu"}}
    assert feedback_wanted(runtime, job(HEAD2, "synchronize")) and not feedback_wanted(runtime, job(HEAD))

    push(fake_github, HEAD, CALC)
    pr = app.pull_request(TEST_INSTALLATION_ID, "octo", "shop", 7)
    run_review(job(HEAD), pr, runtime.scorer(), Renderer(), ledger, settings.repo_defaults,
               feedback=feedback_sink(runtime))
    store = feedback_store(runtime)
    assert len(store.lines()) == 5
    react(fake_github, comment_for(fake_github, "RISK-B")["id"], "alice", "+1")
    assert harvest_feedback(runtime) == {"status": "harvested", "pull_requests": 1, "votes": 1}
    reply = feedback_job("pull_request_review_comment",
                         reply_payload(comment_for(fake_github, "RISK-A")["id"], 777001, "bob", "Not a bug."))
    reply["installation_id"] = TEST_INSTALLATION_ID
    assert run_feedback_job(runtime, reply) == {"status": "reply"}
    push(fake_github, HEAD2, CALC_FIXED)
    assert run_feedback_job(runtime, job(HEAD2, "synchronize")) == {"status": "labelled", "changed": 1, "open": 4}


def test_cli_feedback_stats_and_export(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ptbot.cli import cli
    from bot.store import EventIn, ScoredLineIn

    url = f"sqlite:///{tmp_path / 'labels.db'}"
    store = LabelStore(url)
    store.save_snapshot("octo/shop", HEAD, "src/calc.py", CALC)
    store.save_snapshot("octo/shop", HEAD2, "src/calc.py", CALC_FIXED)
    store.watch_pull_request(1, "octo/shop", 7, HEAD2, "developer")
    store.record_lines([ScoredLineIn(1, "octo/shop", 7, HEAD, "src/calc.py", n, text, "c", f"{n:016x}", "m@1",
                                     1.0 / n, 1.0 / n, n) for n, text in enumerate(CALC.splitlines(), 1)])
    ids = {ln.line: ln.id for ln in store.lines()}
    store.upsert_event(EventIn("edit:1", ids[5], "octo/shop", 7, "edit", "changed", detail=HEAD2))
    store.upsert_event(EventIn("vote:9:bob", ids[1], "octo/shop", 7, "reaction", "-1", user_login="bob"))
    store.close()

    runner = CliRunner()
    env = {"PTBOT_DATABASE_URL": url, "PTBOT_CACHE_DIR": str(tmp_path)}
    out = tmp_path / "fb.jsonl"
    result = runner.invoke(cli, ["feedback", "export", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "wrote 1 record(s)" in result.output
    check = subprocess.run([sys.executable, str(shared_data("check_data.py")), str(out)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    result = runner.invoke(cli, ["feedback", "stats", "--k", "1", "--plot", str(tmp_path / "s.png")], env=env)
    assert result.exit_code == 0, result.output
    assert "edit:changed" in result.output and "precision@1 0.000" in result.output
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(cli, ["feedback", "sync"], env=env)  # no App credentials configured
    assert result.exit_code != 0 and "PTBOT_APP_ID" in result.output
