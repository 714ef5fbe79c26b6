"""The model directory: ``manifest.json`` + ``sae.safetensors`` + ``ranker.safetensors``.

A model directory describes itself completely: the manifest names the supervisor it was built
for (source id, weights hash, probed layer, tokenizer), the feature, SAE, ranker and calibration
configs, a summary of the training data and the dev-split metrics. Loading refuses a directory
built for another supervisor, because a ranker and an SAE trained on one model's states mean
nothing for another's, and a directory written by another ptbot format (``FORMAT_VERSION``),
because its configs name switches this ptbot no longer has: such a model is built again, never
translated.

A model HOME (numbered versions and a pointer to the one that serves) is read here too, so that
loading a model never needs ``analyzer.versions``, which makes and changes HOMEs on top of this
module.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

FORMAT = "ptbot-model"
FORMAT_VERSION = 2
"""2: the ranker reads raw line states with the declaration column, and its length prior always
skips declaration lines (``features.inputs``, ``features.declarations`` and
``ranker.prior_skips_declarations`` are gone); 1 is refused."""
REBUILD = ("rebuild it with `ptbot recipe` (the default model's recipe) or with `ptbot pretrain` and "
           "`ptbot bind`")
"""What to do with a model this ptbot cannot read."""
MANIFEST = "manifest.json"
POINTER = "current.json"
"""A model HOME's pointer file (``analyzer.versions`` makes and changes HOMEs)."""
VERSIONS = "versions"
"""A model HOME's directory of numbered versions."""


class ArtifactError(ValueError):
    """A model directory is missing, incomplete, or built for another supervisor."""


class HomeError(ArtifactError):
    """A model HOME is missing, not initialised, or its pointer is broken."""


def default_model_dir() -> Path:
    """The artifact shipped inside the package (the default model, built by `ptbot recipe`)."""
    return Path(__file__).with_name("default_model")


def ptbot_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ptbot")
    except PackageNotFoundError:
        return "0+source"


def resolve_model_dir(path: Path | str) -> Path:
    """``path`` itself, or, when it is a model HOME, the directory of its serving version."""
    path = Path(path)
    return current_dir(path) if is_home(path) else path


# --- a model HOME: which version serves (analyzer.versions makes and changes HOMEs) ----------

def is_home(path: Path | str) -> bool:
    """True when ``path`` is a model HOME (has a pointer file), not a plain model directory."""
    return (Path(path) / POINTER).is_file()


def read_pointer(home: Path | str) -> dict[str, Any]:
    """The parsed ``current.json`` of ``home``; ``HomeError`` with what to do if unusable."""
    home = Path(home)
    path = home / POINTER
    if not path.is_file():
        raise HomeError(f"{home} is not a model home (no {POINTER}); create one with "
                        "`ptbot model init --home DIR --from MODEL_DIR`")
    try:
        pointer = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise HomeError(f"{path} is not valid JSON ({e}); restore it from a backup or rewrite it "
                        'as {"version": "<NNNN>", "history": ["<NNNN>"]}') from e
    version = pointer.get("version") if isinstance(pointer, dict) else None
    if not isinstance(version, str) or not (home / VERSIONS / version).is_dir():
        raise HomeError(f"{path} points to version {version!r}, which is not under {home / VERSIONS}")
    pointer.setdefault("history", [version])
    pointer.setdefault("log", [])
    return pointer


def version_dir(home: Path | str, version: str) -> Path:
    """The model directory of ``version``; ``HomeError`` if there is none."""
    path = Path(home) / VERSIONS / version
    if not path.is_dir():
        raise HomeError(f"{home} has no version {version!r}; see `ptbot model list --home {home}`")
    return path


def current_version(home: Path | str) -> str:
    """The id of the version that serves, e.g. ``"0003"``."""
    return read_pointer(home)["version"]


def current_dir(home: Path | str) -> Path:
    """The model directory of the version that serves."""
    return Path(home) / VERSIONS / current_version(home)


# --- the manifest ------------------------------------------------------------------------------

def read_manifest(model_dir: Path) -> dict[str, Any]:
    """Read and check a model directory's manifest; raise ``ArtifactError`` with what to do."""
    if not Path(model_dir).is_dir():
        raise ArtifactError(f"model directory not found: {model_dir}")
    return read_checked_json(Path(model_dir), FORMAT, FORMAT_VERSION, ArtifactError, "ptbot model",
                             "not a ptbot model directory (build one with `ptbot pretrain` then `ptbot bind`)",
                             REBUILD)


def read_checked_json(directory: Path, fmt: str, version: int, error: type[Exception], kind: str,
                      what_else: str, rebuild: str) -> dict[str, Any]:
    """``directory/manifest.json`` of a self-describing artifact, checked for its format name and
    for the one version this ptbot reads; ``error(message)`` says what is wrong (``kind``: the
    artifact's name in messages; ``what_else``: what a directory without a manifest is not, and
    how to make one; ``rebuild``: how to make again one written by an older ptbot)."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise error(f"{directory} has no {MANIFEST}: {what_else}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON: {e}") from e
    if manifest.get("format") != fmt:
        raise error(f"{path} is not a {kind} manifest")
    found = manifest.get("format_version", 0)
    if found > version:
        raise error(f"{directory} was written by a newer ptbot (format {found}); upgrade ptbot")
    if found < version:
        raise error(f"{directory} was built by an older ptbot (format {found}; this ptbot reads format "
                    f"{version}): {rebuild}")
    return manifest


def write_manifest(model_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (a crash never leaves half a manifest)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest,
                "ptbot_version": ptbot_version(),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = model_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(model_dir / MANIFEST)


def config_fields(config: type, section: dict[str, Any], name: str) -> dict[str, Any]:
    """A manifest ``section`` checked against the dataclass ``config`` it was written from: every
    field, and no other. A missing field is refused rather than read as today's default, because
    defaults change between releases and a model must keep the meaning it was trained with."""
    known = {f.name for f in fields(config)}
    unknown, missing = set(section) - known, known - set(section)
    if unknown:
        raise ArtifactError(f"unknown {name} fields {sorted(unknown)}: the model was built by another ptbot "
                            f"version; {REBUILD}")
    if missing:
        raise ArtifactError(f"the model's {name} lacks {sorted(missing)}: it was built by another ptbot version; "
                            f"{REBUILD}")
    return dict(section)


@dataclass(frozen=True)
class SupervisorRef:
    """What an artifact records about its supervisor."""

    model: str
    source: str
    sha256: str
    layer: int
    num_layers: int
    hidden_size: int
    tokenizer: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_supervisor(manifest: dict[str, Any], ref: SupervisorRef, model_dir: Path) -> None:
    """Refuse to pair an artifact with a supervisor it was not built for."""
    want = manifest.get("supervisor") or {}
    if want.get("sha256") and want["sha256"] != ref.sha256:
        raise ArtifactError(
            f"model {model_dir} was built for supervisor {want.get('source')!r} "
            f"(weights {want['sha256'][:12]}), but the loaded supervisor is {ref.source!r} "
            f"(weights {ref.sha256[:12]}). Use --supervisor {want.get('model')!r}, or rebuild the "
            "model for this supervisor with `ptbot pretrain` and `ptbot bind`.")
    if want.get("layer") and int(want["layer"]) != ref.layer:
        raise ArtifactError(f"model {model_dir} probes layer {want['layer']}, not {ref.layer}")
