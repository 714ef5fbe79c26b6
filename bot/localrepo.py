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

Revisions, commits and blobs are read through GitPython's object model; diffs come from the
``git diff`` command itself, with every option that shapes its text pinned, because the review
parses that exact text (``analyzer.diff``) and GitPython's diff objects do not keep it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from analyzer.diff import DiffError, decode_diff
from analyzer.types import FileDiff
from bot.attestations import MAX_TRACE_BYTES, NOTES_REF, TRACE_PATH, commit_line_marks
from bot.provenance import CommitInfo, LineProvenance, Person, attribute_lines

if TYPE_CHECKING:
    import git as gitpython

logger = logging.getLogger(__name__)

# Pin everything that changes the shape of git's output, whatever the user's config says:
# paths quoted as octal (analyzer.diff decodes them), a/ b/ prefixes, no colour, no pager.
_GIT = ("git", "--no-pager", "-c", "core.quotePath=true", "-c", "diff.noprefix=false",
        "-c", "diff.mnemonicPrefix=false", "-c", "color.ui=never")
_DIFF = ("diff", "-M", "--no-color", "--no-ext-diff", "--no-textconv", "-U3",
         "--src-prefix=a/", "--dst-prefix=b/")


_NO_GIT = ("git is not installed (or not on PATH); install git to review a local repository, "
           "or pass the change with --diff FILE")


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
        try:
            # Imported here: GitPython refuses to import at all when no git executable is found,
            # and that case deserves the message below, not a traceback at start-up.
            import git as gitpython
        except ImportError:
            raise RepoError(_NO_GIT) from None
        try:
            self.repo = gitpython.Repo(where, search_parent_directories=True)
        except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
            self.repo = None
        if self.repo is None or self.repo.working_tree_dir is None:
            raise RepoError(f"not a git repository: {path} (run 'git init' there, or pass --repo "
                            "with the path of a git work tree)")
        self.root = Path(self.repo.working_tree_dir)

    def __repr__(self) -> str:
        return f"LocalRepo({str(self.root)!r})"

    # --- revisions -----------------------------------------------------------------------------

    def resolve(self, rev: str) -> str:
        """Full commit id of ``rev`` (branch, tag, sha, ``HEAD~2``...); RepoError if unknown."""
        commit = self._commit(rev) if rev else None
        if commit is None:
            hint = " (the repository has no commits yet)" if not self._has_commits() else ""
            raise RepoError(f"unknown revision '{rev}': not a commit, branch or tag in "
                            f"{self.root}{hint}")
        return commit.hexsha

    def _commit(self, rev: str) -> gitpython.Commit | None:
        """The commit ``rev`` names (tags peeled), or None. GitPython parses the revision itself,
        so a revision spelled like an option (``--output=x``) never reaches a command line."""
        from gitdb.exc import BadName, BadObject

        try:
            return self.repo.commit(rev)
        except (BadName, BadObject, ValueError, IndexError):
            return None

    def _has_commits(self) -> bool:
        return self.repo.head.is_valid()

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
            parents = self.repo.commit(head_sha).parents
            base_id = parents[0].hexsha if parents else self._empty_tree()
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
        tree = self.repo.commit(self.resolve(rev)).tree
        try:
            blob = tree / rel
        except KeyError:
            return None
        # A symlink's blob holds its target; a directory or submodule has no text to read.
        return blob.data_stream.read() if blob.type == "blob" else None

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
        spec = f"{base}..{head_sha}" if self._commit(base) is not None else head_sha
        out = []
        for c in self.repo.iter_commits(spec, reverse=True, topo_order=True):
            parent = c.parents[0].hexsha if c.parents else self._empty_tree()
            try:
                files = decode_diff(self._check([*_DIFF, parent, c.hexsha, "--"])).files
            except DiffError as e:
                raise RepoError(f"could not parse the diff of commit {c.hexsha[:12]}: {e}") from e
            out.append(CommitInfo(c.hexsha, _text(c.message), Person(c.author.name or "", c.author.email or ""),
                                  Person(c.committer.name or "", c.committer.email or ""), tuple(files)))
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
            raise RepoError(_NO_GIT) from None
        except subprocess.TimeoutExpired:
            raise RepoError(f"'git {_show(args)}' took longer than {self.timeout:.0f}s "
                            f"in {cwd}") from None

    def _check(self, args: list[str | bytes]) -> bytes:
        p = self._run(args)
        if p.returncode != 0:
            raise RepoError(f"'git {_show(args)}' failed in {self.root}: {_stderr(p)}")
        return p.stdout


def _text(message: str | bytes) -> str:
    """A commit message as text (GitPython gives bytes when the commit's encoding is unknown)."""
    return message.decode("utf-8", errors="replace") if isinstance(message, bytes) else message


def _show(args: list[str | bytes]) -> str:
    return " ".join(os.fsdecode(a) for a in args)


def _stderr(p: subprocess.CompletedProcess[bytes]) -> str:
    return p.stderr.decode(errors="replace").strip() or f"exit code {p.returncode}"
