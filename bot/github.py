"""Everything ptbot asks of the GitHub REST API, through PyGithub (the only module importing it).

``GitHubApp`` turns the App's id and key into installation-scoped clients (JWT -> installation
token, kept in a ``bot.token_cache.TokenCache`` that every worker shares and re-minted when less
than five minutes are left or GitHub answers 401). ``GitHubPullRequest`` is one PR as the review
pipeline needs it: FileDiffs parsed from the API's per-file patches (no clone, so forks work),
file text at a SHA, commits with their own patches, the fingerprints ptbot already posted, one
review posted with validated anchors, and a check run; over GraphQL, the review threads and
review summaries that ``bot.cleanup`` resolves and minimises (GraphQL has ``isResolved``, REST not).

Rate limits: PyGithub's own retry and throttling are switched off and done
here instead, so they are bounded and shared per installation: writes of one installation go
one at a time at least ``seconds_between_writes`` apart (``WriteGate`` in one process,
``bot.write_gate.RedisWriteGate`` across worker processes), and 403/429/5xx answers are retried
after ``retry-after``, ``x-ratelimit-reset`` or an exponential backoff with jitter.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from github import Auth, Github, GithubException, GithubIntegration

from analyzer.diff import parse_diff
from analyzer.types import FileDiff
from bot.attestations import MAX_TRACE_BYTES, NOTES_REF, TRACE_PATH, commit_line_marks
from bot.cleanup import ReviewSummary, ReviewThread
from bot.config import RepoConfig, Settings
from bot.provenance import CommitInfo, LineProvenance, Person, attribute_lines, pull_request_ai_reason
from bot.token_cache import CachedToken, MemoryTokenCache, TokenCache, token_key

log = logging.getLogger(__name__)
T = TypeVar("T")

# The hidden marker ptbot puts in everything it posts (bot.render.marker writes it):
# ``<!-- ptbot:fp=<hex> model=... sha=... -->``; ``fp`` is the line's content fingerprint.
MARKER_RE = re.compile(r"<!--\s*ptbot:([^>]*?)\s*-->")
CHECK_RUN_NAME = "ptbot"
MAX_REVIEW_BODY_CHARS = 65_536
"""GitHub refuses a longer review body with 422 ("body is too long (maximum is 65536 characters)")."""
_STATUS_MAP = {"removed": "deleted", "changed": "modified", "unchanged": "modified"}


def marker_fingerprints(body: str) -> set[str]:
    """The ``fp`` values of every ptbot marker in a comment or review body."""
    found: set[str] = set()
    for fields in MARKER_RE.findall(body or ""):
        for kv in fields.split():
            key, _, value = kv.partition("=")
            if key == "fp" and value:
                found.add(value)
    return found


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry rate-limited and failed requests; bounded in attempts and delay."""

    max_attempts: int = 5
    """Tries per request, the first included."""
    backoff_base: float = 60.0
    """First wait after a secondary rate limit with no ``retry-after`` (the docs say a minute)."""
    server_error_base: float = 2.0
    """First wait after a 5xx answer."""
    max_delay: float = 900.0
    """No single wait is longer than this (seconds)."""
    jitter: float = 0.1
    """Each wait is stretched by a random fraction up to this, so workers do not retry in step."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.backoff_base, self.server_error_base, self.max_delay, self.jitter) < 0:
            raise ValueError("backoff delays and jitter must be >= 0")


def retry_delay(status: int, headers: Mapping[str, str], message: str, attempt: int,
                policy: RetryPolicy, now: float, rand: float) -> float | None:
    """Seconds to wait before retrying an answer with ``status``, or None to give up now.

    ``attempt`` counts from 0; ``rand`` is uniform in [0, 1) (the jitter). Order from the docs:
    ``retry-after``; else ``x-ratelimit-remaining: 0`` -> until ``x-ratelimit-reset``; else a
    secondary limit -> exponential backoff from ``backoff_base``.
    """
    if attempt + 1 >= policy.max_attempts:
        return None
    h = {k.lower(): v for k, v in headers.items()}
    stretch = 1.0 + policy.jitter * rand
    if status in (403, 429):
        if "retry-after" in h:
            try:
                return min(policy.max_delay, float(h["retry-after"]) * stretch)
            except ValueError:
                pass
        if h.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in h:
            try:
                return min(policy.max_delay, max(0.0, float(h["x-ratelimit-reset"]) - now) * stretch + 1.0)
            except ValueError:
                pass
        if status == 429 or "rate limit" in message.lower():
            return min(policy.max_delay, policy.backoff_base * 2**attempt * stretch)
        return None  # a permission 403: retrying will not help
    if status in (500, 502, 503, 504):
        return min(policy.max_delay, policy.server_error_base * 2**attempt * stretch)
    return None


class WriteGate:
    """Serialises one installation's write requests, at least ``min_interval`` seconds apart."""

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._last = 0.0

    def defer(self, seconds: float) -> None:
        """Hold every write of the installation for ``seconds`` (a rate limit applies to all)."""
        with self._lock:
            self._last = max(self._last, time.monotonic() + seconds - self.min_interval)

    def run(self, fn: Callable[[], T], sleep: Callable[[float], None]) -> T:
        with self._lock:
            wait = self._last + self.min_interval - time.monotonic()
            if wait > 0:
                sleep(wait)
            try:
                return fn()
            finally:
                self._last = time.monotonic()


