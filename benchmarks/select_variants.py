"""Choose the ranker variant on the Python dev split, over several seeds; report the test sets beside it.

The protocol: every method choice is made on Python data only. This script trains each
variant of the stage-2 ranker on the Python *fit* records, scores the Python *dev* records (the
problems `ptbot bind` holds out with seed 0, which the shipped SAE never saw) and, for reference
only, the non-Python test sets. The variant with the best mean dev Top-1 is the one to ship; the
test columns are printed so the choice can be audited, never to make it.

A Python dev split cannot see what matters most here, transfer to other languages. ``--select``
adds transfer-validation sets that are *not* evaluation data: real fixes that ``ptbot mine-repo``
took from the history of public repositories in other languages. With ``--select`` the choice is
the best mean Top-1 over those sets (the ranker still trains and calibrates on Python only).

Variants: ranker inputs from the model's SAE (``sae``) or the raw layer states (``raw``), each as
one ranker or as the mean logit of an ensemble of ``--members`` rankers with different seeds
(ensembles cut the seed-to-seed spread, measured at up to 0.09 Top-1 on one set), and
``raw@L``: the raw states of another decoder layer L (``--layers``; a layer sweep of the probe),
and ``sae+mut`` / ``raw+mut``: the ranker also trains on ``--mutations`` mutated copies of each
fit record's fixed code (the mutations ``ptbot pretrain`` makes: lines swapped, a foreign line, a
line deleted), which adds positives that do not depend on one language's bug habits; early
stopping and calibration still use real bugs only.

Each ranker holds out part of the fit records for early stopping and calibration, split by
problem with its own seed; seed 0 is never used there, because ``bind``'s seed-0 split is what
made fit/dev in the first place (it would put every fit record on the training side).

    python benchmarks/select_variants.py --fit py-fit.jsonl --dev py-dev.jsonl \\
        --tests ../shared/data/humanevalpack-go.jsonl ... --model analyzer/default_model --seeds 3

Length prior (``RankerConfig.length_prior``): ``sae^p6`` is variant ``sae`` scored with the prior
at weight 6 (what ``ptbot bind`` ships; training never sees the prior);
``--blend 2,6`` reports every variant with the prior added after training at each weight
(``+off6`` equals ``^p6``, from the same trained ranker; ``+offd6`` / ``+offi6`` / ``+offc6``
leave declaration / import / comment lines out of the prior, ``+off6+clast`` ranks comment lines
below every code line) and with a rank-free blend of within-snippet z-scores (``+len6``), without
training again.

``sae&raw``: the mean logit of a ranker on each feature set (same seed), a mixed ensemble.

Feature variants, suffixes on ``sae``/``raw`` (composable, e.g. ``sae~nb``): ``~rel`` shape
columns centred on the file, ``~nb`` the previous and next line's features appended, ``~dl`` the
change from the previous line appended (line context, no new forward pass), ``~sc`` latents
divided by their spread in the file, ``~rk`` latents as ranks within the file, ``~decl`` a 0/1
column for import and function/type header lines (``FeatureConfig.declarations``; last in a
composed name, since the other suffixes read the shape columns from the end). Ranker settings per
variant: ``sae{hidden=16,dropout=0.3}`` (any ``RankerConfig`` field; quote the argument).

``--fit``/``--dev``: write them with ``python benchmarks/select_variants.py --split DATA... --out DIR``
(the same problem split as ``ptbot bind --seed 0``). Line states come from ``PTBOT_CACHE_DIR``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from analyzer.declarations import declares, imports
from analyzer.features import StateCache, declaration_column, ranker_inputs
from analyzer.languages import is_comment_line
from analyzer.ranker import RankerConfig, length_prior_term
from analyzer.supervisor import Supervisor, SupervisorConfig
from lab.baselines import length_scores
from lab.evaluate import (EvalConfig, _ranker_logits, _ranker_method, _sae_inputs, _split, open_model,
                          read_records)
from lab.metrics import SnippetPrediction, line_auroc, topk_hit_rate
from lab.ranker_training import Slate, train_ranker
from lab.records import in_dev, load_records, problem_key
from lab.train import pretraining_plan


def split_files(data: list[str], out: Path, dev_fraction: float = 0.2, seed: int = 0) -> None:
    """Write fit.jsonl / dev.jsonl: ``bind``'s problem split of DATA (raw lines kept as they are)."""
    out.mkdir(parents=True, exist_ok=True)
    fit, dev = [], []
    for path in data:
        raw = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
        recs = load_records([Path(path)])
        assert len(raw) == len(recs), f"{path}: blank or invalid lines"
        for rec, line in zip(recs, raw):
            (dev if in_dev(problem_key(rec), dev_fraction, seed) else fit).append(line)
    (out / "fit.jsonl").write_text("\n".join(fit) + "\n", encoding="utf-8")
    (out / "dev.jsonl").write_text("\n".join(dev) + "\n", encoding="utf-8")
    print(f"fit {len(fit)} records, dev {len(dev)} records -> {out}", file=sys.stderr)


