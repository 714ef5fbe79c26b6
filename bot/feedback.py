"""Reviewer feedback becomes labels: harvest it, store it, suppress what was refused, export it.

Where labels come from:

- **Reactions** (👍 / 👎 on ptbot's inline comments). GitHub sends no webhook for them, so
  ``harvest_pull_request`` polls: one conditional list of the PR's review comments, then one
  conditional GET of each ptbot comment's reactions (a 304 costs no rate limit; ETags persist in
  the store across runs). One vote per user: the user's latest 👍/👎 counts, a retracted one is
  deleted. Bots never vote; the PR author optionally does not either.
- **Threads and replies** arrive as webhooks (``pull_request_review_thread`` resolved /
  unresolved, ``pull_request_review_comment`` with ``in_reply_to_id``): ``feedback_job`` trims the
  payload to a job, ``handle_feedback_job`` stores it.
- **Implicit labels** on ``synchronize`` and ``closed``: a scored AI-authored line that a later
  push changes before merge needed an edit (positive); one still unchanged in the merged head is
  a weak negative (``apply_push``).

Polling decays with the age of ptbot's first comment on the PR (``FeedbackSettings``) and
ends with a sweep when the PR closes and a last one ``closed_sweep_after`` later.

Suppression: ``suppressed_fingerprints`` lists the fingerprints of a PR that a human 👎'd or
whose thread was resolved while the line stayed as it was; ``bot.pr_review.publish`` does not
post them again (``StoreFeedback`` is its hook).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from analyzer.languages import language_for_path
from analyzer.lines import source_lines
from analyzer.types import Record
from bot.events import ReviewCommentEvent, ReviewThreadEvent, read_event
from bot.jobs import feedback_job_for
from bot.render import parse_marker
from bot.store import EventIn, LabelEventRow, LabelStore, PullRequestRow, ScoredLineIn, ScoredLineRow

log = logging.getLogger(__name__)

VOTES = {"+1": 1.0, "-1": -1.0}
# What each event says about "this line needed an edit" (the export's label): an edit made
# before merge is the strongest evidence, an explicit vote next, an untouched line at merge weak.
EVENT_WEIGHTS = {("reaction", "+1"): 1.0, ("reaction", "-1"): -1.0,
                 ("edit", "changed"): 2.0, ("edit", "unchanged_at_merge"): -0.5,
                 ("thread", "resolved"): -1.0}
EXPORT_LANGUAGES = {"python", "java", "javascript", "typescript", "go", "cpp", "c", "rust", "ruby",
                    "csharp", "php", "kotlin", "scala", "swift"}  # check_data.py's LANGUAGES


@dataclass(frozen=True)
class FeedbackSettings:
    """How feedback is harvested and which voices count."""

    ignore_pr_author: bool = False
    """Drop the PR author's reactions (they judge their own code)."""
    fast_interval: float = 600.0
    """Seconds between polls while ptbot's first comment is younger than ``fast_period``."""
    fast_period: float = 2 * 3600.0
    """How long polling stays at ``fast_interval`` (seconds)."""
    slow_interval: float = 3600.0
    """Seconds between polls until ``slow_period`` after the first comment."""
    slow_period: float = 2 * 86400.0
    """After this age (seconds) polls happen every ``idle_interval``."""
    idle_interval: float = 86400.0
    """Seconds between polls of an old, still open PR."""
    closed_sweep_after: float = 7 * 86400.0
    """The last poll happens this long after the PR closed (late reactions); then polling stops."""
    record_permission: bool = True
    """Look up each voter's permission on the repo (one request per new voter and run)."""

    def __post_init__(self) -> None:
        if min(self.fast_interval, self.slow_interval, self.idle_interval) <= 0:
            raise ValueError("poll intervals must be > 0 seconds")
        if not 0 <= self.fast_period <= self.slow_period:
            raise ValueError("need 0 <= fast_period <= slow_period (seconds)")
        if self.closed_sweep_after < 0:
            raise ValueError("closed_sweep_after must be >= 0 seconds")


def next_poll_at(now: float, first_posted_at: float | None, state: str, closed_at: float | None,
                 settings: FeedbackSettings) -> float | None:
    """When to poll a PR next; None when polling is over (closed and swept)."""
    if state != "open":
        last = (closed_at or now) + settings.closed_sweep_after
        return last if now < last else None
    age = now - (first_posted_at if first_posted_at is not None else now)
    if age < settings.fast_period:
        return now + settings.fast_interval
    if age < settings.slow_period:
        return now + settings.slow_interval
    return now + settings.idle_interval


