"""The fake GitHub's GraphQL endpoint (``POST /graphql``, ``/api/graphql`` on Enterprise).

It answers the few documents ptbot sends, recognised by the fields they ask for rather than
parsed: ``viewer { login }``, a pull request's ``reviewThreads`` and ``reviews`` (paged with
``after`` cursors), and the ``resolveReviewThread`` and ``minimizeComment`` mutations. Anything
else gets a GraphQL error, as an unknown field would on GitHub. Answers have GitHub's shape:
HTTP 200 with ``data``, or with ``errors`` (``type`` FORBIDDEN / NOT_FOUND) when it fails.

Threads are derived from the fake's REST review comments: one thread per top-level comment,
with the comments that reply to it (``in_reply_to_id``). A thread is OUTDATED when its line is no
longer on the right side of the PR's current diff, when the text of that line changed between
the comment's commit and the head (simplified: GitHub moves a comment whose line merely shifted),
or when a test marks it with ``mark_outdated``. Node ids are ``PRRT_fake<first comment id>``,
``PRRC_fake<comment id>`` and ``PRR_fake<review id>``, so a comment id is never a thread id.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fake_github import FakeGitHub, FakePull, FakeRepo

REACTION_ENUM = {"+1": "THUMBS_UP", "-1": "THUMBS_DOWN", "laugh": "LAUGH", "hooray": "HOORAY",
                 "confused": "CONFUSED", "heart": "HEART", "rocket": "ROCKET", "eyes": "EYES"}
CLASSIFIERS = {"SPAM", "ABUSE", "OFF_TOPIC", "OUTDATED", "DUPLICATE", "RESOLVED", "LOW_QUALITY"}
_FIRST = re.compile(r"(reviewThreads|reviews)\s*\(\s*first\s*:\s*(\d+)")


class FakeGraphQL:
    """GraphQL state beside the REST state of one ``FakeGitHub``."""

    def __init__(self, fake: FakeGitHub) -> None:
        self.fake = fake
        self.resolved: set[int] = set()
        """Threads resolved, by the id of their first comment."""
        self.outdated: set[int] = set()
        """Threads a test marked outdated, by the id of their first comment."""
        self.minimized: dict[str, str] = {}
        """Node id -> classifier of every minimised review or comment."""
        self.mutations: list[tuple[str, dict[str, Any]]] = []
        """Every mutation received, (name, variables), refused ones included."""
        self.forbidden: set[str] = set()
        """Mutation names answered with FORBIDDEN (a token without the permission)."""
        self.page_size = 100
        """Largest page served, whatever ``first`` asks (lower it to exercise paging)."""

    # -- test helpers -----------------------------------------------------------------------

    def mark_outdated(self, comment_id: int) -> None:
        self.outdated.add(comment_id)

    def resolve(self, comment_id: int) -> None:
        """Resolve the thread of ``comment_id`` as a person would in the UI."""
        self.resolved.add(self._root(comment_id)["id"])

    def thread_of(self, comment_id: int) -> dict[str, Any]:
        """The GraphQL node of the thread that holds ``comment_id``."""
        root = self._root(comment_id)
        repo, pull = self._pull_of(root)
        return self._thread(repo, pull, root)

    # -- the endpoint -----------------------------------------------------------------------

    def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        query = str(payload.get("query") or "")
        variables = dict(payload.get("variables") or {})
        if re.match(r"\s*mutation\b", query):
            name = next((n for n in ("resolveReviewThread", "minimizeComment") if n in query), None)
            self.mutations.append((name or query.strip()[:60], variables))
            if name is None:
                return _error("UNDEFINED", "the fake GitHub does not implement this mutation")
            if name in self.forbidden:
                return _error("FORBIDDEN", "Resource not accessible by integration", name)
            if name == "resolveReviewThread":
                return self._resolve(str(variables.get("id", "")))
            return self._minimize(str(variables.get("id", "")), str(variables.get("classifier", "")))
        if "viewer" in query:
            from fake_github import BOT_LOGIN

            return {"data": {"viewer": {"login": BOT_LOGIN}}}
        m = _FIRST.search(query)
        if m is None:
            return _error("UNDEFINED", "the fake GitHub does not answer this query")
        repo = self.fake.repos.get(f"{variables.get('owner')}/{variables.get('name')}")
        if repo is None:
            return {"data": {"repository": None}, **_error("NOT_FOUND", "Could not resolve to a Repository")}
        pull = repo.pulls.get(int(variables.get("number") or 0))
        if pull is None:
            return {"data": {"repository": {"pullRequest": None}},
                    **_error("NOT_FOUND", "Could not resolve to a PullRequest")}
        if m.group(1) == "reviewThreads":
            nodes = [self._thread(repo, pull, c) for c in self._comments(repo, pull) if not c.get("in_reply_to_id")]
        else:
            nodes = [self._review(r) for r in self.fake.reviews if r["_repo"] == repo.id and r["_pull"] == pull.number]
        start = int(variables.get("cursor") or 0)
        size = min(int(m.group(2)), self.page_size)
        page = nodes[start:start + size]
        more = start + size < len(nodes)
        return {"data": {"repository": {"pullRequest": {m.group(1): {
            "pageInfo": {"hasNextPage": more, "endCursor": str(start + size) if page else None},
            "nodes": page}}}}}

    # -- mutations --------------------------------------------------------------------------

    def _resolve(self, node_id: str) -> dict[str, Any]:
        cid = _id_of(node_id, "PRRT_fake")
        root = next((c for c in self.fake.review_comments if c["id"] == cid and not c.get("in_reply_to_id")), None)
        if root is None:
            return {"data": {"resolveReviewThread": None},
                    **_error("NOT_FOUND", f"Could not resolve to PullRequestReviewThread node with the global id "
                                          f"of '{node_id}'", "resolveReviewThread")}
        self.resolved.add(cid)
        return {"data": {"resolveReviewThread": {"thread": {"id": node_id, "isResolved": True}}}}

    def _minimize(self, node_id: str, classifier: str) -> dict[str, Any]:
        if classifier not in CLASSIFIERS:
            return _error("INVALID", f"Argument 'classifier' has an invalid value ({classifier})", "minimizeComment")
        if node_id.startswith("PRR_fake"):
            known = any(r["id"] == _id_of(node_id, "PRR_fake") for r in self.fake.reviews)
        else:
            known = any(c["id"] == _id_of(node_id, "PRRC_fake") for c in self.fake.review_comments)
        if not known:
            return {"data": {"minimizeComment": None},
                    **_error("NOT_FOUND", f"Could not resolve to a node with the global id of '{node_id}'",
                             "minimizeComment")}
        self.minimized[node_id] = classifier
        return {"data": {"minimizeComment": {"minimizedComment": {"isMinimized": True,
                                                                  "minimizedReason": classifier.lower()}}}}

    # -- state as GraphQL nodes ----------------------------------------------------------------

    def _comments(self, repo: FakeRepo, pull: FakePull) -> list[dict[str, Any]]:
        return [c for c in self.fake.review_comments if c["_repo"] == repo.id and c["_pull"] == pull.number]

    def _root(self, comment_id: int) -> dict[str, Any]:
        by_id = {c["id"]: c for c in self.fake.review_comments}
        c = by_id[comment_id]
        while c.get("in_reply_to_id"):
            c = by_id[c["in_reply_to_id"]]
        return c

    def _pull_of(self, comment: dict[str, Any]) -> tuple[FakeRepo, FakePull]:
        repo = next(r for r in self.fake.repos.values() if r.id == comment["_repo"])
        return repo, repo.pulls[comment["_pull"]]

    def _thread(self, repo: FakeRepo, pull: FakePull, root: dict[str, Any]) -> dict[str, Any]:
        replies = [c for c in self._comments(repo, pull) if c.get("in_reply_to_id") == root["id"]]
        outdated = self._is_outdated(repo, pull, root)
        return {"id": f"PRRT_fake{root['id']}", "isResolved": root["id"] in self.resolved,
                "isOutdated": outdated, "path": root["path"], "line": None if outdated else root["line"],
                "comments": {"nodes": [self._comment(c) for c in [root, *replies]]}}

    def _comment(self, c: dict[str, Any]) -> dict[str, Any]:
        reactions = self.fake.reactions.get(c["id"], [])
        return {"databaseId": c["id"], "body": c["body"], "author": _author(c.get("user")),
                "reactionGroups": [{"content": enum, "reactors": {"totalCount": sum(
                    1 for r in reactions if r["content"] == content)}} for content, enum in REACTION_ENUM.items()]}

    def _review(self, r: dict[str, Any]) -> dict[str, Any]:
        node_id = f"PRR_fake{r['id']}"
        return {"id": node_id, "databaseId": r["id"], "body": r["body"], "isMinimized": node_id in self.minimized,
                "author": _author(r.get("user")), "commit": {"oid": r["commit_id"]}}

    def _is_outdated(self, repo: FakeRepo, pull: FakePull, c: dict[str, Any]) -> bool:
        from fake_github import hunk_anchors

        if c["id"] in self.outdated:
            return True
        f = next((f for f in pull.files if f.filename == c["path"]), None)
        if f is None or not f.patch or not any(c["line"] in right for right, _ in hunk_anchors(f.patch)):
            return True
        then = repo.contents.get((c.get("commit_id"), c["path"]))
        now = repo.contents.get((pull.head_sha, c["path"]))
        if then is None or now is None:
            return False
        line = c["line"] - 1
        then_lines, now_lines = then.split("\n"), now.split("\n")
        return line >= len(now_lines) or line >= len(then_lines) or then_lines[line] != now_lines[line]


def add_review_comment(fake: FakeGitHub, owner: str, name: str, number: int, *, body: str, login: str,
                       path: str | None = None, line: int | None = None, in_reply_to: int | None = None,
                       user_type: str = "User") -> dict[str, Any]:
    """A review comment written by someone else: a new thread on ``path:line``, or a reply."""
    repo = fake.repos[f"{owner}/{name}"]
    pull = repo.pulls[number]
    comment = copy.deepcopy(fake.templates["review_comment"])
    if in_reply_to is not None:
        parent = next(c for c in fake.review_comments if c["id"] == in_reply_to)
        path, line = parent["path"], parent["line"]
    comment.update(id=next(fake._ids), path=path, line=line, side="RIGHT", body=body, commit_id=pull.head_sha,
                   in_reply_to_id=in_reply_to, user=dict(comment["user"], login=login, type=user_type),
                   _repo=repo.id, _pull=number)
    fake.review_comments.append(comment)
    return comment


def add_reaction(fake: FakeGitHub, comment_id: int, content: str, login: str) -> None:
    reaction = copy.deepcopy(fake.templates["reaction"])
    reaction.update(id=next(fake._ids), content=content, user=dict(reaction["user"], login=login, type="User"))
    fake.reactions.setdefault(comment_id, []).append(reaction)


def _author(user: dict[str, Any] | None) -> dict[str, Any] | None:
    """GraphQL's actor: a bot's login has no ``[bot]`` suffix there (REST has one)."""
    if not user:
        return None
    login = str(user.get("login") or "")
    if user.get("type") == "Bot" and login.endswith("[bot]"):
        return {"login": login[: -len("[bot]")], "__typename": "Bot"}
    return {"login": login, "__typename": "User"}


def _id_of(node_id: str, prefix: str) -> int:
    rest = node_id[len(prefix):] if node_id.startswith(prefix) else ""
    return int(rest) if rest.isdigit() else -1


def _error(kind: str, message: str, path: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message, "locations": [{"line": 1, "column": 1}]}
    if path:
        error["path"] = [path]
    return {"errors": [error]}
