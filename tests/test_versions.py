"""analyzer.versions: a model HOME with numbered versions, an atomic pointer, promote and rollback.

Versions here are small stand-in model directories (a manifest that names every trained part and
one weight file): the HOME only copies and points, it never reads weights. The scorer following
the pointer is tested with a real artifact in test_rebind.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from analyzer import versions
from analyzer.artifact import ArtifactError, read_manifest, resolve_model_dir, write_manifest
from analyzer.versions import HomeError


def model_dir(path: Path, trained: bool = True) -> Path:
    parts = {"sae": {"n_latents": 4}, "ranker": {"d_in": 4}, "calibration": {"method": "platt"}}
    write_manifest(path, {"name": "m", **(parts if trained else {"sae": {"n_latents": 4}})})
    (path / "sae.safetensors").write_bytes(b"weights")
    (path / "checkpoints").mkdir()
    (path / "checkpoints" / "sae_checkpoint.pt").write_bytes(b"resume state")
    return path


def test_init_copies_the_model_as_version_0001_and_resolves(tmp_path):
    src = model_dir(tmp_path / "src")
    home = tmp_path / "home"
    v1 = versions.init_home(home, src)
    assert v1 == home / "versions" / "0001"
    assert (v1 / "sae.safetensors").read_bytes() == b"weights"
    assert not (v1 / "checkpoints").exists()  # resume state is not part of a version
    assert read_manifest(v1)["version"] == "0001" and read_manifest(v1)["name"] == "m"
    assert json.loads((home / "current.json").read_text())["history"] == ["0001"]
    assert resolve_model_dir(home) == v1 and resolve_model_dir(src) == src
    assert versions.is_home(home) and not versions.is_home(src)
    with pytest.raises(HomeError, match="already a model home"):
        versions.init_home(home, src)
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        versions.init_home(tmp_path / "other", tmp_path)


def test_new_versions_promote_and_roll_back_through_served_history(tmp_path):
    home = tmp_path / "home"
    versions.init_home(home, model_dir(tmp_path / "src"))
    v2 = versions.new_version_dir(home)
    assert v2.name == "0002" and (v2 / "sae.safetensors").exists()
    assert read_manifest(v2)["status"] == "candidate" and versions.current_version(home) == "0001"
    versions.promote(home, "0002", {"top1": 0.5})
    v3 = versions.new_version_dir(home)  # a copy of the serving 0002
    assert read_manifest(v3)["copied_from"] == "0002"
    versions.record_gate(home, "0003", {"promoted": False, "config": {"metric": "top1"},
                                        "old": {"top1": 0.5}, "new": {"top1": 0.2}})
    v4 = versions.new_version_dir(home)
    versions.promote(home, v4.name)
    assert [(v.version, v.status) for v in versions.list_versions(home)] == [
        ("0001", "promoted"), ("0002", "promoted"), ("0003", "refused"), ("0004", "serving")]
    # rollback walks back over what served (0004 -> 0002 -> 0001), never to the refused 0003
    assert versions.rollback(home) == "0002"
    assert versions.rollback(home) == "0001"
    with pytest.raises(HomeError, match="no earlier version"):
        versions.rollback(home)
    pointer = versions.read_pointer(home)
    assert [e["action"] for e in pointer["log"]] == ["init", "promote", "promote", "rollback", "rollback"]
    assert pointer["log"][1]["metrics"] == {"top1": 0.5}
    assert versions.new_version_dir(home).name == "0005"  # numbers are never reused
    assert not list(home.glob(".current-*"))  # no temp pointer left behind


def test_refusals_with_what_to_do(tmp_path):
    with pytest.raises(HomeError, match="ptbot model init"):
        versions.current_dir(tmp_path)
    home = tmp_path / "home"
    versions.init_home(home, model_dir(tmp_path / "src"))
    with pytest.raises(HomeError, match="no version '0009'"):
        versions.promote(home, "0009")
    half = versions.new_version_dir(home)
    write_manifest(half, {"name": "m", "sae": {"n_latents": 4}, "ranker": None})
    with pytest.raises(HomeError, match="not fully trained"):
        versions.promote(home, half.name)
    (home / "current.json").write_text('{"version": "0042"}')
    with pytest.raises(HomeError, match="points to version '0042'"):
        versions.current_dir(home)
    (home / "current.json").write_text("{nope")
    with pytest.raises(HomeError, match="not valid JSON"):
        resolve_model_dir(home)


def test_cli_model_init_list_and_rollback(tmp_path):
    from ptbot.cli import cli

    home = tmp_path / "home"
    runner = CliRunner()
    env = {"PTBOT_CACHE_DIR": str(tmp_path)}
    result = runner.invoke(cli, ["model", "init", "--home", str(home), "--from", str(model_dir(tmp_path / "src"))],
                           env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["model", "rollback", "--home", str(home)], env=env)
    assert result.exit_code != 0 and "no earlier version" in result.output
    versions.promote(home, versions.new_version_dir(home).name)
    versions.record_gate(home, "0002", {"promoted": True, "config": {"metric": "top1"},
                                        "old": {"top1": 0.25}, "new": {"top1": 0.5}})
    result = runner.invoke(cli, ["model", "list", "--home", str(home)], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("0001  promoted") and lines[1].startswith("0002  serving")
    assert "gate top1: 0.250 -> 0.500" in lines[1]
    result = runner.invoke(cli, ["model", "rollback", "--home", str(home)], env=env)
    assert result.exit_code == 0 and "serving 0001" in result.output
    assert versions.current_version(home) == "0001"
