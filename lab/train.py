"""Training loops written out in full: stage 1 (``pretrain``: the SAE) and stage 2 (``bind``).

No argument parsing here: ``ptbot/cli.py`` reads files and flags and calls these functions.

Stage 1 data (PtTrust's, with PT's bugs fixed): for every record, its buggy ``code`` and its
``fixed`` version, paired line by line where the fix changed them; plus ``mutations`` mutated
copies of every clean (fixed) snippet: a real swap of two lines, a line from another snippet, a
deleted line (the next line is labelled). Every line of every text is an SAE training vector;
the (correct line, buggy line) pairs feed the contrastive term.

Stage 2 (the SAE only explains lines from then on): the line states of each labelled snippet ->
ranker features (``analyzer.features.ranker_inputs``) -> MLPs trained with NeuralNDCG + a pointwise BCE head, early-stopped on a dev split
grouped by problem; then the centred calibration map (``analyzer.calibrate``) fitted file by file
on held-out logits: each source's, scored by a ranker trained without that source
(``ranker_training.held_out_logits``), or the dev split's when fewer than two sources can be held out.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from analyzer import artifact
from analyzer.calibrate import Calibrator
from analyzer.features import FeatureConfig, SnippetLines, StateCache, extract, ranker_inputs
from analyzer.ranker import RankerConfig, load_ranker, save_ranker
from analyzer.sae import SAEConfig, save_sae
from analyzer.supervisor import Supervisor, supervisor_ref
from analyzer.types import Record
from lab import shards
from lab.calibration_fit import fit_calibrator
from lab.metrics import SnippetPrediction, evaluate
from lab.mutate import mutate, pair_lines
from lab.ranker_training import Slate, held_out_logits, train_ranker
from lab.records import problem_key, refuse_test_repositories, split_by_problem
from lab.sae_training import train_sae

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ stage 1


@dataclass(frozen=True)
class PretrainingText:
    """One text stage 1 reads, and where it comes from."""

    code: str
    language: str
    record: int
    """Index of its record in the list given to ``pretraining_plan``."""
    buggy: tuple[int, ...]
    """Its wrong lines: the record's buggy lines for its code, the mutated lines of a mutation,
    none for a fixed version."""


def pretraining_plan(records: Sequence[Record], mutations: int, seed: int,
                     fine: bool = False) -> tuple[list[PretrainingText], list[tuple[int, int, int, int]]]:
    """``pretraining_texts`` with each text's record and wrong lines (``ptbot extract`` keeps them)."""
    rng = random.Random(seed)
    texts: list[PretrainingText] = []
    pairs: list[tuple[int, int, int, int]] = []
    clean = [r.fixed for r in records if r.fixed]
    for i, rec in enumerate(records):
        if rec.fixed:
            a = len(texts)
            texts.append(PretrainingText(rec.fixed, rec.language, i, ()))
            b = len(texts)
            texts.append(PretrainingText(rec.code, rec.language, i, tuple(rec.buggy_lines)))
            pairs += [(a, la, b, lb) for la, lb in pair_lines(rec.fixed, rec.code)]
            base, lang = rec.fixed, rec.language
        else:  # an unlabelled clean snippet: mutations only
            a = len(texts)
            texts.append(PretrainingText(rec.code, rec.language, i, tuple(rec.buggy_lines)))
            base, lang = rec.code, rec.language
        for _ in range(mutations):
            donors = [clean[rng.randrange(len(clean))] for _ in range(3)] if clean else []
            m = mutate(base, rng, donors=donors, n=rng.choice((1, 1, 2)), fine=fine)
            if m is None:
                continue
            b = len(texts)
            texts.append(PretrainingText(m.code, lang, i, tuple(m.buggy_lines)))
            pairs += [(a, la, b, lb) for la, lb in m.pairs]
    return texts, pairs


