"""A fake GitHub REST API on 127.0.0.1 that PyGithub talks to over real HTTP.

Response bodies are the JSON recorded from api.github.com in
``tests/fixtures/github/replay/*.txt`` (PyGithub's ReplayData), used as templates: ids, names,
SHAs and paths are filled in from this server's state, and every ``https://api.github.com`` URL
is rewritten to point here (PyGithub follows the ``url`` fields it is given).

It behaves like GitHub where ptbot depends on it: App JWTs are verified (RS256, ``iss`` = App id)
before an installation token is minted; a review whose comments include ONE anchor outside the
PR's diff hunks, or whose body is over 65,536 characters, is refused whole with 422; list
endpoints answer ``If-None-Match`` with 304; failures (a secondary rate limit 403 with
``retry-after``, a 5xx) can be injected. Every request is recorded for assertions.
"""

from __future__ import annotations

import ast
import base64
import copy
import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from flask import Flask, Response, request
from werkzeug.serving import make_server

from fake_graphql import FakeGraphQL

REPLAY_DIR = Path(__file__).resolve().parent / "fixtures" / "github" / "replay"
RECORDED_HOST = "https://api.github.com"
BOT_LOGIN = "ptbot-test[bot]"


@dataclass(frozen=True)
class Exchange:
    """One recorded HTTP exchange (10 lines in a replay file, see the fixtures README)."""

    verb: str
    path: str
    request_headers: dict[str, str]
    request_body: str | None
    status: int
    response_headers: list[tuple[str, str]]
    response_body: str


def read_replay(path: Path) -> list[Exchange]:
    """Parse a PyGithub replay file: exchanges of 10 lines, each followed by a blank line."""
    lines = path.read_text().split("\n")
    out: list[Exchange] = []
    i = 0
    while i + 10 <= len(lines):
        if not lines[i].strip():
            i += 1
            continue
        chunk = lines[i:i + 10]
        out.append(Exchange(
            verb=chunk[1], path=chunk[4],
            request_headers=ast.literal_eval(chunk[5]),
            request_body=None if chunk[6] == "None" else chunk[6],
            status=int(chunk[7]),
            response_headers=ast.literal_eval(chunk[8]),
            response_body=chunk[9]))
        i += 11
    return out


def load_templates(base_url: str) -> dict[str, Any]:
    """The recorded bodies ptbot's requests need, with URLs pointing at ``base_url``."""

    def body(name: str, index: int) -> Any:
        text = read_replay(REPLAY_DIR / name)[index].response_body
        return json.loads(text.replace(RECORDED_HOST, base_url))

    rate_limited = read_replay(REPLAY_DIR / "SpecificExceptions.testRateLimitExceeded.txt")[1]
    return {
        "repo": body("Retry.testReturnsRepoAfter3Retries.txt", 3),
        "pull": body("PullRequestComment.setUp.txt", 1),
        "file": body("PullRequest.testGetFiles.txt", 0)[0],
        "commit": body("PullRequest.testCreateMultilineReviewComment.txt", 0),
        "review_comment": body("PullRequest.testGetReviewComments.txt", 0)[0],
        "review": body("PullRequestReview.setUp.txt", 0),
        "reaction": body("PullRequestComment.testGetReactions.txt", 0)[0],
        "check_run": body("CheckRun.testCreateCheckRunInProgress.txt", 0),
        "access_token": body("GithubIntegration.testGetAccessToken.txt", 0),
        "rate_limit_403": (rate_limited.status, dict(rate_limited.response_headers),
                           json.loads(rate_limited.response_body)),
    }


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def hunk_anchors(patch: str) -> list[tuple[set[int], set[int]]]:
    """Per hunk of a GitHub ``patch``: (RIGHT-side line numbers, LEFT-side line numbers).

    Written independently of ``analyzer.diff`` on purpose: it is the fake GitHub's own view.
    """
    hunks: list[tuple[set[int], set[int]]] = []
    old = new = 0
    lines = patch.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it is not an empty context line
    for line in lines:
        m = _HUNK_RE.match(line)
        if m:
            old, new = int(m.group(1)), int(m.group(3))
            hunks.append((set(), set()))
        elif hunks and line.startswith("+"):
            hunks[-1][0].add(new)
            new += 1
        elif hunks and line.startswith("-"):
            hunks[-1][1].add(old)
            old += 1
        elif hunks and (line.startswith(" ") or line == ""):
            hunks[-1][0].add(new)
            hunks[-1][1].add(old)
            old, new = old + 1, new + 1
    return hunks


