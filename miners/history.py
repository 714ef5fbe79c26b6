"""Stream a repository's history as parsed commits, in one ``git log -p`` pass.

One subprocess prints every commit with its diff; we parse its stdout line by line, so memory
is bounded by the largest commit we keep (and diffs past ``max_file_lines`` are dropped with a
reason), not by the repository. This is the fast path PyDriller lacks: it asks git for one diff
object per commit and file.

Diffs use ``-U0``: hunks then hold exactly the changed lines, and snippets take their context
from the blobs (``BlobReader``), read only for the few files worth mining.
"""

from __future__ import annotations

import codecs
import logging
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from analyzer.types import DiffLine, FileDiff, FileStatus, Hunk

log = logging.getLogger(__name__)

# NUL cannot occur in a commit message, so it delimits the header fields safely.
_START = b"\x00PTBOT-COMMIT\x00"
_END = b"\x00PTBOT-END\x00"
_FORMAT = "%x00PTBOT-COMMIT%x00%H%x00%P%x00%at%x00%B%x00PTBOT-END%x00"


class GitError(RuntimeError):
    """git failed: the message carries the command's stderr."""


@dataclass(frozen=True)
class Commit:
    """One commit of the stream: identity, message and the diff against its first parent."""

    sha: str
    parents: tuple[str, ...]
    timestamp: int
    message: str
    files: tuple[FileDiff, ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()
    """(path, reason) for files the reader could not keep: non-UTF-8 content, oversized diff."""
    diff_read: bool = True
    """False when the caller's ``want`` filter declined this commit's diff (``files`` is empty)."""

    @property
    def subject(self) -> str:
        """First line of the message."""
        return self.message.split("\n", 1)[0].strip()


def git(repo: Path | str, *args: str, check: bool = True) -> str:
    """Run a short git command in ``repo`` and return its stdout (raises GitError on failure)."""
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {repo}: "
                       f"{proc.stderr.decode('utf-8', 'replace').strip()}")
    return proc.stdout.decode("utf-8", "replace")


def _unquote(path: bytes) -> bytes:
    """Undo git's C-style quoting of unusual paths ("a\\tb" -> a<TAB>b)."""
    if path.startswith(b'"') and path.endswith(b'"'):
        return codecs.escape_decode(path[1:-1])[0]
    return path


def _strip_prefix(path: bytes) -> bytes | None:
    """Path of a ``--- a/X`` / ``+++ b/X`` line, None for /dev/null."""
    path = _unquote(path.rstrip(b"\n"))
    if path == b"/dev/null":
        return None
    return path[2:] if path[:2] in (b"a/", b"b/") else path


def _paths_from_git_line(rest: bytes) -> tuple[bytes, bytes]:
    """Old and new path of ``diff --git a/X b/Y`` when no ---/+++ or rename lines tell them."""
    rest = rest.rstrip(b"\n")
    if rest.startswith(b'"'):
        end = rest.index(b'"', 1)
        while rest[end - 1:end] == b"\\":
            end = rest.index(b'"', end + 1)
        return _strip_prefix(rest[: end + 1]) or b"", _strip_prefix(rest[end + 2:]) or b""
    # Unrenamed: "a/P b/P", both halves equal, which disambiguates paths holding " b/".
    half = (len(rest) - 1) // 2
    if rest[half:half + 1] == b" " and rest[2:half] == rest[half + 3:]:
        return rest[2:half], rest[2:half]
    a, _, b = rest.partition(b" b/")
    return a[2:], b