def pretraining_texts(records: Sequence[Record], mutations: int, seed: int,
                      fine: bool = False) -> tuple[list[tuple[str, str]], list[tuple[int, int, int, int]]]:
    """Texts to read and line pairs between them.

    Returns ``texts`` as (code, language) and ``pairs`` as (text a, line a, text b, line b): line a
    of text a is a correct line, line b of text b the buggy/mutated line that replaces it.
    """
    texts, pairs = pretraining_plan(records, mutations, seed, fine)
    return [(t.code, t.language) for t in texts], pairs


def pretraining_records(records: Sequence[Record], holdout: float | None, seed: int,
                        max_records: int | None) -> list[Record]:
    """The records stage 1 learns from: ``bind``'s dev problems left out, then a seeded subset."""
    records = list(records)
    refuse_test_repositories(records)
    if holdout:
        records, _ = split_by_problem(records, holdout, seed)
    if max_records is not None and len(records) > max_records:
        records = random.Random(seed).sample(list(records), max_records)
    if not records:
        raise ValueError("no training records: pass at least one JSONL file with code")
    return list(records)


def pretrain(sup: Supervisor, records: Sequence[Record], out_dir: Path, *,
             sae_cfg: dict[str, Any] | None = None, features: FeatureConfig = FeatureConfig(),
             mutations: int = 2, fine_mutations: bool = False, seed: int = 0,
             progress: bool = True, cache: StateCache | None = None,
             holdout: float | None = 0.2, max_records: int | None = None,
             name: str | None = None) -> dict[str, Any]:
    """Stage 1: train the contrastive TopK SAE on line states; write it into ``out_dir``.

    ``holdout``: the share of problems that ``bind`` will hold out as its dev split (same
    hash-based split, same seed) is left out here too, so no dev label reaches stage 1 either.
    ``max_records``: a seeded random subset, to bound the cost of reading code.
    """
    records = pretraining_records(records, holdout, seed, max_records)
    texts, pairs = pretraining_texts(records, mutations, seed, fine_mutations)
    log.info("pretraining on %d texts (%d records, %d mutations each), %d line pairs",
             len(texts), len(records), mutations, len(pairs))
    snippets = extract(sup, [t for t, _ in texts], [lang for _, lang in texts], features,
                       progress=progress, desc="reading code (stage 1)", cache=cache)
    rows: list[dict[int, int]] = []  # per text: line number -> row of x
    chunks, n = [], 0
    for sn in snippets:
        rows.append({s.line: n + i for i, s in enumerate(sn.lines)})
        chunks.append(sn.states)
        n += len(sn.lines)
    x = torch.cat(chunks) if chunks else torch.empty(0, sup.info.hidden_size)
    pair_rows = [(rows[a][la], rows[b][lb]) for a, la, b, lb in pairs
                 if la in rows[a] and lb in rows[b]]
    pt = torch.tensor(pair_rows, dtype=torch.long).reshape(-1, 2)
    summary = {"records": len(records), "holdout": holdout, "texts": len(texts), "lines": int(x.shape[0]),
               "pairs": int(pt.shape[0]), "mutations_per_snippet": mutations,
               "languages": sorted({r.language for r in records})}
    return _train_stage1(x, pt, out_dir, supervisor_ref(sup), features, summary, sae_cfg=sae_cfg,
                         seed=seed, progress=progress, name=name)


def _train_stage1(x: torch.Tensor, pt: torch.Tensor, out_dir: Path, sup: artifact.SupervisorRef,
                  features: FeatureConfig, summary: dict[str, Any], *, sae_cfg: dict[str, Any] | None,
                  seed: int, progress: bool, name: str | None) -> dict[str, Any]:
    """Train the SAE on line states ``x`` with contrastive row pairs ``pt``; write the artifact."""
    cfg = SAEConfig(**{"d_in": x.shape[1], "seed": seed, **(sae_cfg or {})})
    model, metrics = train_sae(cfg, x, pt, checkpoint_dir=Path(out_dir) / "checkpoints",
                               progress=progress)
    sae_dict = save_sae(model, out_dir)
    manifest = _existing(out_dir)
    manifest.update({"name": name or Path(out_dir).name, "supervisor": sup.to_dict(),
                     "features": features.to_dict(), "sae": sae_dict,
                     "sae_training": {**summary, **{k: v for k, v in metrics.items() if k != "history"}},
                     "ranker": None, "calibration": None})
    artifact.write_manifest(out_dir, manifest)
    return manifest


