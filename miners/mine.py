"""``ptbot mine-repo``: a repository's history -> real-fix and mutation records.

One ``git log -p`` stream (``miners.history``) feeds commits to ``CommitMiner``: fix commits
become (buggy snippet, fixed snippet, labels) records, and with ``mutations > 0`` the code that
clean commits touch becomes mutated copies (``lab.mutate``). ``--workers N`` mines commits in
N processes while the main process parses the stream and writes results in commit order, so the
output does not depend on N.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from analyzer.languages import LANGUAGES, is_scorable, language_for_path
from analyzer.types import Hunk, Record
from lab.mutate import mutate, pair_lines

from miners.dataset import DatasetWriter, Manifest, content_hash
from miners.fixes import FixConfig, classify_commit, code_hunks, generated_content, has_fix_cue
from miners.history import BlobReader, Commit, GitError, git, iter_commits
from miners.snippets import (
    clean_snippets,
    fix_snippets,
    is_docstring_hunk,
    is_new_definition,
    python_docstring_lines,
)

log = logging.getLogger(__name__)

_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)


class MiningError(RuntimeError):
    """Mining stopped part-way (git failed); the output written so far is kept and resumable."""


@dataclass(frozen=True)
class MineConfig:
    """Everything ``ptbot mine-repo`` needs; one field per command-line option."""

    repo: str
    """A work tree, a bare repository, or a clone URL (cloned into a temporary directory)."""
    out: Path
    """Output directory for shards, skipped.ndjson and manifest.json."""
    name: str | None = None
    """Repository name in record ids and meta (default: last part of the path or URL)."""
    rev: str = "HEAD"
    """Revision (or range, e.g. ``v1.0..main``) whose history is mined."""
    since: str | None = None
    """Only commits newer than this date (any format ``git log --since`` takes)."""
    until: str | None = None
    """Only commits older than this date."""
    max_commits: int | None = None
    """Stop after this many commits (newest first)."""
    languages: tuple[str, ...] = ()
    """Languages to mine; empty means all that analyzer.languages knows."""
    include: tuple[str, ...] = ()
    """Path globs a mined file must match (any of them)."""
    exclude: tuple[str, ...] = ()
    """Path globs never mined."""
    mutations: int = 0
    """Mutated copies per clean snippet (0: real fixes only)."""
    fine_mutations: bool = False
    """Also use the realistic single-token mutators (operators, off-by-one, arguments, variables)."""
    seed: int = 0
    """Seed of the mutations; the output is deterministic for a given seed."""
    workers: int = 1
    """Processes mining commits in parallel (the git stream is parsed in the main process)."""
    resume: bool = False
    """Continue an interrupted run in ``out`` instead of refusing a non-empty directory."""
    window: int = 10
    """Lines either side of a change when no enclosing function is found."""
    max_snippet_lines: int = 150
    """Longest snippet kept (a longer function falls back to the window)."""
    max_file_bytes: int = 1 << 20
    """Files bigger than this are skipped."""
    shard_records: int = 5000
    """Records per JSONL shard."""
    fixes: FixConfig = field(default_factory=FixConfig)
    """Fix-detection thresholds; ``languages``/``include``/``exclude`` above override its own."""

    def __post_init__(self) -> None:
        unknown = set(self.languages) - LANGUAGES
        if unknown:
            raise ValueError(f"unknown language(s) {sorted(unknown)}; choose from {sorted(LANGUAGES)}")
        for name in ("mutations", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more (got {getattr(self, name)})")
        for name in ("workers", "window", "max_snippet_lines", "max_file_bytes", "shard_records"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.max_commits is not None and self.max_commits < 1:
            raise ValueError(f"max_commits must be at least 1 (got {self.max_commits})")
        object.__setattr__(self, "fixes", FixConfig(
            **{**asdict(self.fixes), "languages": frozenset(self.languages),
               "include": tuple(self.include), "exclude": tuple(self.exclude)}))


@dataclass(frozen=True)
class CommitResult:
    """What one commit gave: records, and (path, reason) skips ("" path: the whole commit)."""

    sha: str
    records: tuple[Record, ...]
    skips: tuple[tuple[str, str], ...]


class CommitMiner:
    """Turns one commit into records; owns a ``git cat-file`` process for the blobs it needs."""

    def __init__(self, repo_dir: str, config: MineConfig, repo_name: str,
                 shallow: frozenset[str] = frozenset()) -> None:
        self.config, self.repo_name, self.shallow = config, repo_name, shallow
        self.blobs = BlobReader(repo_dir, max_bytes=config.max_file_bytes)

    def _texts(self, wanted: list[tuple[str, str]]) -> tuple[list[str | None], str | None]:
        """Decoded texts of (rev, path) pairs, or the reason one of them cannot be mined."""
        texts: list[str | None] = []
        for data in self.blobs.read_many(wanted):
            if data is None:
                return [], f"file unreadable or larger than {self.config.max_file_bytes} bytes"
            if generated_content(data):
                return [], "generated file"
            try:
                texts.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                return [], "non-UTF-8 content"
        return texts, None

    def mine(self, commit: Commit) -> CommitResult:
        """Records and skips of one commit."""
        skips: list[tuple[str, str]] = []
        records: list[Record] = []
        verdict = classify_commit(commit)
        if commit.sha in self.shallow:
            verdict_reason = "shallow clone boundary (parent not fetched)"
            return CommitResult(commit.sha, (), (("", verdict_reason),))
        if verdict.kind == "skip":
            return CommitResult(commit.sha, (), (("", verdict.reason),))
        if verdict.kind == "clean" and self.config.mutations == 0:
            return CommitResult(commit.sha, (), (("", "not a fix (no message cue)"),))
        skips.extend(commit.dropped)
        fix = verdict.kind == "fix"
        mineable = []
        for fd in commit.files:
            kept, reason = code_hunks(fd, self.config.fixes, fix=fix)
            if reason:
                skips.append((fd.path, reason))
            else:
                mineable.append((fd, kept))
        if fix and len(mineable) > self.config.fixes.max_files:
            return CommitResult(commit.sha, (), (("", "too many files for a fix"),))
        clean: list[tuple[str, str, str]] = []  # (path, language, snippet)
        parent = commit.parents[0]
        for fd, kept in mineable:
            language = language_for_path(fd.path) or ""
            wanted = [(commit.sha, fd.new_path or "")]
            if fix:
                wanted.append((parent, fd.old_path or ""))
            texts, reason = self._texts(wanted)
            if reason:
                skips.append((fd.path, reason))
                continue
            new, old = texts[0], (texts[1] if fix else None)
            assert new is not None
            if not fix:
                for snip in clean_snippets(new, kept, language, window=self.config.window,
                                           max_lines=self.config.max_snippet_lines):
                    clean.append((fd.path, language, snip))
                continue
            assert old is not None
            kept, reason = self._fix_hunks(kept, old, new, language)
            if reason:
                skips.append((fd.path, reason))
                continue
            snippets = fix_snippets(old, new, fd.hunks, language, kept=kept,
                                    window=self.config.window,
                                    max_lines=self.config.max_snippet_lines)
            if not snippets:
                skips.append((fd.path, "no snippet (region too long or diff does not align)"))
            for s in snippets:
                h = content_hash(s.code, s.fixed)
                records.append(Record(
                    id=f"mined/{self.repo_name}/{language}/real-fix/{h[:16]}", source="mined",
                    language=language, task="real-fix", code=s.code, fixed=s.fixed,
                    buggy_lines=s.buggy_lines,
                    meta={**self._meta(commit, fd.path, fd.old_path), "start_line": s.start,
                          "region": s.kind, "insertion_only_lines": list(s.insertion_only_lines),
                          "pairs": [list(p) for p in pair_lines(s.fixed, s.code)],
                          "content_hash": h}))
        records.extend(self._mutants(commit, clean))
        if not records and not skips:
            skips.append(("", "no mineable change"))
        return CommitResult(commit.sha, tuple(records), tuple(skips))

    @staticmethod
    def _fix_hunks(kept: tuple[Hunk, ...], old: str, new: str,
                   language: str) -> tuple[tuple[Hunk, ...], str | None]:
        """Drop hunks that only touch docstrings or only add new definitions (they need blobs)."""
        if language == "python":
            old_doc, new_doc = python_docstring_lines(old), python_docstring_lines(new)
            kept = tuple(h for h in kept if not is_docstring_hunk(h, old_doc, new_doc))
            if not kept:
                return (), "comment-only change"
        kept = tuple(h for h in kept if not is_new_definition(h, language))
        if not kept:
            return (), "only new definitions added"
        return kept, None

    def _meta(self, commit: Commit, path: str, old_path: str | None) -> dict:
        return {"repo": self.repo_name, "commit": commit.sha, "parent": commit.parents[0],
                "path": path, "old_path": old_path, "message": commit.subject}

    def _mutants(self, commit: Commit, clean: list[tuple[str, str, str]]) -> Iterator[Record]:
        snippets = [s for _, _, s in clean]
        for i, (path, language, snippet) in enumerate(clean):
            # Seeded by content, not position: the same snippet mutates the same way in any run.
            digest = hashlib.sha256(f"{self.config.seed}\x00{snippet}".encode()).digest()
            rng = random.Random(int.from_bytes(digest[:8], "big"))
            # A few neighbours are enough donors; all of them made big commits quadratic.
            donors = snippets[max(0, i - 4):i] + snippets[i + 1:i + 5]
            n_code = sum(map(is_scorable, snippet.splitlines()))
            for _ in range(self.config.mutations):
                m = mutate(snippet, rng, donors=donors, n=max(1, min(3, round(0.15 * n_code))),
                           fine=self.config.fine_mutations)
                if m is None:
                    break
                h = content_hash(m.code, snippet)
                yield Record(
                    id=f"mined/{self.repo_name}/{language}/mutation/{h[:16]}", source="mined",
                    language=language, task="mutation", code=m.code, fixed=snippet,
                    buggy_lines=m.buggy_lines,
                    meta={**self._meta(commit, path, path), "ops": list(m.ops),
                          "pairs": [list(p) for p in m.pairs], "content_hash": h})

    def close(self) -> None:
        self.blobs.close()


# --- worker processes: one CommitMiner each ---------------------------------------------------

_worker_miner: CommitMiner | None = None


def _init_worker(repo_dir: str, config: MineConfig, repo_name: str, shallow: frozenset[str]) -> None:
    global _worker_miner
    _worker_miner = CommitMiner(repo_dir, config, repo_name, shallow)


def _mine_in_worker(commit: Commit) -> CommitResult:
    assert _worker_miner is not None
    return _worker_miner.mine(commit)


def _results(commits: Iterator[Commit], miner: CommitMiner, config: MineConfig, repo_dir: str,
             repo_name: str, shallow: frozenset[str]) -> Iterator[CommitResult]:
    """Mine commits in order, in this process or in ``config.workers`` processes."""
    if config.workers == 1:
        for c in commits:
            yield miner.mine(c)
        return
    with ProcessPoolExecutor(config.workers, initializer=_init_worker,
                             initargs=(repo_dir, config, repo_name, shallow)) as pool:
        # A bounded window of futures keeps memory flat and results in commit order.
        window: deque[Future[CommitResult]] = deque()
        for c in commits:
            window.append(pool.submit(_mine_in_worker, c))
            if len(window) >= 8 * config.workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


# --- the entry point ---------------------------------------------------------------------------

def short_repo_name(repo: str) -> str:
    """Short name for ids and meta: the URL's or directory's last part, without ``.git``."""
    repo = re.sub(r"/\.git/?$", "", str(repo).rstrip("/"))
    name = re.split(r"[/:]", repo)[-1]
    return re.sub(r"\.git$", "", name) or "repo"


def _clone(url: str, into: str) -> str:
    dest = os.path.join(into, "repo.git")
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(["git", "clone", "--bare", "--quiet", "--", url, dest],
                          capture_output=True, env=env)
    if proc.returncode != 0:
        raise ValueError(f"could not clone {url}: {proc.stderr.decode('utf-8', 'replace').strip()}"
                         " (check the URL and your network or credentials)")
    return dest


def _check_repo(path: str, rev: str) -> frozenset[str]:
    """Validate the repository and revision; return the shallow boundary commits (if any)."""
    if not os.path.isdir(path):
        raise ValueError(f"{path} does not exist; give a work tree, a bare repository or a clone URL")
    try:
        git(path, "rev-parse", "--git-dir")
    except GitError as e:
        raise ValueError(f"{path} is not a git repository (work tree or bare)") from e
    if not git(path, "rev-list", "-n", "1", "--all", check=False).strip():
        raise ValueError(f"{path} is an empty repository (no commits): nothing to mine")
    base = rev.split("..")[-1] or "HEAD"
    if not git(path, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", check=False).strip():
        raise ValueError(f"revision {rev!r} not found in {path}; pass an existing --rev")
    if git(path, "rev-parse", "--is-shallow-repository").strip() == "true":
        shallow_file = git(path, "rev-parse", "--git-path", "shallow").strip()
        shallow_path = Path(path, shallow_file) if not os.path.isabs(shallow_file) else Path(shallow_file)
        boundary = frozenset(shallow_path.read_text().split()) if shallow_path.exists() else frozenset()
        log.warning("%s is a shallow clone: history stops at %d commit(s), which are skipped; "
                    "run `git fetch --unshallow` to mine all of it", path, len(boundary))
        return boundary
    return frozenset()


@contextmanager
def opened_repo(config: MineConfig) -> Iterator[tuple[str, frozenset[str]]]:
    """(git directory, shallow boundary commits) of ``config.repo``, checked against ``config.rev``.

    A URL is cloned (bare) into a temporary directory that lives as long as the ``with`` block;
    a path is used in place. ValueError says what is wrong with the repository or revision.
    """
    with tempfile.TemporaryDirectory(prefix="ptbot-mine-") as tmp:
        if _URL.match(config.repo):
            log.info("cloning %s", config.repo)
            repo_dir = _clone(config.repo, tmp)
        else:
            repo_dir = os.path.abspath(config.repo)
        yield repo_dir, _check_repo(repo_dir, config.rev)


def mine_repo(config: MineConfig, progress: bool = False,
              shas: Sequence[str] | None = None) -> Manifest:
    """Mine ``config.repo`` into ``config.out``; return (and write) the manifest.

    ``shas``: mine exactly these commits (newest first, at most 1500) instead of walking
    ``config.rev``; ``miners.ranges`` splits a history into such ranges for ``--queue``.

    Raises ValueError for bad input (not a repository, empty, unknown revision, unreachable URL,
    non-empty output without ``resume``) and MiningError when git fails part-way; in that case
    the records written so far are kept and ``resume=True`` continues without duplicates.
    """
    with opened_repo(config) as (repo_dir, shallow):
        return _mine(repo_dir, config, shallow, progress, shas)


def _mine(repo_dir: str, config: MineConfig, shallow: frozenset[str], progress: bool,
          shas: Sequence[str] | None = None) -> Manifest:
    repo_name = config.name or short_repo_name(config.repo)
    writer = DatasetWriter(config.out, resume=config.resume, shard_records=config.shard_records)
    miner = CommitMiner(repo_dir, config, repo_name, shallow)
    run = {"repo": config.repo if _URL.match(config.repo) else repo_name, "rev": config.rev,
           "since": config.since, "until": config.until, "max_commits": config.max_commits,
           "mutations": config.mutations, "fine_mutations": config.fine_mutations,
           "seed": config.seed, "workers": config.workers, "shallow": bool(shallow)}
    already = set(writer.done)
    # Without mutations only fixes need a diff: let the stream skip the rest unparsed.
    want = None if config.mutations else (
        lambda message, parents: len(parents) == 1 and has_fix_cue(message))
    commits = (c for c in iter_commits(repo_dir, config.rev, since=config.since, until=config.until,
                                       max_commits=config.max_commits, want=want, shas=shas)
               if c.sha not in already)
    bar = None
    if progress:
        from tqdm import tqdm  # only the CLI asks for a bar
        bar = tqdm(desc=f"mining {repo_name}", unit="commit", file=sys.stderr)
    start, n, complete, error = time.perf_counter(), 0, False, None
    try:
        for result in _results(commits, miner, config, repo_dir, repo_name, shallow):
            for r in result.records:
                writer.add(r)
            for path, reason in result.skips:
                writer.skip(result.sha, path, reason)
            writer.commit_done(result.sha)
            n += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(records=writer.added)
        complete = True
    except GitError as e:
        error = e
    finally:
        seconds = time.perf_counter() - start
        miner.close()
        writer.close()
        if bar is not None:
            bar.close()
        run.update(commits=n, records_added=writer.added, duplicates=writer.duplicates,
                   seconds=round(seconds, 3), commits_per_s=round(n / seconds, 2) if seconds else None)
        manifest = writer.write_manifest(complete=complete, run=run)
    if error is not None:
        raise MiningError(f"{error}; {n} commit(s) were mined and kept in {config.out}: "
                          "fix the repository and rerun with --resume") from error
    log.info("mined %d commits of %s: %d new records (%d duplicates) in %.1fs",
             n, repo_name, writer.added, writer.duplicates, seconds)
    return manifest