# ----- recording what was scored (the bot.pr_review hook) ----------------------------------------


def context_hash(text: str, line: int, radius: int = 2) -> str:
    """sha256 (16 hex) of the line and ``radius`` lines either side: the line's surroundings."""
    lines = text.split("\n")
    lo, hi = max(0, line - 1 - radius), min(len(lines), line + radius)
    return hashlib.sha256("\n".join(lines[lo:hi]).encode()).hexdigest()[:16]


class StoreFeedback:
    """The ``bot.pr_review.FeedbackSink`` backed by a ``LabelStore``."""

    def __init__(self, store: LabelStore, settings: FeedbackSettings | None = None) -> None:
        self.store = store
        self.settings = settings or FeedbackSettings()

    def suppressed(self, repo: str, number: int) -> set[str]:
        return suppressed_fingerprints(self.store, repo, number)

    def record(self, key: Any, scored: Any, fingerprints: Mapping[tuple[str, int], str],
               posted: Iterable[tuple[str, int]], author: str | None = None) -> None:
        """Store every scored line of ``scored`` (a ``bot.pr_review.Scored``), the file texts,
        and put the PR on the polling schedule if anything was posted."""
        prepared, report = scored.prepared, scored.report
        texts = {r.path: r.text for r in prepared.requests}
        posted = set(posted)
        ai_only = prepared.policy.mode == "ai-only"
        rows = [ScoredLineIn(
            installation_id=key.installation_id, repo=key.repo, number=key.number, head_sha=key.head_sha,
            path=ln.path, line=ln.line, text=ln.text,
            context_hash=context_hash(texts.get(ln.path, ln.text), ln.line),
            fingerprint=fingerprints[(ln.path, ln.line)], model_version=key.model_version,
            score=float(ln.score), probability=float(ln.probability), rank=ln.rank,
            posted=(ln.path, ln.line) in posted,
            provenance=prepared.provenance.get(ln.path, {}).get(ln.line, ""),
            # In ai-only mode every scored line is AI-authored; otherwise provenance is not kept
            # as a flag, so it is unknown (and still gets implicit labels).
            ai_authored=True if ai_only else None) for ln in report.lines]
        for path, text in texts.items():
            self.store.save_snapshot(key.repo, key.head_sha, path, text)
        self.store.record_lines(rows)
        now = time.time()
        self.store.watch_pull_request(key.installation_id, key.repo, key.number, key.head_sha,
                                      author or prepared.job.get("author"),
                                      posted_at=now if posted else None,
                                      next_poll_at=now if posted else None)
        log.info("%s: recorded %d scored line(s), %d posted", key, len(rows), len(posted))


def suppressed_fingerprints(store: LabelStore, repo: str, number: int) -> set[str]:
    """Fingerprints of PR ``repo#number`` not to post again: a human 👎 (net vote below zero)
    or a thread resolved while the line stayed the same (resolved as wrong)."""
    lines = {ln.id: ln for ln in store.lines(repo, number)}
    votes: dict[int, float] = defaultdict(float)
    out: set[str] = set()
    for ev in store.events(repo, number):
        line = lines.get(ev.scored_line_id)
        if line is None:
            continue
        if ev.kind == "reaction":
            votes[ev.scored_line_id] += VOTES.get(ev.value, 0.0)
        elif ev.kind == "thread" and ev.value == "resolved":
            out.add(line.fingerprint)  # a fixed line has a new fingerprint anyway
    out |= {lines[i].fingerprint for i, v in votes.items() if v < 0}
    return out


# ----- harvesting reactions -----------------------------------------------------------------


class FeedbackAPI(Protocol):
    """What harvesting needs from one PR on GitHub (``GitHubFeedbackAPI``)."""

    def review_comments(self) -> tuple[list[dict[str, Any]], bool]:
        """All review comments of the PR, and whether anything changed since the last call."""
        ...

    def comment_reactions(self, comment_id: int) -> tuple[list[dict[str, Any]], bool]:
        """Reactions on one review comment, and whether they changed since the last call."""
        ...

    def permission(self, login: str) -> str | None:
        """The user's permission on the repository (admin, write, read, none), None if unknown."""
        ...

    def confirm(self) -> None:
        """Everything fetched so far is stored: remember the ETags (a 304 then means "done")."""
        ...


