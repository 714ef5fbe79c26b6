"""``ptbot mine-repo --queue``: a history cut into commit ranges that workers mine apart, merged back.

The producer lists the commits exactly as ``mine_repo`` walks them (``git log`` with the same
revision, dates and count), cuts the list into ranges of ``range_commits`` commits and sends one
task per range. A task mines its range with ``mine_repo(..., shas=range)`` into a fresh directory
and renames it to ``OUT/ranges/<repo>-<index>-<key>``; the key hashes the repository, the mining
settings and the range's commits, so a redelivered task lands on its own range instead of adding a
second copy. ``merge_ranges`` replays the ranges in history order into one ``DatasetWriter``: its
content-hash dedup keeps the same first occurrence as one local run, so the output (shards,
skipped.ndjson, commits.done, manifest counts) equals ``ptbot mine-repo`` without ``--queue``.

Workers open the repository at the path or URL the producer was given: a path must be the same
on every worker (a shared file system), and a URL is cloned once per range.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from analyzer.types import Record

from miners.dataset import DONE, MANIFEST, SHARD_PREFIX, SKIPPED, DatasetWriter, Manifest
from miners.fixes import FixConfig
from miners.history import git
from miners.mine import MineConfig, mine_repo, opened_repo, short_repo_name

RANGES = "ranges"
"""Subdirectory of ``--out`` holding one directory per mined range until the merge."""
MAX_RANGE_COMMITS = 1500
"""A range's shas go to git on stdin in one write, which must fit the pipe buffer."""
# Settings that change what is mined (the rest, like --workers or --resume, only how).
_RUN_ONLY = ("out", "resume", "workers")


def config_to_dict(config: MineConfig) -> dict[str, Any]:
    """``config`` as JSON (a task argument); ``config_from_dict`` inverts it."""
    d: dict[str, Any] = {}
    for f in fields(config):
        v = getattr(config, f.name)
        if f.name == "fixes":
            # languages/include/exclude of FixConfig are copied from MineConfig's own fields.
            v = {k: x for k, x in asdict(v).items() if k not in ("languages", "include", "exclude")}
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, Path):
            v = str(v)
        d[f.name] = v
    return d


def config_from_dict(d: dict[str, Any]) -> MineConfig:
    d = dict(d)
    d["out"] = Path(d["out"])
    for name in ("languages", "include", "exclude"):
        d[name] = tuple(d.get(name) or ())
    d["fixes"] = FixConfig(**d.get("fixes", {}))
    return MineConfig(**d)


@dataclass(frozen=True)
class RangeJob:
    """One task of ``mine-repo --queue``: a run of consecutive commits of one repository."""

    repo: str
    """The repository as the user gave it (every worker opens the same path or URL)."""
    name: str
    """Repository name in record ids and meta."""
    index: int
    """Position of the range in the history (0 holds the newest commits)."""
    shas: tuple[str, ...]
    config: dict[str, Any]
    """``config_to_dict`` of the MineConfig (its ``out`` is the final output directory)."""
    key: str
    """Hash of repository, mining settings and commits: names the range's directory."""

    @property
    def dir_name(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.name) or "repo"
        return f"{safe}-{self.index:05d}-{self.key[:16]}"

    def path(self) -> Path:
        """The range's directory (exists, with a manifest, once the range is mined)."""
        return Path(self.config["out"]) / RANGES / self.dir_name

    def failed_path(self) -> Path:
        """Written by a worker whose task failed: the error message."""
        return Path(self.config["out"]) / RANGES / f"{self.dir_name}.failed"

    def done(self) -> bool:
        return (self.path() / MANIFEST).exists()

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "name": self.name, "index": self.index, "shas": list(self.shas),
                "config": self.config, "key": self.key}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RangeJob:
        return cls(repo=d["repo"], name=d["name"], index=int(d["index"]), shas=tuple(d["shas"]),
                   config=dict(d["config"]), key=d["key"])


def list_commits(config: MineConfig) -> list[str]:
    """The shas ``mine_repo(config)`` would mine, in its order (newest first)."""
    with opened_repo(config) as (repo_dir, _):
        select = [f"--since={config.since}"] if config.since else []
        select += [f"--until={config.until}"] if config.until else []
        select += [f"--max-count={config.max_commits}"] if config.max_commits is not None else []
        return git(repo_dir, "log", "--format=%H", *select, config.rev, "--").split()