@dataclass
class _FileBuilder:
    """Accumulates one ``diff --git`` section."""

    git_paths: tuple[bytes, bytes]
    old: bytes | None = None
    new: bytes | None = None
    status: FileStatus = "modified"
    binary: bool = False
    hunks: list[Hunk] = field(default_factory=list)
    lines: list[DiffLine] = field(default_factory=list)
    hunk_head: tuple[int, int, int, int, str] | None = None
    n_lines: int = 0
    old_no: int = 0  # line number the next "-" or " " line has in the old file
    new_no: int = 0
    drop: str | None = None
    saw_header: bool = False

    def close_hunk(self) -> None:
        if self.hunk_head is not None:
            os_, oc, ns, nc, header = self.hunk_head
            self.hunks.append(Hunk(os_, oc, ns, nc, tuple(self.lines), header))
        self.hunk_head, self.lines = None, []

    def path_bytes(self) -> bytes:
        return self.new or self.old or self.git_paths[1] or self.git_paths[0]

    def build(self) -> tuple[FileDiff | None, tuple[str, str] | None]:
        self.close_hunk()
        old, new = self.old, self.new
        if not self.saw_header:  # no ---/+++ lines (binary, mode or rename only)
            old = old if old is not None else (None if self.status == "added" else self.git_paths[0])
            new = new if new is not None else (None if self.status == "deleted" else self.git_paths[1])
        try:
            old_s = old.decode("utf-8") if old is not None else None
            new_s = new.decode("utf-8") if new is not None else None
        except UnicodeDecodeError:
            return None, (self.path_bytes().decode("utf-8", "replace"), "non-UTF-8 path")
        path = new_s or old_s or ""
        if self.drop:
            return None, (path, self.drop)
        return FileDiff(old_s, new_s, self.status, tuple(self.hunks), self.binary), None


def _parse_hunk_head(line: bytes) -> tuple[int, int, int, int, str]:
    # @@ -a[,b] +c[,d] @@ header
    head, _, rest = line[3:].partition(b" @@")
    old, new = head.split(b" ")
    def span(s: bytes) -> tuple[int, int]:
        start, _, count = s[1:].partition(b",")
        return int(start), int(count) if count else 1
    os_, oc = span(old)
    ns, nc = span(new)
    return os_, oc, ns, nc, rest.strip().decode("utf-8", "replace")


def iter_commits(
    repo: Path | str,
    rev: str = "HEAD",
    *,
    since: str | None = None,
    until: str | None = None,
    max_commits: int | None = None,
    max_file_lines: int = 5000,
    paths: tuple[str, ...] = (),
    want: Callable[[str, tuple[str, ...]], bool] | None = None,
    chunk: int = 1000,
    shas: Sequence[str] | None = None,
) -> Iterator[Commit]:
    """Yield the commits reachable from ``rev`` (newest first), each with its parsed ``-U0`` diff.

    Merges come with no files (git shows no diff for them without ``-m``). A file whose diff has
    more than ``max_file_lines`` lines, or whose changed lines are not UTF-8, is listed in
    ``Commit.dropped`` instead of ``files``. With ``want(message, parents)``, only the commits it
    accepts get a diff; the others come with ``diff_read=False``. Raises GitError when git fails
    (bad revision, corrupt objects); commits already yielded stay valid.

    ``shas`` (at most 1500): exactly these commits, in this order, instead of walking ``rev``
    (``since``/``until``/``max_commits`` then do not apply). ``ptbot mine-repo --queue`` mines
    a history in such ranges; each commit comes out as it would from the walk.
    """
    if not 1 <= chunk <= 1500:
        raise ValueError("chunk must be between 1 and 1500 (the shas must fit git's stdin pipe)")
    select = []
    stdin = None
    if shas is not None:
        if len(shas) > 1500:
            raise ValueError("at most 1500 shas at once (they must fit git's stdin pipe)")
        if not shas:
            return
        select, stdin = ["--no-walk=unsorted", "--stdin", "--", *paths], "".join(s + "\n" for s in shas)
    else:
        if since:
            select.append(f"--since={since}")
        if until:
            select.append(f"--until={until}")
        if max_commits is not None:
            select.append(f"--max-count={max_commits}")
        select += [rev, "--", *paths]
    if want is None:
        yield from _git_log(repo, ["-p", *_DIFF_ARGS, *select], stdin, max_file_lines)
        return
    # Two streams: headers only (cheap), then, per chunk of headers, one `git log -p --stdin`
    # over the wanted commits. git then computes diffs only for those, and memory stays at one
    # chunk of headers.
    pending: list[Commit] = []

    def flush() -> Iterator[Commit]:
        # --no-walk=unsorted keeps stdin order, so the diffs arrive in `pending` order: merge the
        # two as they come (a failure part-way still leaves the earlier commits yielded).
        wanted = [c.sha for c in pending if c.diff_read]
        i = 0
        if wanted:
            args = ["-p", *_DIFF_ARGS, "--no-walk=unsorted", "--stdin", "--", *paths]
            for d in _git_log(repo, args, "\n".join(wanted) + "\n", max_file_lines):
                while pending[i].sha != d.sha:
                    yield pending[i]
                    i += 1
                yield d
                i += 1
        yield from pending[i:]
        pending.clear()

    for c in _git_log(repo, select, stdin, max_file_lines):
        ok = want(c.message, c.parents)
        pending.append(Commit(c.sha, c.parents, c.timestamp, c.message, diff_read=ok))
        if len(pending) >= chunk:
            yield from flush()
    yield from flush()


