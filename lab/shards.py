"""Line states of a whole corpus on disk, in safetensors shards that ``pretrain`` reads directly.

``ptbot extract`` reads the code once (locally, or one shard per task on GPU workers) and stage 1
then trains from the shards without loading the supervisor. Layout of a shards directory::

    manifest.json             supervisor (model, weights sha256, layer, ...), feature config,
                              record selection (holdout, max_records, mutations, seed), source
                              files with their sha256, counts, and one entry per shard
    plan/shard-00000.json     the texts shard 0 reads (code, language, record, wrong lines) and
                              the contrastive pairs that end in them: what a worker needs
    shard-00000.safetensors   states (N, d) float32 or float16: probed-layer state per line
                              text (N,) int64: index of the line's text in the whole plan
                              line (N,) int32: its 1-based line number in that text
                              record (N,) int64: index of its record among the selected ones
                              label (N,) uint8: 1 for a wrong line (buggy or mutated), else 0
                              pairs (P, 4) int64: (text a, line a, text b, line b), line a correct,
                              line b the wrong line replacing it (as ``pretraining_texts``)

A shard is written to a temporary name and renamed, so a shard file is always whole; its metadata
names the plan it was read from, so a resumed run (same plan) skips it and a different
extraction cannot mix its shards in. Texts are split into shards in plan order and ``read_states``
concatenates them back, so stage 1 gets the very rows and pairs ``pretrain`` builds from the
records; with ``shard_size`` a multiple of ``extract``'s chunk (64) even the batches are the same.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from analyzer.artifact import SupervisorRef, read_checked_json
from analyzer.features import FeatureConfig, StateCache, extract
from analyzer.supervisor import Supervisor

FORMAT = "ptbot-line-states"
FORMAT_VERSION = 2
"""2: the manifest's ``features`` are ``analyzer.features.FeatureConfig``'s without ``inputs`` and
``declarations``; 1 is refused."""
MANIFEST = "manifest.json"
PLAN_DIR = "plan"
DTYPES = {"float32": torch.float32, "float16": torch.float16}


class ShardError(ValueError):
    """A shards directory is missing, unfinished, inconsistent, or made for another supervisor."""


class PlannedText(Protocol):
    """One text to read (``lab.train.PretrainingText``)."""

    code: str
    language: str
    record: int
    buggy: tuple[int, ...]


@dataclass(frozen=True)
class ExtractSettings:
    """How a corpus is cut into shards and stored."""

    shard_size: int = 4096
    """Texts per shard (one task each with --queue); a multiple of 64 keeps batches as in pretrain."""
    dtype: str = "float32"
    """``float32`` (pretrain on the shards equals pretrain on the records) or ``float16`` (half size)."""

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {self.shard_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def failed_path(out_dir: Path, index: int) -> Path:
    """Where a queue worker leaves the error of a shard it could not read."""
    return Path(out_dir) / f"shard-{index:05d}.failed"


def _plan_path(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / PLAN_DIR / f"shard-{index:05d}.json"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The shards directory's manifest; ``ShardError`` says what to do when there is none."""
    return read_checked_json(Path(out_dir), FORMAT, FORMAT_VERSION, ShardError, "ptbot line-states",
                             "not a line-states directory (make one with `ptbot extract DATA... --out DIR`)",
                             "extract again with `ptbot extract DATA... --out DIR` into an empty DIR")


def check_supervisor(manifest: dict[str, Any], ref: SupervisorRef, out_dir: Path) -> None:
    """Refuse states read by another supervisor or at another layer than ``ref``."""
    have = manifest["supervisor"]
    if have["sha256"] != ref.sha256:
        raise ShardError(
            f"line states in {out_dir} were read by supervisor {have['source']!r} (weights "
            f"{have['sha256'][:12]}), not by {ref.source!r} (weights {ref.sha256[:12]}). Use "
            f"--supervisor {have['model']!r}, or extract again with this supervisor into another --out.")
    if int(have["layer"]) != ref.layer:
        raise ShardError(f"line states in {out_dir} are from layer {have['layer']}, not layer {ref.layer}: "
                         f"use --layer {have['layer']}, or extract again at layer {ref.layer} into another --out")


