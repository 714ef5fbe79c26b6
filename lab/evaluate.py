"""``ptbot eval``: every method on every test set, trained on the training files only.

The harness:
1. read the code of every training and test record once (``features.extract`` with a
   ``StateCache``; the full model once more for ``uncertainty``/``lookback`` with a
   ``baselines.FullPassCache``), so a second evaluation on the same data never runs the model;
2. split the training records by problem into fit/dev (``records.split_by_problem``, seeded):
   trainable methods fit on ``fit``, early-stop on ``dev`` and calibrate on held-out training
   records (each source scored by a ranker trained without it, or ``dev``); test records are only
   ever scored. Each ``MethodRun`` records the ids whose labels it trained and calibrated on, so
   the separation is checkable (and it is checked in tests);
3. score every test set with every method and compute ``metrics.evaluate`` with the training
   base rate; trainable methods run once per seed and report the mean over seeds, with the
   spread under ``"seeds"``.

Methods:
- ``pttrust``: the ranker (NeuralNDCG + BCE, ``analyzer.ranker``) with the model directory's
  ranker settings, on its features of the raw line states, trained and calibrated as ``bind``
  does: the centred map (``analyzer.calibrate``) fitted on the logits
  ``ranker_training.held_out_logits`` gives (each source scored by a ranker trained without it,
  or the dev split's with fewer than two sources); with no training records, the model
  directory's shipped ranker and calibrator as they are;
- ``probe``: the same ranker, features and calibration without the length prior: what the
  line states alone say (the paper's probing classifier);
- ``lookback`` / ``lookback_mlp``, ``uncertainty``, ``length``, ``random``: ``lab.baselines``.
  Scores of methods that do not learn (length, uncertainty) are Platt-calibrated on the training
  lines so that they get a Brier score too; ``random`` predicts the training base rate.

``latent_associations`` is the interpretability view (the paper's RQ3) behind ``ptbot features``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyzer import artifact
from analyzer.calibrate import Calibrator
from analyzer.features import FeatureConfig, SnippetLines, StateCache, extract, ranker_inputs
from analyzer.ranker import RankerConfig, load_ranker
from analyzer.sae import load_sae
from analyzer.supervisor import Supervisor, SupervisorConfig, supervisor_ref
from analyzer.types import Record
from lab.baselines import (CONTEXT_KEYS, ClassifierConfig, FullPassCache, FullPassLines, LineClassifier,
                           length_scores, random_scores, read_full, uncertainty_scores)
from lab.calibration_fit import fit_calibrator
from lab.metrics import (SnippetPrediction, bootstrap_ci, evaluate, random_topk_hit_rate, snippet_auroc,
                         summarize_seeds, topk_hit_rate)
from lab.ranker_training import Slate, held_out_logits, train_ranker
from lab.records import problem_key, refuse_test_repositories, split_by_problem

log = logging.getLogger(__name__)

METHODS = ("pttrust", "probe", "lookback", "lookback_mlp", "uncertainty", "length", "random")
"""Every method ``run_eval`` knows, in table order."""
TRAINABLE = frozenset({"pttrust", "probe", "lookback", "lookback_mlp"})
"""Methods that learn from labels (and so run once per seed)."""
_FULL_MODEL = frozenset({"lookback", "lookback_mlp", "uncertainty"})
FIXED = "#fixed"
"""Suffix of the test-set key (and record ids) holding a test set's fixed versions."""