_DIFF_ARGS = ("-M", "-U0", "--no-color", "--no-ext-diff", "--no-textconv")


def _git_log(repo: Path | str, args: list[str], stdin: str | None,
             max_file_lines: int) -> Iterator[Commit]:
    cmd = ["git", "-C", str(repo), "-c", "core.quotepath=off", "log", f"--format={_FORMAT}", *args]
    log.debug("running %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1 << 16)
    assert proc.stdout is not None
    if stdin is not None:
        assert proc.stdin is not None
        # One chunk of shas (41 bytes each) fits the pipe buffer, so this cannot block on git.
        proc.stdin.write(stdin.encode())
        proc.stdin.close()
    try:
        yield from _parse_stream(proc.stdout, max_file_lines)
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read() if proc.stderr else b""
        code = proc.wait()
        if proc.stderr:
            proc.stderr.close()
    if code != 0:
        raise GitError(f"git log failed in {repo} (exit {code}): "
                       f"{stderr.decode('utf-8', 'replace').strip()}")


def _parse_header(raw: bytes) -> tuple[str, tuple[str, ...], int, str]:
    raw = raw[raw.index(_START) + len(_START): raw.index(_END)]
    sha, parents, ts, message = raw.split(b"\x00", 3)
    return (sha.decode(), tuple(parents.decode().split()), int(ts or 0),
            message.decode("utf-8", "replace").strip())


def _parse_stream(stream, max_file_lines: int) -> Iterator[Commit]:  # noqa: C901 (state machine)
    header: list[bytes] | None = None
    meta: tuple[str, tuple[str, ...], int, str] | None = None
    files: list[FileDiff] = []
    dropped: list[tuple[str, str]] = []
    cur: _FileBuilder | None = None
    old_left = new_left = 0  # lines still expected in the current hunk

    def finish_file() -> None:
        nonlocal cur
        if cur is not None:
            fd, drop = cur.build()
            if fd is not None:
                files.append(fd)
            if drop is not None:
                dropped.append(drop)
        cur = None

    def finish_commit() -> Commit | None:
        nonlocal files, dropped
        finish_file()
        if meta is None:
            return None
        sha, parents, ts, message = meta
        c = Commit(sha, parents, ts, message, tuple(files), tuple(dropped))
        files, dropped = [], []
        return c

    for line in stream:
        if header is not None:  # inside the NUL-delimited commit header
            header.append(line)
            if _END in line:
                meta, header = _parse_header(b"".join(header)), None
            continue
        if old_left > 0 or new_left > 0:  # hunk body: counted, so "--- x" content is safe
            assert cur is not None
            kind = line[:1]
            if kind == b"\\":  # "\ No newline at end of file"
                continue
            if kind == b"-":
                old_left -= 1
            elif kind == b"+":
                new_left -= 1
            else:
                old_left -= 1
                new_left -= 1
            cur.n_lines += 1
            if cur.drop:
                continue
            if cur.n_lines > max_file_lines:
                cur.drop = f"diff too large (over {max_file_lines} lines)"
                cur.hunks, cur.lines = [], []
                continue
            try:
                text = line[1:].rstrip(b"\n").decode("utf-8")
            except UnicodeDecodeError:
                cur.drop = "non-UTF-8 content"
                cur.hunks, cur.lines = [], []
                continue
            if kind == b"-":
                cur.lines.append(DiffLine("-", text, cur.old_no, None))
                cur.old_no += 1
            elif kind == b"+":
                cur.lines.append(DiffLine("+", text, None, cur.new_no))
                cur.new_no += 1
            else:
                cur.lines.append(DiffLine(" ", text, cur.old_no, cur.new_no))
                cur.old_no += 1
                cur.new_no += 1
            continue
        if line.startswith(_START):
            c = finish_commit()
            if c is not None:
                yield c
            meta, header, old_left, new_left = None, [line], 0, 0
            if _END in line:  # an empty message keeps the whole header on one line
                meta, header = _parse_header(line), None
            continue
        if line.startswith(b"diff --git "):
            finish_file()
            cur = _FileBuilder(_paths_from_git_line(line[len(b"diff --git "):]))
            continue
        if cur is None:
            continue  # blank line after the header
        if line.startswith(b"@@ "):
            cur.close_hunk()
            cur.hunk_head = _parse_hunk_head(line.rstrip(b"\n"))
            old_left, new_left = cur.hunk_head[1], cur.hunk_head[3]
            cur.old_no, cur.new_no = cur.hunk_head[0], cur.hunk_head[2]
        elif line.startswith(b"--- "):
            cur.saw_header = True
            cur.old = _strip_prefix(line[4:])
        elif line.startswith(b"+++ "):
            cur.saw_header = True
            cur.new = _strip_prefix(line[4:])
        elif line.startswith(b"new file mode"):
            cur.status = "added"
        elif line.startswith(b"deleted file mode"):
            cur.status = "deleted"
        elif line.startswith(b"rename from "):
            cur.status, cur.old = "renamed", _unquote(line[12:].rstrip(b"\n"))
        elif line.startswith(b"rename to "):
            cur.new = _unquote(line[10:].rstrip(b"\n"))
        elif line.startswith(b"copy from "):
            cur.status, cur.old = "copied", _unquote(line[10:].rstrip(b"\n"))
        elif line.startswith(b"copy to "):
            cur.new = _unquote(line[8:].rstrip(b"\n"))
        elif line.startswith(b"Binary files ") or line.startswith(b"GIT binary patch"):
            cur.binary = True
    c = finish_commit()
    if c is not None:
        yield c


class BlobReader:
    """File contents at any revision through one long-lived ``git cat-file --batch`` process."""

    def __init__(self, repo: Path | str, max_bytes: int = 1 << 20) -> None:
        self.repo, self.max_bytes = str(repo), max_bytes
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            self._proc = subprocess.Popen(
                ["git", "-C", self.repo, "cat-file", "--batch"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return self._proc

    def read(self, rev: str, path: str) -> bytes | None:
        """Bytes of ``path`` at ``rev``; None if missing, not a blob, or above ``max_bytes``."""
        return self.read_many([(rev, path)])[0]

    def read_many(self, wanted: list[tuple[str, str]]) -> list[bytes | None]:
        """``read`` for several (rev, path) at once: one round trip to git instead of one each."""
        asks = [(rev, path) for rev, path in wanted if "\n" not in path]
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("".join(f"{rev}:{path}\n" for rev, path in asks).encode())
        proc.stdin.flush()
        got: dict[tuple[str, str], bytes | None] = {}
        for ask in asks:
            head = proc.stdout.readline().split()
            if len(head) != 3:  # "<name> missing" / "ambiguous"
                got[ask] = None
                continue
            size = int(head[2])
            if head[1] != b"blob" or size > self.max_bytes:
                left = size + 1  # drain it in pieces: a huge blob must not land in memory
                while left:
                    left -= len(proc.stdout.read(min(left, 1 << 20)))
                got[ask] = None
                continue
            got[ask] = proc.stdout.read(size + 1)[:-1]  # trailing LF after the content
        return [got.get(w) for w in wanted]

    def close(self) -> None:
        """Stop the git process."""
        if self._proc is not None:
            for s in (self._proc.stdin, self._proc.stdout):
                if s is not None:
                    s.close()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