@dataclass
class FakeFile:
    """One changed file of a PR or commit, as the files endpoints list it."""

    filename: str
    patch: str | None
    status: str = "modified"
    previous_filename: str | None = None

    def counts(self) -> tuple[int, int]:
        lines = (self.patch or "").split("\n")
        adds = sum(1 for ln in lines if ln.startswith("+"))
        dels = sum(1 for ln in lines if ln.startswith("-"))
        return adds, dels


@dataclass
class FakeCommit:
    sha: str
    message: str
    author_name: str = "Dev Eloper"
    author_email: str = "dev@example.com"
    author_login: str | None = "developer"
    committer_name: str | None = None
    committer_email: str | None = None
    committer_login: str | None = None
    files: list[FakeFile] = field(default_factory=list)


@dataclass
class FakePull:
    number: int
    head_sha: str
    head_ref: str = "feature"
    base_ref: str = "main"
    base_sha: str = "0" * 40
    title: str = "A change"
    author: str = "developer"
    labels: list[str] = field(default_factory=list)
    draft: bool = False
    files: list[FakeFile] = field(default_factory=list)
    commits: list[FakeCommit] = field(default_factory=list)
    head_repo: str | None = None
    """``owner/name`` of the fork the head was pushed to; None: the PR's own repository."""
    state: str = "open"


@dataclass
class FakeRepo:
    owner: str
    name: str
    id: int
    default_branch: str = "main"
    pulls: dict[int, FakePull] = field(default_factory=dict)
    contents: dict[tuple[str, str], str] = field(default_factory=dict)
    """(ref, path) -> text."""
    git_refs: dict[str, str] = field(default_factory=dict)
    """Git database refs without ``refs/`` (``notes/ai``) -> commit id."""
    git_objects: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """id -> (``blob``, bytes) | (``tree``, [(name, type, id)]) | (``commit``, tree id)."""


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    status: int
    at: float