@dataclass(frozen=True)
class EvalConfig:
    """What ``run_eval`` runs and how."""

    methods: tuple[str, ...] = METHODS
    """Methods to evaluate (names from ``METHODS``)."""
    seeds: int = 1
    """Seeds per trainable method (fit/dev split and initialisation both change with the seed)."""
    dev_fraction: float = 0.2
    """Share of training problems held out for early stopping (and calibration, when the training
    records have fewer than two sources to hold out)."""
    n_boot: int = 1000
    """Bootstrap replicates (problems resampled) for the 95% intervals; 0 = no intervals."""
    curve_k: int = 10
    """Top-K curves (for plots) go from K = 1 to this."""
    reliability_bins: int = 15
    """Equal-width bins of the reliability diagram data (and of ECE)."""
    ranker_epochs: int | None = None
    """Override the ranker's maximum epochs (pttrust and probe); None = the model's config."""
    context_keys: tuple[str, ...] = CONTEXT_KEYS
    """Record ``meta`` fields used as the LookBack context (the task statement)."""
    fixed_negatives: bool = True
    """Also score each test record's fixed version, for the snippet-level AUROC (is this snippet
    buggy at all?). Every test record is buggy, so without clean snippets that AUROC is undefined.
    Only ``snippet_auroc`` uses them; every other metric is over the buggy records alone."""
    progress: bool = False
    """Show progress bars on stderr."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods listed twice: {list(self.methods)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.n_boot < 0 or self.curve_k < 1 or self.reliability_bins < 1:
            raise ValueError("n_boot must be >= 0, curve_k and reliability_bins >= 1")
        if self.ranker_epochs is not None and self.ranker_epochs < 1:
            raise ValueError(f"ranker_epochs must be >= 1, got {self.ranker_epochs}")


@dataclass
class Reading:
    """One record's scorable lines as read by the supervisor, with labels."""

    record: Record
    snippet: SnippetLines
    labels: np.ndarray
    """(n_lines,) 1 = the line is in ``record.buggy_lines``."""
    tokens: np.ndarray
    """(n_lines,) tokens per line (the hit-rate weight)."""
    full: FullPassLines | None = None
    """Log-probs and lookback ratios, when a full-model method is evaluated."""

    @property
    def group(self) -> str:
        return problem_key(self.record)


@dataclass
class MethodRun:
    """One method, one seed: what it learned from and what it predicted."""

    method: str
    seed: int
    trained_on: frozenset[str]
    """Ids of the records whose labels fitted the method (empty: nothing learned)."""
    calibrated_on: frozenset[str]
    """Ids of the records whose labels fitted the calibration."""
    predictions: dict[str, list[SnippetPrediction]] = field(default_factory=dict)
    """Test set name -> one prediction per test record with scorable lines (``name + FIXED``:
    the fixed versions of that set's records, when ``fixed_negatives``)."""


@dataclass
class EvalReport:
    """The results table plus the runs behind it."""

    results: dict[str, dict[str, dict[str, Any]]]
    """Dataset -> method -> metrics (the ``--json`` ``"results"`` object)."""
    runs: list[MethodRun]
    base_rate: float | None
    """Share of buggy lines among the training lines (the BSS reference)."""

    def to_json(self) -> dict[str, Any]:
        """``{"results": {dataset: {method: {"top1", "top3", "top5", "auroc", "brier", "bss", "ece",
        "n_snippets", ...extras}}}}``."""
        return {"results": self.results}


# ------------------------------------------------------------------------------------ loading


@dataclass
class LoadedModel:
    """A model directory's supervisor (truncated at its layer), SAE and feature config."""

    sup: Supervisor
    manifest: dict[str, Any]
    sae: Any
    features: FeatureConfig
    model_dir: Path


def open_model(model_dir: Path, supervisor: SupervisorConfig = SupervisorConfig()) -> LoadedModel:
    """Load the supervisor a model directory was built on, and its SAE (``ArtifactError`` if none)."""
    manifest = artifact.read_manifest(model_dir)
    if not manifest.get("sae"):
        raise artifact.ArtifactError(f"{model_dir} has no SAE yet: run `ptbot pretrain` first")
    ref = manifest["supervisor"]
    sup = Supervisor.load(replace(supervisor, model=ref["model"], layer=int(ref["layer"]), full=False))
    artifact.check_supervisor(manifest, supervisor_ref(sup), model_dir)
    sae = load_sae(model_dir, manifest["sae"]).to(torch.float32).eval()
    return LoadedModel(sup, manifest, sae, FeatureConfig.from_dict(manifest["features"]), Path(model_dir))