def plan_line_states(records: Sequence[Record], out_dir: Path, sup: artifact.SupervisorRef, *,
                     features: FeatureConfig = FeatureConfig(), mutations: int = 2,
                     fine_mutations: bool = False, seed: int = 0, holdout: float | None = 0.2,
                     max_records: int | None = None, sources: Sequence[Path] = (),
                     settings: shards.ExtractSettings = shards.ExtractSettings()) -> dict[str, Any]:
    """``ptbot extract``'s first step: the texts and pairs ``pretrain`` would read from these
    records with these arguments, cut into shard plans (``lab.shards.write_plan``)."""
    records = pretraining_records(records, holdout, seed, max_records)
    texts, pairs = pretraining_plan(records, mutations, seed, fine_mutations)
    selection = {"holdout": holdout, "max_records": max_records, "mutations": mutations,
                 "fine_mutations": fine_mutations, "seed": seed}
    return shards.write_plan(out_dir, texts, pairs, supervisor=sup, features=features,
                             selection=selection, records=len(records), sources=sources,
                             settings=settings)


def pretrain_from_shards(shards_dir: Path, out_dir: Path, *, expect: artifact.SupervisorRef | None = None,
                         sae_cfg: dict[str, Any] | None = None, seed: int = 0, progress: bool = True,
                         name: str | None = None) -> dict[str, Any]:
    """Stage 1 on line states written by ``ptbot extract`` (``lab.shards``), no supervisor run.

    The shards fix what ``pretrain`` would choose from its arguments (records, holdout,
    mutations, features, supervisor and layer); ``expect`` (the supervisor the caller asked
    for) must match the one the shards were read with.
    """
    x, pt, info = shards.read_states(Path(shards_dir), expect=expect)
    sel = info["selection"]
    summary = {"records": info["counts"]["records"], "holdout": sel["holdout"],
               "texts": info["counts"]["texts"], "lines": int(x.shape[0]), "pairs": int(pt.shape[0]),
               "mutations_per_snippet": sel["mutations"], "languages": info["counts"]["languages"],
               "shards": {"dir": str(shards_dir), "plan_sha256": info["plan_sha256"]}}
    return _train_stage1(x, pt, out_dir, artifact.SupervisorRef(**info["supervisor"]),
                         FeatureConfig.from_dict(info["features"]), summary, sae_cfg=sae_cfg, seed=seed,
                         progress=progress, name=name)


def _existing(model_dir: Path) -> dict[str, Any]:
    try:
        m = artifact.read_manifest(model_dir)
    except artifact.ArtifactError:
        return {}
    return {k: v for k, v in m.items() if k not in ("format", "format_version")}


# ------------------------------------------------------------------------------------ stage 2


def _labels(rec: Record, sn: SnippetLines) -> torch.Tensor:
    bad = set(rec.buggy_lines)
    return torch.tensor([1.0 if s.line in bad else 0.0 for s in sn.lines])


def make_slates(sup: Supervisor, records: Sequence[Record], features: FeatureConfig,
                progress: bool, desc: str, cache: StateCache | None = None) -> list[Slate]:
    """Labelled slates (one per record with at least one scorable line) of ranker inputs."""
    snippets = extract(sup, [r.code for r in records], [r.language for r in records], features,
                       progress=progress, desc=desc, cache=cache)
    slates = []
    for rec, sn in zip(records, snippets):
        if not sn.lines:
            continue
        slates.append(Slate(features=ranker_inputs(sn.states, sn.lines, features), labels=_labels(rec, sn),
                            tokens=torch.tensor([s.n_tokens for s in sn.lines]),
                            group=problem_key(rec), source=rec.source))
    return slates


def predictions(ranker, calibrator: Calibrator | None, slates: Sequence[Slate]) -> list[SnippetPrediction]:
    """Ranker scores (and calibrated probabilities) as metric inputs."""
    out = []
    with torch.no_grad():
        for s in slates:
            logits = ranker(s.features, s.tokens).float().numpy()
            probs = calibrator.predict(logits) if calibrator is not None else None
            out.append(SnippetPrediction(scores=logits, labels=s.labels.numpy().astype(int),
                                         tokens=s.tokens.numpy(), probabilities=probs, group=s.group))
    return out