class Gate(Protocol):
    """What ``GitHubApp`` needs of one installation's write gate: ``WriteGate`` (this process)
    or ``bot.write_gate.RedisWriteGate`` (every worker process)."""

    def defer(self, seconds: float) -> None:
        """Hold every write of the installation for ``seconds`` (a rate limit applies to all)."""
        ...

    def run(self, fn: Callable[[], T], sleep: Callable[[float], None]) -> T:
        """Run one write when its turn comes."""
        ...


_TOKEN_IN_TEXT = re.compile(r'("token"\s*:\s*")[^"]+(")')


class _RedactTokens(logging.Filter):
    """PyGithub logs response bodies at DEBUG, and the access-token answer carries the token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and '"token"' in a for a in record.args):
            record.args = tuple(_TOKEN_IN_TEXT.sub(r"\1(removed)\2", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


logging.getLogger("github.Requester").addFilter(_RedactTokens())


class _InstallationAuth(Auth.Auth):
    """PyGithub auth that asks the App for a usable installation token on every request, so a
    client (and every Repository or PullRequest object it made) follows refreshes and re-mints."""

    def __init__(self, app: GitHubApp, installation_id: int) -> None:
        self._app, self._installation_id = app, installation_id

    @property
    def token_type(self) -> str:
        return "token"

    @property
    def token(self) -> str:
        return self._app.installation_token(self._installation_id).token

    @property
    def _masked_token(self) -> str:
        return "token (installation token removed)"


class GitHubApp:
    """The App's identity on one GitHub host: installation clients and their write gates.

    One per process (the composition root builds it); gates are shared by every PR of an
    installation handled in this process. ``token_cache`` (default: this process only) is where
    installation tokens are kept, ``write_gate(installation_id)`` (default: ``WriteGate``) makes
    each installation's gate; workers pass Redis-backed ones so every process shares both.
    """

    def __init__(self, app_id: str, private_key: str, api_url: str = "https://api.github.com", *,
                 seconds_between_writes: float = 1.0, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep, timeout: int = 15,
                 token_cache: TokenCache | None = None,
                 write_gate: Callable[[int], Gate] | None = None) -> None:
        if not app_id or not private_key:
            raise ValueError("a GitHub App id and private key are needed: set PTBOT_APP_ID and "
                             "PTBOT_PRIVATE_KEY (or PTBOT_PRIVATE_KEY_FILE)")
        self.app_id = str(app_id).strip()
        self.token_cache: TokenCache = token_cache if token_cache is not None else MemoryTokenCache()
        self._gate_factory = write_gate or (lambda _installation: WriteGate(self.seconds_between_writes))
        self._held: dict[int, CachedToken] = {}
        """The token each installation's requests use now (checked before the shared cache)."""
        self._token_lock = threading.Lock()
        self.api_url = api_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.seconds_between_writes = seconds_between_writes
        self.sleep = sleep
        # retry=None and no PyGithub throttling: this module does both, bounded and per installation.
        self._client_kwargs: dict[str, Any] = dict(
            base_url=self.api_url, timeout=timeout, retry=None,
            seconds_between_requests=None, seconds_between_writes=None)
        self._integration = GithubIntegration(auth=Auth.AppAuth(int(app_id), private_key),
                                              **self._client_kwargs)
        self._clients: dict[int, Github] = {}
        self._gates: dict[int, Gate] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> GitHubApp:
        """Build from ``bot.config.Settings`` (checks the App credentials are there)."""
        settings.require_app()
        return cls(settings.app_id, settings.private_key, settings.github_api_url,
                   seconds_between_writes=settings.seconds_between_writes, **kwargs)

    def client(self, installation_id: int) -> Github:
        """A PyGithub client acting as the installation (each request asks ``installation_token``)."""
        with self._lock:
            if installation_id not in self._clients:
                self._clients[installation_id] = Github(auth=_InstallationAuth(self, installation_id),
                                                        **self._client_kwargs)
                self._gates[installation_id] = self._gate_factory(installation_id)
            return self._clients[installation_id]

    def installation_token(self, installation_id: int) -> CachedToken:
        """A token with more than five minutes left: the one in use, else the shared cache's (another
        worker minted it), else a new one minted with the App's JWT and put in the cache."""
        with self._token_lock:
            held = self._held.get(installation_id)
            if held is not None and held.usable(time.time()):
                return held
            key = token_key(self.api_url, self.app_id, installation_id)
            token = self.token_cache.get(key)
            if token is None:
                token = self._mint(installation_id)
                self.token_cache.put(key, token)
            self._held[installation_id] = token
            return token

    def _mint(self, installation_id: int) -> CachedToken:
        """POST /app/installations/{id}/access_tokens with the App's JWT."""
        from datetime import timezone

        auth = self._integration.get_access_token(installation_id)
        expires = auth.expires_at
        if expires.tzinfo is None:  # GitHub's timestamps are UTC ("...Z")
            expires = expires.replace(tzinfo=timezone.utc)
        log.info("minted an installation token for installation %s (expires %s)", installation_id,
                 expires.isoformat())
        return CachedToken(auth.token, expires.timestamp())

    def _forget_token(self, installation_id: int) -> bool:
        """Drop the token in use (GitHub answered 401 with it); False if there was none."""
        with self._token_lock:
            held = self._held.pop(installation_id, None)
        if held is None:
            return False
        self.token_cache.drop(token_key(self.api_url, self.app_id, installation_id), held.token)
        return True

    def call(self, installation_id: int, fn: Callable[[], T], *, write: bool = False) -> T:
        """Run ``fn`` (one or more API requests) with backoff; writes go through the gate.

        A 401 means the token was revoked or expired early: it is dropped from the cache and
        ``fn`` runs once more with a freshly minted one (the refused request changed nothing).
        """
        self.client(installation_id)
        gate = self._gates[installation_id]
        reminted = False
        attempt = 0
        while attempt < self.retry.max_attempts:
            try:
                return gate.run(fn, self.sleep) if write else fn()
            except GithubException as e:
                if e.status == 401 and not reminted and self._forget_token(installation_id):
                    log.warning("GitHub answered 401 with installation %s's token; minting a new one",
                                installation_id)
                    reminted = True
                    continue
                message = e.data.get("message", "") if isinstance(e.data, dict) else str(e.data or "")
                delay = retry_delay(e.status, e.headers or {}, message, attempt, self.retry,
                                    time.time(), random.random())
                # A write that failed with a 5xx may still have happened (a review posted twice
                # is worse than none): leave it to the caller, who re-checks fingerprints first.
                if delay is None or (write and e.status >= 500):
                    raise
                log.warning("GitHub answered %s (%s); retry %d/%d in %.1f s", e.status, message,
                            attempt + 1, self.retry.max_attempts - 1, delay)
                if write:
                    gate.defer(delay)  # the next attempt, and every other write, waits in the gate
                else:
                    self.sleep(delay)
                attempt += 1
        raise AssertionError("unreachable: the last attempt either returns or raises")

    def pull_request(self, installation_id: int, owner: str, repo: str, number: int) -> GitHubPullRequest:
        return GitHubPullRequest(self, installation_id, owner, repo, number)

    def open_pulls_with_head(self, installation_id: int, owner: str, repo: str, sha: str, *,
                             per_page: int = 100, max_pages: int = 30) -> list[dict[str, Any]]:
        """The open PRs of ``owner/repo`` whose head is ``sha`` (API JSON), for a ``check_run``
        event that came without ``pull_requests`` (GitHub leaves it empty for fork PRs).

        ``GET /commits/{sha}/pulls`` first; GitHub may leave a fork's PR out of that answer too,
        so then the repository's open PRs are paged through (at most ``max_pages``) for the SHA.
        """
        requester = self.client(installation_id).requester
        base = f"/repos/{owner}/{repo}"

        def matching(items: Any) -> list[dict[str, Any]]:
            return [p for p in items or [] if isinstance(p, dict) and p.get("state", "open") == "open"
                    and (p.get("head") or {}).get("sha") == sha]

        try:
            _, found = self.call(installation_id, lambda: requester.requestJsonAndCheck(
                "GET", f"{base}/commits/{sha}/pulls", parameters={"per_page": 100}))
        except GithubException as e:
            if e.status not in (404, 422):  # an unknown SHA: fall through to the listing
                raise
            found = []
        hits = matching(found)
        for page in range(1, max_pages + 1):
            if hits:
                return hits
            _, batch = self.call(installation_id, lambda page=page: requester.requestJsonAndCheck(
                "GET", f"{base}/pulls", parameters={"state": "open", "per_page": per_page, "page": page}))
            hits = matching(batch)
            if not batch or len(batch) < per_page:
                return hits
        if not hits:
            log.warning("%s/%s: no open PR with head %s in the first %d page(s) of open PRs",
                        owner, repo, sha[:12], max_pages)
        return hits

    def complete_check_run(self, installation_id: int, owner: str, repo: str, run_id: int | None,
                           head_sha: str, *, title: str, summary: str, conclusion: str = "neutral") -> int:
        """Complete check run ``run_id`` (or create a completed one on ``head_sha`` when there is
        none) outside any PR: a re-run whose PR could not be found still gets an answer."""
        requester = self.client(installation_id).requester
        params: dict[str, Any] = {"status": "completed", "conclusion": conclusion,
                                  "output": {"title": title, "summary": summary[:65535]}}
        if run_id:
            url, verb = f"/repos/{owner}/{repo}/check-runs/{run_id}", "PATCH"
        else:
            url, verb = f"/repos/{owner}/{repo}/check-runs", "POST"
            params.update(name=CHECK_RUN_NAME, head_sha=head_sha)
        _, run = self.call(installation_id, lambda: requester.requestJsonAndCheck(verb, url, input=params),
                           write=True)
        return int(run["id"])

    _bot_login: str | None = None

    def login(self, installation_id: int) -> str:
        """The login the App posts as, ``<slug>[bot]`` (``GET /app`` with the App's JWT; an
        installation token cannot ask ``/user``), fetched once per process."""
        if self._bot_login is None:
            slug = self.call(installation_id, lambda: self._integration.get_app().slug)
            self._bot_login = f"{slug}[bot]"
        return self._bot_login