def write_plan(out_dir: Path, texts: Sequence[PlannedText], pairs: Sequence[tuple[int, int, int, int]], *,
               supervisor: SupervisorRef, features: FeatureConfig, selection: dict[str, Any],
               records: int, sources: Sequence[Path] = (),
               settings: ExtractSettings = ExtractSettings()) -> dict[str, Any]:
    """Write the per-shard plans and the manifest (``complete`` false until every shard is read).

    ``pairs`` must be ordered by their text b (``pretraining_texts`` makes them so). A directory
    holding the same plan is resumed: its finished shards stay. One holding another extraction's
    shards is refused.
    """
    out_dir = Path(out_dir)
    if any(b < a for (_, _, a, _), (_, _, b, _) in zip(pairs, pairs[1:])):
        raise ValueError("pairs must be ordered by their text b")
    size = settings.shard_size
    docs, entries, ends = [], [], [p[2] for p in pairs]
    for index, start in enumerate(range(0, len(texts), size)):
        stop = min(start + size, len(texts))
        lo, hi = bisect.bisect_left(ends, start), bisect.bisect_left(ends, stop)
        doc = {"index": index, "start": start,
               "texts": [[t.code, t.language, t.record, list(t.buggy)] for t in texts[start:stop]],
               "pairs": [list(p) for p in pairs[lo:hi]]}
        data = json.dumps(doc, ensure_ascii=False, sort_keys=True).encode("utf-8", "surrogatepass")
        docs.append(data)
        entries.append({"name": shard_name(index), "texts": [start, stop], "pairs": hi - lo,
                        "plan_sha256": hashlib.sha256(data).hexdigest()})
    key = {"supervisor": supervisor.sha256, "layer": supervisor.layer, "features": features.to_dict(),
           "dtype": settings.dtype, "shards": [e["plan_sha256"] for e in entries]}
    plan_sha = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    if (out_dir / MANIFEST).exists():
        old = read_manifest(out_dir)
        if old.get("plan_sha256") != plan_sha and any(out_dir.glob("shard-*.safetensors")):
            raise ShardError(
                f"{out_dir} holds line states of another extraction (supervisor "
                f"{old['supervisor']['source']!r}, layer {old['supervisor']['layer']}, "
                f"{len(old.get('shards', []))} shard(s)); choose an empty --out, or delete it first")
    (out_dir / PLAN_DIR).mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(docs):
        path = _plan_path(out_dir, index)
        if not path.exists() or path.read_bytes() != data:
            _write_atomic(path, data)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "plan_sha256": plan_sha, "complete": False,
        "supervisor": supervisor.to_dict(), "features": features.to_dict(), "selection": dict(selection),
        "dtype": settings.dtype, "shard_size": size,
        "sources": [{"path": str(p), "bytes": Path(p).stat().st_size, "sha256": _sha256_file(Path(p))}
                    for p in sources],
        "counts": {"records": records, "texts": len(texts), "pairs": len(pairs), "lines": None,
                   "languages": sorted({t.language for t in texts})},
        "shards": entries,
    }
    _write_atomic(out_dir / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def _shard_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # not a safetensors file (a copy cut short): treat as missing
        return {}


def shard_done(out_dir: Path, manifest: dict[str, Any], index: int) -> bool:
    """Is shard ``index`` on disk, read from this very plan?"""
    entry = manifest["shards"][index]
    path = Path(out_dir) / entry["name"]
    if not path.exists():
        return False
    meta = _shard_metadata(path)
    return (meta.get("plan_sha256") == entry["plan_sha256"]
            and meta.get("supervisor_sha256") == manifest["supervisor"]["sha256"]
            and meta.get("dtype") == manifest["dtype"])


def pending_shards(out_dir: Path) -> list[int]:
    """Indices of the shards still to read."""
    manifest = read_manifest(out_dir)
    return [i for i in range(len(manifest["shards"])) if not shard_done(out_dir, manifest, i)]


def extract_shard(sup: Supervisor, out_dir: Path, index: int, *, cache: StateCache | None = None,
                  progress: bool = False) -> Path:
    """Read shard ``index``'s texts with ``sup`` and write its safetensors file (atomically)."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    check_supervisor(manifest, SupervisorRef(
        model=sup.cfg.model, source=sup.info.source, sha256=sup.info.sha256, layer=sup.layer,
        num_layers=sup.info.num_layers, hidden_size=sup.info.hidden_size,
        tokenizer=type(sup.tokenizer).__name__), out_dir)
    entry = manifest["shards"][index]
    data = _plan_path(out_dir, index).read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["plan_sha256"]:
        raise ShardError(f"{_plan_path(out_dir, index)} does not match {out_dir / MANIFEST}; "
                         "run `ptbot extract` again to rewrite the plan")
    plan = json.loads(data.decode("utf-8", "surrogatepass"))
    start, rows = plan["start"], plan["texts"]
    snippets = extract(sup, [r[0] for r in rows], [r[1] for r in rows], FeatureConfig.from_dict(manifest["features"]),
                       progress=progress, desc=f"reading code ({entry['name']})", cache=cache)
    states, text, line, record, label = [], [], [], [], []
    for j, (sn, (_, _, rec, buggy)) in enumerate(zip(snippets, rows)):
        bad = set(buggy)
        states.append(sn.states)
        for s in sn.lines:
            text.append(start + j)
            line.append(s.line)
            record.append(rec)
            label.append(1 if s.line in bad else 0)
    d = int(sup.info.hidden_size)
    tensors = {
        "states": (torch.cat(states) if states else torch.empty(0, d)).to(DTYPES[manifest["dtype"]]).contiguous(),
        "text": torch.tensor(text, dtype=torch.int64),
        "line": torch.tensor(line, dtype=torch.int32),
        "record": torch.tensor(record, dtype=torch.int64),
        "label": torch.tensor(label, dtype=torch.uint8),
        "pairs": torch.tensor(plan["pairs"], dtype=torch.int64).reshape(-1, 4),
    }
    meta = {"format": FORMAT, "plan_sha256": entry["plan_sha256"], "index": str(index),
            "supervisor_sha256": manifest["supervisor"]["sha256"], "layer": str(manifest["supervisor"]["layer"]),
            "dtype": manifest["dtype"]}
    path = out_dir / entry["name"]
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def finish(out_dir: Path) -> dict[str, Any]:
    """Mark the directory complete once every shard is read (counts its lines); return the manifest."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if any(not shard_done(out_dir, manifest, i) for i in range(len(manifest["shards"]))):
        return manifest
    lines = 0
    for entry in manifest["shards"]:
        with safe_open(str(out_dir / entry["name"]), framework="pt") as f:
            lines += f.get_slice("line").get_shape()[0]
    manifest["counts"]["lines"] = lines
    manifest["complete"] = True
    _write_atomic(out_dir / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_states(out_dir: Path, expect: SupervisorRef | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Stage 1's inputs from a finished shards directory.

    Returns ``x`` (N, d) float32 (every line's state, in plan order), ``pairs`` (P, 2) row indices
    into ``x`` (correct line, wrong line; pairs on unscorable lines dropped, as ``pretrain`` does)
    and the manifest. ``expect``: refuse states read by another supervisor or layer.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    if expect is not None:
        check_supervisor(manifest, expect, out_dir)
    missing = [e["name"] for i, e in enumerate(manifest["shards"]) if not shard_done(out_dir, manifest, i)]
    if missing or not manifest.get("complete"):
        raise ShardError(f"{out_dir} is unfinished: {len(missing)} of {len(manifest['shards'])} shard(s) "
                         f"missing or from another plan (e.g. {missing[0] if missing else '-'}); run the same "
                         "`ptbot extract` again to finish it")
    xs, texts, lines, pairs = [], [], [], []
    for entry in manifest["shards"]:
        t = load_file(str(out_dir / entry["name"]))
        xs.append(t["states"].float())
        texts.append(t["text"])
        lines.append(t["line"].long())
        pairs.append(t["pairs"])
    d = int(manifest["supervisor"]["hidden_size"])
    x = torch.cat(xs) if xs else torch.empty(0, d)
    text, line = (torch.cat(texts), torch.cat(lines)) if texts else (torch.empty(0, dtype=torch.long),) * 2
    p = torch.cat(pairs) if pairs else torch.empty(0, 4, dtype=torch.long)
    # Rows are ordered by (text, line): one sorted key per row finds every pair's rows at once.
    span = int(max(line.max().item() if len(line) else 0, p[:, [1, 3]].max().item() if len(p) else 0)) + 1
    keys = text * span + line
    if len(keys) > 1 and not bool((keys[1:] > keys[:-1]).all()):
        raise ShardError(f"shards in {out_dir} are not in plan order; extract them again")

    def rows(t: torch.Tensor, ln: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = t * span + ln
        i = torch.searchsorted(keys, k).clamp(max=max(len(keys) - 1, 0))
        found = keys[i] == k if len(keys) else torch.zeros(len(k), dtype=torch.bool)
        return i, found

    ia, fa = rows(p[:, 0], p[:, 1])
    ib, fb = rows(p[:, 2], p[:, 3])
    keep = fa & fb
    pt = torch.stack([ia[keep], ib[keep]], dim=1).reshape(-1, 2).long()
    return x, pt, manifest