def bind(sup: Supervisor, model_dir: Path, records: Sequence[Record], *,
         ranker_cfg: dict[str, Any] | None = None, dev_fraction: float = 0.2, seed: int = 0, progress: bool = True,
         cache: StateCache | None = None, version: str | None = None, warm_start: bool = False) -> dict[str, Any]:
    """Stage 2: train the ranker and calibrator on labelled records; update ``model_dir``.

    The records split by problem into train and dev (``dev_fraction``, ``seed``); the ranker
    (``RankerConfig`` with ``ranker_cfg`` over its defaults) trains on train and early-stops on dev.
    The centred calibration map is fitted on cross-source logits, each source scored by a ranker
    trained without it, or on the dev split's when fewer than two sources can be held out
    (``ranker_training.held_out_logits``; ``ranker_training.calibrated_on`` in the manifest says
    which). ``version`` is recorded in the manifest (reports and scored lines name
    ``name@version``). ``warm_start``: fine-tune the ranker ``model_dir`` already holds instead of
    training a new one (its settings, with ``ranker_cfg`` over them, e.g. a smaller ``lr``); it is
    kept as it is unless fine-tuning beats it on dev.
    """
    refuse_test_repositories(records)
    manifest = artifact.read_manifest(model_dir)
    if not manifest.get("sae"):
        raise artifact.ArtifactError(f"{model_dir} has no SAE yet: run `ptbot pretrain` first")
    artifact.check_supervisor(manifest, supervisor_ref(sup), model_dir)
    features = FeatureConfig.from_dict(manifest["features"])
    train_recs, dev_recs = split_by_problem(records, dev_fraction, seed)
    if not train_recs or not dev_recs:
        raise ValueError(f"need records on both sides of the problem split (train {len(train_recs)}, "
                         f"dev {len(dev_recs)}); pass more data or change --dev-fraction")
    if warm_start and not manifest.get("ranker"):
        raise artifact.ArtifactError(f"{model_dir} has no ranker to fine-tune: bind it first")
    train = make_slates(sup, train_recs, features, progress, "reading code (train)", cache)
    dev = make_slates(sup, dev_recs, features, progress, "reading code (dev)", cache)
    if warm_start:
        cfg = RankerConfig.from_dict({**manifest["ranker"], "seed": seed, **(ranker_cfg or {})})
        init = load_ranker(model_dir, manifest["ranker"])
    else:
        cfg = RankerConfig(**{"d_in": train[0].features.shape[1], "seed": seed, **(ranker_cfg or {})})
        init = None
    ranker, history = train_ranker(cfg, train, dev, progress=progress, init=init)
    cal_logits, cal_labels, cal_info = held_out_logits(ranker, train, dev, progress=progress)
    calib = fit_calibrator([x.numpy() for x in cal_logits], [y.numpy() for y in cal_labels], "centred")
    base_rate = float(torch.cat([s.labels for s in train]).mean())
    dev_metrics = evaluate(predictions(ranker, calib, dev), base_rate=base_rate, n_boot=200, seed=seed)
    save_ranker(ranker, model_dir)
    manifest = _existing(model_dir)
    manifest.update({
        **({"version": version} if version else {}),
        "features": features.to_dict(), "ranker": cfg.to_dict(), "calibration": calib.to_dict(),
        "ranker_training": {"train_records": len(train_recs), "dev_records": len(dev_recs),
                            "train_lines": int(sum(len(s.labels) for s in train)),
                            "base_rate": base_rate, "dev_fraction": dev_fraction, "seed": seed,
                            "languages": sorted({r.language for r in records}),
                            "sources": sorted({r.source for r in records}),
                            "best_epoch": history["best_epoch"], **cal_info},
        "dev_metrics": dev_metrics,
    })
    artifact.write_manifest(model_dir, manifest)
    return manifest
