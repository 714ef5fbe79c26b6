"""Re-binding with a gate: retrain stage 2 on seed data + reviewer feedback, promote only a winner.

The feedback records (``ptbot feedback export``, the same JSONL schema as the seed data) are
split by problem into feedback-train and feedback-heldout. A new version of the model HOME
(``analyzer.versions``) starts as a copy of the serving one (same supervisor, features and SAE)
and gets a new ranker + calibrator from ``lab.train.bind`` on seed + feedback-train. Both
the serving version and the candidate are then scored on the *same* feedback-heldout records
with the ``ptbot eval`` metrics (``lab.metrics.evaluate``); the candidate serves only if it
is at least ``min_gain`` better on the chosen metric. Either way both metric sets are written
into the candidate's manifest under ``gate``, so a refusal can be inspected later.

Why hold out feedback and not seed data: the question the gate answers is "does the new ranker
serve *these repositories* better", and the feedback is the only sample of them we have.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analyzer import artifact, versions
from analyzer.calibrate import Calibrator
from analyzer.features import FeatureConfig, StateCache
from analyzer.ranker import load_ranker
from analyzer.supervisor import Supervisor, supervisor_ref
from analyzer.types import Record
from lab import train
from lab.metrics import SnippetPrediction, evaluate
from lab.records import in_dev, problem_key

log = logging.getLogger(__name__)

HIGHER_IS_BETTER = ("top1", "top3", "top5", "auroc", "bss")
LOWER_IS_BETTER = ("brier", "ece")


@dataclass(frozen=True)
class GateConfig:
    """How a re-bind is trained and judged."""

    holdout: float = 0.3
    """Share of feedback *problems* held out to judge both versions (never trained on)."""
    seed: int = 0
    """Seed of the held-out split, of bind's dev split and of the ranker's initialisation."""
    min_gain: float = 0.0
    """The candidate must beat the serving version by at least this much on ``metric``."""
    metric: str = "top1"
    """Metric of ``lab.metrics.evaluate`` that decides: top1/3/5, auroc, bss, brier, ece."""
    dev_fraction: float = 0.2
    """Share of training problems bind holds out for early stopping (and calibration, when the
    records have fewer than two sources to hold out: ``lab.train.bind``)."""
    n_boot: int = 200
    """Bootstrap replicates for the confidence intervals recorded with the gate metrics."""

    def __post_init__(self) -> None:
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}; 0.3 is a good start")
        if not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.metric not in HIGHER_IS_BETTER + LOWER_IS_BETTER:
            raise ValueError(f"unknown gate metric {self.metric!r}; use one of "
                             f"{', '.join(HIGHER_IS_BETTER + LOWER_IS_BETTER)}")
        if not math.isfinite(self.min_gain) or self.min_gain < 0:
            raise ValueError(f"min_gain must be a finite number >= 0, got {self.min_gain}")
        if self.n_boot < 0:
            raise ValueError(f"n_boot must be >= 0, got {self.n_boot}")


@dataclass(frozen=True)
class GateResult:
    """What a gated re-bind decided."""

    promoted: bool
    """True when the candidate now serves."""
    version: str
    """The candidate's version id (kept on disk even when refused)."""
    serving: str
    """The version that served before the re-bind (and still serves when refused)."""
    metric: str
    """The deciding metric."""
    old_metrics: dict[str, Any] | None
    """``evaluate`` of the serving version on feedback-heldout (None if it had no ranker)."""
    new_metrics: dict[str, Any]
    """``evaluate`` of the candidate on the same records."""
    reason: str
    """One sentence for the log and the CLI."""


