"""The ranker recipe on real fixes, judged on the corpus's validation repositories only.

Trains ranker variants on cached line states of the corpus's training split plus the Python
benchmark sets, and prints Top-1 / line AUROC per language family of ``corpus/validation.jsonl``
with the ratio to ``length`` (longest line first): the table `lab.recipe.Recipe`'s fields were
chosen from. Test repositories are never read here.

    python benchmarks/extract_layers.py corpus/train.jsonl corpus/validation.jsonl D/humanevalpack-python.jsonl \
        D/quixbugs-python.jsonl --layers 3,6,9,12           # fill the line-state cache once
    python benchmarks/select_recipe.py --layers 6 --model mlp --seeds 0,1,2,3     # one MLP per seed
    python benchmarks/select_recipe.py --layers 6 --model ens --members 5 --seeds 0,1
    python benchmarks/select_recipe.py --layers 6 --model ctx --seeds 0,1,2,3     # + a transformer over lines
    python benchmarks/select_recipe.py --layers 6,12 --model mlp --seeds 0,1,2,3  # two layers side by side

Variants: ``mlp`` is the shipped ranker (raw states, declaration column, length prior skipping
declarations); ``ens`` averages ``--members`` of them; ``ctx`` feeds each line's projected
features through a one-layer transformer over the file's lines before scoring (an LLMAO-style
bidirectional adapter); ``ctxens`` averages ``--members`` of those. ``--train`` / ``--val`` take
comma-separated JSONL files; ``D`` is the shared data directory (``--shared``).
"""
from __future__ import annotations

import argparse
import collections
import copy
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from analyzer.features import FeatureConfig, StateCache, ranker_inputs, supervisor_input
from lab.metrics import SnippetPrediction, line_auroc, topk_hit_rate
from analyzer.ranker import RankerConfig, length_prior_term
from lab.ranker_training import Slate, _length_batches, _pad, ranker_loss, train_ranker
from lab.records import load_records, problem_key, split_by_problem
from analyzer.supervisor import Supervisor, SupervisorConfig, default_cache_dir

# Validation records carry their repository's family (``meta.family``, ``miners.corpus.FAMILIES``);
# short names keep one row per variant readable.
SHORT = {"Python": "Py", "JavaScript/TypeScript": "JS", "Java": "Java", "Go": "Go", "C/C++": "C", "Rust": "Rust"}
FEAT = FeatureConfig()
_SUP = None


def sup():
    global _SUP
    if _SUP is None:
        _SUP = Supervisor.load(SupervisorConfig(layer=1))
    return _SUP


def slates(paths, layers, root):
    s = sup()
    caches = [StateCache(root, SimpleNamespace(info=s.info, layer=k)) for k in layers]
    out, miss = [], 0
    for r in load_records([Path(p) for p in paths]):
        key, enc, spans = supervisor_input(s, r.code, FEAT.prefix_for(r.language))
        hs = [c.get(key) for c in caches]
        if any(h is None for h in hs) or not spans:
            miss += 1
            continue
        h = torch.cat(hs, dim=1)
        x = ranker_inputs(h, spans, FEAT)
        bad = set(r.buggy_lines)
        y = torch.tensor([float(sp.line in bad) for sp in spans])
        if y.sum() == 0:
            miss += 1
            continue
        out.append((r, Slate(x, y, torch.tensor([sp.n_tokens for sp in spans]), problem_key(r), r.source)))
    print(f"{paths[0]}...: {len(out)} slates, {miss} missing/empty", file=sys.stderr)
    return out


class Ctx(nn.Module):
    """Per-line MLP features plus a small transformer over the file's lines."""

    def __init__(self, d_in, h=64, layers=1, dropout=0.1, prior=3.0, skip_decl=True):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(d_in, h), nn.ReLU(), nn.Dropout(dropout))
        enc = nn.TransformerEncoderLayer(h, 4, 2 * h, dropout, batch_first=True)
        self.ctx = nn.TransformerEncoder(enc, layers)
        self.out = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Dropout(dropout), nn.Linear(h, 1))
        self.prior, self.skip_decl = prior, skip_decl

    def raw(self, x, mask):  # x (B, L, d), mask (B, L) True = real line
        h = self.inp(x)
        c = self.ctx(h, src_key_padding_mask=~mask)
        return self.out(torch.cat([h, c], -1)).squeeze(-1)

    def score(self, x, tokens):
        logits = self.raw(x[None], torch.ones(1, x.shape[0], dtype=torch.bool))[0]
        term = length_prior_term(tokens)
        if self.skip_decl:
            term = term * (1.0 - x[:, -1])
        return logits + self.prior * term


