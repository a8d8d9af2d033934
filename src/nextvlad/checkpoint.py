"""Native model checkpoints: a folder with ``model.safetensors`` and ``config.json``.

Weights are safetensors and the configuration JSON, so loading never unpickles anything and
never runs code from the checkpoint. Every file is written atomically (temporary file, fsync,
rename), and ``config.json`` last, so a folder with a ``config.json`` is complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nextvlad.errors import CheckpointError, ConfigError
from nextvlad.models import ModelConfig, build_model, config_from_dict, config_to_dict

FORMAT = "nextvlad-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(
    directory: str | Path,
    model: nn.Module,
    config: ModelConfig,
    *,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` (weights and batch-norm statistics) and its configuration."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": FORMAT})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, directory / WEIGHTS)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    document = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": config_to_dict(config),
        **(metadata or {}),
    }
    atomic_write_bytes(directory / CONFIG, json.dumps(document, indent=2).encode())
    return directory


def read_config(directory: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model configuration and the whole ``config.json`` document of a checkpoint."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a nextvlad checkpoint (no {CONFIG})")
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} configuration")
    try:
        return config_from_dict(document["model"]), document
    except (KeyError, TypeError, ConfigError) as err:
        raise CheckpointError(f"{path}: invalid model configuration ({err})") from None


def load_state(model: nn.Module, weights: str | Path) -> None:
    """Load a safetensors state into ``model``, refusing anything that does not fit."""
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights}: unreadable weights ({err})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}")
        for k in wrong[:4]:
            parts.append(f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise CheckpointError(f"{weights} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state)


def load_model(directory: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild and load the model saved in ``directory`` (eval mode)."""
    config, _ = read_config(directory)
    model = build_model(config)
    load_state(model, Path(directory) / WEIGHTS)
    return model.to(device).eval()
