"""Native model checkpoints: a folder with ``model.safetensors`` and ``config.json``.

Weights are safetensors and the configuration JSON, so loading never unpickles anything and
never runs code from the checkpoint. Every file is written atomically (``atomic_write``:
temporary file, fsync, rename; the one way this project writes a file), and ``config.json``
last, so a folder with a ``config.json`` is complete.

Loading for inference (``load_for_inference``: a run folder, its ``checkpoints/latest``, a step
folder, a model folder or its ``model.safetensors``; ``resolve_model_dir``) and the check that
data fits a model (``check_data_fits``) live here too: train, eval, predict and export all use
them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from nextvlad._atomic import atomic_write, atomic_write_bytes
from nextvlad.errors import CheckpointError, ConfigError, UsageError
from nextvlad.models import (
    InputTransform,
    ModelConfig,
    build_model,
    config_from_dict,
    config_to_dict,
)

if TYPE_CHECKING:
    from nextvlad.data.schema import Schema

FORMAT = "nextvlad-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# A training run's folder (``nextvlad.training.state`` writes it): RUN/checkpoints/step-N/,
# each a model folder plus the input transform, the optimizer and trainer.json.
CHECKPOINTS = "checkpoints"
TRANSFORM = "input_transform.safetensors"
TRAINER = "trainer.json"
STEP_DIR = re.compile(r"^step-(\d{8})$")
LATEST = "latest"  # RUN/checkpoints/latest: a file holding the newest step folder's name
# What `resolve_model_dir` takes, for the messages of the commands that load a checkpoint.
ACCEPTED = (
    "a run folder (RUN, RUN/checkpoints or RUN/checkpoints/latest: its newest checkpoint), "
    f"a checkpoint folder (RUN/checkpoints/step-N, a folder with {CONFIG} and {WEIGHTS}) "
    f"or its {WEIGHTS}"
)


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, **metadata: str) -> None:
    """A safetensors file of ``tensors`` (copied to the CPU), written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata=metadata or None)


def save_model(
    directory: str | Path,
    model: nn.Module,
    config: ModelConfig,
    *,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` (weights and batch-norm statistics) and its configuration."""
    directory = Path(directory)
    save_tensors(model.state_dict(), directory / WEIGHTS, format=FORMAT)
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


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / TRAINER).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder.

    Only complete checkpoints carry a ``step-*`` name, so this does not need ``latest``: a
    crash between a checkpoint's rename and the update of ``latest`` leaves ``latest`` one
    behind, and the newer checkpoint is still the one to resume from.
    """
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _follow_latest(latest: Path) -> Path | None:
    """The checkpoint ``RUN/checkpoints/latest`` names (a file holding the step folder's name,
    or a link to it); the newest complete one if that is gone (``latest`` lags behind after a
    crash between a checkpoint's rename and its update)."""
    try:
        name = os.readlink(latest) if latest.is_symlink() else latest.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    named = latest.parent / name
    if name and (named / CONFIG).is_file():
        return named
    return latest_checkpoint(latest.parent.parent)


def _find_model_dir(path: Path) -> Path | None:
    if path.is_dir():
        if (path / CONFIG).is_file():  # a step folder or a model folder
            return path
        return latest_checkpoint(path.parent if path.name == CHECKPOINTS else path)
    if path.name == LATEST:
        return _follow_latest(path)
    if (path.parent / CONFIG).is_file():  # model.safetensors (or another file) of a checkpoint
        return path.parent
    return None


def resolve_model_dir(path: str | Path, *, also: str = "") -> Path:
    """The model checkpoint folder ``path`` stands for: a run folder, its ``checkpoints/`` or
    ``checkpoints/latest`` (the newest complete checkpoint), a step folder or a model folder,
    or a file in one (``model.safetensors``). ``also``: what else the calling command takes
    (e.g. "an .onnx file from `nextvlad export`"), for the messages.

    Raises:
        UsageError: ``path`` does not exist.
        CheckpointError: there is no checkpoint at ``path``.
    """
    path = Path(path)
    accepted = f"give {ACCEPTED}" + (f", or {also}" if also else "")
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"{path}: no such checkpoint or run folder; {accepted}")
    found = _find_model_dir(path)
    if found is None:
        raise CheckpointError(f"{path}: no nextvlad checkpoint there; {accepted}")
    return found


def load_transform(model_dir: Path, feature_dims: tuple[int, ...]) -> InputTransform:
    """The input transform saved with a checkpoint (plain dequantisation if none was)."""
    transform = InputTransform(feature_dims)
    meta_path = model_dir / TRAINER
    tensors_path = model_dir / TRANSFORM
    if not tensors_path.is_file():
        return transform
    try:
        tensors = load_file(str(tensors_path))
        document = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, SafetensorError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{tensors_path}: unreadable ({err})") from None
    meta = document.get("transform", {}) if isinstance(document, dict) else None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: 'transform' is not an object")
    for key in ("offset", "scale"):
        found = tensors.get(key)
        if found is None or found.shape != getattr(transform, key).shape:
            raise CheckpointError(f"{tensors_path}: does not fit features {feature_dims}")
    transform.offset.copy_(tensors["offset"])
    transform.scale.copy_(tensors["scale"])
    transform.reverse_whitening = bool(meta.get("reverse_whitening", True))
    transform.dequantize = bool(meta.get("dequantize", True))
    return transform


def load_for_inference(path: str | Path) -> tuple[nn.Module, InputTransform, ModelConfig, Path]:
    """(model in eval mode, its input transform, its config, the folder) from a checkpoint."""
    model_dir = resolve_model_dir(path)
    config, _ = read_config(model_dir)
    model = load_model(model_dir)
    return model, load_transform(model_dir, config.stream_dims), config, model_dir


def check_data_fits(
    config: ModelConfig, schema: Schema, what: str, *, model: str | None = None
) -> None:
    """Frame- or video-level data as the model expects, with the feature sizes it expects.

    ``what`` names the data ("the training data"); ``model`` the model where it comes from a
    file ("the checkpoint RUN/checkpoints/step-00000010"). Without ``model`` the model is a
    preset, and a data level that does not fit it asks for a preset of the data's level.
    """
    level = "frame" if schema.frame_level else "video"
    wanted = config.input_level
    if level != wanted:
        if model is None:
            hint = f"choose a {level}-level preset (`nextvlad list-models`)"
        else:
            hint = (
                f"{model} holds a {wanted}-level model: give it {wanted}-level data, or give "
                f"a model of {level}-level input"
            )
        raise ConfigError(
            f"{what} is {level}-level data but the model takes {wanted}-level input; {hint}"
        )
    dims = tuple(f.dim for f in schema.features)
    if dims != config.stream_dims:
        found = ", ".join(f"{f.name} {f.dim}" for f in schema.features)
        raise ConfigError(
            f"{what} has features ({found}); {model or 'the model'} expects sizes "
            f"{config.stream_dims}"
        )