def read_records(sup: Supervisor, records: Sequence[Record], features: FeatureConfig,
                 cache: StateCache | None, progress: bool = False, desc: str = "reading code") -> list[Reading]:
    """Line states and labels of each record; records without scorable lines are dropped."""
    snippets = extract(sup, [r.code for r in records], [r.language for r in records], features,
                       progress=progress, desc=desc, cache=cache)
    out = []
    for rec, sn in zip(records, snippets):
        if not sn.lines:
            log.info("%s has no scorable lines; skipped", rec.id)
            continue
        bad = set(rec.buggy_lines)
        out.append(Reading(rec, sn, np.array([int(s.line in bad) for s in sn.lines]),
                           np.array([s.n_tokens for s in sn.lines])))
    return out


def _attach_full(sup_full: Supervisor, readings: Sequence[Reading], features: FeatureConfig,
                 cache: FullPassCache | None, cfg: EvalConfig) -> None:
    fulls = read_full(sup_full, [r.record for r in readings], features, cache, cfg.context_keys, cfg.progress)
    for r, f in zip(readings, fulls):
        if [s.line for s in f.lines] != [s.line for s in r.snippet.lines]:
            # Same tokenizer and prefix, so this only happens if the context merges into the
            # code's first token; align by line number, missing lines get neutral values.
            by_line = {s.line: i for i, s in enumerate(f.lines)}
            idx = [by_line.get(s.line) for s in r.snippet.lines]
            lp = np.array([f.logprob[i] if i is not None else 0.0 for i in idx])
            lb = np.stack([f.lookback[i] if i is not None else np.zeros(f.lookback.shape[1]) for i in idx])
            f = FullPassLines(r.snippet.lines, lp, lb)
        r.full = f


# ------------------------------------------------------------------------------------ methods


def _prediction(r: Reading, scores: np.ndarray, probs: np.ndarray | None) -> SnippetPrediction:
    return SnippetPrediction(scores=np.asarray(scores, dtype=np.float64), labels=r.labels, tokens=r.tokens,
                             probabilities=probs, group=r.group)


def _ids(readings: Sequence[Reading]) -> frozenset[str]:
    return frozenset(r.record.id for r in readings)


def _split(train: Sequence[Reading], dev_fraction: float, seed: int) -> tuple[list[Reading], list[Reading]]:
    by_id = {id(r.record): r for r in train}
    fit_recs, dev_recs = split_by_problem([r.record for r in train], dev_fraction, seed)
    fit, dev = [by_id[id(x)] for x in fit_recs], [by_id[id(x)] for x in dev_recs]
    if not fit or not dev:
        raise ValueError(f"the training records fall on one side of the problem split (fit {len(fit)}, "
                         f"dev {len(dev)}); pass more training problems or change the dev fraction")
    return fit, dev


def _ranker_logits(ranker, x: torch.Tensor, r: Reading) -> np.ndarray:
    """(n_lines,) float64 logits of one reading's lines ``x`` (n_lines, d_in), length prior included."""
    return ranker(x, torch.as_tensor(r.tokens)).double().numpy()


def _ranker_method(name: str, seed: int, train: Sequence[Reading], tests: Mapping[str, Sequence[Reading]],
                   features: FeatureConfig, ranker_cfg: dict[str, Any], cfg: EvalConfig) -> MethodRun:
    """Train the per-line ranker on the readings' inputs (``_inputs``; fit split), early-stop on dev,
    fit the centred map on held-out logits as ``bind`` does (``ranker_training.held_out_logits``),
    score tests."""
    fit, dev = _split(train, cfg.dev_fraction, seed)

    def slates(rs: Sequence[Reading]) -> list[Slate]:
        return [Slate(features=_inputs(r, features), labels=torch.tensor(r.labels, dtype=torch.float32),
                      tokens=torch.tensor(r.tokens), group=r.group, source=r.record.source) for r in rs]

    fit_s, dev_s = slates(fit), slates(dev)
    rc = RankerConfig(**{**ranker_cfg, "d_in": fit_s[0].features.shape[1], "seed": seed})
    ranker, _ = train_ranker(rc, fit_s, dev_s, progress=cfg.progress)
    cal_logits, cal_labels, info = held_out_logits(ranker, fit_s, dev_s)
    calibrated_on = (_ids(dev) if info["calibrated_on"] == "dev" else
                     _ids([r for r in (*fit, *dev) if r.record.source in info["held_out_sources"]]))
    with torch.no_grad():
        calib = fit_calibrator([x.double().numpy() for x in cal_logits], [y.numpy() for y in cal_labels], "centred")
        run = MethodRun(name, seed, _ids(fit), calibrated_on)
        for ds, rs in tests.items():
            out = []
            for r in rs:
                logits = _ranker_logits(ranker, _inputs(r, features), r)
                out.append(_prediction(r, logits, calib.predict(logits)))
            run.predictions[ds] = out
    return run


