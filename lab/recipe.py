"""The default model's recipe: one config object, and the build that turns a corpus into the model.

``ptbot recipe`` rebuilds the shipped model from its data card: it builds the corpus
(``miners.corpus``), then calls ``build`` here, which pretrains the SAE on the corpus's training
repositories (stage 1; the SAE only explains lines) and binds the ranker and its
calibration on them plus the Python benchmark sets (stage 2). Every field of ``Recipe`` is a choice
made on the corpus's validation repositories; the manifest records the recipe it was built with.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analyzer import artifact
from analyzer.features import FeatureConfig, StateCache
from analyzer.supervisor import Supervisor
from lab import train
from lab.records import load_records

SPLIT_FILES = ("train.jsonl",)
"""The corpus files that train the model (validation chose the recipe; test is only reported)."""


@dataclass(frozen=True)
class Recipe:
    """How the default model is made from the real-fix corpus.

    What is not a field here is not a choice: the ranker reads the raw line states with the
    declaration column (``analyzer.features``), and ``lab.train.bind`` always fits the centred
    calibration map cross-source.
    """

    supervisor: str = "qwen2.5-coder-0.5b"
    """The supervisor LLM (an embedded name, so a fresh install reads code the same way offline)."""
    layer: int = 6
    """Decoder block whose residual is the line vector. Layers 3/6/9/12 gave validation mean Top-1
    0.205/0.234/0.217/0.234 (two seeds each); 6 costs half of 12 to read."""
    latents: int = 1792
    """SAE dictionary size (2x the states' width); the SAE names a line's over-active latents."""
    sae_sample_only: bool = True
    """Stage 1 reads only the per-repository sample of the training split (not the records that
    ``selection.more_train`` adds): the SAE only explains lines here, and reading the fixed
    version of every record would double the cost of a rebuild for no ranking gain."""
    sae_mutations: int = 0
    """Mutated copies per corpus snippet for the SAE's contrastive pairs (real fixes pair already)."""
    extra_sets: tuple[str, ...] = ("humanevalpack-python.jsonl", "quixbugs-python.jsonl")
    """Benchmark files (in the shared data directory) added to the ranker's training records: the
    only benchmark sets that may train (Python), and they teach the injected-bug kind of error."""
    length_prior: float = 3.0
    """Weight of the longest-line prior added when scoring, declaration lines left out (2/3/4:
    0.231/0.242/0.245 with five members; 3 kept for its higher AUROC). ``RankerConfig``'s default."""
    members: int = 5
    """MLPs averaged in the ranker (one: 0.231 over four seeds; five: 0.241). ``RankerConfig``'s default."""
    seed: int = 0
    """Seed of the dev split, the SAE and the ranker's first member."""

    def __post_init__(self) -> None:
        if self.layer < 1 or self.latents < 1 or self.members < 1 or self.sae_mutations < 0:
            raise ValueError(f"Recipe: layer, latents and members must be >= 1, sae_mutations >= 0: {self}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "extra_sets": list(self.extra_sets)}


def training_files(recipe: Recipe, corpus_dir: Path, shared_dir: Path) -> list[Path]:
    """The ranker's training files: the corpus's training split and the recipe's benchmark sets."""
    files = [Path(corpus_dir) / f for f in SPLIT_FILES] + [Path(shared_dir) / f for f in recipe.extra_sets]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"recipe inputs not found: {', '.join(missing)}")
    return files


def build(recipe: Recipe, sup: Supervisor, corpus_dir: Path, shared_dir: Path, out_dir: Path, *,
          version: str, name: str = "ptbot-default", cache: StateCache | None = None,
          progress: bool = True, keep_sae: bool = False) -> dict[str, Any]:
    """Stage 1 on the corpus's training split, stage 2 on it plus the benchmark sets; the manifest
    of ``out_dir`` records ``recipe``. ``sup`` must be ``recipe.supervisor`` at ``recipe.layer``.
    ``keep_sae``: ``out_dir`` already holds this recipe's stage 1 (same supervisor, layer and
    training sample); only stage 2 runs."""
    if sup.layer != recipe.layer:
        raise ValueError(f"the supervisor reads layer {sup.layer}; the recipe asks for layer {recipe.layer}")
    files = training_files(recipe, corpus_dir, shared_dir)
    if keep_sae:
        sae = artifact.read_manifest(Path(out_dir)).get("sae") or {}
        if sae.get("n_latents") not in (None, recipe.latents):
            raise ValueError(f"{out_dir}'s SAE has {sae.get('n_latents')} latents; the recipe asks for {recipe.latents}")
    else:
        corpus = [r for r in load_records(files[:len(SPLIT_FILES)])
                  if not (recipe.sae_sample_only and r.meta.get("more_train"))]
        train.pretrain(sup, corpus, Path(out_dir), sae_cfg={"n_latents": recipe.latents}, features=FeatureConfig(),
                       mutations=recipe.sae_mutations, seed=recipe.seed, progress=progress, cache=cache, name=name)
        # Stage 1's resumable checkpoints are for an interrupted run, not part of the artifact.
        shutil.rmtree(Path(out_dir) / "checkpoints", ignore_errors=True)
    ranker = {"length_prior": recipe.length_prior, "members": recipe.members}
    train.bind(sup, Path(out_dir), load_records(files), ranker_cfg=ranker, seed=recipe.seed, progress=progress,
               cache=cache, version=version)
    manifest = {k: v for k, v in artifact.read_manifest(Path(out_dir)).items() if k not in ("format", "format_version")}
    manifest["recipe"] = recipe.to_dict()
    artifact.write_manifest(Path(out_dir), manifest)
    return manifest