def _metrics(preds: list[SnippetPrediction]) -> dict[str, float]:
    scores = np.concatenate([p.scores for p in preds])
    labels = np.concatenate([p.labels for p in preds])
    return {"top1": topk_hit_rate(preds, 1), "top3": topk_hit_rate(preds, 3), "auroc": line_auroc(scores, labels)}


def _ensemble(runs) -> dict[str, list[SnippetPrediction]]:
    """Mean logit of the members, per test set (members share readings, so lines line up)."""
    out = {}
    for ds in runs[0].predictions:
        out[ds] = [SnippetPrediction(scores=np.mean([r.predictions[ds][i].scores for r in runs], axis=0),
                                     labels=p.labels, tokens=p.tokens, group=p.group)
                   for i, p in enumerate(runs[0].predictions[ds])]
    return out


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _with_zscore_blend(preds: list[SnippetPrediction], weight: float) -> list[SnippetPrediction]:
    """Each snippet's learned scores and log token counts, both standardised within the snippet,
    added with ``weight`` on length: an explicit prior toward long lines that the learned part can
    overrule only by a margin (``length`` is the baseline that transfers best across languages)."""
    return [replace(p, scores=_zscore(p.scores) + weight * _zscore(np.log1p(p.tokens.astype(np.float64))),
                    probabilities=None) for p in preds]


def _with_length_offset(preds: list[SnippetPrediction], weight: float, readings=None,
                        exempt=None) -> list[SnippetPrediction]:
    """Learned logits plus ``weight`` x ``length_prior_term``: what ``RankerConfig.length_prior``
    does when scoring (the log-odds scale is kept, so the calibrator still reads snippet risk).

    With ``exempt`` (and the ``readings`` the predictions came from), the prior term is 0 on lines
    where ``exempt(text)`` holds: a long import or signature line is long for reasons that say
    nothing about its risk (a Rust ``use std::{...}`` line, a wrapped Java signature), so it gets
    no length bonus, nor a penalty."""
    out = []
    for i, p in enumerate(preds):
        term = weight * length_prior_term(torch.as_tensor(p.tokens)).double().numpy()
        if exempt is not None:
            term = term * np.array([not exempt(s.text) for s in readings[i].snippet.lines], dtype=np.float64)
        out.append(replace(p, scores=p.scores + term, probabilities=None))
    return out


def comment_line(text: str) -> bool:
    """A whole-line comment (``languages.is_comment_line``) or a docstring's first line."""
    return is_comment_line(text) or text.lstrip().startswith(('"""', "'''"))


def _with_comments_last(preds: list[SnippetPrediction], readings) -> list[SnippetPrediction]:
    """Comment lines ranked below every code line of their file (order among them kept)."""
    out = []
    for p, r in zip(preds, readings):
        low = np.array([comment_line(s.text) for s in r.snippet.lines])
        scores = p.scores.copy()
        if low.any() and not low.all():
            scores[low] += scores[~low].min() - scores[low].max() - 1.0
        out.append(replace(p, scores=scores, probabilities=None))
    return out


