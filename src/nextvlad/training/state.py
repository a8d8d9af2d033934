"""Training checkpoints in a run folder, written atomically, read without pickle.

``RUN/checkpoints/step-XXXXXXXX/`` holds ``model.safetensors`` + ``config.json`` (a native model
checkpoint, loadable by ``nextvlad.checkpoint.load_model``), ``input_transform.safetensors``
(dequantisation and reverse-whitening buffers), ``optimizer.safetensors`` (Adam moments and
RNG states) and ``trainer.json`` (step, epoch, data position, learning-rate state). The folder
is written under a temporary name and renamed into place, then ``RUN/checkpoints/latest`` is
replaced atomically: a crash leaves either the previous checkpoint or the new one, never half.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nextvlad.checkpoint import (
    CONFIG,
    atomic_write_bytes,
    load_model,
    load_state,
    read_config,
    save_model,
)
from nextvlad.errors import CheckpointError
from nextvlad.models import InputTransform, ModelConfig

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRANSFORM = "input_transform.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAINER = "trainer.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    batches_in_epoch: int = 0  # batches of the current epoch already trained on (this rank)
    examples_seen: int = 0  # global examples (all ranks) trained on, for the lr schedule
    skipped_records: int = 0  # corrupt records skipped so far (rank 0's count)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_training_checkpoint(
    run_dir: Path,
    *,
    model: nn.Module,
    config: ModelConfig,
    transform: InputTransform,
    optimizer: torch.optim.Optimizer,
    trainer: TrainerState,
    preset: str,
    keep: int = 3,
) -> Path:
    """Write checkpoint ``step-<trainer.step>`` and point ``latest`` at it."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{trainer.step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(tmp, model, config, metadata={"preset": preset, "step": trainer.step})
    _save_safetensors({"offset": transform.offset, "scale": transform.scale}, tmp / TRANSFORM)
    tensors, optimizer_meta = _optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    _save_safetensors(tensors, tmp / OPTIMIZER)
    document = {
        "trainer": asdict(trainer),
        "optimizer": optimizer_meta,
        "transform": {
            "feature_dims": list(transform.feature_dims),
            "dequantize": transform.dequantize,
            "reverse_whitening": transform.reverse_whitening,
        },
    }
    atomic_write_bytes(tmp / TRAINER, json.dumps(document).encode())
    if final.exists():  # re-saving the same step (e.g. the end of a resumed finished run)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    atomic_write_bytes(root / LATEST, name.encode())
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / TRAINER).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names, or the newest complete one."""
    pointer = run_dir / CHECKPOINTS / LATEST
    if pointer.is_file():
        candidate = run_dir / CHECKPOINTS / pointer.read_text().strip()
        if _STEP_DIR.match(candidate.name) and (candidate / TRAINER).is_file():
            return candidate
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_model_dir(path: str | Path) -> Path:
    """A model checkpoint folder from a run folder, a step folder or a model folder."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
    raise CheckpointError(
        f"{path}: no checkpoint there (expected a run folder with {CHECKPOINTS}/ or a folder "
        f"with {CONFIG})"
    )


def load_transform(model_dir: Path, feature_dims: tuple[int, ...]) -> InputTransform:
    """The input transform saved with a checkpoint (plain dequantisation if none was)."""
    transform = InputTransform(feature_dims)
    meta_path = model_dir / TRAINER
    tensors_path = model_dir / TRANSFORM
    if not tensors_path.is_file():
        return transform
    try:
        tensors = load_file(str(tensors_path))
        meta = json.loads(meta_path.read_text())["transform"] if meta_path.is_file() else {}
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{tensors_path}: unreadable ({err})") from None
    if tensors.get("offset") is None or tensors["offset"].shape != transform.offset.shape:
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


def restore_training_state(
    checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> TrainerState:
    """Load weights, optimizer moments and RNG states; return the trainer position."""
    load_state(model, checkpoint / "model.safetensors")
    try:
        document = json.loads((checkpoint / TRAINER).read_text())
        tensors = load_file(str(checkpoint / OPTIMIZER))
    except (OSError, SafetensorError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{checkpoint}: unreadable training state ({err})") from None
    meta = document["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, scalars in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(scalars)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{checkpoint}: optimizer state does not fit ({err})") from None
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return TrainerState(**document["trainer"])