def _classifier_method(name: str, kind: str, seed: int, train: Sequence[Reading],
                       tests: Mapping[str, Sequence[Reading]], cfg: EvalConfig) -> MethodRun:
    """LookBack Lens: a pointwise classifier on lookback ratios (fit split), Platt on dev."""
    fit, dev = _split(train, cfg.dev_fraction, seed)
    x_fit = np.concatenate([r.full.lookback for r in fit])
    y_fit = np.concatenate([r.labels for r in fit])
    x_dev = np.concatenate([r.full.lookback for r in dev])
    y_dev = np.concatenate([r.labels for r in dev])
    clf = LineClassifier.fit(ClassifierConfig(kind=kind, seed=seed), x_fit, y_fit, dev=(x_dev, y_dev))
    calib = fit_calibrator([clf.logits(x_dev)], [y_dev], "platt")
    run = MethodRun(name, seed, _ids(fit), _ids(dev))
    for ds, rs in tests.items():
        run.predictions[ds] = [_prediction(r, s, calib.predict(s))
                               for r in rs for s in [clf.logits(r.full.lookback)]]
    return run


def _fixed_method(name: str, score, train: Sequence[Reading], tests: Mapping[str, Sequence[Reading]],
                  base_rate: float | None) -> MethodRun:
    """A method that learns nothing: ``score(reading) -> (n_lines,)``; Platt on all training lines."""
    calib = None
    if name != "random" and train:
        # log1p(count) for length: a logistic in log-length fits far better than in raw length.
        squash = (lambda s: np.log1p(s)) if name == "length" else (lambda s: s)
        platt = fit_calibrator([squash(score(r)) for r in train], [r.labels for r in train], "platt")
        calib = lambda s: platt.predict(squash(s))  # noqa: E731
    run = MethodRun(name, 0, frozenset(), _ids(train) if calib else frozenset())
    for ds, rs in tests.items():
        out = []
        for r in rs:
            s = score(r)
            if name == "random":
                p = np.full(len(s), base_rate) if base_rate is not None else None
            else:
                p = calib(s) if calib else None
            out.append(_prediction(r, s, p))
        run.predictions[ds] = out
    return run


# ------------------------------------------------------------------------------------ harness


def _reliability(preds: Sequence[SnippetPrediction], n_bins: int) -> dict[str, Any] | None:
    """Equal-width reliability-diagram data: per bin, line count, mean probability, buggy share."""
    if not preds or preds[0].probabilities is None:
        return None
    p = np.concatenate([x.probabilities for x in preds])
    y = np.concatenate([x.labels for x in preds])
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, frac = sum_p / count, sum_y / count
    clean = lambda a: [None if math.isnan(v) else float(v) for v in a]  # noqa: E731
    return {"bins": n_bins, "count": count.tolist(), "mean_p": clean(mean_p), "frac_pos": clean(frac)}


