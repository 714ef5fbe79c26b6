"""Would a calibration map per language family beat the one map? (validation repositories only)

Trains the recipe's ranker (five averaged MLPs) on the corpus's training split plus the Python
benchmark sets, then compares, on each family's two validation repositories:

- ``one map``: the centred map fitted on the training dev split's logits (a stand-in for the
  product's cross-source fit, which costs one ranker per source);
- ``per family``: the centred map fitted on the family's *other* validation repository and applied
  to this one (cross-fitting, so no record is scored by a map fitted on it).

ECE (15 bins) and BSS against the family's own base rate, each pooled over the family's two
repositories. Test repositories are never read.

    python benchmarks/calibration_by_family.py --shared $D --train corpus/train.jsonl,$D/humanevalpack-python.jsonl,$D/quixbugs-python.jsonl \\
        --val corpus/validation.jsonl
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from select_recipe import SHORT, slates  # noqa: E402  (a sibling script, not a package)

from analyzer.ranker import RankerConfig  # noqa: E402
from analyzer.supervisor import default_cache_dir  # noqa: E402
from lab.calibration_fit import fit_calibrator  # noqa: E402
from lab.metrics import brier_skill_score, ece  # noqa: E402
from lab.ranker_training import train_ranker  # noqa: E402
from lab.records import split_by_problem  # noqa: E402


def scores(model, items):
    with torch.no_grad():
        return [model(s.features, s.tokens).float().numpy() for s in items]


def ece_bss(p, y):
    """ECE and BSS against the lines' own base rate, for probabilities p and labels y (both (n,))."""
    return ece(p, y), brier_skill_score(p, y, float(y.mean()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--train", default="corpus/train.jsonl,{shared}/humanevalpack-python.jsonl,{shared}/quixbugs-python.jsonl")
    ap.add_argument("--val", default="corpus/validation.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(os.environ.get("PTBOT_CACHE_DIR") or default_cache_dir())
    tr = slates(args.train.format(shared=args.shared).split(","), [6], root)
    val = slates([args.val], [6], root)
    fit_recs, dev_recs = split_by_problem([r for r, _ in tr], 0.2, args.seed)
    dev_ids = {id(r) for r in dev_recs}
    fit = [s for r, s in tr if id(r) not in dev_ids]
    dev = [s for r, s in tr if id(r) in dev_ids]
    model, _ = train_ranker(RankerConfig(d_in=fit[0].features.shape[1], seed=args.seed), fit, dev, progress=False)
    one = fit_calibrator(scores(model, dev), [s.labels.numpy() for s in dev])

    # family -> repository -> (logits, labels)
    by = collections.defaultdict(lambda: collections.defaultdict(lambda: ([], [])))
    for (r, s), logit in zip(val, scores(model, [s for _, s in val])):
        cell = by[SHORT[r.meta["family"]]][r.meta["repo"]]
        cell[0].append(logit)
        cell[1].append(s.labels.numpy())
    print("family: one map ECE / BSS | per family (cross-fitted) ECE / BSS")
    for fam in sorted(by):
        repos = sorted(by[fam])
        logits = [x for repo in repos for x in by[fam][repo][0]]
        labels = [y for repo in repos for y in by[fam][repo][1]]
        e1, b1 = ece_bss(np.concatenate([one.predict(x) for x in logits]), np.concatenate(labels))
        p_all, y_all = [], []
        for repo in repos:
            other = [o for o in repos if o != repo]
            cal = fit_calibrator([x for o in other for x in by[fam][o][0]], [y for o in other for y in by[fam][o][1]])
            p_all.append(np.concatenate([cal.predict(x) for x in by[fam][repo][0]]))
            y_all.append(np.concatenate(by[fam][repo][1]))
        e2, b2 = ece_bss(np.concatenate(p_all), np.concatenate(y_all))
        print(f"{fam}: {e1:.3f} / {b1:.3f} | {e2:.3f} / {b2:.3f}", flush=True)


if __name__ == "__main__":
    main()
