"""RiskScorer: load supervisor + SAE + ranker + calibrator once, then score files.

The one entry point every surface (CLI, GitHub App worker, Action) uses. Tensors stay inside:
callers get ``LineScore`` objects (line, raw score, calibrated probability, rank, top features).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from analyzer import artifact
from analyzer.calibrate import Calibrator
from analyzer.comments import comment_lines
from analyzer.features import FeatureConfig, StateCache, extract, ranker_inputs
from analyzer.languages import language_for_path
from analyzer.ranker import load_ranker
from analyzer.sae import load_sae
from analyzer.supervisor import Supervisor, SupervisorConfig, supervisor_ref
from analyzer.types import Feature, LineScore, ModelInfo, ScoreRequest

log = logging.getLogger(__name__)


class RiskScorer:
    """A loaded model directory, ready to score many files per call."""

    def __init__(self, sup: Supervisor, manifest: dict, sae, ranker, calibrator: Calibrator,
                 model_dir: Path, n_features: int = 3):
        self.sup = sup
        self.manifest = manifest
        self.sae = sae
        self.ranker = ranker
        self.calibrator = calibrator
        self.model_dir = model_dir
        self.features = FeatureConfig.from_dict(manifest["features"])
        self.n_features = n_features
        self.latent_labels: dict[str, str] = manifest.get("latent_labels") or {}

    @classmethod
    def load(cls, model_dir: Path | str | None = None, *,
             supervisor: SupervisorConfig | None = None, progress: bool = False) -> RiskScorer:
        """Load a model directory (default: the one shipped in the package), or the serving
        version of a model HOME (``analyzer.versions``).

        ``supervisor`` carries runtime choices (device, dtype, cache dir, batch budget); the
        model reference and layer always come from the manifest, because the SAE and ranker
        only make sense on the states they were trained on.
        """
        model_dir = artifact.resolve_model_dir(model_dir) if model_dir else artifact.default_model_dir()
        manifest = artifact.read_manifest(model_dir)
        if not manifest.get("sae") or not manifest.get("ranker") or not manifest.get("calibration"):
            raise artifact.ArtifactError(
                f"{model_dir} is not fully trained (needs `ptbot pretrain` and `ptbot bind`)")
        ref = manifest["supervisor"]
        cfg = replace(supervisor or SupervisorConfig(), model=ref["model"], layer=int(ref["layer"]))
        sup = Supervisor.load(cfg, progress=progress)
        artifact.check_supervisor(manifest, supervisor_ref(sup), model_dir)
        try:
            sae = load_sae(model_dir, manifest["sae"]).to(torch.float32)
            ranker = load_ranker(model_dir, manifest["ranker"]).eval()
            calibrator = Calibrator.from_dict(manifest["calibration"])
        except artifact.ArtifactError:
            raise
        except (ValueError, TypeError) as e:
            # missing or inconsistent weight files: an artifact problem the CLI reports in one line
            raise artifact.ArtifactError(f"cannot load model {model_dir}: {e}") from e
        return cls(sup, manifest, sae, ranker, calibrator, model_dir)

    @property
    def info(self) -> ModelInfo:
        """Name, supervisor and layer, for reports."""
        return ModelInfo(name=self.manifest.get("name", self.model_dir.name),
                         supervisor=self.sup.info.source, layer=self.sup.layer,
                         version=self.manifest.get("version", self.manifest.get("updated", "")))

    def score(self, text: str, lines: Sequence[int] | None = None, language: str | None = None,
              path: str = "") -> list[LineScore]:
        """Score one file's text; report ``lines`` (1-based; None = every scorable line)."""
        req = ScoreRequest(path=path, text=text, lines=frozenset(lines) if lines is not None else None,
                           language=language)
        return self.score_many([req])[0]

    @torch.inference_mode()
    def score_many(self, requests: Sequence[ScoreRequest], progress: bool = False,
                   cache: StateCache | None = None) -> list[list[LineScore]]:
        """Score many files in one batched pass. Each file's lines are ranked within the file.

        Every scorable line of a file is read in whole-file context (the ranker's centred
        features compare a line with the rest of its file, comments included, as in training);
        only the requested lines are returned, and never a comment or docstring line
        (``analyzer.comments``): those are no risk candidates. ``cache``: line states kept on disk
        (training and benchmark replays of the same texts; a review has no use for it).
        """
        langs = [r.language or language_for_path(r.path) for r in requests]
        snippets = extract(self.sup, [r.text for r in requests], langs, self.features,
                           progress=progress, desc="scoring", cache=cache)
        results: list[list[LineScore]] = []
        for req, lang, sn in zip(requests, langs, snippets):
            if not sn.lines:
                results.append([])
                continue
            z = self.sae.encode(sn.states)                      # (n, n_latents): explanations only
            x = ranker_inputs(sn.states, sn.lines, self.features)  # (n, n_inputs): the ranker reads states
            tokens = torch.tensor([s.n_tokens for s in sn.lines])
            logits = self.ranker(x, tokens).float().numpy()     # (n,)
            probs = self.calibrator.predict(logits)
            centred = (z - z.mean(dim=0, keepdim=True)).numpy()
            comments = comment_lines(req.text, lang)
            keep = [i for i, s in enumerate(sn.lines)
                    if (req.lines is None or s.line in req.lines) and s.line not in comments]
            keep.sort(key=lambda i: -logits[i])
            results.append([
                LineScore(path=req.path, line=sn.lines[i].line, text=sn.lines[i].text,
                          score=float(logits[i]), probability=float(probs[i]), rank=rank,
                          features=self._top_features(centred[i]))
                for rank, i in enumerate(keep, 1)])
        return results

    def _top_features(self, centred_row: np.ndarray) -> tuple[Feature, ...]:
        """The latents most over-active on this line relative to the rest of its file."""
        top = np.argsort(-centred_row)[: self.n_features]
        return tuple(Feature(int(j), float(centred_row[j]), self.latent_labels.get(str(int(j)), ""))
                     for j in top if centred_row[j] > 0)