def _metrics(runs: Sequence[MethodRun], ds: str, cfg: EvalConfig) -> dict[str, Any]:
    per_seed = []
    for run in runs:
        preds = run.predictions[ds]
        # BSS against the test set's own base rate: the training one flatters sparse sets.
        res = evaluate(preds, base_rate=None, n_boot=cfg.n_boot, seed=run.seed, n_bins=cfg.reliability_bins)
        clean = run.predictions.get(ds + FIXED) or []
        if clean:
            both = list(preds) + list(clean)
            value = _snippet_auroc(both)
            res["snippet_auroc"] = None if math.isnan(value) else value
            res["n_fixed_snippets"] = len(clean)
            if cfg.n_boot:
                lo, hi = bootstrap_ci(both, _snippet_auroc, n_boot=cfg.n_boot, seed=run.seed)
                res["ci"]["snippet_auroc"] = [None if math.isnan(lo) else lo, None if math.isnan(hi) else hi]
        per_seed.append(res)
    first = runs[0].predictions[ds]
    out = dict(per_seed[0])
    if len(per_seed) > 1:
        spread = summarize_seeds(per_seed)
        for name, s in spread.items():
            if name in out and name != "ci":
                out[name] = s["mean"]
        out["seeds"] = spread
    out["topk_curve"] = [topk_hit_rate(first, k) for k in range(1, cfg.curve_k + 1)]
    out["topk_curve"] = [None if math.isnan(v) else v for v in out["topk_curve"]]
    out["reliability"] = _reliability(first, cfg.reliability_bins)
    if runs[0].method == "random":  # the paper's procedure, next to the exact expectation above
        out["shuffle50"] = {f"top{k}": random_topk_hit_rate(first, k, n_shuffles=50, seed=0) for k in (1, 3, 5)}
    return out


def _snippet_score(p: SnippetPrediction) -> float:
    """A snippet's risk: its riskiest line (probability when calibrated, else raw score)."""
    return float((p.probabilities if p.probabilities is not None else p.scores).max())


def _snippet_auroc(snippets: Sequence[SnippetPrediction]) -> float:
    return snippet_auroc([_snippet_score(p) for p in snippets], [int(p.labels.any()) for p in snippets])