class GitHubToken(GitHubApp):
    """A plain token (a workflow's ``GITHUB_TOKEN`` or a PAT) standing in for the App.

    Same bounded retries and write gate as the App; every "installation" shares the one client.
    ``GitHubApp.__init__`` is not called: there is no App identity (JWT, integration) to set up.
    """

    def __init__(self, token: str, api_url: str = "https://api.github.com", *,
                 seconds_between_writes: float = 1.0, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep, timeout: int = 15) -> None:
        if not token:
            raise ValueError("a GitHub token is needed: pass github-token to the action "
                             "(default ${{ github.token }}) or set GITHUB_TOKEN")
        self.api_url = api_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.seconds_between_writes = seconds_between_writes
        self.sleep = sleep
        self._client = Github(auth=Auth.Token(token), base_url=self.api_url, timeout=timeout, retry=None,
                              seconds_between_requests=None, seconds_between_writes=None)
        self._clients: dict[int, Github] = {}
        self._gates: dict[int, WriteGate] = {}
        self._lock = threading.Lock()

    def client(self, installation_id: int) -> Github:
        with self._lock:
            if installation_id not in self._clients:
                self._clients[installation_id] = self._client
                self._gates[installation_id] = WriteGate(self.seconds_between_writes)
            return self._client

    def _forget_token(self, installation_id: int) -> bool:
        return False  # a plain token cannot be re-minted: a 401 is final

    def login(self, installation_id: int) -> str:
        """Whoever the token belongs to (``github-actions[bot]`` for a workflow's token), from
        GraphQL ``viewer``: ``GET /user`` refuses App-issued tokens."""
        if self._bot_login is None:
            requester = self.client(installation_id).requester
            data = self.call(installation_id, lambda: run_graphql(
                requester, graphql_url(self.api_url), "query { viewer { login } }", {}))
            self._bot_login = str(data["viewer"]["login"])
        return self._bot_login


