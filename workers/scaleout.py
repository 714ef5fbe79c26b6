"""The producer side of ``ptbot mine-repo --queue`` and ``ptbot extract --queue``.

One task per piece of work (a range of commits, a shard of line states) goes to the queue; the
producer then waits for the pieces to appear in the output directory, which the workers share
with it, and shows a progress bar. Waiting on files rather than on task results needs no Celery
result backend, and survives the producer itself: Ctrl-C, then the same command with --resume
(mining) or again (extract) sends only the pieces still missing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.producer import EXTRACT_SHARD_TASK, MINE_RANGE_TASK


class ScaleOutError(RuntimeError):
    """Some pieces failed on the workers (the message has the first error), or waiting timed out."""


@dataclass(frozen=True)
class Piece:
    """One task's argument and how the producer sees that it is finished, or failed."""

    args: dict[str, Any]
    done: Callable[[], bool]
    failed: Path
    label: str


def run_pieces(app: Any, task: str, queue: str, pieces: Sequence[Piece], *, desc: str,
               progress: bool = True, poll: float = 0.5, timeout: float | None = None) -> list[tuple[str, str]]:
    """Send a task for every unfinished piece and wait until each is done or failed.

    Returns (label, error) of the failed pieces. ``timeout`` (seconds) raises ScaleOutError when
    pieces are still missing then, e.g. because no worker consumes ``queue``.
    """
    from tqdm import tqdm

    todo = [p for p in pieces if not p.done()]
    for p in todo:
        p.failed.unlink(missing_ok=True)  # an earlier attempt's error
        app.send_task(task, args=[p.args], queue=queue)
    bar = tqdm(total=len(pieces), initial=len(pieces) - len(todo), desc=desc, unit="task",
               file=sys.stderr, disable=not progress)
    failures: list[tuple[str, str]] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while todo:
            left = []
            for p in todo:
                if p.done():
                    bar.update(1)
                elif p.failed.exists():
                    failures.append((p.label, p.failed.read_text(encoding="utf-8").strip()))
                    bar.update(1)
                else:
                    left.append(p)
            todo = left
            if not todo:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise ScaleOutError(f"{len(todo)} task(s) on queue {queue!r} still unfinished after "
                                    f"{timeout:.0f} s (is a worker consuming it? `ptbot worker --queues "
                                    f"{queue} --training-only`)")
            time.sleep(poll)
    finally:
        bar.close()
    return failures


def mine_on_queue(app: Any, configs: Sequence[Any], *, queue: str = "cpu", range_commits: int = 500,
                  resume: bool = False, progress: bool = True, poll: float = 0.5,
                  timeout: float | None = None, keep_ranges: bool = False) -> Any:
    """Mine every repository of ``configs`` (``MineConfig``, one ``out`` for all) in ranges on
    ``queue``, then merge them in order into ``out``; return the merged ``Manifest``."""
    from miners.ranges import check_out_dir, merge_ranges, plan_ranges

    outs = {Path(c.out) for c in configs}
    if len(outs) != 1:
        raise ValueError("every repository must be mined into the same --out directory")
    out = outs.pop()
    check_out_dir(out, resume)
    start = time.perf_counter()
    jobs = [j for c in configs for j in plan_ranges(c, range_commits)]
    pieces = [Piece(j.to_dict(), j.done, j.failed_path(), j.dir_name) for j in jobs]
    failures = run_pieces(app, MINE_RANGE_TASK, queue, pieces, desc="mining ranges", progress=progress,
                          poll=poll, timeout=timeout)
    if failures:
        label, error = failures[0]
        raise ScaleOutError(f"{len(failures)} of {len(jobs)} range(s) failed, e.g. {label}: {error}. "
                            "Mined ranges are kept: fix the cause and rerun with --resume")
    first = configs[0]
    run = {"repos": [c.repo for c in configs], "rev": first.rev, "since": first.since, "until": first.until,
           "max_commits": first.max_commits, "mutations": first.mutations,
           "fine_mutations": first.fine_mutations, "seed": first.seed, "queue": queue,
           "ranges": len(jobs), "range_commits": range_commits,
           "commits": sum(len(j.shas) for j in jobs),
           "mining_seconds": round(time.perf_counter() - start, 3)}
    return merge_ranges(out, jobs, run, shard_records=first.shard_records, keep_ranges=keep_ranges)


def extract_on_queue(app: Any, out_dir: Path, *, queue: str = "gpu", progress: bool = True,
                     poll: float = 0.5, timeout: float | None = None) -> dict[str, Any]:
    """Read every unfinished shard of a planned line-states directory on ``queue``; return the
    finished manifest (``lab.shards``)."""
    from lab import shards

    out_dir = Path(out_dir)
    manifest = shards.read_manifest(out_dir)
    pieces = [Piece({"dir": str(out_dir), "index": i},
                    (lambda i=i: shards.shard_done(out_dir, manifest, i)),
                    shards.failed_path(out_dir, i), e["name"])
              for i, e in enumerate(manifest["shards"])]
    failures = run_pieces(app, EXTRACT_SHARD_TASK, queue, pieces, desc="reading shards", progress=progress,
                          poll=poll, timeout=timeout)
    if failures:
        label, error = failures[0]
        raise ScaleOutError(f"{len(failures)} of {len(pieces)} shard(s) failed, e.g. {label}: {error}. "
                            "Finished shards are kept: fix the cause and run the same `ptbot extract` again")
    return shards.finish(out_dir)