def run_eval(train: Sequence[Record], tests: Mapping[str, Sequence[Record]], cfg: EvalConfig = EvalConfig(), *,
             model_dir: Path | None = None, supervisor: SupervisorConfig = SupervisorConfig(),
             cache_root: Path | None = None) -> EvalReport:
    """Evaluate ``cfg.methods`` on each test set (name -> records), learning only from ``train``.

    ``model_dir``: the artifact whose supervisor, layer, feature config and SAE are used (needed
    for ``pttrust``; without it the other methods run on ``supervisor`` as given). With no
    training records, ``pttrust`` is the shipped ranker and only non-learning baselines can run.
    ``cache_root``: where line states and full-pass features are cached (None = no cache).
    """
    if not tests or not any(tests.values()):
        raise ValueError("no test records: pass at least one non-empty test file")
    refuse_test_repositories(train)
    train_ids = {r.id for r in train}
    leaked = sorted({r.id for rs in tests.values() for r in rs} & train_ids)
    if leaked:
        raise ValueError(f"{len(leaked)} test records are also training records (e.g. {leaked[0]!r}); "
                         "evaluate on files that are not in --train")
    if not train:
        needs = sorted(set(cfg.methods) & (TRAINABLE - {"pttrust"}))
        if needs:
            raise ValueError(f"methods {', '.join(needs)} learn from labels: pass --train files "
                             "(or drop them from --methods)")
        if "pttrust" in cfg.methods and model_dir is None:
            raise ValueError("pttrust without --train needs --model (a trained model directory)")

    if model_dir is not None:
        loaded = open_model(model_dir, supervisor)
        sup, features, manifest = loaded.sup, loaded.features, loaded.manifest
    else:
        if "pttrust" in cfg.methods:
            raise ValueError("pttrust needs --model (a directory with an SAE from `ptbot pretrain`)")
        sup, features, manifest = Supervisor.load(replace(supervisor, full=False)), FeatureConfig(), {}
    cache = StateCache(cache_root, sup) if cache_root is not None else None

    train_r = read_records(sup, train, features, cache, cfg.progress, "reading code (train)")
    test_r = {name: read_records(sup, rs, features, cache, cfg.progress, f"reading code ({name})")
              for name, rs in tests.items()}
    test_r = {k: v for k, v in test_r.items() if v}
    if cfg.fixed_negatives:
        for name in list(test_r):
            clean = [replace(x.record, id=x.record.id + FIXED, code=x.record.fixed, fixed="", buggy_lines=())
                     for x in test_r[name] if x.record.fixed and x.record.fixed != x.record.code]
            test_r[name + FIXED] = read_records(sup, clean, features, cache, cfg.progress,
                                                f"reading code ({name}, fixed)")
    if train_r:
        base_rate = float(np.concatenate([r.labels for r in train_r]).mean())
    else:
        base_rate = (manifest.get("ranker_training") or {}).get("base_rate")
    if base_rate is not None and not 0 < base_rate < 1:
        raise ValueError(f"the training lines are all {'buggy' if base_rate else 'correct'}; "
                         "training data needs both buggy and correct lines")

    if _FULL_MODEL & set(cfg.methods):
        sup_full = Supervisor.load(replace(sup.cfg, full=True))
        full_cache = FullPassCache(cache_root, sup_full) if cache_root is not None else None
        _attach_full(sup_full, train_r + [r for rs in test_r.values() for r in rs], features, full_cache, cfg)
        del sup_full

    # A bound model's own ranker settings, read as an artifact (a manifest that lacks one is
    # refused); an unbound model gets today's defaults.
    bound = RankerConfig.from_dict(manifest["ranker"]).to_dict() if manifest.get("ranker") else {}
    ranker_cfg = {k: v for k, v in bound.items() if k not in ("d_in", "seed")}
    if cfg.ranker_epochs is not None:
        ranker_cfg["epochs"] = cfg.ranker_epochs

    runs: list[MethodRun] = []
    by_method: dict[str, list[MethodRun]] = {}
    for method in cfg.methods:
        seeds = range(cfg.seeds) if method in TRAINABLE and train_r else [0]
        for seed in seeds:
            log.info("evaluating %s (seed %d)", method, seed)
            if method == "pttrust" and train_r:
                run = _ranker_method(method, seed, train_r, test_r, features, ranker_cfg, cfg)
            elif method == "pttrust":
                run = _shipped_pttrust(loaded, test_r)
            elif method == "probe":
                # The paper's probing classifier: the ranker alone, without the product's length prior.
                run = _ranker_method(method, seed, train_r, test_r, features,
                                     {**ranker_cfg, "length_prior": 0.0}, cfg)
            elif method in ("lookback", "lookback_mlp"):
                run = _classifier_method(method, "logistic" if method == "lookback" else "mlp",
                                         seed, train_r, test_r, cfg)
            elif method == "uncertainty":
                run = _fixed_method(method, lambda r: uncertainty_scores(r.full), train_r, test_r, base_rate)
            elif method == "length":
                run = _fixed_method(method, lambda r: length_scores(r.snippet.lines), train_r, test_r, base_rate)
            else:
                run = _fixed_method(method, lambda r: random_scores(r.snippet.lines), train_r, test_r, base_rate)
            runs.append(run)
            by_method.setdefault(method, []).append(run)

    results = {ds: {m: _metrics(by_method[m], ds, cfg) for m in cfg.methods}
               for ds in test_r if not ds.endswith(FIXED)}
    return EvalReport(results, runs, base_rate)


def _inputs(r: Reading, features: FeatureConfig) -> torch.Tensor:
    """The ranker's inputs for one reading's lines (``analyzer.features.ranker_inputs``)."""
    with torch.no_grad():
        return ranker_inputs(r.snippet.states, r.snippet.lines, features)


def _shipped_pttrust(loaded: LoadedModel, tests: Mapping[str, Sequence[Reading]]) -> MethodRun:
    m = loaded.manifest
    if not m.get("ranker") or not m.get("calibration"):
        raise artifact.ArtifactError(f"{loaded.model_dir} has no trained ranker: run `ptbot bind`, "
                                     "or pass --train files to train one for this evaluation")
    ranker = load_ranker(loaded.model_dir, m["ranker"]).eval()
    calib = Calibrator.from_dict(m["calibration"])
    run = MethodRun("pttrust", 0, frozenset(), frozenset())
    with torch.no_grad():
        for ds, rs in tests.items():
            out = []
            for r in rs:
                logits = _ranker_logits(ranker, _inputs(r, loaded.features), r)
                out.append(_prediction(r, logits, calib.predict(logits)))
            run.predictions[ds] = out
    return run