@dataclass(frozen=True)
class ReviewComment:
    """One inline comment: RIGHT side (new file) line, optional multi-line start, Markdown body."""

    path: str
    line: int
    body: str
    start_line: int | None = None

    def to_api(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "line": self.line, "side": "RIGHT", "body": self.body}
        if self.start_line is not None and self.start_line < self.line:
            d.update(start_line=self.start_line, start_side="RIGHT")
        return d


@dataclass(frozen=True)
class PostedReview:
    """What ``post_review`` did: the review id, comments anchored inline, comments moved to the body."""

    review_id: int
    inline: tuple[ReviewComment, ...]
    moved_to_body: tuple[ReviewComment, ...] = ()


def anchor_error(files: Sequence[FileDiff], c: ReviewComment) -> str | None:
    """Why GitHub would refuse ``c`` as an anchor in this diff, or None if it is fine."""
    fd = next((f for f in files if f.path == c.path and f.status != "deleted"), None)
    if fd is None:
        return "path is not part of the diff"
    for h in fd.hunks:
        lines = set(h.new_linenos())
        if c.line in lines:
            if c.start_line is not None and c.start_line < c.line and c.start_line not in lines:
                return "start line must be part of the same hunk as the line"
            return None
    return "line must be part of the diff"


def _diff_header(f: Mapping[str, Any]) -> str:
    """A ``diff --git`` header for one API file entry, so its ``patch`` parses like ``git diff``."""
    new, status = f["filename"], f.get("status")
    old = f.get("previous_filename") or new
    head = [f"diff --git a/{old} b/{new}"]
    if status == "added":
        head += ["new file mode 100644", "--- /dev/null", f"+++ b/{new}"]
    elif status == "removed":
        head += ["deleted file mode 100644", f"--- a/{old}", "+++ /dev/null"]
    else:
        if status == "renamed":
            head += [f"rename from {old}", f"rename to {new}"]
        head += [f"--- a/{old}", f"+++ b/{new}"]
    return "\n".join(head) + "\n"


def files_to_diffs(entries: Sequence[Mapping[str, Any]]) -> list[FileDiff]:
    """FileDiffs from API file entries as JSON (``/pulls/{n}/files`` or a commit's ``files``)."""
    out: list[FileDiff] = []
    for f in entries:
        filename = f["filename"]
        status = _STATUS_MAP.get(f.get("status"), f.get("status"))
        old = f.get("previous_filename") or (None if status == "added" else filename)
        new = None if status == "deleted" else filename
        patch = f.get("patch")
        if not patch:
            # No patch: a pure rename (nothing changed), or a binary file or a diff too large
            # for the API; the latter two have no lines ptbot could anchor either way.
            pure_rename = status in ("renamed", "copied") and not f.get("changes")
            out.append(FileDiff(old, new, status, (), is_binary=not pure_rename))
            continue
        parsed = parse_diff(_diff_header(f) + patch.rstrip("\n") + "\n")
        if not parsed:
            raise ValueError(f"could not parse the patch GitHub gave for {filename}")
        # The API's own status and paths are authoritative over whatever the header implied.
        out.append(replace(parsed[0], old_path=old, new_path=new, status=status))
    return out


class GraphQLError(Exception):
    """GitHub answered a GraphQL request with an ``errors`` array (it does so with HTTP 200)."""

    def __init__(self, errors: Sequence[Mapping[str, Any]]) -> None:
        self.errors = list(errors)
        self.types = {str(e.get("type") or "") for e in self.errors}
        super().__init__("; ".join(f"{e.get('type') or 'ERROR'}: {e.get('message', '')}" for e in self.errors)
                         or "GraphQL request failed")

    @property
    def forbidden(self) -> bool:
        """The token lacks a permission (``Resource not accessible by integration``)."""
        return "FORBIDDEN" in self.types


def graphql_url(api_url: str) -> str:
    """The GraphQL endpoint beside a REST base URL: ``https://api.github.com/graphql``, and
    ``https://HOST/api/graphql`` for GitHub Enterprise Server (REST at ``https://HOST/api/v3``)."""
    base = api_url.rstrip("/")
    if base.endswith("/v3"):
        base = base[: -len("/v3")]
    return base + "/graphql"


