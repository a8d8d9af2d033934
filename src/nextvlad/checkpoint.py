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
from safetensors import SafetensorError, safe_open
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
    if not isinstance(document.get("model"), dict):
        raise CheckpointError(f"{path}: no model configuration (a 'model' object)")
    try:
        return config_from_dict(document["model"]), document
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as err:
        raise CheckpointError(f"{path}: invalid model configuration ({err})") from None


def weights_header(weights: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a safetensors file, read from its header alone."""
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights}: unreadable weights ({err})") from None


def _check_fits(
    own: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], weights: str | Path
) -> None:
    missing = sorted(set(own) - set(found))
    unexpected = sorted(set(found) - set(own))
    wrong = sorted(k for k in set(own) & set(found) if own[k] != found[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}")
        for k in wrong[:4]:
            parts.append(f"{k}: {found[k]} vs model {own[k]}")
        raise CheckpointError(f"{weights} does not fit the model: " + "; ".join(parts))


def load_state(model: nn.Module, weights: str | Path) -> None:
    """Load a safetensors state into ``model``, refusing anything that does not fit."""
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights}: unreadable weights ({err})") from None
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_fits(own, {k: tuple(v.shape) for k, v in state.items()}, weights)
    model.load_state_dict(state)


def load_model(directory: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild and load the model saved in ``directory`` (eval mode)."""
    config, _ = read_config(directory)
    weights = Path(directory) / WEIGHTS
    # The configuration is checked against the weights' header on the meta device first, so
    # that a config.json that does not match its weights allocates nothing.
    with torch.device("meta"):
        skeleton = build_model(config)
    _check_fits(
        {k: tuple(v.shape) for k, v in skeleton.state_dict().items()},
        weights_header(weights),
        weights,
    )
    model = build_model(config)
    load_state(model, weights)
    return model.to(device).eval()
