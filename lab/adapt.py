"""Adapting a model HOME to one repository, judged forward in time.

A repository's own history is the best sample of the bugs it will have next, but only the past
of it may train a model that is judged on the future. So every record is dated (the commit that
made it, a reviewer's feedback by the head it was given on) and split at a cut:

- **fit**: every record at or before the cut (real fixes, mutations of clean code, feedback,
  plus any seed data): a new version of HOME, a copy of the serving one (same supervisor and
  SAE), gets the serving ranker fine-tuned on them (or, with ``fine_tune=False``, a new ranker)
  and a new calibration from ``lab.train.bind``;
- **forward slice**: the real fixes (and feedback) after the cut. Mutations made after the cut
  are not used: they would measure the mutator, not the repository's next bugs.

The serving version, the candidate and the ``length`` baseline (longest line first, its
probability a Platt map fitted on the fit records) are scored on the same forward slice with the
``ptbot eval`` metrics, overall and per language, with Top-K curves. The candidate serves only
when it beats the serving version on the gate's metric by at least ``min_gain``
(``lab.rebind.decide``); either way the comparison is written into the candidate's manifest
(``gate``), so ``ptbot model list`` shows it and a refusal can be inspected.

Training side only: nothing that scores pull requests imports this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyzer import artifact, versions
from analyzer.features import StateCache
from analyzer.supervisor import Supervisor
from analyzer.types import Record
from lab import train
from lab.calibration_fit import fit_calibrator
from lab.metrics import SnippetPrediction, evaluate, topk_hit_rate
from lab.rebind import GateConfig, decide, version_predictions

log = logging.getLogger(__name__)

METHODS = ("default", "adapted", "length")
"""The rows of the comparison: the serving version, the candidate, longest line first."""
JSON_METRICS = ("top1", "top3", "auroc", "ece", "bss")
"""The metrics ``--json`` carries for each method."""
FORWARD_TASKS = frozenset({"real-fix", "edit"})
"""Record tasks that can be judged on: real fixes mined from history, reviewers' feedback."""
OVERALL = "forward slice"


@dataclass(frozen=True)
class AdaptConfig:
    """How an adaptation is trained and judged."""

    min_gain: float = 0.02
    """The candidate must beat the serving version by at least this much on ``metric``."""
    metric: str = "top1"
    """Metric of ``lab.metrics.evaluate`` that decides: top1/3/5, auroc, bss, brier, ece."""
    seed: int = 0
    """Seed of bind's dev split, the ranker's initialisation and the bootstrap."""
    dev_fraction: float = 0.2
    """Share of fit problems bind holds out for early stopping (and calibration, when the fit records
    have fewer than two sources to hold out, as one repository's own fixes alone have)."""
    n_boot: int = 200
    """Bootstrap replicates for the confidence intervals of the forward-slice metrics."""
    max_k: int = 10
    """Top-K curves run from K=1 to this."""
    ranker: dict[str, Any] = field(default_factory=dict)
    """Ranker settings over the serving ranker's (fine-tuning) or the defaults (from scratch):
    ``analyzer.ranker.RankerConfig`` fields."""
    fine_tune: bool = True
    """Continue training the serving version's ranker on the repository's records (kept as it is
    unless that beats it on the fit side's dev problems) instead of training a new ranker on them
    alone: a few hundred fixes of one repository are too few to relearn what the default model
    learned from many, but enough to move it toward this repository's bugs."""
    fine_tune_lr: float = 3e-4
    """Learning rate of fine-tuning (a third of a new ranker's), so the first epochs stay near
    the serving ranker; ``ranker["lr"]`` overrides it."""

    def __post_init__(self) -> None:
        # The gate's own checks (metric, margin, fractions) apply unchanged.
        GateConfig(min_gain=self.min_gain, metric=self.metric, seed=self.seed, dev_fraction=self.dev_fraction,
                   n_boot=self.n_boot)
        if not self.fine_tune_lr > 0:
            raise ValueError(f"fine_tune_lr must be > 0, got {self.fine_tune_lr}")
        if self.max_k < 3:
            raise ValueError(f"max_k must be at least 3 (the table reports Top-3), got {self.max_k}")


@dataclass(frozen=True)
class ForwardSplit:
    """Records split at a cut (epoch seconds)."""

    cut: int
    fit: tuple[Record, ...]
    """Every dated record at or before the cut."""
    test: tuple[Record, ...]
    """Real fixes and feedback after the cut."""
    undated: int = 0
    """Records whose commit is not in the history (left out of both sides)."""
    later_mutations: int = 0
    """Mutations of code committed after the cut (left out)."""


def record_commit(rec: Record) -> str | None:
    """The commit a record is dated by: the mined commit, or the head a reviewer's label was given on."""
    meta = rec.meta or {}
    sha = meta.get("commit") or meta.get("head_sha")
    return str(sha) if sha else None