class GitHubFeedbackAPI:
    """``FeedbackAPI`` over a ``bot.github.GitHubPullRequest``, with ETags kept in the store.

    It reuses the PR object's conditional GET (``_get_json``), seeding its ETag cache from the
    store so a poll in a new process still gets 304s. (A public ``get_json`` on
    ``GitHubPullRequest`` would be the cleaner seam.)
    """

    def __init__(self, pr: Any, store: LabelStore) -> None:
        self.pr, self.store = pr, store
        self._permissions: dict[str, str | None] = {}
        self._pending: dict[str, tuple[str, Any]] = {}

    def _get(self, url: str) -> tuple[Any, bool]:
        key = f"{self.pr.installation_id}:{url}"
        cached = self.store.get_etag(key)
        if cached and url not in self.pr._etags:
            self.pr._etags[url] = (cached[0], json.loads(cached[1]))
        data = self.pr._get_json(url)
        now = self.pr._etags.get(url)
        changed = not cached or now is None or now[0] != cached[0]
        if now is not None and changed:
            # Kept back until confirm(): a harvester that dies before storing the votes must not
            # leave an ETag behind that makes the next one skip them as "unchanged".
            self._pending[key] = now
        return data or [], changed

    def confirm(self) -> None:
        for key, (etag, body) in self._pending.items():
            self.store.put_etag(key, etag, json.dumps(body))
        self._pending.clear()

    def review_comments(self) -> tuple[list[dict[str, Any]], bool]:
        return self._get_pages(f"/repos/{self.pr.full_name}/pulls/{self.pr.number}/comments")

    def comment_reactions(self, comment_id: int) -> tuple[list[dict[str, Any]], bool]:
        return self._get_pages(f"/repos/{self.pr.full_name}/pulls/comments/{comment_id}/reactions")

    def _get_pages(self, path: str) -> tuple[list[dict[str, Any]], bool]:
        """Every page of a list endpoint (100 per page); True when any page changed (no 304)."""
        out: list[dict[str, Any]] = []
        any_changed, page = False, 1
        while True:
            batch, changed = self._get(f"{path}?per_page=100&page={page}")
            out.extend(batch)
            any_changed |= changed
            if len(batch) < 100:
                return out, any_changed
            page += 1

    def permission(self, login: str) -> str | None:
        if login not in self._permissions:
            try:
                data, _ = self._get(f"/repos/{self.pr.full_name}/collaborators/{login}/permission")
                self._permissions[login] = (data or {}).get("permission") if isinstance(data, dict) else None
            except Exception as e:  # 404 for non-collaborators, 403 without the permission
                log.debug("%s: permission of %s unknown (%s)", self.pr.full_name, login, e)
                self._permissions[login] = None
        return self._permissions[login]


def is_bot(user: Mapping[str, Any] | None) -> bool:
    user = user or {}
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


@dataclass
class HarvestResult:
    """What one poll of one PR found."""

    repo: str
    number: int
    comments: int = 0
    """ptbot's comments on the PR."""
    linked: int = 0
    """Comments newly or already tied to a scored line."""
    votes: int = 0
    """Votes written (new or changed)."""
    retracted: int = 0
    unchanged: int = 0
    """Comments whose reactions answered 304 (nothing to do)."""


def harvest_pull_request(store: LabelStore, api: FeedbackAPI, repo: str, number: int,
                         settings: FeedbackSettings, author: str | None = None) -> HarvestResult:
    """Poll the reactions on ptbot's comments of one PR and store one vote per user."""
    result = HarvestResult(repo, number)
    links = link_comments(store, api, repo, number)
    result.comments = len(links)
    for comment_id, line_id in links.items():
        if line_id is None:
            continue
        result.linked += 1
        reactions, changed = api.comment_reactions(comment_id)
        if not changed:
            result.unchanged += 1
            continue
        written, retracted = store_votes(store, api, repo, number, comment_id, line_id, reactions,
                                         settings, author)
        result.votes += written
        result.retracted += retracted
    api.confirm()
    return result


