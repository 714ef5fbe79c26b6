"""Is a line's last-token state the right vector? Line-end vs mean-pooled states, on transfer.

PtTrust (and ptbot) take the probed layer's state at each line's *last* token: at an early layer
that state has read the whole prefix, but it is dominated by the last token itself (often ``)``,
``;`` or ``{``, the same in every language). The mean of the states of every token that starts on
the line is the usual alternative (sentence embeddings): it carries what the line says, not how it
ends. This study compares, for the product's ranker (trained without its length prior):

- ``end``: the line-end state (what ships),
- ``mean``: the mean over the line's tokens,
- ``end+mean``: both, concatenated,

each with the shipped feature recipe (states centred per file, relative shape, position and
declaration columns), trained on the Python fit records (``--fit``), scored on the Python dev split
and on the transfer-validation sets (``--select``, mined real fixes; never evaluation data), alone
and with a length prior of weight ``--prior`` added to every line (the product's prior skips
declaration lines; this study's does not). One forward pass per text gives all three (no state
cache: the pooled vectors are not what ``StateCache`` stores).

    python benchmarks/pooling_study.py --fit split/fit_nodb.jsonl --dev split/dev.jsonl \\
        --select xval/*.jsonl --seeds 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from analyzer.features import SnippetLines, ranker_inputs, supervisor_input
from analyzer.ranker import RankerConfig, length_prior_term
from analyzer.supervisor import SupervisorConfig
from lab.evaluate import Reading, _ranker_logits, _split, open_model
from lab.metrics import SnippetPrediction, topk_hit_rate
from lab.ranker_training import Slate, train_ranker
from lab.records import load_records


def _ranker_run(seed: int, fit: list[Reading], tests: dict[str, list[Reading]], feats,
                ranker_cfg: dict) -> dict[str, list[SnippetPrediction]]:
    """One ranker trained on ``fit`` (early-stopped on a seeded fifth of it); its scores on ``tests``."""
    inner_fit, inner_dev = _split(fit, 0.2, seed)

    def slates(rs: list[Reading]) -> list[Slate]:
        return [Slate(features=feats(r), labels=torch.tensor(r.labels, dtype=torch.float32),
                      tokens=torch.tensor(r.tokens), group=r.group) for r in rs]

    dev = slates(inner_dev)
    cfg = RankerConfig(**{**ranker_cfg, "d_in": dev[0].features.shape[1], "seed": seed})
    ranker, _ = train_ranker(cfg, slates(inner_fit), dev, progress=False)
    with torch.no_grad():
        return {n: [SnippetPrediction(scores=_ranker_logits(ranker, feats(r), r), labels=r.labels, tokens=r.tokens,
                                      group=r.group) for r in rs] for n, rs in tests.items()}


def _top1_with_prior(preds: list[SnippetPrediction], weight: float) -> float:
    """Top-1 of the learned logits plus ``weight`` x ``length_prior_term`` on every line."""
    return topk_hit_rate([SnippetPrediction(scores=p.scores + weight * length_prior_term(
        torch.as_tensor(p.tokens)).double().numpy(), labels=p.labels, tokens=p.tokens, group=p.group)
        for p in preds], 1)


def read_pooled(loaded, records, desc: str, chunk: int = 32) -> dict[str, list[Reading]]:
    """Readings of ``records`` three times over, sharing lines and labels: states = line end,
    mean over the line's tokens, and both concatenated ((n_lines, d), (n_lines, d), (n_lines, 2d))."""
    sup, cfg = loaded.sup, loaded.features
    out: dict[str, list[Reading]] = {"end": [], "mean": [], "end+mean": []}
    for c in tqdm(range(0, len(records), chunk), desc=desc, unit="batch", leave=False):
        part = records[c:c + chunk]
        enc = []
        for r in part:
            _, e, spans = supervisor_input(sup, r.code, cfg.prefix_for(r.language))
            enc.append((e, spans))
        states = sup.states([e.ids for e, _ in enc])
        for rec, (_, spans), h in zip(part, enc, states):  # h: (T, d)
            if not spans:
                continue
            end = h[torch.tensor([s.end_token for s in spans])]                       # (L, d)
            mean = torch.stack([h[min(s.first_token, s.end_token):s.end_token + 1].mean(0) for s in spans])
            bad = set(rec.buggy_lines)
            labels = np.array([int(s.line in bad) for s in spans])
            tokens = np.array([s.n_tokens for s in spans])
            for name, x in (("end", end), ("mean", mean), ("end+mean", torch.cat([end, mean], 1))):
                out[name].append(Reading(rec, SnippetLines(spans, x), labels, tokens))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fit", type=Path, required=True)
    ap.add_argument("--dev", type=Path, required=True)
    ap.add_argument("--select", nargs="+", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=Path("analyzer/default_model"))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--prior", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cache_root = Path(os.environ.get("PTBOT_CACHE_DIR", "~/.cache/ptbot")).expanduser()
    loaded = open_model(args.model, SupervisorConfig(device="cpu", cache_dir=cache_root))
    fit = read_pooled(loaded, load_records([args.fit]), "fit")
    sets = {"dev": read_pooled(loaded, load_records([args.dev]), "dev")}
    for t in args.select:
        sets["val:" + t.stem] = read_pooled(loaded, load_records([t]), t.stem)
    ranker_cfg = {**{k: v for k, v in loaded.manifest["ranker"].items() if k not in ("d_in", "seed")},
                  "length_prior": 0.0}
    names = list(sets)
    print("| pooling | scoring | " + " | ".join(f"{n} Top-1" for n in names) + " | val mean |")
    print("|---|---|" + "---|" * (len(names) + 1))
    def feats(r: Reading) -> torch.Tensor:  # the shipped feature recipe over whichever vectors r holds
        return ranker_inputs(r.snippet.states, r.snippet.lines, loaded.features)

    for pool in ("end", "mean", "end+mean"):
        tests = {n: s[pool] for n, s in sets.items()}
        alone, prior = [], []  # per seed: {set: Top-1}
        for seed in range(args.seeds):
            preds = _ranker_run(seed * 100 + 1, fit[pool], tests, feats, ranker_cfg)
            alone.append({n: topk_hit_rate(p, 1) for n, p in preds.items()})
            prior.append({n: _top1_with_prior(p, args.prior) for n, p in preds.items()})
            print(f"{pool} seed {seed}: dev {prior[-1]['dev']:.3f}", file=sys.stderr)
        val = [n for n in names if n.startswith("val:")]
        for label, per_seed in (("alone", alone), (f"+prior {args.prior:g}", prior)):
            means = [statistics.mean(s[n] for n in val) for s in per_seed]
            cells = [f"{statistics.mean(s[n] for s in per_seed):.3f}" for n in names]
            print(f"| {pool} | {label} | " + " | ".join(cells) +
                  f" | {statistics.mean(means):.3f} ± {statistics.pstdev(means):.3f} |", flush=True)


if __name__ == "__main__":
    main()