def plan_ranges(config: MineConfig, range_commits: int = 500) -> list[RangeJob]:
    """Cut ``config.repo``'s history into ranges of at most ``range_commits`` commits."""
    if not 1 <= range_commits <= MAX_RANGE_COMMITS:
        raise ValueError(f"range_commits must be between 1 and {MAX_RANGE_COMMITS}, got {range_commits}")
    name = config.name or short_repo_name(config.repo)
    cfg = config_to_dict(replace(config, name=name))
    what = {k: v for k, v in cfg.items() if k not in _RUN_ONLY}
    shas = list_commits(config)
    jobs = []
    for index, start in enumerate(range(0, len(shas), range_commits)):
        part = tuple(shas[start:start + range_commits])
        key = hashlib.sha256(json.dumps({"settings": what, "shas": part}, sort_keys=True)
                             .encode()).hexdigest()
        jobs.append(RangeJob(config.repo, name, index, part, cfg, key))
    return jobs


def mine_range(job: RangeJob) -> dict[str, Any]:
    """Mine one range into its directory (the worker's side). Idempotent: a range already
    mined is left as it is, and a half-mined one never shows, because the directory only
    appears by an atomic rename."""
    final = job.path()
    if job.done():
        return {"range": job.dir_name, "status": "already mined"}
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{job.dir_name}-{uuid.uuid4().hex[:8]}"
    cfg = config_from_dict({**job.config, "out": str(tmp), "resume": False, "workers": 1})
    try:
        manifest = mine_repo(cfg, shas=job.shas)
        try:
            os.rename(tmp, final)
        except OSError:  # another delivery of this task finished first: same content
            if not job.done():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    job.failed_path().unlink(missing_ok=True)
    return {"range": job.dir_name, "status": "mined", "commits": manifest.commits_done,
            "records": manifest.records}


def check_out_dir(out: Path, resume: bool) -> None:
    """Refuse an output directory holding mined data unless resuming (as ``DatasetWriter`` does)."""
    if not resume and (any(Path(out).glob(f"{SHARD_PREFIX}*.jsonl")) or (Path(out) / DONE).exists()):
        raise ValueError(f"{out} already holds mined data; pass --resume to continue that run, "
                         "or choose an empty --out directory")


def merge_ranges(out: Path, jobs: list[RangeJob], run: dict[str, Any], *,
                 shard_records: int = 5000, keep_ranges: bool = False) -> Manifest:
    """Replay every mined range, in ``jobs`` order, into ``out``; write and return the manifest.

    The merge always starts from an empty output (earlier merges are overwritten), so it can be
    repeated; every job must be mined (``RangeJob.done``).
    """
    out = Path(out)
    missing = [j.dir_name for j in jobs if not j.done()]
    if missing:
        raise ValueError(f"{len(missing)} range(s) not mined yet, e.g. {missing[0]}")
    for old in [*out.glob(f"{SHARD_PREFIX}*.jsonl"), out / SKIPPED, out / DONE, out / MANIFEST]:
        old.unlink(missing_ok=True)
    start = time.perf_counter()
    writer = DatasetWriter(out, shard_records=shard_records)
    try:
        for job in jobs:
            d = job.path()
            for shard in sorted(d.glob(f"{SHARD_PREFIX}*.jsonl")):
                with open(shard, encoding="utf-8") as f:
                    for line in f:
                        writer.add(Record.from_dict(json.loads(line)))
            if (d / SKIPPED).exists():
                with open(d / SKIPPED, encoding="utf-8") as f:
                    for line in f:
                        row = json.loads(line)
                        writer.skip(row["commit"], row["path"], row["reason"])
            for sha in (d / DONE).read_text().split() if (d / DONE).exists() else ():
                writer.commit_done(sha)
    finally:
        writer.close()
    run = {**run, "records_added": writer.added, "duplicates": writer.duplicates,
           "merge_seconds": round(time.perf_counter() - start, 3)}
    manifest = writer.write_manifest(complete=True, run=run)
    if not keep_ranges:
        shutil.rmtree(out / RANGES, ignore_errors=True)
    return manifest