def split_forward(records: Sequence[Record], times: Mapping[str, int], cut: int) -> ForwardSplit:
    """Split ``records`` at ``cut`` by the time of their commit (``times``: SHA -> epoch seconds)."""
    fit, test = [], []
    undated = later = 0
    for rec in records:
        sha = record_commit(rec)
        when = times.get(sha) if sha else None
        if when is None:
            undated += 1
        elif when <= cut:
            fit.append(rec)
        elif rec.task in FORWARD_TASKS:
            test.append(rec)
        else:
            later += 1
    return ForwardSplit(cut, tuple(fit), tuple(test), undated, later)


@dataclass(frozen=True)
class AdaptResult:
    """What an adaptation measured and decided."""

    repository: str
    cut: int
    """Epoch seconds; ``to_json`` writes it as ISO 8601 UTC."""
    n_fit: int
    """Records the candidate was bound on (repository records before the cut + seed data)."""
    n_test: int
    """Forward-slice records with a scorable line (the snippets every method was judged on)."""
    promoted: bool
    version: str
    """The candidate's version id (kept on disk when refused)."""
    serving: str
    """The version that served before (and still serves when refused)."""
    reason: str
    results: dict[str, dict[str, dict[str, Any]]]
    """``{slice: {method: metrics}}``: the whole forward slice first, then one slice per language;
    metrics as ``lab.metrics.evaluate`` plus ``topk_curve`` (K = 1..max_k)."""
    reused: bool = False
    """True when HOME already held an adaptation on the very same inputs (nothing was trained)."""

    def to_json(self) -> dict[str, Any]:
        """The ``ptbot adapt --json`` document."""
        overall = self.results[OVERALL]
        return {"repository": self.repository, "cut": _iso(self.cut), "n_fit": self.n_fit, "n_test": self.n_test,
                "promoted": self.promoted, "version": self.version,
                "results": {m: {k: overall[m].get(k) for k in JSON_METRICS} for m in METHODS}}

    def report_doc(self) -> dict[str, Any]:
        """The document ``bot.eval_report`` renders (tables, Top-K curves, HTML)."""
        return {"results": self.results}