def split_feedback(records: Sequence[Record], holdout: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(feedback-train, feedback-heldout), by problem.

    Salted with ``gate:`` so the held-out problems are independent of bind's own dev split:
    the same unsalted hash would put *no* feedback problem into bind's dev split.
    """
    train_recs, held = [], []
    for rec in records:
        (held if in_dev("gate:" + problem_key(rec), holdout, seed) else train_recs).append(rec)
    return train_recs, held


def version_predictions(sup: Supervisor, model_dir: Path, records: Sequence[Record], *,
                        cache: StateCache | None = None, progress: bool = False,
                        desc: str = "gate") -> list[SnippetPrediction] | None:
    """One model directory's scores and probabilities on ``records`` (None: no ranker yet).

    Records without a scorable line give no prediction, so the list may be shorter.
    """
    manifest = artifact.read_manifest(model_dir)
    if not (manifest.get("sae") and manifest.get("ranker") and manifest.get("calibration")):
        return None
    artifact.check_supervisor(manifest, supervisor_ref(sup), model_dir)
    features = FeatureConfig.from_dict(manifest["features"])
    ranker = load_ranker(model_dir, manifest["ranker"]).eval()
    calib = Calibrator.from_dict(manifest["calibration"])
    slates = train.make_slates(sup, records, features, progress,
                               f"reading code ({desc}, {Path(model_dir).name})", cache)
    return train.predictions(ranker, calib, slates)


def evaluate_version(sup: Supervisor, model_dir: Path, records: Sequence[Record], *,
                     n_boot: int = 200, seed: int = 0, cache: StateCache | None = None,
                     progress: bool = False) -> dict[str, Any] | None:
    """The ``ptbot eval`` metrics of one model directory on ``records`` (None: no ranker yet)."""
    preds = version_predictions(sup, model_dir, records, cache=cache, progress=progress)
    if preds is None:
        return None
    if not preds:
        raise ValueError("no held-out feedback record has a scorable line; export more feedback")
    base_rate = (artifact.read_manifest(model_dir).get("ranker_training") or {}).get("base_rate")
    return evaluate(preds, base_rate=base_rate, n_boot=n_boot, seed=seed)


def decide(old: dict[str, Any] | None, new: dict[str, Any], metric: str, min_gain: float) -> tuple[bool, str]:
    """(promote?, why): the candidate must be at least ``min_gain`` better on ``metric``."""
    n = new.get(metric)
    if n is None:
        return False, (f"{metric} is undefined on the held-out feedback (e.g. no buggy line); "
                       "refusing, export more feedback or pick another --metric")
    if old is None:
        return True, "the serving version has no ranker, so any trained candidate is better"
    o = old.get(metric)
    if o is None:
        return True, f"{metric} of the serving version is undefined on the held-out feedback"
    gain = n - o if metric in HIGHER_IS_BETTER else o - n
    verdict = "promoted" if gain >= min_gain else "refused"
    return gain >= min_gain, (f"{verdict}: {metric} {o:.4f} -> {n:.4f} (gain {gain:+.4f}, "
                              f"required {min_gain:+.4f})")


def rebind_with_gate(sup: Supervisor, home: Path | str, seed_records: Sequence[Record],
                     feedback_records: Sequence[Record], *, holdout: float = 0.3, seed: int = 0,
                     min_gain: float = 0.0, metric: str = "top1", dev_fraction: float = 0.2, n_boot: int = 200,
                     ranker_cfg: dict[str, Any] | None = None, cache: StateCache | None = None,
                     progress: bool = True) -> GateResult:
    """Train a candidate version on seed + feedback-train; promote it only if it wins the gate."""
    cfg = GateConfig(holdout=holdout, seed=seed, min_gain=min_gain, metric=metric,
                     dev_fraction=dev_fraction, n_boot=n_boot)
    home = Path(home)
    if not feedback_records:
        raise ValueError("no feedback records: run `ptbot feedback export` (or wait for labels) first")
    fb_train, fb_held = split_feedback(feedback_records, cfg.holdout, cfg.seed)
    if not fb_held:
        raise ValueError(f"none of the {len(feedback_records)} feedback record(s) fell into the held-out "
                         "split; need feedback on more files, or raise --holdout")
    serving = versions.current_version(home)
    serving_dir = versions.current_dir(home)
    log.info("re-binding %s (serving %s): %d seed + %d feedback-train records, %d held out",
             home, serving, len(seed_records), len(fb_train), len(fb_held))
    cand = versions.new_version_dir(home)
    try:
        train.bind(sup, cand, list(seed_records) + fb_train, ranker_cfg=ranker_cfg,
                   dev_fraction=cfg.dev_fraction, seed=cfg.seed, progress=progress, cache=cache)
        kw = dict(n_boot=cfg.n_boot, seed=cfg.seed, cache=cache, progress=progress)
        old = evaluate_version(sup, serving_dir, fb_held, **kw)
        new = evaluate_version(sup, cand, fb_held, **kw)
    except BaseException:
        shutil.rmtree(cand, ignore_errors=True)  # a failed training leaves no half version behind
        raise
    assert new is not None  # bind just wrote ranker and calibration
    promoted, reason = decide(old, new, cfg.metric, cfg.min_gain)
    gate = {"config": asdict(cfg), "serving": serving, "promoted": promoted, "reason": reason,
            "seed_records": len(seed_records), "feedback_train_records": len(fb_train),
            "heldout_records": len(fb_held), "heldout_ids": [r.id for r in fb_held],
            "old": old, "new": new}
    versions.record_gate(home, cand.name, gate)
    if promoted:
        versions.promote(home, cand.name, {cfg.metric: new.get(cfg.metric)})
    log.info("gate for %s: %s", cand.name, reason)
    return GateResult(promoted=promoted, version=cand.name, serving=serving, metric=cfg.metric,
                      old_metrics=old, new_metrics=new, reason=reason)