def run_graphql(requester: Any, url: str, query: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """POST one GraphQL document through a PyGithub requester; its ``data``, or GraphQLError.

    Non-2xx answers (401, a secondary rate limit's 403, 5xx) raise PyGithub's GithubException as
    REST calls do, so ``GitHubApp.call`` retries them alike.
    """
    _, body = requester.requestJsonAndCheck("POST", url, input={"query": query, "variables": dict(variables)})
    body = body or {}
    if body.get("errors"):
        raise GraphQLError(body["errors"])
    return body.get("data") or {}


_THREADS_QUERY = """
query($owner: String!, $name: String!, $number: Int!, $cursor: String) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviewThreads(first: 100, after: $cursor) {
        pageInfo { hasNextPage endCursor }
        nodes {
          id isResolved isOutdated path line
          comments(first: 50) {
            nodes { databaseId body author { login } reactionGroups { content reactors { totalCount } } }
          }
        }
      }
    }
  }
}"""

_REVIEWS_QUERY = """
query($owner: String!, $name: String!, $number: Int!, $cursor: String) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviews(first: 100, after: $cursor) {
        pageInfo { hasNextPage endCursor }
        nodes { id databaseId body isMinimized author { login } commit { oid } }
      }
    }
  }
}"""

_RESOLVE_THREAD = """
mutation($id: ID!) { resolveReviewThread(input: {threadId: $id}) { thread { id isResolved } } }"""

_MINIMIZE = """
mutation($id: ID!, $classifier: ReportedContentClassifiers!) {
  minimizeComment(input: {subjectId: $id, classifier: $classifier}) {
    minimizedComment { isMinimized minimizedReason }
  }
}"""


@dataclass
class GitHubPullRequest:
    """One pull request, read and reviewed as an App installation."""

    app: GitHubApp
    installation_id: int
    owner: str
    repo: str
    number: int
    _repo_obj: Any = field(default=None, repr=False)
    _pr: Any = field(default=None, repr=False)
    _files: list[FileDiff] | None = field(default=None, repr=False)
    _etags: dict[str, tuple[str, Any]] = field(default_factory=dict, repr=False)
    _git_objects: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    def _call(self, fn: Callable[[], T], write: bool = False) -> T:
        return self.app.call(self.installation_id, fn, write=write)

    def _repo(self) -> Any:
        """The PyGithub Repository, fetched once (clients are not lazy: errors surface in _call)."""
        if self._repo_obj is None:
            gh = self.app.client(self.installation_id)
            self._repo_obj = self._call(lambda: gh.get_repo(self.full_name))
        return self._repo_obj

    def pull(self, refresh: bool = False) -> Any:
        """The PyGithub PullRequest (head SHA, refs, labels, author), cached."""
        if self._pr is None or refresh:
            repo = self._repo()
            self._pr = self._call(lambda: repo.get_pull(self.number))
        return self._pr

    @property
    def head_sha(self) -> str:
        return self.pull().head.sha

    def files(self, refresh: bool = False) -> list[FileDiff]:
        """Every changed file of the PR as a FileDiff (hunks from the API's per-file patch)."""
        if self._files is None or refresh:
            # Conditional pages: a refresh of an unchanged diff costs 304s, not rate limit.
            self._files = files_to_diffs(self._get_list(f"/repos/{self.full_name}/pulls/{self.number}/files"))
        return self._files

    def file_text(self, path: str, sha: str) -> str:
        """The whole text of ``path`` at commit ``sha`` (the context the scorer reads)."""
        repo = self._repo()
        content = self._call(lambda: repo.get_contents(path, ref=sha))
        if isinstance(content, list):
            raise ValueError(f"{path} is a directory at {sha}, not a file")
        return content.decoded_content.decode("utf-8", errors="replace")

    def commits(self, with_files: bool = True) -> list[CommitInfo]:
        """The PR's commits, oldest first, with author, committer, message and (optionally) patches.

        One listing, then (``with_files``) one ``GET /commits/{sha}`` per commit for its patches,
        all as plain JSON through ``_call``. PyGithub's objects are avoided on purpose here: a
        listed commit's ``raw_data`` fetches the commit again behind the back of the retry and
        token handling.
        """
        out: list[CommitInfo] = []
        for listed in self._get_list(f"/repos/{self.full_name}/pulls/{self.number}/commits"):
            sha = listed["sha"]
            raw, files = listed, ()
            if with_files:
                raw = self._get_once(f"/repos/{self.full_name}/commits/{sha}")
                files = tuple(files_to_diffs(raw.get("files") or []))
            info = raw.get("commit") or {}
            out.append(CommitInfo(
                sha=sha, message=info.get("message", ""),
                author=_person(info.get("author"), raw.get("author")),
                committer=_person(info.get("committer"), raw.get("committer")),
                files=files))
        return out

    def repo_config(self, defaults: RepoConfig) -> RepoConfig:
        """``.ptbot.toml`` from the DEFAULT branch over ``defaults`` (a PR cannot silence the bot).

        A missing file means the defaults; an invalid one raises ValueError naming the problem.
        """
        repo = self._repo()
        try:
            content = self._call(lambda: repo.get_contents(".ptbot.toml", ref=repo.default_branch))
        except GithubException as e:
            if e.status == 404:
                return defaults
            raise
        return RepoConfig.from_toml(content.decoded_content.decode("utf-8"), defaults)

    def line_provenance(self, ai_labels: Sequence[str]) -> dict[tuple[str, int], LineProvenance]:
        """Who wrote each added line of the PR: PR-level signals, else line attestations (git-ai
        notes, Agent Trace), else the introducing commit's (precedence: ``attribute_lines``)."""
        pr = self.pull()
        pr_reason = pull_request_ai_reason(pr.head.ref, [lab.name for lab in pr.labels],
                                           pr.user.login if pr.user else None, ai_labels)
        commits = self.commits(with_files=True)
        marks = None
        if pr_reason is None:  # a PR-level signal outranks every line attestation: skip the reads
            shas = [c.sha for c in commits]
            marks = commit_line_marks(shas, self.ai_notes(shas), self.agent_traces())
        return attribute_lines(self.files(), commits, pr_reason=pr_reason, line_marks=marks)

    # --- line attestations, through the Git database API (the App never clones) --------------

    def ai_notes(self, shas: Sequence[str]) -> dict[str, str]:
        """The git-ai note (``refs/notes/ai``) of each commit in ``shas`` that has one.

        Notes live where the commits were pushed, so a fork PR's are read from the fork. A note
        is the blob named by the commit id in the notes commit's tree, or under git's fan-out
        directories (``ab/cdef…``, ``ab/cd/ef…``), walked one level at a time so only the
        directories on the way are fetched (a recursive listing of a big notes tree truncates).
        """
        repo = self._head_repo_name()
        ref = self._git_get(f"/repos/{repo}/git/ref/{NOTES_REF.removeprefix('refs/')}")
        target = (ref or {}).get("object") or {}
        if target.get("type") != "commit":
            return {}
        notes_commit = self._git_get(f"/repos/{repo}/git/commits/{target['sha']}")
        root = ((notes_commit or {}).get("tree") or {}).get("sha")
        out: dict[str, str] = {}
        for sha in shas if root else ():
            blob = self._note_blob(repo, root, sha.lower())
            if blob:
                text = self._blob_text(repo, blob)
                if text is not None:
                    out[sha] = text
        log.info("%s#%d: %d of %d commit(s) carry a git-ai note", self.full_name, self.number,
                 len(out), len(shas))
        return out

    def agent_traces(self) -> str | None:
        """``.agent-trace/traces.jsonl`` at the PR head, or None when there is none."""
        repo = self._repo()
        try:
            content = self._call(lambda: repo.get_contents(TRACE_PATH, ref=self.head_sha))
        except GithubException as e:
            if e.status == 404:
                return None
            raise
        if isinstance(content, list):
            return None
        if (content.size or 0) > MAX_TRACE_BYTES:
            log.warning("%s#%d: %s is %d bytes, over %d; not read", self.full_name, self.number,
                        TRACE_PATH, content.size, MAX_TRACE_BYTES)
            return None
        if content.encoding == "base64" and content.content:
            return content.decoded_content.decode("utf-8", errors="replace")
        # Above 1 MB the contents API leaves ``content`` empty; the blob API serves up to 100 MB.
        return self._blob_text(self.full_name, content.sha)

    def _head_repo_name(self) -> str:
        head_repo = self.pull().head.repo  # None when the fork was deleted
        return head_repo.full_name if head_repo is not None else self.full_name

    def _git_get(self, url: str) -> Any:
        """GET a Git database object, cached for this job; None when GitHub has none (404, or
        409 for an empty repository)."""
        if url not in self._git_objects:
            requester = self.app.client(self.installation_id).requester
            try:
                _, data = self._call(lambda: requester.requestJsonAndCheck("GET", url))
            except GithubException as e:
                if e.status not in (404, 409):
                    raise
                data = None
            self._git_objects[url] = data
        return self._git_objects[url]

    def _note_blob(self, repo: str, tree_sha: str, rest: str) -> str | None:
        while True:
            tree = self._git_get(f"/repos/{repo}/git/trees/{tree_sha}") or {}
            if tree.get("truncated"):
                log.warning("%s: notes tree %s listed only in part by GitHub", repo, tree_sha)
            entries = {e.get("path"): e for e in tree.get("tree") or () if isinstance(e, dict)}
            hit = entries.get(rest)
            if hit and hit.get("type") == "blob":
                return hit.get("sha")
            sub = entries.get(rest[:2])
            if not sub or sub.get("type") != "tree" or len(rest) <= 2:
                return None
            tree_sha, rest = sub["sha"], rest[2:]

    def _blob_text(self, repo: str, blob_sha: str) -> str | None:
        blob = self._git_get(f"/repos/{repo}/git/blobs/{blob_sha}")
        if not blob or blob.get("encoding") != "base64":
            return None
        if (blob.get("size") or 0) > MAX_TRACE_BYTES:
            log.warning("%s: blob %s is %d bytes, over %d; not read", repo, blob_sha, blob["size"],
                        MAX_TRACE_BYTES)
            return None
        return base64.b64decode(blob.get("content") or "").decode("utf-8", errors="replace")

    def _get_json(self, url: str) -> Any:
        """GET with ``If-None-Match``: a 304 costs no rate limit and returns the cached body."""
        requester = self.app.client(self.installation_id).requester
        cached = self._etags.get(url)
        headers = {"If-None-Match": cached[0]} if cached else {}
        resp_headers, data = self._call(lambda: requester.requestJsonAndCheck("GET", url, headers=headers))
        if data is None and cached:  # 304 Not Modified
            return cached[1]
        etag = {k.lower(): v for k, v in resp_headers.items()}.get("etag")
        if etag:
            self._etags[url] = (etag, data)
        return data

    def _get_once(self, url: str) -> Any:
        """GET a JSON document through ``_call`` (retries, backoff, token refresh)."""
        requester = self.app.client(self.installation_id).requester
        _, data = self._call(lambda: requester.requestJsonAndCheck("GET", url))
        return data

    def _get_list(self, url: str, per_page: int = 100) -> list[Any]:
        """Every item of a list endpoint, page by page, each page a conditional GET."""
        out: list[Any] = []
        page = 1
        while True:
            batch = self._get_json(f"{url}?per_page={per_page}&page={page}")
            out.extend(batch or [])
            if not batch or len(batch) < per_page:
                return out
            page += 1

    def review_comments(self) -> list[dict[str, Any]]:
        """Raw review comments of the PR (with reactions roll-up), conditionally fetched."""
        return self._get_list(f"/repos/{self.full_name}/pulls/{self.number}/comments")

    def posted_fingerprints(self) -> set[str]:
        """Fingerprints in this App's own review comments and review bodies: what not to post again.

        Only comments whose author is ptbot's own login count. A marker is plain text anyone can
        write, so trusting every bot account would let another App (or a user-controlled bot)
        silence ptbot's findings by posting comments with forged markers.
        """
        login = self.bot_login()
        found: set[str] = set()
        for c in self.review_comments():
            if _is_login(c.get("user"), login):
                found |= marker_fingerprints(c.get("body") or "")
        for r in self._get_list(f"/repos/{self.full_name}/pulls/{self.number}/reviews"):
            if _is_login(r.get("user"), login):
                found |= marker_fingerprints(r.get("body") or "")
        return found

    def post_review(self, body: str, comments: Sequence[ReviewComment],
                    commit_sha: str | None = None) -> PostedReview:
        """Post one COMMENT review; anchors outside the diff go to the body instead.

        Anchors are checked against the hunks first. GitHub's 422 rejects the whole review and
        does not say which anchor was bad, so on a 422 the diff is re-read (a push may have moved
        it), bad anchors move to the body, and the review is retried once; if the fresh diff
        explains nothing, the retry carries every comment in the body.
        """
        commit_sha = commit_sha or self.head_sha
        inline, moved = self._split_anchors(self.files(), comments)
        try:
            review_id = self._create_review(commit_sha, body, inline, moved)
        except GithubException as e:
            if e.status != 422:
                raise
            log.warning("%s#%d: review refused with 422 (%s); re-reading the diff and retrying once",
                        self.full_name, self.number, e.data)
            inline, newly = self._split_anchors(self.files(refresh=True), inline)
            if not newly:
                inline, newly = [], inline
            moved = moved + newly
            review_id = self._create_review(commit_sha, body, inline, moved)
        return PostedReview(review_id, tuple(inline), tuple(moved))

    def _split_anchors(self, files: Sequence[FileDiff], comments: Sequence[ReviewComment]
                       ) -> tuple[list[ReviewComment], list[ReviewComment]]:
        inline: list[ReviewComment] = []
        moved: list[ReviewComment] = []
        for c in comments:
            why = anchor_error(files, c)
            if why:
                log.info("%s#%d: %s:%d cannot be anchored (%s); moving it to the review body",
                         self.full_name, self.number, c.path, c.line, why)
                moved.append(c)
            else:
                inline.append(c)
        return inline, moved

    def _create_review(self, commit_sha: str, body: str, inline: Sequence[ReviewComment],
                       moved: Sequence[ReviewComment]) -> int:
        full_body = review_body_with_moved(body, moved)
        params = {"commit_id": commit_sha, "body": full_body, "event": "COMMENT",
                  "comments": [c.to_api() for c in inline]}
        # Straight through the requester: PyGithub's create_review wants a fetched Commit object.
        requester = self.app.client(self.installation_id).requester
        url = f"/repos/{self.full_name}/pulls/{self.number}/reviews"
        _, review = self._call(lambda: requester.requestJsonAndCheck("POST", url, input=params), write=True)
        log.info("%s#%d: posted review %s with %d inline comment(s), %d in the body",
                 self.full_name, self.number, review["id"], len(inline), len(moved))
        return int(review["id"])

    def create_check_run(self, *, name: str = CHECK_RUN_NAME, head_sha: str | None = None,
                         status: str = "completed", conclusion: str | None = "neutral",
                         title: str = "", summary: str = "", text: str = "",
                         external_id: str | None = None, details_url: str | None = None) -> int:
        """Create a check run on ``head_sha`` (default: the PR head); returns its id."""
        kwargs: dict[str, Any] = {"name": name, "head_sha": head_sha or self.head_sha, "status": status}
        if status == "completed":
            kwargs["conclusion"] = conclusion or "neutral"
        if title or summary:
            # GitHub caps summary and text at 65,535 characters.
            output = {"title": title or name, "summary": summary[:65535]}
            if text:
                output["text"] = text[:65535]
            kwargs["output"] = output
        if external_id:
            kwargs["external_id"] = external_id
        if details_url:
            kwargs["details_url"] = details_url
        repo = self._repo()
        run = self._call(lambda: repo.create_check_run(**kwargs), write=True)
        return run.id

    def update_check_run(self, run_id: int, *, status: str | None = None, conclusion: str | None = None,
                         title: str = "", summary: str = "", text: str = "") -> None:
        """PATCH a check run (``in_progress`` -> ``completed`` with the summary), without a GET first."""
        params: dict[str, Any] = {}
        if status:
            params["status"] = status
        if conclusion:
            params["conclusion"] = conclusion
        if title or summary:
            params["output"] = {"title": title or CHECK_RUN_NAME, "summary": summary[:65535]}
            if text:
                params["output"]["text"] = text[:65535]
        requester = self.app.client(self.installation_id).requester
        url = f"/repos/{self.full_name}/check-runs/{run_id}"
        self._call(lambda: requester.requestJsonAndCheck("PATCH", url, input=params), write=True)

    # ----- GraphQL: ptbot's own threads and summaries (REST can neither resolve nor minimise) ---

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, *,
                write: bool = False) -> dict[str, Any]:
        """One GraphQL request as the installation, with the same retries as REST; mutations
        are writes and go through the installation's write gate."""
        requester = self.app.client(self.installation_id).requester
        url = graphql_url(self.app.api_url)
        return self._call(lambda: run_graphql(requester, url, query, variables or {}), write=write)

    def bot_login(self) -> str:
        """The login ptbot posts as on this installation."""
        return self.app.login(self.installation_id)

    def _pull_connection(self, query: str, connection: str) -> list[dict[str, Any]]:
        """Every node of one of the PR's GraphQL connections, page by page."""
        nodes: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            data = self.graphql(query, {"owner": self.owner, "name": self.repo, "number": self.number,
                                        "cursor": cursor})
            pr = (data.get("repository") or {}).get("pullRequest")
            if pr is None:
                raise GraphQLError([{"type": "NOT_FOUND", "message": f"{self.full_name}#{self.number} not found"}])
            conn = pr[connection]
            nodes.extend(conn.get("nodes") or [])
            page = conn.get("pageInfo") or {}
            if not page.get("hasNextPage") or not page.get("endCursor") or page["endCursor"] == cursor:
                return nodes
            cursor = page["endCursor"]

    def review_threads(self) -> list[ReviewThread]:
        """Every review thread of the PR, resolved or not (REST cannot tell ``isResolved``)."""
        return [ReviewThread.from_graphql(n) for n in self._pull_connection(_THREADS_QUERY, "reviewThreads")]

    def review_summaries(self) -> list[ReviewSummary]:
        """Every review of the PR, oldest first, with its body and whether it is minimised."""
        return [ReviewSummary.from_graphql(n) for n in self._pull_connection(_REVIEWS_QUERY, "reviews")]

    def resolve_thread(self, thread_id: str) -> None:
        """Resolve one thread (``PRRT_...``; a comment's ``PRRC_...`` id is not a thread id)."""
        self.graphql(_RESOLVE_THREAD, {"id": thread_id}, write=True)
        log.info("%s#%d: resolved review thread %s", self.full_name, self.number, thread_id)

    def minimize_comment(self, node_id: str, classifier: str = "OUTDATED") -> None:
        """Collapse a comment or review body in the UI (``minimizeComment``); nothing is deleted."""
        self.graphql(_MINIMIZE, {"id": node_id, "classifier": classifier}, write=True)
        log.info("%s#%d: minimised %s as %s", self.full_name, self.number, node_id, classifier)