def train_ctx(train, dev, d_in, seed, args):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = RankerConfig(d_in=d_in)
    model = Ctx(d_in, h=args.hidden, layers=args.ctx_layers, prior=args.prior)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    best, best_state, since = None, None, 0
    for epoch in range(60):
        model.train()
        for batch in _length_batches(train, 16, gen):
            chunk = [train[j] for j in batch]
            x, y, mask = _pad(chunk)
            loss = ranker_loss(model.raw(x, mask), y, mask, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            preds = [SnippetPrediction(model.raw(s.features[None], torch.ones(1, len(s.labels), dtype=torch.bool))[0].numpy(),
                                       s.labels.numpy().astype(int), s.tokens.numpy()) for s in dev]
        key = topk_hit_rate(preds, 1)
        if best is None or key > best:
            best, best_state, since = key, copy.deepcopy(model.state_dict()), 0
        else:
            since += 1
            if since >= 10:
                break
    model.load_state_dict(best_state)
    model.eval()
    return model


def report(name, model_score, val):
    fam = collections.defaultdict(list)
    famlen = collections.defaultdict(list)
    for r, s in val:
        with torch.no_grad():
            sc = model_score(s).numpy()
        p = SnippetPrediction(sc, s.labels.numpy().astype(int), s.tokens.numpy(), group=s.group)
        pl = SnippetPrediction(torch.log1p(s.tokens.float()).numpy(), s.labels.numpy().astype(int), s.tokens.numpy())
        fam[SHORT[r.meta["family"]]].append(p)
        famlen[SHORT[r.meta["family"]]].append(pl)
    row = {}
    for f in sorted(fam):
        ps = fam[f]
        t1 = topk_hit_rate(ps, 1)
        t3 = topk_hit_rate(ps, 3)
        au = line_auroc(np.concatenate([p.scores - p.scores.mean() for p in ps]), np.concatenate([p.labels for p in ps]))
        row[f] = (t1, t3, au, topk_hit_rate(famlen[f], 1))
    mean = np.mean([v[0] for v in row.values()])
    meanau = np.mean([v[2] for v in row.values()])
    ratio = np.mean([v[0] / v[3] for v in row.values()])
    print(f"{name}: mean top1 {mean:.3f} auroc {meanau:.3f} ratio-vs-length {ratio:.2f} | " +
          " ".join(f"{f} {v[0]:.3f}/{v[2]:.2f}({v[0]/v[3]:.2f}x)" for f, v in row.items()), flush=True)
    return mean


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="6")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--train", default="corpus/train.jsonl,{shared}/humanevalpack-python.jsonl,{shared}/quixbugs-python.jsonl")
    ap.add_argument("--val", default="corpus/validation.jsonl")
    ap.add_argument("--prior", type=float, default=3.0)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--ctx-layers", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--members", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(os.environ.get("PTBOT_CACHE_DIR") or default_cache_dir())
    layers = [int(x) for x in args.layers.split(",")]
    tr = slates(args.train.format(shared=args.shared).split(","), layers, root)
    val = slates([args.val], layers, root)
    d_in = tr[0][1].features.shape[1]
    fit_recs, dev_recs = split_by_problem([r for r, _ in tr], 0.2, 0)
    dev_ids = {id(r) for r in dev_recs}
    fit = [s for r, s in tr if id(r) not in dev_ids]
    dev = [s for r, s in tr if id(r) in dev_ids]
    report("length", lambda s: torch.log1p(s.tokens.float()), val)
    res = []
    for seed in [int(x) for x in args.seeds.split(",")]:
        t0 = time.time()
        if args.model == "ens":
            ms = []
            for k in range(args.members):
                cfg = RankerConfig(d_in=d_in, length_prior=args.prior, members=1,
                                   seed=seed * 100 + k, hidden=args.hidden, lr=args.lr)
                ms.append(train_ranker(cfg, fit, dev, progress=False)[0])
            res.append(report(f"ens{args.members} L{args.layers} seed {seed}",
                              lambda s: torch.stack([m(s.features, s.tokens) for m in ms]).mean(0), val))
        elif args.model == "ctxens":
            ms = [train_ctx(fit, dev, d_in, seed * 100 + k, args) for k in range(args.members)]
            res.append(report(f"ctxens{args.members} L{args.layers} seed {seed}",
                              lambda s: torch.stack([m.score(s.features, s.tokens) for m in ms]).mean(0), val))
        elif args.model == "mlp":
            cfg = RankerConfig(d_in=d_in, length_prior=args.prior, members=1, seed=seed,
                               hidden=args.hidden, lr=args.lr)
            m, _ = train_ranker(cfg, fit, dev, progress=False)
            res.append(report(f"mlp L{args.layers} seed {seed}", lambda s: m(s.features, s.tokens), val))
        else:
            m = train_ctx(fit, dev, d_in, seed, args)
            res.append(report(f"ctx{args.ctx_layers} L{args.layers} seed {seed}", lambda s: m.score(s.features, s.tokens), val))
        print(f"  ({time.time() - t0:.0f}s)", file=sys.stderr)
    print(f"== {args.model} L{args.layers} prior {args.prior}: mean over seeds {np.mean(res):.3f}", flush=True)


if __name__ == "__main__":
    main()
