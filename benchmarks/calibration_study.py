"""Which calibration map transfers across languages? (exploratory)

Platt scaling fitted on Python maps a ranker score to P(buggy) as if every file had Python's
share of buggy lines and Python's spread of scores. Two suspects for the miscalibration seen on
other languages: the base rate (most snippets have one or two buggy lines, so the share of buggy
lines falls with the number of lines, and Java or C++ files are longer), and a language-wide shift
of the scores themselves. This script fits each design in ``KINDS`` on the same held-out Python
records and reports ECE (15 bins) and BSS on the Python dev split, the transfer-validation sets
(mined fixes) and, for reference, the test sets.

    python benchmarks/calibration_study.py --fit split/fit.jsonl --dev split/dev.jsonl \\
        --select xval/*.jsonl --tests $D/humanevalpack-*.jsonl --model analyzer/default_model
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from analyzer.features import StateCache
from analyzer.ranker import RankerConfig
from analyzer.supervisor import SupervisorConfig
from lab.evaluate import _inputs, _ranker_logits, _split, open_model, read_records
from lab.metrics import brier_skill_score, ece
from lab.ranker_training import Slate, train_ranker
from lab.records import load_records


def fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 200) -> np.ndarray:
    """Weights of sigmoid(x @ w) by Newton's method with a tiny ridge; x (n, k), y (n,)."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w)))
        g = x.T @ (p - y) + 1e-6 * w
        h = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(x.shape[1])
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


KINDS = ("platt", "size-aware", "centred", "rank", "zscore", "centred+rank")
"""Calibration designs compared (columns of the logistic map's input, one row per line):
- ``platt``: [s, 1], what ``ptbot bind`` fits;
- ``size-aware``: [s, 1, log n_lines];
- ``centred``: [s - mean of the file's s, 1, log n_lines]: only how a line stands out in its file,
  so a language-wide shift of the scores cannot move the probabilities;
- ``rank``: [log rank in the file (1 = riskiest), 1, log n_lines]: no score at all, only the order;
- ``zscore``: ``centred`` divided by the file's standard deviation of s;
- ``centred+rank``: both columns."""


def design(scores: list[np.ndarray], kind: str) -> np.ndarray:
    n = np.concatenate([np.full(len(s), np.log(len(s))) for s in scores])
    ones = np.ones(len(n))
    if kind == "platt":
        return np.stack([np.concatenate(scores), ones], axis=1)
    if kind == "size-aware":
        return np.stack([np.concatenate(scores), ones, n], axis=1)
    if kind == "centred":
        return np.stack([np.concatenate([s - s.mean() for s in scores]), ones, n], axis=1)
    if kind == "rank":
        ranks = [np.log1p(np.argsort(np.argsort(-s, kind="stable"))) for s in scores]
        return np.stack([np.concatenate(ranks), ones, n], axis=1)
    if kind == "zscore":
        return np.stack([np.concatenate([(s - s.mean()) / (s.std() or 1.0) for s in scores]), ones, n], axis=1)
    if kind == "centred+rank":
        c, r = design(scores, "centred"), design(scores, "rank")
        return np.concatenate([c, r[:, :1]], axis=1)
    raise ValueError(kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", type=Path, required=True)
    ap.add_argument("--dev", type=Path, required=True)
    ap.add_argument("--select", nargs="*", default=[], type=Path)
    ap.add_argument("--tests", nargs="*", default=[], type=Path)
    ap.add_argument("--model", type=Path, default=Path("analyzer/default_model"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--kinds", default=",".join(KINDS), help="designs to compare (comma-separated)")
    ap.add_argument("--calibrate-on", choices=("early-stopping", "dev", "cross-source"), default="early-stopping",
                    help="fit the maps on the records that also early-stop the ranker (what bind does), "
                         "on the --dev records, which the ranker never saw, or on each --fit source's "
                         "records scored by a ranker trained on the other sources (a shift like transfer's)")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cache_root = Path(os.environ.get("PTBOT_CACHE_DIR", "~/.cache/ptbot")).expanduser()
    loaded = open_model(args.model, SupervisorConfig(device="cpu", cache_dir=cache_root))
    cache = StateCache(cache_root, loaded.sup)

    def read(path: Path):
        return read_records(loaded.sup, load_records([path]), loaded.features, cache, False)

    fit = read(args.fit)
    sets = {"python-dev": read(args.dev), **{"val:" + p.stem: read(p) for p in args.select},
            **{p.stem: read(p) for p in args.tests}}
    with torch.no_grad():
        feats = {id(r): _inputs(r, loaded.features)
                 for r in fit + [x for rs in sets.values() for x in rs]}
    ranker_cfg = {k: v for k, v in loaded.manifest["ranker"].items() if k not in ("d_in", "seed")}
    base_rate = float(np.concatenate([r.labels for r in fit]).mean())
    rows: dict[str, dict[str, list[float]]] = {}
    for seed in range(1, args.seeds + 1):
        inner_fit, inner_dev = _split(fit, 0.2, seed)

        def slates(rs):
            return [Slate(features=feats[id(r)], labels=torch.tensor(r.labels, dtype=torch.float32),
                          tokens=torch.tensor(r.tokens), group=r.group) for r in rs]

        dev_s = slates(inner_dev)
        rc = RankerConfig(**{**ranker_cfg, "d_in": dev_s[0].features.shape[1], "seed": seed})
        ranker, _ = train_ranker(rc, slates(inner_fit), dev_s, progress=False)
        with torch.no_grad():
            def logits(rs, model=ranker):
                return [_ranker_logits(model, feats[id(r)], r) for r in rs]

            if args.calibrate_on == "cross-source":
                cal_s, cal_y = [], []
                for source in sorted({r.record.source for r in fit}):
                    # A ranker that never saw this source scores it: its logits carry a source shift.
                    others = [r for r in inner_fit if r.record.source != source]
                    stop = [r for r in inner_dev if r.record.source != source]
                    held_out = [r for r in fit if r.record.source == source]
                    with torch.enable_grad():
                        other, _ = train_ranker(rc, slates(others), slates(stop), progress=False)
                    cal_s += logits(held_out, other)
                    cal_y += [r.labels for r in held_out]
                cal_y = np.concatenate(cal_y)
            else:
                held = inner_dev if args.calibrate_on == "early-stopping" else sets["python-dev"]
                cal_s, cal_y = logits(held), np.concatenate([r.labels for r in held])
            weights = {k: fit_logistic(design(cal_s, k), cal_y) for k in kinds}
            for name, rs in sets.items():
                s, y = logits(rs), np.concatenate([r.labels for r in rs])
                for kind, w in weights.items():
                    p = 1 / (1 + np.exp(-(design(s, kind) @ w)))
                    cell = rows.setdefault(name, {})
                    cell.setdefault(f"{kind} ece", []).append(ece(p, y))
                    cell.setdefault(f"{kind} bss", []).append(brier_skill_score(p, y, base_rate))
    print("| set | " + " | ".join(f"{k} ECE" for k in kinds) + " | " + " | ".join(f"{k} BSS" for k in kinds) + " |")
    print("|---|" + "---|" * (2 * len(kinds)))
    for name, cell in rows.items():
        m = {k: statistics.mean(v) for k, v in cell.items()}
        print(f"| {name} | " + " | ".join(f"{m[k + ' ece']:.3f}" for k in kinds) + " | "
              + " | ".join(f"{m[k + ' bss']:.3f}" for k in kinds) + " |")

if __name__ == "__main__":
    main()
