"""Tidying ptbot's own earlier output after a push: resolve stale threads, minimise old summaries.

After a new head is reviewed, an inline thread ptbot opened on an earlier head is stale when
GitHub marks it outdated (the code under it changed) or when its finding is no longer flagged on
the new head. Such threads are RESOLVED, and review summaries that a newer ptbot summary replaced
are MINIMISED as ``OUTDATED``. Nothing is ever deleted: a thread keeps its
replies and reactions, which are reviewers' labels, and resolving or minimising can be
undone in the UI. Threads that a person started are never touched, whatever markers they quote.

The deciding functions are pure (``threads_to_resolve``, ``summaries_to_minimize``); ``clean_up``
applies them through a small ``CleanupAPI`` (``bot.github.GitHubPullRequest``) and never raises:
a tidy-up must not fail the review it follows.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.render import parse_marker, parse_markers

log = logging.getLogger(__name__)


def same_login(a: str | None, b: str | None) -> bool:
    """Whether two logins name the same account. REST calls an App's bot ``name[bot]``, GraphQL
    calls the same bot ``name``; logins are case-insensitive."""
    if not a or not b:
        return False

    def norm(login: str) -> str:
        login = login.strip().lower()
        return login[:-5] if login.endswith("[bot]") else login

    return norm(a) == norm(b)


@dataclass(frozen=True)
class ThreadComment:
    """One comment of a review thread, as the GraphQL ``reviewThreads`` query returns it."""

    database_id: int | None
    """The REST id of the comment."""
    body: str
    author: str | None
    """Login (GraphQL spelling, so a bot has no ``[bot]`` suffix); None for a deleted account."""
    reactions: int = 0
    """Reactions of every kind on the comment."""


@dataclass(frozen=True)
class ReviewThread:
    """An inline review thread: its first comment opened it, the rest are replies."""

    id: str
    """GraphQL node id (``PRRT_...``), what ``resolveReviewThread`` takes."""
    is_resolved: bool
    is_outdated: bool
    """GitHub's own judgement: the diff under the thread changed since it was opened."""
    path: str
    line: int | None
    comments: tuple[ThreadComment, ...]

    @classmethod
    def from_graphql(cls, node: Mapping[str, Any]) -> ReviewThread:
        comments = tuple(
            ThreadComment(database_id=c.get("databaseId"), body=c.get("body") or "",
                          author=(c.get("author") or {}).get("login"),
                          reactions=sum(int(((g.get("reactors") or g.get("users") or {}).get("totalCount")) or 0)
                                        for g in c.get("reactionGroups") or []))
            for c in ((node.get("comments") or {}).get("nodes") or []))
        return cls(id=str(node["id"]), is_resolved=bool(node.get("isResolved")),
                   is_outdated=bool(node.get("isOutdated")), path=node.get("path") or "",
                   line=node.get("line"), comments=comments)

    @property
    def fingerprint(self) -> str | None:
        """The ``fp`` of the ptbot marker in the opening comment, if it has one."""
        if not self.comments:
            return None
        return parse_marker(self.comments[0].body).get("fp") or None

    def started_by(self, login: str) -> bool:
        return bool(self.comments) and same_login(self.comments[0].author, login)

    def has_feedback(self, login: str) -> bool:
        """Anyone but ``login`` replied, or anybody reacted: the thread holds labels."""
        return any(c.reactions for c in self.comments) or any(
            not same_login(c.author, login) for c in self.comments[1:])


@dataclass(frozen=True)
class ReviewSummary:
    """A submitted review (its body is the summary), as the GraphQL ``reviews`` query returns it."""

    id: str
    """GraphQL node id (``PRR_...``), what ``minimizeComment`` takes."""
    database_id: int | None
    body: str
    author: str | None
    commit_sha: str | None
    """The head the review was posted on."""
    is_minimized: bool = False

    @classmethod
    def from_graphql(cls, node: Mapping[str, Any]) -> ReviewSummary:
        return cls(id=str(node["id"]), database_id=node.get("databaseId"), body=node.get("body") or "",
                   author=(node.get("author") or {}).get("login"),
                   commit_sha=(node.get("commit") or {}).get("oid"),
                   is_minimized=bool(node.get("isMinimized")))


def is_ptbot_thread(thread: ReviewThread, bot_login: str) -> bool:
    """Opened by ptbot itself: the first comment is the bot's AND carries ptbot's marker (a person
    quoting a marker, or another bot, does not make a thread ptbot's)."""
    return thread.started_by(bot_login) and thread.fingerprint is not None


