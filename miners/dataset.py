"""JSONL shards in the shared dataset schema, deduplicated, resumable, with a manifest.

Layout of an output directory::

    mined-00000.jsonl ...   records (``analyzer.types.Record``), ``shard_records`` per file
    skipped.ndjson          one row per skipped commit or file: {"commit", "path", "reason"}
                            (not .jsonl: check_data.py reads every .jsonl as records)
    commits.done            one sha per finished commit (written after its records are flushed)
    manifest.json           counts by language and task, skip reasons, the run's settings

Resume reads every shard's content hashes and ``commits.done``; a commit interrupted half-way is
mined again and its already written records are dropped as duplicates, so nothing repeats.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyzer.types import Record

log = logging.getLogger(__name__)

# The ``language`` values the benchmark data's record schema accepts, so mined records mix with it.
SCHEMA_LANGUAGES = frozenset({"python", "java", "javascript", "typescript", "go", "cpp", "c",
                              "rust", "ruby", "csharp", "php", "kotlin", "scala", "swift"})

SHARD_PREFIX = "mined-"
SKIPPED = "skipped.ndjson"
DONE = "commits.done"
MANIFEST = "manifest.json"


def content_hash(code: str, fixed: str) -> str:
    """Hash of a record's content with whitespace and blank lines normalised away."""
    def norm(text: str) -> str:
        return "\n".join(" ".join(ln.split()) for ln in text.splitlines() if ln.strip())
    return hashlib.sha256(f"{norm(code)}\x00{norm(fixed)}".encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What an output directory holds (written to ``manifest.json``)."""

    out_dir: str
    records: int
    by_language: dict[str, dict[str, int]]
    """language -> task -> number of records."""
    skipped_commits: dict[str, int]
    """reason -> number of commits skipped for it."""
    skipped_files: dict[str, int]
    """reason -> number of files skipped for it."""
    commits_done: int
    complete: bool
    """False when the run stopped early (error or interruption): rerun with --resume."""
    run: dict[str, Any] = field(default_factory=dict)
    """Settings and throughput of the last run."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir, "records": self.records, "by_language": self.by_language,
            "skipped_commits": self.skipped_commits, "skipped_files": self.skipped_files,
            "commits_done": self.commits_done, "complete": self.complete, "run": self.run,
        }


def _truncate_partial_line(path: Path) -> None:
    """Drop a last line cut short by an interrupted write, so every line is whole JSON."""
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
            log.warning("dropped an incomplete last line of %s", path)


class DatasetWriter:
    """Appends records to JSONL shards, dropping duplicates by content hash."""

    def __init__(self, out_dir: Path, *, resume: bool = False, shard_records: int = 5000) -> None:
        if shard_records < 1:
            raise ValueError("shard_records must be at least 1")
        self.out_dir, self.shard_records = Path(out_dir), shard_records
        self.out_dir.mkdir(parents=True, exist_ok=True)
        shards = sorted(self.out_dir.glob(f"{SHARD_PREFIX}*.jsonl"))
        if (shards or (self.out_dir / DONE).exists()) and not resume:
            raise ValueError(f"{self.out_dir} already holds mined data; pass --resume to continue "
                             "that run, or choose an empty --out directory")
        self.hashes: set[str] = set()
        self.done: set[str] = set()
        for path in shards + [self.out_dir / SKIPPED, self.out_dir / DONE]:
            if path.exists():
                _truncate_partial_line(path)
        for path in shards:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    self.hashes.add(json.loads(line)["meta"]["content_hash"])
        if (self.out_dir / DONE).exists():
            self.done = set((self.out_dir / DONE).read_text().split())
        self._next_shard = (int(shards[-1].stem[len(SHARD_PREFIX):]) + 1) if shards else 0
        self._shard = None
        self._in_shard = 0
        self._skipped = open(self.out_dir / SKIPPED, "a", encoding="utf-8")
        self._done = open(self.out_dir / DONE, "a", encoding="utf-8")
        self.added = 0
        self.duplicates = 0

    def add(self, record: Record) -> bool:
        """Write ``record`` unless its content was seen before; True when written."""
        h = record.meta.get("content_hash") or content_hash(record.code, record.fixed)
        if h in self.hashes:
            self.duplicates += 1
            return False
        self.hashes.add(h)
        if self._shard is None or self._in_shard >= self.shard_records:
            if self._shard is not None:
                self._shard.close()
            path = self.out_dir / f"{SHARD_PREFIX}{self._next_shard:05d}.jsonl"
            self._shard, self._in_shard = open(path, "w", encoding="utf-8"), 0
            self._next_shard += 1
        # Not Record.to_dict(): asdict's deep copy was a tenth of the mining time.
        d = {"id": record.id, "source": record.source, "language": record.language,
             "task": record.task, "code": record.code, "fixed": record.fixed,
             "buggy_lines": list(record.buggy_lines), "meta": {**record.meta, "content_hash": h}}
        self._shard.write(json.dumps(d, ensure_ascii=False) + "\n")
        self._in_shard += 1
        self.added += 1
        return True

    def skip(self, commit: str, path: str, reason: str) -> None:
        """Note a skipped commit (``path`` empty) or file, with the reason."""
        self._skipped.write(json.dumps({"commit": commit, "path": path, "reason": reason},
                                       ensure_ascii=False) + "\n")

    def commit_done(self, sha: str) -> None:
        """Mark a commit finished, after flushing its records (resume skips it from now on)."""
        if self._shard is not None:
            self._shard.flush()
        self._skipped.flush()
        self._done.write(sha + "\n")
        self._done.flush()
        self.done.add(sha)

    def close(self) -> None:
        """Flush and close every file."""
        for f in (self._shard, self._skipped, self._done):
            if f is not None:
                f.close()
        self._shard = None

    def write_manifest(self, *, complete: bool, run: dict[str, Any]) -> Manifest:
        """Count what the directory holds (all runs) and write ``manifest.json``."""
        by_language: dict[str, Counter[str]] = {}
        records = 0
        for path in sorted(self.out_dir.glob(f"{SHARD_PREFIX}*.jsonl")):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    by_language.setdefault(r["language"], Counter())[r["task"]] += 1
                    records += 1
        commits: Counter[str] = Counter()
        files: Counter[str] = Counter()
        seen = set()
        skipped = self.out_dir / SKIPPED
        if skipped.exists():
            with open(skipped, encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    key = (row["commit"], row["path"], row["reason"])
                    if key in seen:  # a commit mined twice after an interruption
                        continue
                    seen.add(key)
                    (files if row["path"] else commits)[row["reason"]] += 1
        manifest = Manifest(
            out_dir=str(self.out_dir), records=records,
            by_language={k: dict(sorted(v.items())) for k, v in sorted(by_language.items())},
            skipped_commits=dict(sorted(commits.items())), skipped_files=dict(sorted(files.items())),
            commits_done=len(self.done), complete=complete, run=run,
        )
        (self.out_dir / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
        return manifest