def link_comments(store: LabelStore, api: FeedbackAPI, repo: str, number: int) -> dict[int, int | None]:
    """ptbot's inline comments on the PR -> the scored line each is about (None: unknown line)."""
    out: dict[int, int | None] = {}
    comments, _ = api.review_comments()
    for c in comments:
        fields = parse_marker(c.get("body") or "")
        if not is_bot(c.get("user")) or not fields.get("fp") or c.get("in_reply_to_id"):
            continue
        out[int(c["id"])] = line_id = store.link_comment(repo, number, fields["fp"], fields.get("sha"),
                                                         None, int(c["id"]))
        if line_id is None:
            log.info("%s#%d: comment %s (fp %s) matches no scored line; not harvested",
                     repo, number, c["id"], fields["fp"])
    return out


def store_votes(store: LabelStore, api: FeedbackAPI | None, repo: str, number: int, comment_id: int,
                line_id: int, reactions: Sequence[Mapping[str, Any]], settings: FeedbackSettings,
                author: str | None) -> tuple[int, int]:
    """Write the current votes on one comment (latest 👍/👎 per user); delete retracted ones."""
    latest: dict[str, Mapping[str, Any]] = {}
    for r in sorted(reactions, key=lambda r: int(r.get("id") or 0)):
        user = r.get("user")
        if r.get("content") not in VOTES or not user or is_bot(user):
            continue
        if settings.ignore_pr_author and author and user.get("login") == author:
            continue
        latest[str(user["login"])] = r
    keys = set()
    for login, r in latest.items():
        key = f"vote:{comment_id}:{login}"
        keys.add(key)
        store.upsert_event(EventIn(
            key=key, scored_line_id=line_id, repo=repo, number=number, kind="reaction",
            value=str(r["content"]), user_login=login, user_type=(r.get("user") or {}).get("type"),
            permission=api.permission(login) if api and settings.record_permission else None,
            is_author=bool(author and login == author), external_id=int(r["id"])))
    retracted = store.delete_events(sorted(store.vote_keys(comment_id) - keys))
    return len(keys), retracted


def harvest_due(store: LabelStore, open_api: Callable[[PullRequestRow], FeedbackAPI],
                settings: FeedbackSettings, now: float | None = None, *,
                force: bool = False) -> list[HarvestResult]:
    """Poll every PR whose time has come (all of them with ``force``), then reschedule it.

    ``open_api(row)`` gives the ``FeedbackAPI`` of one PR. A PR that fails is logged and
    retried at its next slot; the others still run.
    """
    now = time.time() if now is None else now
    rows = store.due_pull_requests(float("inf") if force else now)
    results = []
    for row in rows:
        try:
            results.append(harvest_pull_request(store, open_api(row), row.repo, row.number, settings,
                                                row.author))
        except Exception:
            log.exception("%s#%d: harvesting failed; retrying at the next slot", row.repo, row.number)
        nxt = next_poll_at(now, row.first_posted_at, row.state, row.closed_at, settings)
        store.set_pull_request(row.repo, row.number, last_polled_at=now, next_poll_at=nxt,
                               state="done" if nxt is None else row.state)
    return results


# ----- webhooks: threads and replies ------------------------------------------------------------


