"""Commits per second of ``ptbot mine-repo`` against a PyDriller script doing the same detection.

Both sides walk the same commits (``--max-commits`` newest of ``--rev``), detect fixes by the same
message cues and file filters, and read the before/after text of every candidate fix file. The
PyDriller side is the usual MSR script: one ``Repository.traverse_commits()`` pass, with a diff
object per commit and file. Prints one JSON object (``--json``) or a short table.

The two sides run in interleaved rounds (ptbot, PyDriller, ptbot, ...) and the speed-up is the
ratio of the median wall times, so load from other jobs on a shared machine hits both sides alike.
CPU seconds (this process plus its ``git`` children) are reported too: they move less with load.

    python benchmarks/bench_mine.py REPO [--max-commits 1000] [--workers 1] [--rounds 5] [--json]

PyDriller is optional (``pip install pydriller``); without it only ptbot is measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from miners.fixes import FixConfig, has_fix_cue, path_skip_reason
from miners.mine import MineConfig, mine_repo


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children (the git processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    """Run ``fn`` once: (its result, wall seconds, CPU seconds)."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - wall, _cpu_seconds() - cpu


def bench_ptbot(repo: str, rev: str, max_commits: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        m = mine_repo(MineConfig(repo=repo, out=Path(out), rev=rev, max_commits=max_commits,
                                 workers=workers))
        seconds = time.perf_counter() - start
    return {"commits": m.commits_done, "records": m.records, "seconds": round(seconds, 3),
            "commits_per_s": round(m.commits_done / seconds, 1)}


def bench_pydriller(repo: str, rev: str, max_commits: int) -> dict | None:
    try:
        from pydriller import Repository
    except ImportError:
        return None
    cfg = FixConfig()
    start = time.perf_counter()
    commits = candidates = 0
    # Newest first, like git log (PyDriller's default is oldest first).
    to_commit = None if rev == "HEAD" else rev
    for commit in Repository(repo, to_commit=to_commit, order="reverse").traverse_commits():
        commits += 1
        if commits > max_commits:
            commits -= 1
            break
        if commit.merge or not commit.parents or not has_fix_cue(commit.msg):
            continue
        for mf in commit.modified_files:
            path = mf.new_path or mf.old_path or ""
            if path_skip_reason(path, cfg) is not None or mf.change_type.name != "MODIFY":
                continue
            if mf.added_lines + mf.deleted_lines > cfg.max_changed_lines:
                continue
            # The same work ptbot does for a candidate: both versions of the file and the diff.
            _ = (mf.source_code_before, mf.source_code, mf.diff_parsed)
            candidates += 1
    seconds = time.perf_counter() - start
    return {"commits": commits, "candidate_files": candidates, "seconds": round(seconds, 3),
            "commits_per_s": round(commits / seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("repo", help="path of a git repository (work tree or bare)")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--max-commits", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per side (median taken)")
    ap.add_argument("--no-pydriller", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    sides = {"ptbot": lambda: bench_ptbot(args.repo, args.rev, args.max_commits, args.workers)}
    if not args.no_pydriller:
        sides["pydriller"] = lambda: bench_pydriller(args.repo, args.rev, args.max_commits)
    runs: dict[str, list[tuple[dict | None, float, float]]] = {k: [] for k in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            runs[name].append(timed(fn))
    result: dict = {"repo": args.repo, "rev": args.rev, "max_commits": args.max_commits,
                    "workers": args.workers, "rounds": args.rounds}
    for name, rs in runs.items():
        if rs[0][0] is None:
            result[name] = None  # PyDriller not installed
            continue
        wall = statistics.median(r[1] for r in rs)
        cpu = statistics.median(r[2] for r in rs)
        commits = rs[0][0]["commits"]
        result[name] = {**{k: v for k, v in rs[0][0].items() if k not in ("seconds", "commits_per_s")},
                        "median_s": round(wall, 3), "median_cpu_s": round(cpu, 3),
                        "commits_per_s": round(commits / wall, 1),
                        "walls_s": [round(r[1], 3) for r in rs]}
    if result.get("pydriller"):
        result["speedup"] = round(result["pydriller"]["median_s"] / result["ptbot"]["median_s"], 2)
        result["cpu_speedup"] = round(result["pydriller"]["median_cpu_s"] / result["ptbot"]["median_cpu_s"], 2)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:12s} {v}")


if __name__ == "__main__":
    main()
