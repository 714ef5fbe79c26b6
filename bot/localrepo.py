"""What ``ptbot review`` reads from a local git repository: revisions, the diff, file contents.

It runs the ``git`` executable (the same one the user runs, so it honours their
``.gitignore`` and repository layout) and never writes to the repository. Every failure is a
``RepoError`` whose message is meant for the user; ``ptbot/cli.py`` turns it into a clean exit.

Which change is reviewed (``LocalRepo.diff``):

=================  ==========================================================================
base / head        diff
=================  ==========================================================================
None / None        HEAD against the working tree (staged and unstaged changes, plus untracked
                   files that are not ignored, shown as added): "my change"
X / None           X against the working tree (same, including untracked files)
X / Y              X against Y (two commits; ``git diff X Y``, no merge base)
None / Y           Y against its first parent: the commit Y on its own
=================  ==========================================================================

In a repository without commits the base is the empty tree, so every file is added.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from analyzer.diff import DiffError, decode_diff
from analyzer.types import FileDiff
from bot.attestations import MAX_TRACE_BYTES, NOTES_REF, TRACE_PATH, commit_line_marks
from bot.provenance import CommitInfo, LineProvenance, Person, attribute_lines

logger = logging.getLogger(__name__)

# Pin everything that changes the shape of git's output, whatever the user's config says:
# paths quoted as octal (analyzer.diff decodes them), a/ b/ prefixes, no colour, no pager.
_GIT = ("git", "--no-pager", "-c", "core.quotePath=true", "-c", "diff.noprefix=false",
        "-c", "diff.mnemonicPrefix=false", "-c", "color.ui=never")
_DIFF = ("diff", "-M", "--no-color", "--no-ext-diff", "--no-textconv", "-U3",
         "--src-prefix=a/", "--dst-prefix=b/")


class RepoError(ValueError):
    """A local repository problem, worded for the user (not a repository, unknown revision...)."""


@dataclass(frozen=True, slots=True)
class RepoDiff:
    """The change to review, as diff text and parsed files."""

    text: str
    """Unified diff; bytes that are not UTF-8 are replaced by U+FFFD (see ``undecodable``)."""
    files: tuple[FileDiff, ...]
    """``analyzer.diff.parse_diff(text)``."""
    undecodable: frozenset[str]
    """Paths whose diff was not valid UTF-8: skip them rather than score mangled text."""
    base: str
    """Object id of the base: a commit, or the empty tree when there is no parent commit."""
    head: str | None
    """Commit id of the new side, or None for the working tree; pass it to ``file_text``."""


class LocalRepo:
    """A git work tree, read through the ``git`` command line."""

    def __init__(self, path: str | os.PathLike[str] = ".", *, timeout: float = 300.0) -> None:
        """Open the work tree containing ``path``; RepoError if there is none.

        ``timeout`` bounds each git command (seconds), so a hung filesystem cannot hang a review.
        """
        self.timeout = timeout
        where = Path(path)
        if not where.is_dir():
            raise RepoError(f"not a git repository: {path} (no such directory)")
        p = self._run(["rev-parse", "--show-toplevel"], cwd=where)
        if p.returncode != 0:
            raise RepoError(f"not a git repository: {path} (run 'git init' there, or pass --repo "
                            "with the path of a git work tree)")
        self.root = Path(os.fsdecode(p.stdout.rstrip(b"\n")))

    def __repr__(self) -> str:
        return f"LocalRepo({str(self.root)!r})"

    # --- revisions -----------------------------------------------------------------------------

    def resolve(self, rev: str) -> str:
        """Full commit id of ``rev`` (branch, tag, sha, ``HEAD~2``...); RepoError if unknown."""
        p = self._run(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"])
        if p.returncode != 0 or not rev:
            hint = " (the repository has no commits yet)" if not self._has_commits() else ""
            raise RepoError(f"unknown revision '{rev}': not a commit, branch or tag in "
                            f"{self.root}{hint}")
        return p.stdout.decode().strip()

    def _has_commits(self) -> bool:
        return self._run(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]).returncode == 0

    def _empty_tree(self) -> str:
        # Hashed rather than hard-coded so that SHA-256 repositories work too.
        return self._check(["hash-object", "-t", "tree", "--stdin"]).decode().strip()

    # --- the diff ------------------------------------------------------------------------------

    def diff(self, base: str | None = None, head: str | None = None) -> RepoDiff:
        """The change to review (module docstring: which one for each base/head combination)."""
        head_sha = self.resolve(head) if head is not None else None
        if base is not None:
            base_id = self.resolve(base)
        elif head_sha is not None:
            parent = self._run(["rev-parse", "--verify", "--quiet", f"{head_sha}^1^{{commit}}"])
            base_id = (parent.stdout.decode().strip() if parent.returncode == 0
                       else self._empty_tree())
        else:
            base_id = self.resolve("HEAD") if self._has_commits() else self._empty_tree()

        args = [*_DIFF, base_id] + ([head_sha] if head_sha else []) + ["--"]
        data = self._check(args)
        if head_sha is None:
            data += self._untracked_diff()
        try:
            decoded = decode_diff(data)
        except DiffError as e:  # git's own output: a parser bug, but still no traceback for users
            raise RepoError(f"could not parse the output of 'git diff' in {self.root}: {e}") from e
        if decoded.undecodable:
            logger.info("not valid UTF-8: %s", ", ".join(sorted(decoded.undecodable)))
        return RepoDiff(decoded.text, decoded.files, decoded.undecodable, base_id, head_sha)

    def diff_text(self, base: str | None = None, head: str | None = None) -> str:
        """``diff(base, head).text``."""
        return self.diff(base, head).text

    def _untracked_diff(self) -> bytes:
        """Untracked, not ignored files as "new file" diffs, without touching the index
        (``git add -N`` would change the user's staging area)."""
        listing = self._check(["ls-files", "-z", "--others", "--exclude-standard"])
        out = []
        for raw in listing.split(b"\0"):
            if not raw or raw.endswith(b"/"):  # "sub/" is an untracked nested repository
                continue
            p = self._run([*_DIFF, "--no-index", "--", "/dev/null", raw])
            if p.returncode not in (0, 1):  # --no-index exits 1 when the files differ
                raise RepoError(f"git diff failed on untracked file {os.fsdecode(raw)}: "
                                f"{_stderr(p)}")
            out.append(p.stdout)
        if out:
            logger.debug("%d untracked file(s) added to the diff", len(out))
        return b"".join(out)

    # --- file contents -------------------------------------------------------------------------

    def file_text(self, path: str, rev: str | None = None) -> bytes | None:
        """Bytes of ``path`` (relative to the repository root) at ``rev``, or in the working
        tree when ``rev`` is None; None when the file does not exist there.

        A symlink gives its target, as git stores and diffs it; the link is never followed, so a
        path from an untrusted diff cannot read outside the repository.
        """
        rel = self._relative(path)
        if rev is None:
            full = self.root / rel
            try:
                if full.is_symlink():
                    return os.fsencode(os.readlink(full))
                return full.read_bytes() if full.is_file() else None
            except OSError as e:
                raise RepoError(f"cannot read {path}: {e.strerror}") from e
        sha = self.resolve(rev)
        p = self._run(["cat-file", "blob", f"{sha}:{rel}"])
        return p.stdout if p.returncode == 0 else None

    def _relative(self, path: str) -> str:
        pure = PurePosixPath(path)
        if pure.is_absolute():
            try:
                pure = PurePosixPath(Path(path).relative_to(self.root))
            except ValueError:
                raise RepoError(f"path outside the repository {self.root}: {path}") from None
        if ".." in pure.parts or not pure.parts:
            raise RepoError(f"path outside the repository {self.root}: {path!r}")
        return pure.as_posix()

    # --- provenance ----------------------------------------------------------------------------

    def line_provenance(self, diff: RepoDiff) -> dict[tuple[str, int], LineProvenance]:
        """Who wrote each added line of ``diff``, as the App decides it for a PR
        (``bot.provenance.attribute_lines``): the commits between ``diff.base`` and its head
        (HEAD for the working tree) replayed, with their trailers and authors, the git-ai notes
        under ``refs/notes/ai`` and ``.agent-trace/traces.jsonl`` at the head. Lines changed
        only in the working tree have no commit, so they count as not AI-authored.
        """
        commits = self.commits(diff.base, diff.head)
        shas = [c.sha for c in commits]
        raw = self.agent_traces(diff.head)
        traces = raw.decode("utf-8", errors="replace") if raw is not None else None
        marks = commit_line_marks(shas, self.ai_notes(shas), traces)
        return attribute_lines(diff.files, commits, line_marks=marks)

    def commits(self, base: str, head: str | None = None) -> list[CommitInfo]:
        """The commits in ``base..head`` (head: HEAD when None) oldest first, each with its own
        diff against its first parent; ``base`` may be the empty tree (every commit of head)."""
        if not self._has_commits():
            return []
        head_sha = self.resolve(head or "HEAD")
        base_is_commit = self._run(["rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"]).returncode == 0
        spec = [f"{base}..{head_sha}"] if base_is_commit else [head_sha]
        shas = self._check(["rev-list", "--reverse", "--topo-order", *spec, "--"]).decode().split()
        out = []
        for sha in shas:
            fields = self._check(["show", "-s", "--format=%an%x00%ae%x00%cn%x00%ce%x00%P%x00%B",
                                  sha]).decode("utf-8", errors="replace").split("\0", 5)
            an, ae, cn, ce, parents, message = fields
            parent = parents.split()[0] if parents.split() else self._empty_tree()
            try:
                files = decode_diff(self._check([*_DIFF, parent, sha, "--"])).files
            except DiffError as e:
                raise RepoError(f"could not parse the diff of commit {sha[:12]}: {e}") from e
            out.append(CommitInfo(sha, message, Person(an, ae), Person(cn, ce), tuple(files)))
        return out

    def ai_notes(self, shas: list[str]) -> dict[str, str]:
        """The git-ai note (``git notes --ref=ai``) of each commit in ``shas`` that has one."""
        listing = self._run(["notes", f"--ref={NOTES_REF}", "list"])
        if listing.returncode != 0:  # no notes ref: nothing to read
            return {}
        annotated = {line.split()[1] for line in listing.stdout.decode().splitlines() if len(line.split()) == 2}
        out: dict[str, str] = {}
        for sha in shas:
            if sha in annotated:
                p = self._run(["notes", f"--ref={NOTES_REF}", "show", sha])
                if p.returncode == 0:
                    out[sha] = p.stdout.decode("utf-8", errors="replace")
        return out

    def agent_traces(self, head: str | None = None) -> bytes | None:
        """``.agent-trace/traces.jsonl`` at ``head`` (the working tree when None), if any."""
        data = self.file_text(TRACE_PATH, head)
        if data is not None and len(data) > MAX_TRACE_BYTES:
            logger.warning("%s is %d bytes, over %d; not read", TRACE_PATH, len(data), MAX_TRACE_BYTES)
            return None
        return data

    # --- running git ---------------------------------------------------------------------------

    def _run(self, args: list[str | bytes],
             cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
        cwd = cwd if cwd is not None else self.root
        # Optional locks off: a read-only review must not take index.lock (or race the user's git).
        env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
        try:
            return subprocess.run([*_GIT, *args], cwd=cwd, env=env, capture_output=True,
                                  stdin=subprocess.DEVNULL, timeout=self.timeout)
        except FileNotFoundError:
            if shutil.which("git") is not None:
                raise RepoError(f"directory not found: {cwd}") from None
            raise RepoError("git is not installed (or not on PATH); install git to review a "
                            "local repository, or pass the change with --diff FILE") from None
        except subprocess.TimeoutExpired:
            raise RepoError(f"'git {_show(args)}' took longer than {self.timeout:.0f}s "
                            f"in {cwd}") from None

    def _check(self, args: list[str | bytes]) -> bytes:
        p = self._run(args)
        if p.returncode != 0:
            raise RepoError(f"'git {_show(args)}' failed in {self.root}: {_stderr(p)}")
        return p.stdout


def _show(args: list[str | bytes]) -> str:
    return " ".join(os.fsdecode(a) for a in args)


def _stderr(p: subprocess.CompletedProcess[bytes]) -> str:
    return p.stderr.decode(errors="replace").strip() or f"exit code {p.returncode}"