def feedback_job(event: str, payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON document of the job for a feedback webhook, or None if the delivery carries no
    feedback; PayloadError (a ValueError naming the field) when it does not fit its schema.

    ``bot.webhook.job_for_event`` builds the same job (``bot.jobs.FeedbackJob``) for
    ``pull_request_review_thread`` and ``pull_request_review_comment``; the worker runs
    ``handle_feedback_job`` on it.
    """
    ev = read_event(event, payload)
    job = feedback_job_for(ev) if isinstance(ev, (ReviewThreadEvent, ReviewCommentEvent)) else None
    return job.to_json() if job else None


def handle_feedback_job(store: LabelStore, job: Mapping[str, Any], api: FeedbackAPI | None = None) -> str:
    """Store the label event of a ``feedback_job``; returns what happened, in words.

    A reply names only its parent comment's id; when no harvest has tied that comment to its
    line yet, ``api`` (the PR's ``FeedbackAPI``) is used to do it now.
    """
    repo, number = str(job.get("repo_full_name") or ""), int(job.get("number") or 0)
    if not repo or not number:
        return "ignored: the delivery names no pull request"
    if job["event"] == "pull_request_review_thread":
        comments = job.get("comments") or []
        root = next((c for c in comments if not c.get("in_reply_to_id")), comments[0] if comments else None)
        if root is None or not is_bot(root.get("user")):
            return "ignored: not a ptbot thread"
        marker = root.get("marker") or {}
        line_id = _line_for_comment(store, repo, number, int(root["id"]), marker)
        if line_id is None:
            return f"ignored: comment {root['id']} matches no scored line"
        sender = job.get("sender") or {}
        store.upsert_event(EventIn(
            key=f"thread:{root['id']}", scored_line_id=line_id, repo=repo, number=number, kind="thread",
            value=str(job["action"]), user_login=sender.get("login"), user_type=sender.get("type"),
            is_author=bool(job.get("author") and sender.get("login") == job.get("author")),
            external_id=int(root["id"])))
        return f"thread {job['action']}"
    if job["event"] == "pull_request_review_comment":
        c = job.get("comment") or {}
        if is_bot(c.get("user")):
            return "ignored: a bot's reply"
        line_id = _line_for_comment(store, repo, number, int(c["in_reply_to_id"]), {})
        if line_id is None and api is not None:
            line_id = link_comments(store, api, repo, number).get(int(c["in_reply_to_id"]))
        if line_id is None:
            return f"ignored: reply to {c['in_reply_to_id']}, which is not a known ptbot comment"
        login = (c.get("user") or {}).get("login")
        store.upsert_event(EventIn(
            key=f"reply:{c['id']}", scored_line_id=line_id, repo=repo, number=number, kind="reply",
            value="replied", user_login=login, user_type=(c.get("user") or {}).get("type"),
            is_author=bool(job.get("author") and login == job.get("author")),
            external_id=int(c["id"]), detail=str(c.get("body") or "")))
        return "reply"
    return f"ignored: event {job['event']!r}"


def _line_for_comment(store: LabelStore, repo: str, number: int, comment_id: int,
                      marker: Mapping[str, str]) -> int | None:
    """The scored line a ptbot comment is about (linking it on first sight via its marker)."""
    fp = marker.get("fp")
    if fp:
        return store.link_comment(repo, number, fp, marker.get("sha"), None, comment_id)
    linked = [ln.id for ln in store.lines(repo, number) if ln.comment_id == comment_id]
    return linked[0] if linked else None


# ----- implicit labels: later pushes and the merge --------------------------------------------


def unchanged_lines(old: str, new: str) -> set[int]:
    """1-based lines of ``old`` that survive verbatim (as part of an unchanged block) in ``new``."""
    a, b = old.split("\n"), new.split("\n")
    keep: set[int] = set()
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            keep.update(range(i1 + 1, i2 + 1))
    return keep


def apply_push(store: LabelStore, repo: str, number: int, new_head: str,
               read_text: Callable[[str, str], str | None], *, at_merge: bool) -> Counter[str]:
    """Label the PR's tracked lines against ``new_head``: changed -> positive; unchanged at the
    merge -> weak negative; unchanged before the merge -> still open (no event).

    Tracked lines: AI-authored (or unknown) scored lines, the first scoring of each fingerprint,
    that have no edit label yet. ``read_text(path, sha)`` is the file at a commit (None if gone).
    """
    first: dict[str, ScoredLineRow] = {}
    for ln in store.lines(repo, number):
        if ln.ai_authored is not False and ln.fingerprint not in first:
            first[ln.fingerprint] = ln
    done = {ev.scored_line_id for ev in store.events(repo, number, kind="edit")}
    todo = [ln for ln in first.values() if ln.id not in done and ln.head_sha != new_head]
    counts: Counter[str] = Counter()
    new_texts: dict[str, str | None] = {}
    for ln in todo:
        old = store.snapshot(repo, ln.head_sha, ln.path)
        if old is None:
            counts["no_snapshot"] += 1
            continue
        if ln.path not in new_texts:
            new_texts[ln.path] = read_text(ln.path, new_head)
            if new_texts[ln.path] is not None:
                store.save_snapshot(repo, new_head, ln.path, new_texts[ln.path])
        new = new_texts[ln.path]
        if new is not None and ln.line in unchanged_lines(old, new):
            if not at_merge:
                counts["open"] += 1
                continue
            value = "unchanged_at_merge"
        else:
            value = "changed"
        store.upsert_event(EventIn(key=f"edit:{ln.id}", scored_line_id=ln.id, repo=repo, number=number,
                                   kind="edit", value=value, detail=new_head))
        counts[value] += 1
    return counts


def handle_pull_request_job(store: LabelStore, job: Mapping[str, Any],
                            read_text: Callable[[str, str], str | None],
                            settings: FeedbackSettings | None = None) -> Counter[str]:
    """Implicit labels for a ``pull_request`` job (``synchronize`` or ``closed``)."""
    settings = settings or FeedbackSettings()
    repo, number = f"{job['owner']}/{job['repo']}", int(job["number"])
    row = store.pull_request(repo, number)
    if row is None:
        return Counter(untracked=1)  # ptbot never scored this PR
    head = str(job.get("head_sha") or "")
    if job.get("action") == "closed":
        merged = bool(job.get("merged"))
        counts = apply_push(store, repo, number, head, read_text, at_merge=True) if merged else Counter()
        # A sweep right away, and a last one closed_sweep_after later (late reactions).
        store.set_pull_request(repo, number, state="closed", merged=merged, closed_at=time.time(),
                               next_poll_at=time.time() if row.first_posted_at is not None else None,
                               head_sha=head or row.head_sha)
        return counts
    if job.get("action") == "synchronize" and head:
        return apply_push(store, repo, number, head, read_text, at_merge=False)
    return Counter()


# ----- labels, export, stats --------------------------------------------------------------------


@dataclass(frozen=True)
class LineLabel:
    """The combined evidence on one scored line."""

    weight: float
    kinds: tuple[str, ...]

    @property
    def positive(self) -> bool | None:
        """True: needed an edit; False: fine as written; None: no net evidence."""
        return None if self.weight == 0 else self.weight > 0


def line_labels(store: LabelStore, repo: str | None = None) -> dict[int, LineLabel]:
    """Scored line id -> label, for every line with at least one weighted event."""
    by_line: dict[int, list[LabelEventRow]] = defaultdict(list)
    for ev in store.events(repo):
        by_line[ev.scored_line_id].append(ev)
    out = {}
    for line_id, evs in by_line.items():
        changed = any(e.kind == "edit" and e.value == "changed" for e in evs)
        weight = 0.0
        for e in evs:
            if e.kind == "thread" and e.value == "resolved" and changed:
                continue  # resolved because it was fixed, not because ptbot was wrong
            weight += EVENT_WEIGHTS.get((e.kind, e.value), 0.0)
        out[line_id] = LineLabel(weight, tuple(sorted({f"{e.kind}:{e.value}" for e in evs})))
    return out


@dataclass
class ExportSummary:
    records: int = 0
    positive_lines: int = 0
    negative_lines: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def export_records(store: LabelStore, repo: str | None = None) -> tuple[list[Record], ExportSummary]:
    """Records in the shared dataset schema: one per scored file snapshot with a positive line.

    ``code`` is the file as scored, ``fixed`` the same file after the edit (the push that
    changed a flagged line, else the PR's last head), ``buggy_lines`` the lines labelled
    positive; negatives go to ``meta``. A snapshot whose file never changed cannot be a record
    (the schema needs ``code != fixed``) and is counted in ``skipped``.
    """
    labels = line_labels(store, repo)
    lines = {ln.id: ln for ln in store.lines(repo) if ln.id in labels}
    groups: dict[tuple[str, int, str, str], list[ScoredLineRow]] = defaultdict(list)
    for ln in lines.values():
        groups[(ln.repo, ln.number, ln.head_sha, ln.path)].append(ln)
    edits = defaultdict(list)
    for ev in store.events(repo, kind="edit"):
        if ev.value == "changed" and ev.scored_line_id in lines:
            ln = lines[ev.scored_line_id]
            edits[(ln.repo, ln.number, ln.head_sha, ln.path)].append(ev.detail)
    summary, records = ExportSummary(), []
    for (r, number, head, path), rows in sorted(groups.items()):
        pos = sorted({ln.line for ln in rows if labels[ln.id].positive})
        neg = sorted({ln.line for ln in rows if labels[ln.id].positive is False})
        language = language_for_path(path)
        code = store.snapshot(r, head, path)
        if not pos:
            summary.skipped["no_positive_line"] += 1
            continue
        if language not in EXPORT_LANGUAGES or not code:
            summary.skipped["language_or_text_missing"] += 1
            continue
        pr = store.pull_request(r, number)
        fixed = None
        for sha in edits.get((r, number, head, path), []) + ([pr.head_sha] if pr else []):
            text = store.snapshot(r, sha, path)
            if text and text != code:
                fixed = text
                break
        if fixed is None:
            summary.skipped["file_never_changed"] += 1
            continue
        n_lines = len(source_lines(code))
        pos = [n for n in pos if 1 <= n <= n_lines]
        records.append(Record(
            id=f"ptbot-feedback/{r}#{number}/{path}@{head[:12]}", source="ptbot-feedback",
            language=language, task="edit", code=code, fixed=fixed, buggy_lines=tuple(pos),
            meta={"license": "", "url": f"https://github.com/{r}/pull/{number}", "repo": r,
                  "number": number, "head_sha": head, "path": path,
                  "model_versions": sorted({ln.model_version for ln in rows}),
                  "negative_lines": neg,
                  "evidence": {str(ln.line): list(labels[ln.id].kinds)
                               for ln in sorted(rows, key=lambda x: x.line)}}))
        summary.records += 1
        summary.positive_lines += len(pos)
        summary.negative_lines += len(neg)
    return records, summary


def write_export(store: LabelStore, out: Path, repo: str | None = None) -> ExportSummary:
    """``ptbot feedback export --out FILE.jsonl``: the records of ``export_records`` as JSONL."""
    records, summary = export_records(store, repo)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec.to_dict(), ensure_ascii=False) + "\n")
    log.info("exported %d record(s) to %s (skipped: %s)", summary.records, out, dict(summary.skipped))
    return summary


@dataclass
class FeedbackStats:
    """``ptbot feedback stats``: label counts and precision@k per repo and model version."""

    k: int
    events: Counter[str] = field(default_factory=Counter)
    """``kind:value`` -> events."""
    per_model: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    """(repo, model version) -> scored, labelled, positive, precision_at_k (NaN if no label)."""


def feedback_stats(store: LabelStore, repo: str | None = None, k: int = 5) -> FeedbackStats:
    """Precision@k: over every scored head, among its ``k`` best-ranked lines that carry a
    label, the fraction labelled positive (pooled per repo and model version)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    stats = FeedbackStats(k)
    for ev in store.events(repo):
        stats.events[f"{ev.kind}:{ev.value}"] += 1
    labels = line_labels(store, repo)
    heads: dict[tuple[str, str, int, str], list[ScoredLineRow]] = defaultdict(list)
    for ln in store.lines(repo):
        heads[(ln.repo, ln.model_version, ln.number, ln.head_sha)].append(ln)
    agg: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for (r, version, _, _), rows in heads.items():
        c = agg[(r, version)]
        c["scored"] += len(rows)
        labelled = [ln for ln in sorted(rows, key=lambda x: x.rank)
                    if ln.id in labels and labels[ln.id].positive is not None]
        c["labelled"] += len(labelled)
        c["positive"] += sum(1 for ln in labelled if labels[ln.id].positive)
        top = labelled[:k]
        c["top_labelled"] += len(top)
        c["top_positive"] += sum(1 for ln in top if labels[ln.id].positive)
    for key, c in sorted(agg.items()):
        stats.per_model[key] = {"scored": c["scored"], "labelled": c["labelled"], "positive": c["positive"],
                                "precision_at_k": c["top_positive"] / c["top_labelled"]
                                if c["top_labelled"] else float("nan")}
    return stats


def plot_stats(stats: FeedbackStats, out: Path) -> Path:
    """A PNG: label events by kind (left), precision@k per repo and model version (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    kinds = sorted(stats.events)
    left.barh(kinds or ["(none)"], [stats.events[k] for k in kinds] or [0], color="#4c72b0")
    left.set_title("label events")
    left.set_xlabel("events")
    names = [f"{r}\n{v}" for r, v in stats.per_model]
    values = [0.0 if m["precision_at_k"] != m["precision_at_k"] else m["precision_at_k"]
              for m in stats.per_model.values()]
    right.bar(names or ["(none)"], values or [0.0], color="#dd8452")
    right.set_ylim(0, 1)
    right.set_title(f"precision@{stats.k} (labelled lines)")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def pr_text_reader(pr: Any) -> Callable[[str, str], str | None]:
    """``read_text`` for ``apply_push`` over a ``GitHubPullRequest``: None when the file is gone."""

    def read(path: str, sha: str) -> str | None:
        try:
            return pr.file_text(path, sha)
        except Exception as e:  # PyGithub's GithubException; only bot.github imports PyGithub
            if getattr(e, "status", None) == 404:
                return None
            raise

    return read
