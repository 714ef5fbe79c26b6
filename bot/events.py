"""The webhook events ptbot handles, as the fields it reads from them (``bot.schema`` rules).

``read_event(event, payload)`` gives the typed, frozen event for a delivery ptbot acts on, None
for one it ignores (another event, or an action it does not handle), and raises
``PayloadError`` when a handled delivery lacks a field ptbot needs or holds the wrong type there.
Whatever a schema leaves out is never read, so GitHub may add or change it freely.
"""

from __future__ import annotations

from typing import Any

from bot.schema import Id, PayloadError, Sha, read, schema

PR_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review", "closed"})
CHECK_RUN_ACTIONS = frozenset({"rerequested", "requested_action"})
INSTALLATION_EVENTS = frozenset({"installation", "installation_repositories"})
THREAD_ACTIONS = frozenset({"resolved", "unresolved"})
REPLY_ACTIONS = frozenset({"created"})


@schema
class Envelope:
    """What every delivery is read for before ptbot knows whether it handles it."""

    action: str = ""


@schema
class User:
    login: str | None = None
    type: str | None = None


@schema
class Installation:
    id: Id
    account: User | None = None


@schema
class Repository:
    name: str
    id: Id | None = None
    full_name: str | None = None
    owner: User | None = None
    default_branch: str | None = None

    def __post_init__(self) -> None:
        if not self.owner_login:
            raise PayloadError("owner.login", "is required (full_name names no owner either)")

    @property
    def owner_login(self) -> str:
        """The owner's login, or the part of ``full_name`` before the slash (older payloads)."""
        if self.owner and self.owner.login:
            return self.owner.login
        return (self.full_name or "").split("/")[0]

    @property
    def slug(self) -> str:
        """``owner/name``."""
        return self.full_name or f"{self.owner_login}/{self.name}"


@schema
class RepoName:
    full_name: str


@schema
class Head:
    sha: Sha
    ref: str = ""
    repo: RepoName | None = None  # null when the fork was deleted


@schema
class BaseRef:
    ref: str = ""


@schema
class Label:
    name: str = ""


@schema
class PullRequest:
    """A pull request object, as a webhook carries it or the REST API returns it."""

    head: Head
    number: Id | None = None
    base: BaseRef | None = None
    draft: bool = False
    merged: bool = False
    user: User | None = None
    labels: tuple[Label, ...] = ()


@schema
class PullRequestEvent:
    action: str
    repository: Repository
    pull_request: PullRequest
    installation: Installation | None = None  # absent in a workflow's event payload
    number: Id | None = None

    def __post_init__(self) -> None:
        if self.pr_number is None:
            raise PayloadError("pull_request.number", "is required")

    @property
    def pr_number(self) -> int | None:
        return self.pull_request.number if self.pull_request.number is not None else self.number


@schema
class PullNumber:
    number: Id | None = None


@schema
class CheckRun:
    id: Id
    head_sha: Sha
    external_id: str | None = None
    pull_requests: tuple[PullNumber, ...] = ()  # empty for a fork's pull request


@schema
class RequestedAction:
    identifier: str | None = None


@schema
class CheckRunEvent:
    action: str
    installation: Installation
    repository: Repository
    check_run: CheckRun
    requested_action: RequestedAction | None = None


@schema
class InstallationEvent:
    """``installation`` and ``installation_repositories``."""

    installation: Installation
    action: str = ""
    repositories: tuple[RepoName, ...] = ()
    repositories_added: tuple[RepoName, ...] = ()
    repositories_removed: tuple[RepoName, ...] = ()


@schema
class PullAuthor:
    number: Id
    user: User | None = None


@schema
class ReviewComment:
    id: Id
    in_reply_to_id: Id | None = None
    user: User | None = None
    body: str = ""


@schema
class Thread:
    comments: tuple[ReviewComment, ...] = ()


@schema
class ReviewThreadEvent:
    """``pull_request_review_thread`` resolved / unresolved."""

    action: str
    installation: Installation
    repository: Repository
    pull_request: PullAuthor
    thread: Thread
    sender: User | None = None


@schema
class ReviewCommentEvent:
    """``pull_request_review_comment`` created (a reply when ``in_reply_to_id`` is set)."""

    action: str
    installation: Installation
    repository: Repository
    pull_request: PullAuthor
    comment: ReviewComment
    sender: User | None = None


Event = PullRequestEvent | CheckRunEvent | InstallationEvent | ReviewThreadEvent | ReviewCommentEvent


def handled_schema(event: str, action: str) -> type | None:
    """The schema of ``event.action`` when ptbot acts on it, else None."""
    if event == "pull_request" and action in PR_ACTIONS:
        return PullRequestEvent
    if event == "check_run" and action in CHECK_RUN_ACTIONS:
        return CheckRunEvent
    if event in INSTALLATION_EVENTS:
        return InstallationEvent
    if event == "pull_request_review_thread" and action in THREAD_ACTIONS:
        return ReviewThreadEvent
    if event == "pull_request_review_comment" and action in REPLY_ACTIONS:
        return ReviewCommentEvent
    return None


def read_action(payload: Any) -> str:
    """The delivery's ``action`` ("" when it has none); PayloadError when it is not a string."""
    return read(Envelope, payload).action


def read_event(event: str, payload: Any) -> Event | None:
    """The typed event of a delivery ptbot handles, None for one it ignores, PayloadError for a
    handled one that does not fit its schema."""
    schema_ = handled_schema(event, read_action(payload))
    return read(schema_, payload) if schema_ is not None else None