def _is_login(user: Mapping[str, Any] | None, login: str) -> bool:
    """Whether a REST ``user`` object is the account ``login`` (logins are case-insensitive; an
    App's bot is ``slug[bot]`` in REST, a name no person's account can have)."""
    name = (user or {}).get("login")
    return bool(name) and str(name).lower() == login.lower()


def _person(git_identity: dict[str, Any] | None, gh_user: dict[str, Any] | None) -> Person:
    git_identity = git_identity or {}
    return Person(name=git_identity.get("name") or "", email=git_identity.get("email") or "",
                  login=(gh_user or {}).get("login"))


_MOVED_HEADER = "\n\n---\n**Findings that could not be anchored in the diff**\n"
_CUT_NOTE = "\n\n_(summary cut to fit GitHub's size limit)_"


def _moved_entry(c: ReviewComment) -> str:
    return f"\n**`{c.path}` line {c.line}**\n\n{c.body}\n"


def _left_out(n: int, limit: int) -> str:
    return (f"\n\n_{n} more finding{'' if n == 1 else 's'} that could not be anchored in the diff "
            f"{'was' if n == 1 else 'were'} left out: GitHub caps a review body at {limit:,} characters._\n")


def review_body_with_moved(body: str, moved: Sequence[ReviewComment],
                           limit: int = MAX_REVIEW_BODY_CHARS) -> str:
    """``body`` followed by the findings that could not be anchored inline, never over ``limit``.

    Findings go in best first while they fit; the rest are counted in one closing line (their
    markers are not posted, so a later push may still comment on them). A body that would not
    leave room for that line is cut at the end; ptbot writes its review marker first, so the
    marker survives.
    """
    if limit < 200:
        raise ValueError(f"limit must leave room for the notes ptbot adds, got {limit}")
    tail = _left_out(len(moved), limit) if moved else ""
    if len(body) + len(tail) > limit:
        body = body[: limit - len(tail) - len(_CUT_NOTE)] + _CUT_NOTE
        return body + tail
    if not moved:
        return body
    parts, size = [body, _MOVED_HEADER], len(body) + len(_MOVED_HEADER)
    for i, c in enumerate(moved):
        entry = _moved_entry(c)
        rest = len(moved) - i - 1
        if size + len(entry) + (len(_left_out(rest, limit)) if rest else 0) > limit:
            # Every earlier step left room for this note (the first check for i == 0).
            return "".join(parts if i else [body]) + _left_out(len(moved) - i, limit)
        parts.append(entry)
        size += len(entry)
    return "".join(parts)