def threads_to_resolve(threads: Iterable[ReviewThread], current_flags: Collection[str],
                       bot_login: str) -> list[ReviewThread]:
    """ptbot's open threads that are stale on the new head.

    ``current_flags`` are the fingerprints ptbot still flags on the new head. A thread is
    stale when its fingerprint is no longer flagged: fingerprints hash the line's content, so a
    changed or deleted line is stale while a line that only moved is not. GitHub's ``isOutdated``
    alone is not enough: it also marks threads whose hunk merely changed around a line ptbot still
    flags, and resolving those would hide a live finding that is never posted again (its
    fingerprint counts as posted). Threads already resolved (by anyone) are left alone, so a
    redelivery resolves nothing twice.
    """
    out = []
    for t in threads:
        if t.is_resolved or not is_ptbot_thread(t, bot_login):
            continue
        if t.fingerprint not in current_flags:
            out.append(t)
    return out


def is_ptbot_summary(review: ReviewSummary, bot_login: str) -> bool:
    """A review ptbot posted: the bot's, with ptbot's review marker in the body (not necessarily
    the last marker: findings moved to the body follow it with their own)."""
    return same_login(review.author, bot_login) and any(m.get("kind") == "review" for m in parse_markers(review.body))


def summaries_to_minimize(reviews: Sequence[ReviewSummary], head_sha: str, bot_login: str) -> list[ReviewSummary]:
    """ptbot's visible summaries that a newer ptbot summary replaced.

    ``reviews`` are in GitHub's order (oldest first). The newest ptbot summary stays visible even
    when it belongs to an older head (nothing new was posted for this one, and the summary is
    still the latest word in the conversation); so does every summary of ``head_sha``.
    """
    mine = [r for r in reviews if is_ptbot_summary(r, bot_login)]
    return [r for r in mine[:-1] if not r.is_minimized and r.commit_sha != head_sha]


class CleanupAPI(Protocol):
    """What ``clean_up`` needs of one pull request (``bot.github.GitHubPullRequest``)."""

    def bot_login(self) -> str:
        """The login ptbot posts as."""
        ...

    def review_threads(self) -> list[ReviewThread]: ...

    def resolve_thread(self, thread_id: str) -> None: ...

    def review_summaries(self) -> list[ReviewSummary]: ...

    def minimize_comment(self, node_id: str, classifier: str = "OUTDATED") -> None: ...


@dataclass
class CleanupResult:
    """What ``clean_up`` did, for logs and tests."""

    resolved: list[str] = field(default_factory=list)
    """Node ids of the threads resolved."""
    minimized: list[str] = field(default_factory=list)
    """Node ids of the summaries minimised."""
    kept_with_feedback: int = 0
    """Resolved threads that carry replies or reactions (kept, as every thread is)."""
    errors: list[str] = field(default_factory=list)
    """What failed, in words (cleanup goes on, or stops on a missing permission)."""


def clean_up(api: CleanupAPI, head_sha: str, current_flags: Collection[str], *,
             where: str = "") -> CleanupResult:
    """Resolve ptbot's stale threads and minimise its replaced summaries; never raises.

    A missing permission (GraphQL ``FORBIDDEN``) stops the step it hit with one warning: the
    installation simply cannot tidy up, and the review itself is already posted.
    """
    result = CleanupResult()
    where = where or "pull request"
    try:
        login = api.bot_login()
    except Exception as e:  # noqa: BLE001 - a tidy-up must never fail the review
        result.errors.append(f"bot login: {e}")
        log.warning("%s: cleanup skipped, ptbot's own login is unknown (%s)", where, e)
        return result

    try:
        stale = threads_to_resolve(api.review_threads(), current_flags, login)
    except Exception as e:  # noqa: BLE001
        stale = []
        _failed(result, where, "reading review threads", e)
    for t in stale:
        try:
            api.resolve_thread(t.id)
        except Exception as e:  # noqa: BLE001
            if _failed(result, where, f"resolving thread {t.id} ({t.path}:{t.line})", e):
                break
            continue
        result.resolved.append(t.id)
        result.kept_with_feedback += t.has_feedback(login)

    try:
        old = summaries_to_minimize(api.review_summaries(), head_sha, login)
    except Exception as e:  # noqa: BLE001
        old = []
        _failed(result, where, "reading reviews", e)
    for r in old:
        try:
            api.minimize_comment(r.id, "OUTDATED")
        except Exception as e:  # noqa: BLE001
            if _failed(result, where, f"minimising review {r.database_id or r.id}", e):
                break
            continue
        result.minimized.append(r.id)

    if result.resolved or result.minimized:
        log.info("%s: resolved %d stale ptbot thread(s) (%d with replies or reactions, kept), "
                 "minimised %d old summary(ies)", where, len(result.resolved), result.kept_with_feedback,
                 len(result.minimized))
    return result


def _failed(result: CleanupResult, where: str, what: str, e: Exception) -> bool:
    """Record a failure; True when it is a missing permission (no point trying the rest)."""
    forbidden = bool(getattr(e, "forbidden", False)) or getattr(e, "status", None) == 403
    result.errors.append(f"{what}: {e}")
    if forbidden:
        log.warning("%s: %s was refused (%s); grant the App 'Pull requests: write' for cleanup", where, what, e)
    else:
        log.warning("%s: %s failed: %s", where, what, e)
    return forbidden