def _iso(stamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def inputs_fingerprint(inputs: Mapping[str, Any]) -> str:
    """A stable hash of what an adaptation was made from (history head, cut, records, settings)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:32]


def find_adaptation(home: Path | str, fingerprint: str) -> AdaptResult | None:
    """An earlier adaptation of ``home`` on the same inputs, rebuilt from its manifest, or None.

    Re-running ``adapt`` on an unchanged history (a redelivered or repeated scheduled task) must
    not add a second version trained on the very same data.
    """
    for v in versions.list_versions(home):
        gate = v.gate or {}
        adapt = gate.get("adapt") or {}
        if adapt.get("fingerprint") == fingerprint and "results" in adapt:
            return AdaptResult(repository=adapt["repository"], cut=int(adapt["cut"]), n_fit=int(adapt["n_fit"]),
                               n_test=int(adapt["n_test"]), promoted=bool(gate.get("promoted")),
                               version=v.version, serving=str(gate.get("serving", "")),
                               reason=str(gate.get("reason", "")), results=adapt["results"], reused=True)
    return None


def _metrics(preds: Sequence[SnippetPrediction], cfg: AdaptConfig) -> dict[str, Any]:
    out = evaluate(preds, base_rate=None, n_boot=cfg.n_boot, seed=cfg.seed)
    out["topk_curve"] = [_finite(topk_hit_rate(preds, k)) for k in range(1, cfg.max_k + 1)]
    return out


def _finite(x: float) -> float | None:
    return None if x != x else float(x)


def _length(fit: Sequence[SnippetPrediction], test: Sequence[SnippetPrediction]) -> list[SnippetPrediction]:
    """Longest line first; P(buggy) a Platt map in log token count fitted on the fit records."""
    platt = fit_calibrator([np.log1p(p.tokens.astype(float)) for p in fit], [p.labels for p in fit], "platt")
    return [SnippetPrediction(scores=p.tokens.astype(float), labels=p.labels, tokens=p.tokens,
                              probabilities=platt.predict(np.log1p(p.tokens.astype(float))), group=p.group)
            for p in test]


def _rename(model_dir: Path, **fields: Any) -> None:
    manifest = artifact.read_manifest(model_dir)
    manifest.update(fields)
    artifact.write_manifest(model_dir, {k: v for k, v in manifest.items() if k not in ("format", "format_version")})


def adapt_home(sup: Supervisor, home: Path | str, split: ForwardSplit, *, repository: str,
               seed_records: Sequence[Record] = (), cfg: AdaptConfig = AdaptConfig(),
               inputs: Mapping[str, Any] | None = None, cache: StateCache | None = None,
               progress: bool = False) -> AdaptResult:
    """Bind a candidate version of ``home`` on ``split.fit`` (+ ``seed_records``), compare it with
    the serving version and ``length`` on ``split.test``, and promote it only if it wins the gate.

    ``inputs`` (what the records were made from) is fingerprinted with the settings: a HOME that
    already holds an adaptation on the same fingerprint returns that one (``reused``) untouched.
    """
    home = Path(home)
    fit = list(split.fit) + list(seed_records)
    fingerprint = inputs_fingerprint({**(inputs or {}), "repository": repository, "cut": split.cut,
                                      "fit": sorted(r.id for r in fit), "test": sorted(r.id for r in split.test),
                                      "config": asdict(cfg)})
    earlier = find_adaptation(home, fingerprint)
    if earlier is not None:
        log.info("%s: version %s was adapted on the same inputs; not training again", home, earlier.version)
        return earlier
    if not split.test:
        raise ValueError(f"no real fix after the cut ({_iso(split.cut)}): nothing to judge an adaptation on; "
                         "move the cut earlier (--until, --holdout-months) or mine more history")
    if not split.fit:
        raise ValueError(f"no record at or before the cut ({_iso(split.cut)}): nothing to adapt on; "
                         "move the cut later (--until) or mine with --mutations")
    serving = versions.current_version(home)
    serving_dir = versions.current_dir(home)
    languages = sorted({r.language for r in split.test})
    log.info("adapting %s to %s: %d fit records (%d seed), %d forward records in %s", home, repository,
             len(fit), len(seed_records), len(split.test), ", ".join(languages))
    cand = versions.new_version_dir(home)
    try:
        ranker_cfg = {"lr": cfg.fine_tune_lr, **cfg.ranker} if cfg.fine_tune else dict(cfg.ranker)
        train.bind(sup, cand, fit, ranker_cfg=ranker_cfg or None, dev_fraction=cfg.dev_fraction,
                   seed=cfg.seed, progress=progress, cache=cache, warm_start=cfg.fine_tune)
        kw = dict(cache=cache, progress=progress)
        fit_preds = version_predictions(sup, cand, fit, desc="fit", **kw) or []
        by_lang: dict[str, dict[str, list[SnippetPrediction]]] = {}
        for lang in languages:
            recs = [r for r in split.test if r.language == lang]
            old = version_predictions(sup, serving_dir, recs, desc=f"forward {lang}", **kw)
            if old is None:
                raise artifact.ArtifactError(f"the serving version {serving} of {home} has no ranker: "
                                             "nothing to compare with (bind it first)")
            new = version_predictions(sup, cand, recs, desc=f"forward {lang}", **kw) or []
            if old:
                by_lang[lang] = {"default": old, "adapted": new, "length": _length(fit_preds, old)}
        if not by_lang:
            raise ValueError("no forward-slice record has a scorable line; mine more history")
        slices = {OVERALL: {m: [p for lang in by_lang.values() for p in lang[m]] for m in METHODS}}
        if len(by_lang) > 1:
            slices.update({f"{OVERALL}: {lang}": preds for lang, preds in by_lang.items()})
        results = {name: {m: _metrics(preds[m], cfg) for m in METHODS} for name, preds in slices.items()}
    except BaseException:
        shutil.rmtree(cand, ignore_errors=True)  # a failed training leaves no half version behind
        raise
    overall = results[OVERALL]
    promoted, reason = decide(overall["default"], overall["adapted"], cfg.metric, cfg.min_gain)
    n_test = overall["adapted"]["n_snippets"]
    base_name = artifact.read_manifest(serving_dir).get("name", "ptbot").split("+")[0]
    _rename(cand, name=f"{base_name}+{repository}")
    gate = {"config": asdict(cfg), "serving": serving, "promoted": promoted, "reason": reason,
            "old": overall["default"], "new": overall["adapted"],
            "adapt": {"repository": repository, "cut": split.cut, "cut_iso": _iso(split.cut),
                      "n_fit": len(fit), "n_seed": len(seed_records), "n_test": n_test,
                      "undated": split.undated, "later_mutations": split.later_mutations,
                      "fingerprint": fingerprint, "inputs": dict(inputs or {}), "results": results}}
    versions.record_gate(home, cand.name, gate)
    if promoted:
        versions.promote(home, cand.name, {cfg.metric: overall["adapted"].get(cfg.metric)})
    log.info("adapt gate for %s version %s: %s", repository, cand.name, reason)
    return AdaptResult(repository=repository, cut=split.cut, n_fit=len(fit), n_test=n_test, promoted=promoted,
                       version=cand.name, serving=serving, reason=reason, results=results)