class FakeGitHub:
    """State plus a real HTTP server; ``base_url`` is what PyGithub gets as ``base_url``."""

    def __init__(self, app_id: int, public_key_pem: str) -> None:
        self.app_id = app_id
        self.public_key_pem = public_key_pem
        self.repos: dict[str, FakeRepo] = {}
        self.installations: set[int] = set()
        self.tokens: dict[str, int] = {}
        self.reviews: list[dict[str, Any]] = []
        self.review_comments: list[dict[str, Any]] = []
        self.reactions: dict[int, list[dict[str, Any]]] = {}
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.graphql = FakeGraphQL(self)
        """GraphQL state (threads resolved, reviews minimised): ``tests/fake_graphql.py``."""
        self.commit_pulls_list_forks = True
        """``GET /commits/{sha}/pulls`` lists fork PRs too; GitHub may not (then it answers [])."""
        self._failures: list[tuple[str, re.Pattern[str], int, dict[str, str], Any]] = []
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()
        self._server = make_server("127.0.0.1", 0, self._build_app(), threaded=True)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self.templates = load_templates(self.base_url)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- state set-up ------------------------------------------------------------------------

    def add_installation(self, installation_id: int) -> None:
        self.installations.add(installation_id)

    def add_repo(self, owner: str, name: str) -> FakeRepo:
        repo = FakeRepo(owner, name, next(self._ids))
        self.repos[f"{owner}/{name}"] = repo
        return repo

    def add_pull(self, owner: str, name: str, pull: FakePull) -> FakePull:
        self.repos[f"{owner}/{name}"].pulls[pull.number] = pull
        return pull

    def put_git_notes(self, owner: str, name: str, notes: dict[str, str], ref: str = "notes/ai",
                      fanout: bool = False) -> str:
        """Store ``notes`` (commit id -> note text) as git does: blobs named by the annotated
        commit id in a notes commit's tree, under ``ab/cdef…`` directories when ``fanout``
        (git fans out large notes trees); point ``ref`` at it. Returns the notes commit id."""
        repo = self.repos[f"{owner}/{name}"]

        def put(kind: str, payload: Any, raw: bytes) -> str:
            oid = hashlib.sha1(f"{kind} {len(raw)}\0".encode() + raw).hexdigest()
            repo.git_objects[oid] = (kind, payload)
            return oid

        top: list[tuple[str, str, str]] = []
        subdirs: dict[str, list[tuple[str, str, str]]] = {}
        for sha, text in sorted(notes.items()):
            blob = put("blob", text.encode(), text.encode())
            if fanout:
                subdirs.setdefault(sha[:2], []).append((sha[2:], "blob", blob))
            else:
                top.append((sha, "blob", blob))
        for prefix, entries in sorted(subdirs.items()):
            top.append((prefix, "tree", put("tree", entries, repr(entries).encode())))
        tree = put("tree", top, repr(top).encode())
        commit = put("commit", tree, f"tree {tree}\nNotes added by 'git notes add'\n".encode())
        repo.git_refs[ref] = commit
        return commit

    def fail_next(self, method: str, path_regex: str, status: int, headers: dict[str, str] | None = None,
                  body: Any = None, times: int = 1) -> None:
        """Answer the next ``times`` matching requests with ``status`` instead of serving them."""
        for _ in range(times):
            self._failures.append((method.upper(), re.compile(path_regex), status, headers or {}, body))

    def secondary_rate_limit_next(self, method: str, path_regex: str, retry_after: int = 1) -> None:
        """GitHub's secondary rate limit: 403 with ``retry-after`` and a message saying so."""
        self.fail_next(method, path_regex, 403, {"retry-after": str(retry_after)}, {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"})

    def requests_to(self, method: str, path_regex: str) -> list[Recorded]:
        rx = re.compile(path_regex)
        return [r for r in self.requests if r.method == method and rx.search(r.path)]

    # -- HTTP --------------------------------------------------------------------------------

    def _build_app(self) -> Flask:
        app = Flask("fake_github")
        fake = self

        @app.before_request
        def inject_failure() -> Response | None:
            with fake._lock:
                for i, (method, rx, status, headers, body) in enumerate(fake._failures):
                    if method == request.method and rx.search(request.path):
                        del fake._failures[i]
                        return fake._json(body or {"message": "injected failure"}, status, headers)
            return None

        @app.after_request
        def record(resp: Response) -> Response:
            body: Any = request.get_data(as_text=True) or None
            if body and request.is_json:
                body = request.get_json(silent=True)
            with fake._lock:
                fake.requests.append(Recorded(request.method, request.path, request.query_string.decode(),
                                              dict(request.headers), body, resp.status_code, time.monotonic()))
            return resp

        @app.post("/app/installations/<int:inst>/access_tokens")
        def access_token(inst: int) -> Response:
            auth = request.headers.get("Authorization", "")
            if not auth.lower().startswith("bearer "):
                return fake._json({"message": "A JSON web token could not be decoded"}, 401)
            try:
                claims = jwt.decode(auth.split(" ", 1)[1], fake.public_key_pem, algorithms=["RS256"])
            except jwt.PyJWTError as e:
                return fake._json({"message": f"A JSON web token could not be decoded: {e}"}, 401)
            if str(claims.get("iss")) != str(fake.app_id):
                return fake._json({"message": "'Issuer' claim ('iss') must be the App id"}, 401)
            if inst not in fake.installations:
                return fake._json({"message": "Not Found"}, 404)
            token = f"ghs_fake{inst}x{next(fake._ids)}"
            fake.tokens[token] = inst
            body = copy.deepcopy(fake.templates["access_token"])
            body.update(token=token, expires_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)))
            return fake._json(body, 201)

        def authorised() -> bool:
            auth = request.headers.get("Authorization", "")
            parts = auth.split(" ", 1)
            return len(parts) == 2 and parts[0].lower() in ("token", "bearer") and parts[1] in fake.tokens

        @app.route("/repos/<owner>/<name>", defaults={"rest": ""}, methods=["GET", "POST", "PATCH"])
        @app.route("/repos/<owner>/<name>/<path:rest>", methods=["GET", "POST", "PATCH"])
        def repo_route(owner: str, name: str, rest: str) -> Response:
            if not authorised():
                return fake._json({"message": "Bad credentials"}, 401)
            repo = fake.repos.get(f"{owner}/{name}")
            if repo is None:
                return fake._json({"message": "Not Found"}, 404)
            with fake._lock:
                return fake._repo_endpoint(repo, request.method, rest)

        @app.post("/graphql")
        @app.post("/api/graphql")  # GitHub Enterprise Server (REST under /api/v3)
        def graphql() -> Response:
            if not authorised():
                return fake._json({"message": "Bad credentials"}, 401)
            with fake._lock:
                return fake._json(fake.graphql.answer(request.get_json(force=True) or {}))

        @app.get("/app")
        def the_app() -> Response:
            """The authenticated App (JWT only): its slug names the bot user, ``<slug>[bot]``."""
            auth = request.headers.get("Authorization", "")
            try:
                claims = jwt.decode(auth.split(" ", 1)[-1], fake.public_key_pem, algorithms=["RS256"])
            except jwt.PyJWTError as e:
                return fake._json({"message": f"A JSON web token could not be decoded: {e}"}, 401)
            if str(claims.get("iss")) != str(fake.app_id):
                return fake._json({"message": "'Issuer' claim ('iss') must be the App id"}, 401)
            slug = BOT_LOGIN[: -len("[bot]")]
            return fake._json({"id": fake.app_id, "slug": slug, "node_id": f"A_fake{fake.app_id}", "name": slug,
                               "owner": {"login": "octo", "type": "Organization"},
                               "permissions": {"pull_requests": "write", "checks": "write", "contents": "read"}})

        return app

    def _json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        text = json.dumps(body)
        resp = Response(text, status=status, mimetype="application/json")
        resp.headers["x-ratelimit-limit"] = "5000"
        resp.headers["x-ratelimit-remaining"] = "4999"
        for k, v in (headers or {}).items():
            resp.headers[k] = v
        return resp

    def _conditional(self, body: Any) -> Response:
        etag = '"' + hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest() + '"'
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers={"ETag": etag})
        return self._json(body, 200, {"ETag": etag})

    def _page(self, items: list[Any]) -> Response:
        per_page = int(request.args.get("per_page", 30))
        page = int(request.args.get("page", 1))
        chunk = items[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(items):
            nxt = f"{self.base_url}{request.path}?per_page={per_page}&page={page + 1}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        resp = self._conditional(chunk)
        for k, v in headers.items():
            resp.headers[k] = v
        return resp

    def _repo_endpoint(self, repo: FakeRepo, method: str, rest: str) -> Response:
        parts = rest.split("/") if rest else []
        if method == "GET" and not parts:
            return self._json(self._repo_json(repo))
        if parts[:1] == ["pulls"] and len(parts) >= 2 and parts[1].isdigit():
            pull = repo.pulls.get(int(parts[1]))
            if pull is None:
                return self._json({"message": "Not Found"}, 404)
            sub = parts[2:]
            if method == "GET" and not sub:
                return self._json(self._pull_json(repo, pull))
            if method == "GET" and sub == ["files"]:
                return self._page([self._file_json(f) for f in pull.files])
            if method == "GET" and sub == ["commits"]:
                return self._page([self._commit_json(repo, c, with_files=False) for c in pull.commits])
            if method == "GET" and sub == ["comments"]:
                return self._page([c for c in self.review_comments
                                   if c["_repo"] == repo.id and c["_pull"] == pull.number])
            if method == "GET" and sub == ["reviews"]:
                return self._page([r for r in self.reviews if r["_repo"] == repo.id and r["_pull"] == pull.number])
            if method == "POST" and sub == ["reviews"]:
                return self._create_review(repo, pull, request.get_json(force=True))
        if parts[:2] == ["pulls", "comments"] and len(parts) == 4 and parts[3] == "reactions":
            cid = int(parts[2])
            if method == "GET":
                return self._page(self.reactions.get(cid, []))
            reaction = copy.deepcopy(self.templates["reaction"])
            reaction.update(id=next(self._ids), content=request.get_json(force=True)["content"])
            self.reactions.setdefault(cid, []).append(reaction)
            return self._json(reaction, 201)
        if method == "GET" and parts == ["pulls"]:
            state = request.args.get("state", "open")
            return self._page([self._pull_json(repo, p) for _, p in sorted(repo.pulls.items(), reverse=True)
                               if state == "all" or p.state == state])
        if method == "GET" and parts[:1] == ["commits"] and len(parts) == 3 and parts[2] == "pulls":
            return self._page([self._pull_json(repo, p) for _, p in sorted(repo.pulls.items(), reverse=True)
                               if parts[1] in [p.head_sha] + [c.sha for c in p.commits]
                               and (self.commit_pulls_list_forks or not p.head_repo)])
        if method == "GET" and parts[:1] == ["commits"] and len(parts) == 2:
            for pull in repo.pulls.values():
                for c in pull.commits:
                    if c.sha == parts[1]:
                        return self._json(self._commit_json(repo, c, with_files=True))
            return self._json({"message": "No commit found for SHA: " + parts[1]}, 422)
        if method == "GET" and parts[:1] == ["git"] and len(parts) >= 3:
            return self._git_endpoint(repo, parts[1], "/".join(parts[2:]))
        if method == "GET" and parts[:1] == ["contents"]:
            path = "/".join(parts[1:])
            ref = request.args.get("ref", repo.default_branch)
            text = repo.contents.get((ref, path))
            if text is None:
                return self._json({"message": "Not Found"}, 404)
            return self._json(self._content_json(repo, path, ref, text))
        if parts[:1] == ["check-runs"]:
            if method == "POST" and len(parts) == 1:
                return self._save_check_run(repo, None, request.get_json(force=True))
            if len(parts) == 2 and int(parts[1]) in self.check_runs:
                if method == "PATCH":
                    return self._save_check_run(repo, int(parts[1]), request.get_json(force=True))
                return self._json(self.check_runs[int(parts[1])])
        return self._json({"message": f"fake GitHub does not serve {method} /{rest}"}, 404)

    def _git_endpoint(self, repo: FakeRepo, kind: str, rest: str) -> Response:
        """The Git database API (``git/ref``, ``git/commits``, ``git/trees``, ``git/blobs``)."""
        api = f"{self.base_url}/repos/{repo.owner}/{repo.name}/git"
        not_found = self._json({"message": "Not Found",
                                "documentation_url": "https://docs.github.com/rest/git"}, 404)
        if kind == "ref":
            if rest not in repo.git_refs:
                return not_found
            sha = repo.git_refs[rest]
            return self._json({"ref": f"refs/{rest}", "node_id": "REF_fake", "url": f"{api}/refs/{rest}",
                               "object": {"sha": sha, "type": "commit", "url": f"{api}/commits/{sha}"}})
        obj = repo.git_objects.get(rest)
        if obj is None or {"commits": "commit", "trees": "tree", "blobs": "blob"}.get(kind) != obj[0]:
            return not_found
        if kind == "commits":
            return self._json({"sha": rest, "url": f"{api}/commits/{rest}", "message": "Notes added by 'git notes add'",
                               "tree": {"sha": obj[1], "url": f"{api}/trees/{obj[1]}"}, "parents": []})
        if kind == "blobs":
            raw: bytes = obj[1]
            # GitHub wraps the base64 text in lines, as ``encodebytes`` does.
            return self._json({"sha": rest, "node_id": "BLOB_fake", "size": len(raw), "url": f"{api}/blobs/{rest}",
                               "content": base64.encodebytes(raw).decode(), "encoding": "base64"})
        entries = []

        def walk(tree_id: str, prefix: str) -> None:
            for name, typ, oid in repo.git_objects[tree_id][1]:
                entries.append({"path": prefix + name, "mode": "040000" if typ == "tree" else "100644",
                                "type": typ, "sha": oid, "url": f"{api}/{typ}s/{oid}"})
                if typ == "tree" and request.args.get("recursive"):
                    walk(oid, prefix + name + "/")

        walk(rest, "")
        return self._json({"sha": rest, "url": f"{api}/trees/{rest}", "tree": entries, "truncated": False})

    # -- bodies built from the recorded templates ---------------------------------------------

    def _repo_json(self, repo: FakeRepo) -> dict[str, Any]:
        body = copy.deepcopy(self.templates["repo"])
        body = json.loads(json.dumps(body).replace("PyGithub/PyGithub", f"{repo.owner}/{repo.name}"))
        body.update(id=repo.id, name=repo.name, full_name=f"{repo.owner}/{repo.name}",
                    default_branch=repo.default_branch)
        body["owner"]["login"] = repo.owner
        return body

    def _pull_json(self, repo: FakeRepo, pull: FakePull) -> dict[str, Any]:
        body = copy.deepcopy(self.templates["pull"])
        text = json.dumps(body).replace("PyGithub/PyGithub", f"{repo.owner}/{repo.name}")
        body = json.loads(text.replace("/pulls/31", f"/pulls/{pull.number}").replace("/issues/31", f"/issues/{pull.number}"))
        body.update(number=pull.number, title=pull.title, draft=pull.draft, state=pull.state, merged=False,
                    labels=[{"name": lab} for lab in pull.labels])
        body["user"]["login"] = pull.author
        head_repo = self.repos.get(pull.head_repo or "", repo)
        body["head"].update(sha=pull.head_sha, ref=pull.head_ref, repo=self._repo_json(head_repo))
        body["base"].update(sha=pull.base_sha, ref=pull.base_ref, repo=self._repo_json(repo))
        return body

    def _file_json(self, f: FakeFile) -> dict[str, Any]:
        body = copy.deepcopy(self.templates["file"])
        adds, dels = f.counts()
        body.update(filename=f.filename, status=f.status, additions=adds, deletions=dels, changes=adds + dels)
        body.pop("patch", None)
        if f.patch is not None:
            body["patch"] = f.patch
        if f.previous_filename:
            body["previous_filename"] = f.previous_filename
        return body

    def _commit_json(self, repo: FakeRepo, c: FakeCommit, with_files: bool) -> dict[str, Any]:
        body = copy.deepcopy(self.templates["commit"])
        body["url"] = f"{self.base_url}/repos/{repo.owner}/{repo.name}/commits/{c.sha}"
        body["sha"] = c.sha
        body["commit"].update(
            message=c.message,
            author={"name": c.author_name, "email": c.author_email, "date": "2026-01-01T00:00:00Z"},
            committer={"name": c.committer_name or c.author_name, "email": c.committer_email or c.author_email,
                       "date": "2026-01-01T00:00:00Z"})
        for key, login in (("author", c.author_login), ("committer", c.committer_login or c.author_login)):
            if login is None:
                body[key] = None
            else:
                body[key] = dict(body[key] or {}, login=login,
                                 type="Bot" if login.endswith("[bot]") else "User")
        if with_files:
            body["files"] = [self._file_json(f) for f in c.files]
        else:
            body.pop("files", None)
            body.pop("stats", None)
        return body

    def _content_json(self, repo: FakeRepo, path: str, ref: str, text: str) -> dict[str, Any]:
        raw = text.encode()
        url = f"{self.base_url}/repos/{repo.owner}/{repo.name}/contents/{path}?ref={ref}"
        sha = hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest()
        return {"type": "file", "encoding": "base64", "size": len(raw), "name": path.rsplit("/", 1)[-1],
                "path": path, "content": base64.b64encode(raw).decode(), "sha": sha, "url": url,
                "git_url": None, "html_url": None, "download_url": None, "_links": {"self": url}}

    def _create_review(self, repo: FakeRepo, pull: FakePull, data: dict[str, Any]) -> Response:
        event = data.get("event")
        if event in ("COMMENT", "REQUEST_CHANGES") and not data.get("body"):
            return self._json({"message": "Unprocessable Entity",
                               "errors": [f"Review body is required for {event}"]}, 422)
        if len(data.get("body") or "") > 65536:
            return self._json({"message": "Validation Failed", "errors": [
                {"resource": "PullRequestReview", "code": "custom", "field": "body",
                 "message": "body is too long (maximum is 65536 characters)"}]}, 422)
        files = {f.filename: f for f in pull.files}
        for c in data.get("comments") or []:
            error = self._anchor_error(files, c)
            if error:
                # All-or-nothing, and like GitHub the error does not say which comment was bad.
                return self._json({"message": "Unprocessable Entity", "errors": [error],
                                   "documentation_url": "https://docs.github.com/rest/pulls/reviews"}, 422)
        review = copy.deepcopy(self.templates["review"])
        rid = next(self._ids)
        pr_url = f"{self.base_url}/repos/{repo.owner}/{repo.name}/pulls/{pull.number}"
        review.update(id=rid, body=data.get("body") or "", commit_id=data.get("commit_id") or pull.head_sha,
                      state="COMMENTED" if event == "COMMENT" else ("PENDING" if not event else event),
                      pull_request_url=pr_url, _repo=repo.id, _pull=pull.number,
                      user=dict(review["user"], login=BOT_LOGIN, type="Bot"))
        self.reviews.append(review)
        for c in data.get("comments") or []:
            comment = copy.deepcopy(self.templates["review_comment"])
            comment.update(id=next(self._ids), pull_request_review_id=rid, path=c["path"], line=c["line"],
                           side=c.get("side", "RIGHT"), start_line=c.get("start_line"), body=c["body"],
                           commit_id=review["commit_id"], pull_request_url=pr_url,
                           user=dict(comment["user"], login=BOT_LOGIN, type="Bot"),
                           _repo=repo.id, _pull=pull.number)
            comment["url"] = f"{self.base_url}/repos/{repo.owner}/{repo.name}/pulls/comments/{comment['id']}"
            self.review_comments.append(comment)
        return self._json(review, 200)

    @staticmethod
    def _anchor_error(files: dict[str, FakeFile], c: dict[str, Any]) -> str | None:
        f = files.get(c.get("path", ""))
        if f is None or not f.patch:
            return "Pull request review thread path is invalid"
        if "line" not in c:
            return "Pull request review thread line must be part of the diff"
        side = 0 if c.get("side", "RIGHT") == "RIGHT" else 1
        hunks = hunk_anchors(f.patch)
        hunk = next((h for h in hunks if c["line"] in h[side]), None)
        if hunk is None:
            return "Pull request review thread line must be part of the diff"
        start = c.get("start_line")
        if start is not None:
            if start >= c["line"]:
                return "Pull request review thread start line must precede the end line."
            if start not in hunk[0 if c.get("start_side", "RIGHT") == "RIGHT" else 1]:
                return "Pull request review thread start line must be part of the same hunk as the line."
        return None

    def _save_check_run(self, repo: FakeRepo, run_id: int | None, data: dict[str, Any]) -> Response:
        if run_id is None:
            missing = [k for k in ("name", "head_sha") if not data.get(k)]
            if missing:
                return self._json({"message": "Invalid request", "errors": [f"{k} is missing" for k in missing]}, 422)
            run = copy.deepcopy(self.templates["check_run"])
            run_id = next(self._ids)
            run.update(id=run_id, url=f"{self.base_url}/repos/{repo.owner}/{repo.name}/check-runs/{run_id}",
                       conclusion=None, external_id=None, details_url=None)
        else:
            run = self.check_runs[run_id]
        output = data.get("output")
        if output and len(output.get("summary", "")) > 65535:
            return self._json({"message": "Invalid request",
                               "errors": ["Only 65535 characters are allowed in summary"]}, 422)
        for key in ("name", "head_sha", "status", "conclusion", "external_id", "details_url"):
            if key in data:
                run[key] = data[key]
        if data.get("conclusion") and "status" not in data:
            run["status"] = "completed"
        if output:
            run["output"] = dict(run.get("output") or {}, **output)
        self.check_runs[run_id] = run
        return self._json(run, 201 if request.method == "POST" else 200)