# ---------------------------------------------------------------------------- interpretability


@dataclass(frozen=True)
class LatentExample:
    """A line on which a latent fires strongly."""

    record_id: str
    line: int
    text: str
    activation: float
    buggy: bool


@dataclass(frozen=True)
class LatentAssociation:
    """How much more an SAE latent fires on buggy lines than on correct ones."""

    latent: int
    diff: float
    """mean activation on buggy lines minus mean activation on correct lines."""
    mean_buggy: float
    mean_correct: float
    fire_buggy: float
    """Share of buggy lines on which the latent is active (non-zero)."""
    fire_correct: float
    label: str
    """The label stored in the manifest's ``latent_labels`` ("" if none)."""
    examples: tuple[LatentExample, ...]

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["examples"] = [dict(e.__dict__) for e in self.examples]
        return d


def latent_associations(loaded: LoadedModel, records: Sequence[Record], *, top: int = 20, examples: int = 3,
                        cache: StateCache | None = None, progress: bool = False) -> list[LatentAssociation]:
    """The ``top`` latents with the largest (mean on buggy lines - mean on correct lines).

    Activations are the SAE latents of each line's state (not centred), so "fires on buggy
    lines" means the same thing on every file. Examples are the lines with the highest
    activation of that latent across all records (buggy or not: a latent that also fires on
    many correct lines shows it in its examples).
    """
    if top < 1 or examples < 0:
        raise ValueError("top must be >= 1 and examples >= 0")
    readings = read_records(loaded.sup, records, loaded.features, cache, progress, "reading code (features)")
    if not readings:
        raise ValueError("no scorable lines in the given records")
    with torch.no_grad():
        z = torch.cat([loaded.sae.encode(r.snippet.states) for r in readings]).double().numpy()
    y = np.concatenate([r.labels for r in readings]).astype(bool)
    where = [(r.record.id, s.line, s.text, bool(lab)) for r in readings
             for s, lab in zip(r.snippet.lines, r.labels)]
    if y.all() or not y.any():
        raise ValueError("need both buggy and correct lines to compare latent activations")
    mean_b, mean_c = z[y].mean(axis=0), z[~y].mean(axis=0)
    diff = mean_b - mean_c
    labels = loaded.manifest.get("latent_labels") or {}
    out = []
    for j in np.argsort(-diff)[:top]:
        ex_rows = np.argsort(-z[:, j])[:examples]
        ex = tuple(LatentExample(where[i][0], where[i][1], where[i][2], float(z[i, j]), where[i][3])
                   for i in ex_rows if z[i, j] > 0)
        out.append(LatentAssociation(int(j), float(diff[j]), float(mean_b[j]), float(mean_c[j]),
                                     float((z[y, j] > 0).mean()), float((z[~y, j] > 0).mean()),
                                     str(labels.get(str(int(j)), "")), ex))
    return out


def write_latent_labels(model_dir: Path, labels: Mapping[int, str]) -> dict[str, Any]:
    """Merge ``{latent: short label}`` into the manifest's ``latent_labels`` (an empty label removes one)."""
    manifest = artifact.read_manifest(model_dir)
    n = int((manifest.get("sae") or {}).get("n_latents") or 0)
    current = dict(manifest.get("latent_labels") or {})
    for j, text in labels.items():
        if n and not 0 <= int(j) < n:
            raise ValueError(f"latent {j} is out of range: the SAE has {n} latents")
        text = " ".join(str(text).split())
        if len(text) > 60:
            raise ValueError(f"label for latent {j} is {len(text)} characters; keep labels under 60")
        if text:
            current[str(int(j))] = text
        else:
            current.pop(str(int(j)), None)
    manifest = {k: v for k, v in manifest.items() if k not in ("format", "format_version")}
    manifest["latent_labels"] = dict(sorted(current.items(), key=lambda kv: int(kv[0])))
    artifact.write_manifest(model_dir, manifest)
    return manifest
