"""A model HOME: numbered versions of one model and a pointer to the one that serves.

Layout::

    HOME/current.json          {"version": "0003", "history": ["0001", "0003"], "log": [...]}
    HOME/versions/0001/        a complete model directory (manifest + safetensors)
    HOME/versions/0002/        ... a refused candidate stays here for inspection
    HOME/versions/0003/

``history`` is the stack of promoted versions, oldest first; its last entry is ``version``.
``rollback`` pops it, so repeated rollbacks walk back through what actually served, never to a
refused candidate. ``log`` is an append-only audit trail (promote/rollback, time, metrics).

The pointer is a JSON file rewritten atomically (temp file + ``os.replace``), not a symlink,
so a HOME works on every filesystem and a reader never sees a half-written pointer. Writers
(``ptbot rebind`` and ``ptbot model``) are admin commands: one at a time per HOME.

Every version's manifest carries ``"version": "<NNNN>"``, so ``RiskScorer.info.version`` and
with it every scored line in the label store names the version that scored it.

Standard library only: the CLI can list and roll back versions without importing torch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyzer import artifact
from analyzer.artifact import (POINTER, VERSIONS, HomeError, current_dir, current_version, is_home,
                               read_pointer, version_dir)

log = logging.getLogger(__name__)

# Training checkpoints are only for resuming an interrupted stage 1; a version does not need them.
_NOT_COPIED = ("checkpoints", artifact.MANIFEST + ".tmp")


@dataclass(frozen=True)
class VersionInfo:
    """One version of a HOME, as ``ptbot model list`` shows it."""

    version: str
    """Zero-padded number, e.g. ``"0003"``; also the directory name under ``versions/``."""
    path: Path
    """The version's complete model directory."""
    status: str
    """``serving``, ``promoted`` (served before), ``refused`` (failed the gate), or ``candidate``."""
    gate: dict[str, Any] | None
    """The gate decision recorded by ``lab.rebind`` (metrics of both sides), if any."""
    created: str
    """When the version was made (UTC, ISO 8601)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_pointer(home: Path, pointer: dict[str, Any]) -> None:
    # A unique temp name in the same directory, then an atomic rename over the old pointer.
    fd, tmp = tempfile.mkstemp(prefix=".current-", suffix=".json", dir=home)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(pointer, indent=2) + "\n")
    os.replace(tmp, home / POINTER)


def _update_manifest(model_dir: Path, **fields: Any) -> None:
    manifest = artifact.read_manifest(model_dir)
    manifest.update(fields)
    artifact.write_manifest(model_dir, {k: v for k, v in manifest.items()
                                        if k not in ("format", "format_version")})


def _copy_model(src: Path, dst: Path) -> None:
    for item in sorted(src.iterdir()):
        if item.name in _NOT_COPIED:
            continue
        if item.is_dir():
            shutil.copytree(item, dst / item.name)
        else:
            shutil.copy2(item, dst / item.name)


def init_home(home: Path | str, from_model_dir: Path | str) -> Path:
    """Create ``home`` with a copy of ``from_model_dir`` as version 0001, serving.

    ``from_model_dir`` may itself be a HOME (its serving version is copied). Refuses a
    directory that already is a HOME, so an existing history is never overwritten.
    """
    home = Path(home)
    src = artifact.resolve_model_dir(from_model_dir)
    artifact.read_manifest(src)  # a clear error now beats a broken version later
    if is_home(home):
        raise HomeError(f"{home} is already a model home (serving {current_version(home)}); "
                        "use `ptbot rebind` to add versions")
    dst = home / VERSIONS / "0001"
    dst.mkdir(parents=True)
    _copy_model(src, dst)
    _update_manifest(dst, version="0001", status="promoted", created=_now(), copied_from=str(src))
    _write_pointer(home, {"version": "0001", "history": ["0001"],
                          "log": [{"action": "init", "version": "0001", "at": _now(), "from": str(src)}]})
    log.info("initialised model home %s from %s", home, src)
    return dst


def _version_ids(home: Path) -> list[str]:
    root = home / VERSIONS
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit()) if root.is_dir() else []


def new_version_dir(home: Path | str, base: str | None = None) -> Path:
    """A new version directory holding a copy of ``base`` (default: the serving version).

    The copy is the starting point for training (same SAE, features, supervisor); the new
    version does not serve until ``promote``. Numbers are never reused, even after a refusal.
    """
    home = Path(home)
    src = version_dir(home, base) if base else current_dir(home)
    while True:
        ids = _version_ids(home)
        version = f"{int(ids[-1]) + 1 if ids else 1:04d}"
        dst = home / VERSIONS / version
        try:
            dst.mkdir()  # atomic: two concurrent callers cannot get the same number
            break
        except FileExistsError:
            continue
    _copy_model(src, dst)
    _update_manifest(dst, version=version, status="candidate", created=_now(), copied_from=src.name)
    log.info("new version %s in %s (copy of %s)", version, home, src.name)
    return dst


def promote(home: Path | str, version: str, metrics: dict[str, Any] | None = None) -> None:
    """Make ``version`` the serving one (it must be fully trained); record it in the log."""
    home = Path(home)
    path = version_dir(home, version)
    manifest = artifact.read_manifest(path)
    missing = [k for k in ("sae", "ranker", "calibration") if not manifest.get(k)]
    if missing:
        raise HomeError(f"version {version} of {home} is not fully trained (no {', '.join(missing)}); "
                        "it cannot serve")
    pointer = read_pointer(home)
    _update_manifest(path, status="promoted", promoted_at=_now())
    pointer["version"] = version
    pointer["history"] = [v for v in pointer["history"] if v != version] + [version]
    pointer["log"].append({"action": "promote", "version": version, "at": _now(),
                           "metrics": metrics or {}})
    _write_pointer(home, pointer)
    log.info("promoted version %s of %s", version, home)


def record_gate(home: Path | str, version: str, gate: dict[str, Any]) -> None:
    """Write a gate decision into ``version``'s manifest; a refused version is marked so and
    stays on disk for inspection (it never serves unless promoted explicitly)."""
    fields: dict[str, Any] = {"gate": gate}
    if not gate.get("promoted"):
        fields["status"] = "refused"
    _update_manifest(version_dir(home, version), **fields)


def rollback(home: Path | str) -> str:
    """Serve the previously promoted version again; return its id.

    The rolled-back version stays on disk (``model list`` shows it as ``promoted``) and can be
    promoted again explicitly.
    """
    home = Path(home)
    pointer = read_pointer(home)
    history = pointer["history"]
    if len(history) < 2:
        raise HomeError(f"{home} has no earlier version to roll back to "
                        f"(history: {', '.join(history)})")
    left, back_to = history[-1], history[-2]
    version_dir(home, back_to)
    pointer["version"] = back_to
    pointer["history"] = history[:-1]
    pointer["log"].append({"action": "rollback", "version": back_to, "from": left, "at": _now()})
    _write_pointer(home, pointer)
    log.info("rolled %s back from %s to %s", home, left, back_to)
    return back_to


def list_versions(home: Path | str) -> list[VersionInfo]:
    """Every version of ``home``, oldest first, with its status and gate decision."""
    home = Path(home)
    serving = current_version(home)
    out = []
    for version in _version_ids(home):
        path = home / VERSIONS / version
        try:
            manifest = artifact.read_manifest(path)
        except artifact.ArtifactError:
            manifest = {"status": "incomplete"}  # e.g. a copy interrupted by a crash
        status = "serving" if version == serving else manifest.get("status", "candidate")
        out.append(VersionInfo(version=version, path=path, status=status, gate=manifest.get("gate"),
                               created=manifest.get("created", manifest.get("updated", ""))))
    return out


def repository_home(root: Path | str, repository: str) -> Path:
    """Where the model HOME of ``repository`` (``owner/name``) lives under ``root``: ``root/owner/name``.

    ValueError for a name that is not ``owner/name`` or that would leave ``root``.
    """
    owner, _, name = repository.partition("/")
    parts = (owner, name)
    if not owner or not name or "/" in name or any(p in (".", "..") or "\\" in p for p in parts):
        raise ValueError(f"a repository is named owner/name, got {repository!r}")
    return Path(root) / owner / name


def serving_home(root: Path | str | None, repository: str | None) -> Path | None:
    """The HOME of ``repository`` under ``root`` when it serves a model of its own, else None.

    A repository's HOME starts as a copy of the deployment's model (its first version); only a
    later version that won its gate (and was not rolled back) is the repository's own model, so a
    HOME still serving its first version gives None too, and the deployment's model scores (and
    names itself) as for any other repository. A missing root or repository gives None.
    """
    if not root or not repository:
        return None
    try:
        home = repository_home(root, repository)
        if not is_home(home):
            return None
        pointer = read_pointer(home)
    except (ValueError, OSError):
        return None
    return home if pointer["version"] != pointer["history"][0] else None
