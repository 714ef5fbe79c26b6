"""The comment budget, replayed on real fixes: what old and new defaults would have posted.

    python benchmarks/noise_budget.py VALIDATION.jsonl [--tests TEST.jsonl ...] [--model DIR] [--json]

Each record of the real-fix corpus (``ptbot corpus build``) stands for one change: its snippet is
scored as a review scores a changed file (comment and blank lines are not candidates), and its
buggy lines are what a reviewer would have wanted flagged. For every budget setting the script
reports, per file, the precision of the comments it would post (share on a buggy line) and the
share of buggy changes that get at least one comment on a buggy line (``bot.budget.evaluate``).

The grid of candidate settings is searched on the first file (validation repositories only); the
chosen setting is the one with the highest hit rate among those that post at most
``--max-comments`` comments per change on average (a reviewer's noise budget) with a precision
of at least ``--min-precision``; it is then reported on every ``--tests`` file beside the old
and the shipped defaults, never chosen there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from analyzer.artifact import default_model_dir  # noqa: E402
from analyzer.features import StateCache  # noqa: E402
from analyzer.score import RiskScorer  # noqa: E402
from analyzer.supervisor import SupervisorConfig  # noqa: E402
from analyzer.types import ScoreRequest  # noqa: E402
from bot.budget import PREVIOUS_DEFAULTS, evaluate  # noqa: E402
from bot.config import RepoConfig  # noqa: E402
from lab.records import load_records  # noqa: E402

GRID = {"min_lift": (1.0, 1.25, 1.5, 2.0), "lines_per_comment": (3, 4, 6, 8), "top_k": (3, 5)}


def scored_changes(scorer: RiskScorer, path: Path, cache: StateCache) -> list[list[tuple[str, float, bool]]]:
    recs = load_records([path])
    requests = [ScoreRequest(path=r.id, text=r.code, language=r.language) for r in recs]
    out = []
    for rec, lines in zip(recs, scorer.score_many(requests, cache=cache), strict=True):
        bugs = set(rec.buggy_lines)
        out.append([(rec.id, ln.probability, ln.line in bugs) for ln in lines])
    return out


def row(result) -> dict:
    return {"precision": None if result.precision is None else round(result.precision, 3),
            "hit_rate": None if result.hit_rate is None else round(result.hit_rate, 3),
            "comments_per_change": round(result.comments / max(result.changes, 1), 2),
            "silent_changes": round(result.silent_changes / max(result.changes, 1), 3),
            "changes": result.changes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("validation", type=Path, help="validation-repository records (the grid is searched here)")
    ap.add_argument("--tests", nargs="*", default=[], type=Path, help="reported only")
    ap.add_argument("--model", type=Path, help="model directory (default: the packaged artifact)")
    ap.add_argument("--max-comments", type=float, default=1.5, help="mean comments per change allowed (1.5)")
    ap.add_argument("--min-precision", type=float, default=0.25, help="precision floor for the choice (0.25)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = Path(os.environ.get("PTBOT_CACHE_DIR", "~/.cache/ptbot")).expanduser()
    scorer = RiskScorer.load(args.model or default_model_dir(), supervisor=SupervisorConfig(cache_dir=cache))
    states = StateCache(cache, scorer.sup)
    sets = {p.stem: scored_changes(scorer, p, states) for p in [args.validation, *args.tests]}
    val = sets[args.validation.stem]
    floor = args.min_precision
    grid = []
    for lift, per, k in itertools.product(*GRID.values()):
        rule = replace(RepoConfig(), min_lift=lift, lines_per_comment=per, top_k=k, min_probability=0.0)
        res = evaluate(val, rule)
        grid.append(({"min_lift": lift, "lines_per_comment": per, "top_k": k}, res))
    ok = [(s, r) for s, r in grid if r.precision is not None and r.precision >= floor
          and r.comments / max(r.changes, 1) <= args.max_comments] or grid
    best, _ = max(ok, key=lambda sr: (sr[1].hit_rate or 0.0, sr[1].precision or 0.0))
    rules = {"previous defaults": PREVIOUS_DEFAULTS, "shipped defaults": RepoConfig(),
             "chosen on validation": replace(RepoConfig(), min_probability=0.0, **best)}
    doc = {"model": scorer.info.name + "@" + scorer.info.version, "precision_floor": round(floor, 3),
           "chosen": best, "results": {name: {ds: row(evaluate(ch, rule)) for ds, ch in sets.items()}
                                       for name, rule in rules.items()},
           "grid": [{**s, **row(r)} for s, r in grid]}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"model {doc['model']}; chosen on {args.validation.stem}: {best} (precision floor {floor:.3f})")
    print("| setting | set | precision | buggy changes hit | comments / change | silent changes |")
    print("|---|---|---:|---:|---:|---:|")
    for name, per_set in doc["results"].items():
        for ds, r in per_set.items():
            print(f"| {name} | {ds} | {r['precision']} | {r['hit_rate']} | {r['comments_per_change']} | "
                  f"{r['silent_changes']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