def _relative_shape(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    for col in (-3, -1):
        x[:, col] -= x[:, col].mean()
    return x


def _with_neighbours(x: torch.Tensor) -> torch.Tensor:
    """(L, d) -> (L, 3d): each line's features, then the previous and the next line's (zeros at the
    file's edges). A line-end state has read only the code above it; whether the code below still
    "makes sense" after a line is written there, in the next lines' states."""
    z = torch.zeros_like(x[:1])
    return torch.cat([x, torch.cat([z, x[:-1]]), torch.cat([x[1:], z])], dim=1)


def _with_delta(x: torch.Tensor) -> torch.Tensor:
    """(L, d) -> (L, 2d): each line's features and their change from the previous line (what this
    line added to the model's state, rather than the state it left)."""
    return torch.cat([x, x - torch.cat([x[:1], x[:-1]])], dim=1)


def _with_file_scale(x: torch.Tensor) -> torch.Tensor:
    """Latent columns (all but the last three shape columns) divided by their standard deviation
    within the file: how far a line stands out in units of its own file's spread, whatever the
    language's overall activation scale."""
    x = x.clone()
    lat = x[:, :-3]
    x[:, :-3] = lat / lat.std(dim=0, keepdim=True, unbiased=False).clamp(min=1e-6)
    return x


def _with_file_ranks(x: torch.Tensor) -> torch.Tensor:
    """Latent columns replaced by their rank within the file, scaled to [-0.5, 0.5] (ties share a
    rank): only the order of lines on each latent is kept."""
    x = x.clone()
    lat = x[:, :-3]
    n = lat.shape[0]
    cols = lat.T.contiguous()                                            # (d, L)
    srt = cols.sort(dim=1).values
    below = torch.searchsorted(srt, cols, side="left").float()           # lines strictly lower
    upto = torch.searchsorted(srt, cols, side="right").float()           # lines lower or equal
    x[:, :-3] = (((below + upto - 1) / 2) / max(n - 1, 1) - 0.5).T if n > 1 else 0.0
    return x


def _split_variants(spec: str) -> list[str]:
    """Comma-separated variants; commas inside ``{...}`` belong to the variant's overrides."""
    out, depth, cur = [], 0, ""
    for ch in spec:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [v for v in out + [cur] if v.strip()]


def _overrides(variant: str) -> tuple[str, dict[str, float]]:
    """``"sae{hidden=16,dropout=0.3}^p6"`` -> (``"sae^p6"``, ``{"hidden": 16, "dropout": 0.3}``):
    RankerConfig fields to change for this variant (numbers; ints stay ints)."""
    if "{" not in variant:
        return variant, {}
    head, rest = variant.split("{", 1)
    body, tail = rest.split("}", 1)
    over = {}
    for item in body.split(","):
        k, v = item.split("=")
        over[k.strip()] = int(v) if v.strip().lstrip("-").isdigit() else float(v)
    return head + tail, over


def _with_mutations(seed: int, fit, mutated, sets, feats, ranker_cfg) -> dict[str, list[SnippetPrediction]]:
    """``_ranker_method`` with mutated copies of the inner-fit records added to its training slates."""
    inner_fit, inner_dev = _split(fit, 0.2, seed)
    keep = {r.record.id for r in inner_fit}
    train = inner_fit + [m for m in mutated if m.record.id.split("~mut")[0] in keep]

    def slates(rs):
        return [Slate(features=feats(r), labels=torch.tensor(r.labels, dtype=torch.float32),
                      tokens=torch.tensor(r.tokens), group=r.group) for r in rs]

    dev_s = slates(inner_dev)
    rc = RankerConfig(**{**ranker_cfg, "d_in": dev_s[0].features.shape[1], "seed": seed})
    ranker, _ = train_ranker(rc, slates(train), dev_s, progress=False)
    with torch.no_grad():
        return {ds: [SnippetPrediction(scores=_ranker_logits(ranker, feats(r), r), labels=r.labels, tokens=r.tokens,
                                       group=r.group) for r in rs] for ds, rs in sets.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", nargs="+", metavar="DATA", help="only write the fit/dev files of DATA to --out")
    ap.add_argument("--out", type=Path, help="with --split: directory for fit.jsonl and dev.jsonl")
    ap.add_argument("--fit", type=Path)
    ap.add_argument("--dev", type=Path)
    ap.add_argument("--select", nargs="*", default=[], type=Path,
                    help="transfer-validation sets (mined, never evaluation data): choose on their mean Top-1")
    ap.add_argument("--tests", nargs="*", default=[], type=Path)
    ap.add_argument("--model", type=Path, default=Path("analyzer/default_model"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--variants", default="sae,raw,sae-ens,raw-ens")
    ap.add_argument("--layers", default="", help="also sweep the probe over these layers (comma-separated)")
    ap.add_argument("--mutations", type=int, default=0, help="with +mut variants: mutated copies per fit record")
    ap.add_argument("--cache", type=Path, default=None, help="state cache root (default PTBOT_CACHE_DIR)")
    ap.add_argument("--blend", default="", help="also report each variant with the length prior added after "
                    "training at these weights (comma-separated): +offW (_with_length_offset), "
                    "+lenW (_with_zscore_blend)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.split:
        split_files(args.split, args.out)
        return
    import os

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cache_root = args.cache or Path(os.environ.get("PTBOT_CACHE_DIR", "~/.cache/ptbot")).expanduser()
    loaded = open_model(args.model, SupervisorConfig(device="cpu", cache_dir=cache_root))
    cache = StateCache(cache_root, loaded.sup)
    fit = read_records(loaded.sup, load_records([args.fit]), loaded.features, cache, True, "fit")
    sets = {"dev": read_records(loaded.sup, load_records([args.dev]), loaded.features, cache, True, "dev")}
    for t in args.select:
        sets["val:" + t.stem] = read_records(loaded.sup, load_records([t]), loaded.features, cache, True, t.stem)
    for t in args.tests:
        sets[t.stem] = read_records(loaded.sup, load_records([t]), loaded.features, cache, True, t.stem)
    mutated: list = []
    if args.mutations:
        fit_recs = [r.record for r in fit]
        plan, _ = pretraining_plan(fit_recs, args.mutations, seed=0)
        # Mutated copies only (not the record's own buggy/fixed texts): tagged with their source id.
        own = {(fit_recs[t.record].code, fit_recs[t.record].id) for t in plan} | \
              {(fit_recs[t.record].fixed, fit_recs[t.record].id) for t in plan}
        muts = [replace(fit_recs[t.record], id=f"{fit_recs[t.record].id}~mut{j}", code=t.code, fixed="",
                        buggy_lines=t.buggy)
                for j, t in enumerate(plan) if t.buggy and (t.code, fit_recs[t.record].id) not in own]
        mutated = read_records(loaded.sup, muts, loaded.features, cache, True, "mutations")
    every = fit + mutated + [r for rs in sets.values() for r in rs]
    with torch.no_grad():  # features computed once, shared by every seed and member
        table = {"sae": {id(r): _sae_inputs(loaded.sae, r, loaded.features) for r in every},
                 "raw": {id(r): ranker_inputs(r.snippet.states, r.snippet.lines, loaded.features) for r in every}}
    readings = {loaded.sup.layer: (fit, sets)}
    variants = _split_variants(args.variants)
    for layer in [int(x) for x in args.layers.split(",") if x.strip()]:
        if layer == loaded.sup.layer:
            continue
        sup = Supervisor.load(replace(loaded.sup.cfg, layer=layer))
        lcache = StateCache(cache_root, sup)
        lfit = read_records(sup, load_records([args.fit]), loaded.features, lcache, True, f"fit L{layer}")
        lsets = {n: read_records(sup, [r.record for r in rs], loaded.features, lcache, True, f"{n} L{layer}")
                 for n, rs in sets.items()}
        readings[layer] = (lfit, lsets)
        with torch.no_grad():
            table[f"raw@{layer}"] = {id(r): ranker_inputs(r.snippet.states, r.snippet.lines, loaded.features)
                                     for r in lfit + [x for rs in lsets.values() for x in rs]}
        variants.append(f"raw@{layer}")
        del sup
    # Derived feature sets, built on first use (each is a copy of its base table):
    # "~rel": the shape columns (log tokens, log chars; the last three columns are
    # [log tokens, position, log chars]) centred on the snippet mean too, so every input is
    # relative to its file: Java lines are longer than Python lines across the board;
    # "~nb" / "~dl": line context from neighbouring lines' states (no new forward pass);
    # "~sc" / "~rk": latents in units of their file's spread / as ranks within the file.
    derive = {"~rel": _relative_shape, "~nb": _with_neighbours, "~dl": _with_delta,
              "~sc": _with_file_scale, "~rk": _with_file_ranks}

    by_id = {id(r): r for r in every}

    def table_of(name: str) -> dict:
        if name not in table:
            cut = name.rindex("~")
            if name[cut:] == "~rel" and not loaded.features.shape:
                raise SystemExit(f"variant {name}: the model's features have no shape columns")
            if name[cut:] == "~decl":  # FeatureConfig.declarations: needs each reading's line texts
                table[name] = {k: torch.cat([v, declaration_column(by_id[k].snippet.lines)], dim=1)
                               for k, v in table_of(name[:cut]).items()}
            else:
                table[name] = {k: derive[name[cut:]](v) for k, v in table_of(name[:cut]).items()}
        return table[name]

    class _Feats(dict):  # variant name -> (reading -> features), derived tables made on first use
        def __missing__(self, name):
            return lambda r, t=table_of(name): t[id(r)]

    feats = _Feats()
    # The ranker alone: a variant names its prior (^pW, --blend), whatever MODEL was bound with.
    # An SAE-only model (pretrained, not yet bound) gets today's ranker defaults.
    bound = loaded.manifest.get("ranker") or RankerConfig(d_in=1).to_dict()
    ranker_cfg = {**{k: v for k, v in bound.items() if k not in ("d_in", "seed")},
                  "length_prior": 0.0}
    cfg = EvalConfig(methods=("probe",))
    results: dict[str, list[dict[str, dict[str, float]]]] = {}
    if args.mutations:
        variants += [f"{v}+mut" for v in ("sae", "raw")]
    # Baselines for scale: longest line first, and the exact expectation of a random order.
    for name, score in (("length", lambda r: length_scores(r.snippet.lines)),
                        ("random", lambda r: np.zeros(len(r.labels)))):
        results[name] = [{ds: _metrics([SnippetPrediction(scores=score(r), labels=r.labels, tokens=r.tokens,
                                                          group=r.group) for r in rs])
                          for ds, rs in sets.items()}]
    for variant in variants:
        variant, overrides = _overrides(variant)
        base, ens = variant.split("-")[0], variant.endswith("-ens")
        v_cfg = {**ranker_cfg, **overrides}
        variant = variant + ("{" + ",".join(f"{k}={v:g}" for k, v in overrides.items()) + "}" if overrides else "")
        if "^" in base:  # "sae^p6": RankerConfig.length_prior = 6
            base, w = base.split("^")
            if w[0] != "p":
                raise SystemExit(f"unknown prior {w!r} in {variant!r}: write ^pW")
            v_cfg = {**v_cfg, "length_prior": float(w[1:])}
        if base.endswith("+mut"):
            base = base[:-4]
            for seed in range(args.seeds):
                preds = _with_mutations(seed * 100 + 1, fit, mutated, sets, feats[base], ranker_cfg)
                res = {ds: _metrics(p) for ds, p in preds.items()}
                results.setdefault(variant, []).append(res)
                print(f"{variant} seed {seed}: dev top1 {res['dev']['top1']:.3f}", file=sys.stderr)
            continue
        layer = int(base.split("@")[1].split("~")[0]) if "@" in base else loaded.sup.layer
        v_fit, v_sets = readings[layer]
        for seed in range(args.seeds):
            members = range(args.members) if ens else range(1)
            # Ranking only: the map is fitted on dev, one ranker per seed (cross-source would train four).
            runs = [_ranker_method(variant, seed * 100 + m + 1, v_fit, v_sets, feats[part], v_cfg, cfg,
                                   calibrate_on="dev")
                    for part in base.split("&") for m in members]
            preds = _ensemble(runs)
            res = {ds: _metrics(p) for ds, p in preds.items()}
            results.setdefault(variant, []).append(res)
            for w in [float(x) for x in args.blend.split(",") if x.strip()]:
                results.setdefault(f"{variant}+len{w:g}", []).append(
                    {ds: _metrics(_with_zscore_blend(p, w)) for ds, p in preds.items()})
                results.setdefault(f"{variant}+off{w:g}", []).append(
                    {ds: _metrics(_with_length_offset(p, w)) for ds, p in preds.items()})
                for tag, exempt in (("d", declares), ("i", imports), ("c", comment_line)):
                    results.setdefault(f"{variant}+off{tag}{w:g}", []).append(
                        {ds: _metrics(_with_length_offset(p, w, v_sets[ds], exempt)) for ds, p in preds.items()})
                results.setdefault(f"{variant}+off{w:g}+clast", []).append(
                    {ds: _metrics(_with_comments_last(_with_length_offset(p, w), v_sets[ds]))
                     for ds, p in preds.items()})
            print(f"{variant} seed {seed}: dev top1 {res['dev']['top1']:.3f}", file=sys.stderr)
    names = list(sets)
    val = [n for n in names if n.startswith("val:")]
    test = [n for n in names if n != "dev" and n not in val]

    def mean_of(rs, group):
        return statistics.mean(statistics.mean(r[n]["top1"] for r in rs) for n in group) if group else float("nan")

    print("| variant | " + " | ".join(f"{n} Top-1" for n in names) + " | val mean | test mean |")
    print("|---|" + "---|" * (len(names) + 2))
    for variant, rs in results.items():
        cells = []
        for n in names:
            v = [r[n]["top1"] for r in rs]
            cells.append(f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}")
        print(f"| {variant} | " + " | ".join(cells) + f" | {mean_of(rs, val):.3f} | {mean_of(rs, test):.3f} |")
    basis = val or ["dev"]
    best = max((v for v in results if v not in ("length", "random")), key=lambda v: mean_of(results[v], basis))
    print(f"\nchosen on {'the transfer-validation sets' if val else 'the Python dev split'}: {best}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "chosen": best}, indent=2) + "\n")


if __name__ == "__main__":
    main()
