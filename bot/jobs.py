"""The jobs the webhook hands to workers: typed, frozen, built only from validated events.

A job carries identifiers and the few facts a worker needs, never a raw payload, token or diff.
It crosses the queue as its JSON document (``job.to_json()``) and every task reads it back with
``read_job`` before doing anything, so a worker never acts on a job that does not fit its schema
(an old message, a hand-made one). Jobs read like read-only dicts (``bot.schema.Fields``), so the
review pipeline reads ``job["owner"]`` or ``job.get("force")`` from the typed value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Any, Literal

from bot.events import (
    CheckRunEvent,
    InstallationEvent,
    PullRequest,
    PullRequestEvent,
    Repository,
    ReviewCommentEvent,
    ReviewThreadEvent,
    User,
)
from bot.render import parse_marker
from bot.schema import Fields, Id, PayloadError, Sha, read, record

REPLY_BODY_CHARS = 500  # a reply is kept as a label's detail, not as a transcript


@record
class ReviewJob(Fields):
    """Review work on one pull request: a push or (re)open (``review``), a close or merge
    (``closed``, label work only), or a check-run re-run (``rescore``: ``numbers`` names its pull
    requests, each fanned out as a forced job with ``number`` set)."""

    kind: Literal["review", "closed", "rescore"]
    event: str
    action: str
    installation_id: Id
    owner: str
    repo: str
    head_sha: Sha
    repo_id: Id | None = None
    default_branch: str | None = None
    number: Id | None = None
    head_ref: str = ""
    head_repo: str | None = None
    base_ref: str = ""
    draft: bool = False
    merged: bool = False
    author: str | None = None
    labels: tuple[str, ...] = ()
    check_run_id: Id | None = None
    external_id: str | None = None
    numbers: tuple[Id, ...] = ()
    requested_action: str | None = None
    force: bool = False
    """Run even when this head was already reviewed by this model (a re-run was asked for)."""
    delivery: str | None = None

    def __post_init__(self) -> None:
        if self.kind != "rescore" and self.number is None:
            raise PayloadError("number", f"is required for a {self.kind} job")


@record
class InstallationJob(Fields):
    """The App was installed, removed, or given or denied repositories."""

    kind: Literal["installation"]
    event: str
    action: str
    installation_id: Id
    account: str | None = None
    repositories: tuple[str, ...] = ()
    repositories_added: tuple[str, ...] = ()
    repositories_removed: tuple[str, ...] = ()
    delivery: str | None = None


@record
class Person(Fields):
    login: str | None = None
    type: str | None = None


@record
class ThreadComment(Fields):
    id: Id
    user: Person
    in_reply_to_id: Id | None = None
    marker: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """The fields of the ptbot marker in the comment's body ({} when it has none)."""


@record
class Reply(Fields):
    id: Id
    in_reply_to_id: Id
    user: Person
    body: str = ""


@record
class FeedbackJob(Fields):
    """A reviewer resolved a thread on a ptbot comment, or replied to one."""

    kind: Literal["feedback"]
    event: Literal["pull_request_review_thread", "pull_request_review_comment"]
    action: str
    installation_id: Id
    repo_full_name: str
    number: Id
    sender: Person
    author: str | None = None
    comments: tuple[ThreadComment, ...] = ()
    comment: Reply | None = None
    delivery: str | None = None


Job = ReviewJob | InstallationJob | FeedbackJob
_KINDS: dict[str, type] = {"review": ReviewJob, "closed": ReviewJob, "rescore": ReviewJob,
                           "installation": InstallationJob, "feedback": FeedbackJob}


def read_job(data: Any) -> Job:
    """A job's JSON document (as the queue carries it) read back into its type; PayloadError when
    it does not fit. Keys a job type does not declare are ignored."""
    if isinstance(data, Fields):
        return data  # type: ignore[return-value]
    kind = data.get("kind") if isinstance(data, Mapping) else None
    if kind not in _KINDS:
        raise PayloadError("kind", f"expected one of {', '.join(map(repr, _KINDS))}, got {kind!r}"[:120])
    return read(_KINDS[kind], data)


# ----- from events --------------------------------------------------------------------------------


def _person(user: User | None) -> Person:
    return Person(login=user.login, type=user.type) if user else Person()


def _repo_fields(repo: Repository) -> dict[str, Any]:
    return {"repo_id": repo.id, "owner": repo.owner_login, "repo": repo.name,
            "default_branch": repo.default_branch}


def pull_request_facts(pr: PullRequest) -> dict[str, Any]:
    """What a review job says about its pull request (from a webhook or the REST API)."""
    return {"number": pr.number, "head_sha": pr.head.sha, "head_ref": pr.head.ref,
            "head_repo": pr.head.repo.full_name if pr.head.repo else None,
            "base_ref": pr.base.ref if pr.base else "", "draft": pr.draft, "merged": pr.merged,
            "author": pr.user.login if pr.user else None, "labels": tuple(lab.name for lab in pr.labels)}


def pull_request_job(ev: PullRequestEvent, installation_id: int) -> ReviewJob:
    """The job of a handled ``pull_request`` delivery."""
    return ReviewJob(event="pull_request", action=ev.action, installation_id=installation_id,
                     kind="closed" if ev.action == "closed" else "review",
                     **_repo_fields(ev.repository), **{**pull_request_facts(ev.pull_request),
                                                      "number": ev.pr_number})


def check_run_job(ev: CheckRunEvent) -> ReviewJob:
    """The job of a check-run re-run (its pull requests are named by number, if GitHub knows them)."""
    run = ev.check_run
    return ReviewJob(event="check_run", action=ev.action, installation_id=ev.installation.id, kind="rescore",
                     **_repo_fields(ev.repository), check_run_id=run.id, head_sha=run.head_sha,
                     external_id=run.external_id,
                     numbers=tuple(p.number for p in run.pull_requests if p.number is not None),
                     requested_action=ev.requested_action.identifier if ev.requested_action else None)


def installation_job(event: str, ev: InstallationEvent) -> InstallationJob:
    """The job of an ``installation`` or ``installation_repositories`` delivery."""
    return InstallationJob(
        kind="installation", event=event, action=ev.action, installation_id=ev.installation.id,
        account=ev.installation.account.login if ev.installation.account else None,
        repositories=tuple(r.full_name for r in ev.repositories),
        repositories_added=tuple(r.full_name for r in ev.repositories_added),
        repositories_removed=tuple(r.full_name for r in ev.repositories_removed))


def feedback_job_for(ev: ReviewThreadEvent | ReviewCommentEvent) -> FeedbackJob | None:
    """The job of a thread resolution or a reply, or None for a comment that replies to nothing."""
    base = {"kind": "feedback", "action": ev.action, "installation_id": ev.installation.id,
            "repo_full_name": ev.repository.slug, "number": ev.pull_request.number,
            "author": ev.pull_request.user.login if ev.pull_request.user else None,
            "sender": _person(ev.sender)}
    if isinstance(ev, ReviewThreadEvent):
        comments = tuple(ThreadComment(id=c.id, in_reply_to_id=c.in_reply_to_id, user=_person(c.user),
                                       marker=MappingProxyType(parse_marker(c.body)))
                         for c in ev.thread.comments)
        return FeedbackJob(event="pull_request_review_thread", comments=comments, **base)
    c = ev.comment
    if c.in_reply_to_id is None:
        return None
    return FeedbackJob(event="pull_request_review_comment", **base, comment=Reply(
        id=c.id, in_reply_to_id=c.in_reply_to_id, user=_person(c.user), body=c.body[:REPLY_BODY_CHARS]))
