"""Commits per second of ``ptbot mine-repo`` against a PyDriller script doing the same detection.

Both sides walk the same commits (``--max-commits`` newest of ``--rev``), detect fixes by the same
message cues and file filters, and read the before/after text of every candidate fix file. The
PyDriller side is the usual MSR script: one ``Repository.traverse_commits()`` pass, with a diff
object per commit and file. Prints one JSON object (``--json``) or a short table.

    python benchmarks/bench_mine.py REPO [--max-commits 1000] [--workers 1] [--json]

PyDriller is optional (``pip install pydriller``); without it only ptbot is measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from miners.fixes import FixConfig, has_fix_cue, path_skip_reason
from miners.mine import MineConfig, mine_repo


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
    ap.add_argument("--no-pydriller", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    result = {"repo": args.repo, "rev": args.rev, "max_commits": args.max_commits,
              "ptbot": bench_ptbot(args.repo, args.rev, args.max_commits, args.workers)}
    if not args.no_pydriller:
        result["pydriller"] = bench_pydriller(args.repo, args.rev, args.max_commits)
        if result["pydriller"]:
            result["speedup"] = round(result["ptbot"]["commits_per_s"]
                                      / result["pydriller"]["commits_per_s"], 1)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:12s} {v}")


if __name__ == "__main__":
    main()
