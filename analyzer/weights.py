"""Safetensors files of the trained pieces (SAE, ranker): write a module's state, read it back.

One place for the two things every piece needs: tensors made contiguous and moved to the CPU
before writing, and errors that tell the user which command rebuilds a missing or mismatched file.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn


def save_state(model: nn.Module, directory: Path, name: str, kind: str) -> Path:
    """Write ``<directory>/<name>.safetensors`` (metadata ``format = ptbot-<kind>``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.safetensors"
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": f"ptbot-{kind}"})
    return path


def load_state(model: nn.Module, directory: Path, name: str, what: str, rebuild: str) -> nn.Module:
    """Load ``<directory>/<name>.safetensors`` into ``model`` (eval mode); ValueError says what to do."""
    path = Path(directory) / f"{name}.safetensors"
    if not path.exists():
        raise ValueError(f"{what} weights not found at {path}; rebuild the model with `{rebuild}`")
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as e:
        raise ValueError(f"{path} does not match its manifest {what} config ({e}); "
                         "the artifact is inconsistent") from e
    return model.eval()
