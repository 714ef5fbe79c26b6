"""Does calibration transfer better when it knows the snippet's size? (exploratory, issue #3)

Platt scaling fitted on Python maps a ranker score to P(buggy) as if every file had Python's
share of buggy lines. Most snippets have one or two buggy lines, so that share falls with the
number of lines, and files in Java or C++ are longer: Python-fitted probabilities run high there.
This script fits, on the same held-out Python records, plain Platt ``sigmoid(a*s + b)`` and a
size-aware Platt ``sigmoid(a*s + b + c*log(n_lines))``, and reports ECE (15 bins) and BSS on the
Python dev split, the transfer-validation sets (mined fixes) and, for reference, the test sets.

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

from analyzer.evaluate import _ranker_logits, _sae_inputs, _split, open_model, read_records
from analyzer.features import StateCache
from analyzer.metrics import brier_skill_score, ece
from analyzer.ranker import RankerConfig, Slate, train_ranker
from analyzer.records import load_records
from analyzer.supervisor import SupervisorConfig


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


def design(scores: list[np.ndarray], size_aware: bool) -> np.ndarray:
    cols = [np.concatenate(scores), np.ones(sum(len(s) for s in scores))]
    if size_aware:
        cols.append(np.concatenate([np.full(len(s), np.log(len(s))) for s in scores]))
    return np.stack(cols, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", type=Path, required=True)
    ap.add_argument("--dev", type=Path, required=True)
    ap.add_argument("--select", nargs="*", default=[], type=Path)
    ap.add_argument("--tests", nargs="*", default=[], type=Path)
    ap.add_argument("--model", type=Path, default=Path("analyzer/default_model"))
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
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
        feats = {id(r): _sae_inputs(loaded.sae, r, loaded.features)
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
            def logits(rs):
                return [_ranker_logits(ranker, feats[id(r)], r) for r in rs]

            cal_s, cal_y = logits(inner_dev), np.concatenate([r.labels for r in inner_dev])
            weights = {k: fit_logistic(design(cal_s, k == "size-aware"), cal_y) for k in ("platt", "size-aware")}
            for name, rs in sets.items():
                s, y = logits(rs), np.concatenate([r.labels for r in rs])
                for kind, w in weights.items():
                    p = 1 / (1 + np.exp(-(design(s, kind == "size-aware") @ w)))
                    cell = rows.setdefault(name, {})
                    cell.setdefault(f"{kind} ece", []).append(ece(p, y))
                    cell.setdefault(f"{kind} bss", []).append(brier_skill_score(p, y, base_rate))
    print("| set | Platt ECE | size-aware ECE | Platt BSS | size-aware BSS |")
    print("|---|---|---|---|---|")
    for name, cell in rows.items():
        m = {k: statistics.mean(v) for k, v in cell.items()}
        print(f"| {name} | {m['platt ece']:.3f} | {m['size-aware ece']:.3f} | {m['platt bss']:.3f} | "
              f"{m['size-aware bss']:.3f} |")


if __name__ == "__main__":
    main()
