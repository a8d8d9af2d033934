"""Training checkpoints: the whole state of a run, written atomically, read without pickle.

``RUN/checkpoints/step-XXXXXXXX/`` holds ``model.safetensors`` + ``config.json`` (a native model
checkpoint, loadable by ``nextvlad.checkpoint.load_model``), ``input_transform.safetensors``
(dequantisation and reverse-whitening buffers), ``optimizer.safetensors`` (Adam's moments and
the RNG states, ``nextvlad.training.serialize``) and ``trainer.json`` (step, epoch, data
position, counters). The folder is written under a temporary name (``.step-XXXXXXXX.tmp``),
every file fsynced, and renamed into place, then ``RUN/checkpoints/latest`` is replaced
atomically; old checkpoints are pruned (``nextvlad.training.run_folder``). So a crash (even
SIGKILL, even a full disk) leaves every ``step-*`` folder complete: the previous checkpoint or
the new one, never half.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from nextvlad.checkpoint import (
    CHECKPOINTS,
    LATEST,
    TRAINER,
    TRANSFORM,
    WEIGHTS,
    atomic_write_bytes,
    latest_checkpoint,
    load_state,
    save_model,
    save_tensors,
)
from nextvlad.errors import CheckpointError
from nextvlad.models import InputTransform, ModelConfig
from nextvlad.training.run_folder import (
    checkpoint_dir,
    prune_checkpoints,
    remove_partial_checkpoints,
)
from nextvlad.training.serialize import (
    optimizer_tensors,
    restore_optimizer,
    restore_rng,
    rng_tensors,
)

OPTIMIZER = "optimizer.safetensors"
_OPTIONAL_COUNTERS = frozenset(
    {"skipped_records", "skipped_in_epoch", "nonfinite_batches", "small_batches"}
)  # added later


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    batches_in_epoch: int = 0  # batches of the current epoch already read (this rank)
    examples_seen: int = 0  # global examples (all ranks) trained on, for the lr schedule
    # Corrupt records skipped (all ranks; --skip-corrupt): each epoch reads them again, so
    # the records are the most any epoch met, and those of the current epoch so far.
    skipped_records: int = 0
    skipped_in_epoch: int = 0
    nonfinite_batches: int = 0  # batches skipped for a non-finite loss (--skip-nonfinite)
    small_batches: int = 0  # steps dropped: a process had a batch of one example

    @classmethod
    def from_json(cls, data: object, where: Path) -> TrainerState:
        """Validated state from ``trainer.json`` (counters added later default to 0)."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: 'trainer' is not an object")
        values: dict[str, int] = {}
        for f in fields(cls):
            value = data.get(f.name, 0 if f.name in _OPTIONAL_COUNTERS else None)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CheckpointError(
                    f"{where}: trainer.{f.name} must be a non-negative integer, got {value!r}"
                )
            values[f.name] = value
        return cls(**values)


def checkpoint_size(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """About the bytes one training checkpoint takes: weights and buffers, Adam's moments."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = sum(
        2 * p.numel() * p.element_size() for g in optimizer.param_groups for p in g["params"]
    )
    return weights + moments + (1 << 16)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TrainingParts:
    """What a training checkpoint holds."""

    model: nn.Module
    config: ModelConfig
    transform: InputTransform
    optimizer: torch.optim.Optimizer
    trainer: TrainerState
    preset: str  # the preset name the run was started with
    # Under DDP, every process's RNG states (``rng.torch.rank<R>``, ``rng.cuda.rank<R>``), so
    # that each resumes its own dropout stream.
    rank_rng: dict[str, torch.Tensor] | None = None


def _write_files(tmp: Path, parts: TrainingParts) -> None:
    model, config, transform, trainer = parts.model, parts.config, parts.transform, parts.trainer
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(tmp, model, config, metadata={"preset": parts.preset, "step": trainer.step})
    save_tensors({"offset": transform.offset, "scale": transform.scale}, tmp / TRANSFORM)
    tensors, optimizer_meta = optimizer_tensors(parts.optimizer)
    save_tensors({**tensors, **rng_tensors(parts.rank_rng)}, tmp / OPTIMIZER)
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
    _fsync_dir(tmp)


def save_training_checkpoint(run_dir: Path, parts: TrainingParts, *, keep: int = 3) -> Path:
    """Write checkpoint ``step-<parts.trainer.step>`` and point ``latest`` at it; keep the
    newest ``keep`` checkpoints.

    Raises:
        CheckpointError: the checkpoint could not be written (a full disk, an unwritable
            folder); nothing of it is left behind and the earlier checkpoints are untouched.
    """
    root = run_dir / CHECKPOINTS
    final = checkpoint_dir(run_dir, parts.trainer.step)
    tmp = root / f".{final.name}.tmp"
    trash = root / f".{final.name}.trash"
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_partial_checkpoints(run_dir)
        _write_files(tmp, parts)
        if final.exists():  # re-saving a step (e.g. after an interrupt at a checkpoint step)
            os.rename(final, trash)
        os.rename(tmp, final)
        _fsync_dir(root)
    except (OSError, SafetensorError) as err:  # safetensors reports a full disk as its own
        shutil.rmtree(tmp, ignore_errors=True)
        if trash.exists() and not final.exists():
            os.rename(trash, final)
        previous = latest_checkpoint(run_dir)
        kept = (
            f"the last complete checkpoint, {previous}, is untouched"
            if previous is not None
            else "no earlier checkpoint exists"
        )
        raise CheckpointError(f"could not write checkpoint {final} ({err}); {kept}") from None
    shutil.rmtree(trash, ignore_errors=True)
    try:
        atomic_write_bytes(root / LATEST, final.name.encode())
    except OSError as err:
        raise CheckpointError(
            f"wrote checkpoint {final} but could not update {root / LATEST} ({err})"
        ) from None
    prune_checkpoints(run_dir, keep)
    return final


def restore_training_state(
    checkpoint: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    rank: int = 0,
    device: torch.device | None = None,
) -> TrainerState:
    """Load weights, optimizer moments and RNG states; return the trainer position.

    Everything read is checked (types, shapes, sizes) before it is used; nothing is unpickled
    and the optimizer's hyper-parameters come from the run's options, not from the file.
    ``rank`` and ``device`` pick a DDP process's own RNG states when the checkpoint has them.
    """
    load_state(model, checkpoint / WEIGHTS)
    try:
        document = json.loads((checkpoint / TRAINER).read_text())
        tensors = load_file(str(checkpoint / OPTIMIZER))
    except (OSError, SafetensorError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{checkpoint}: unreadable training state ({err})") from None
    if not isinstance(document, dict) or not isinstance(document.get("optimizer"), dict):
        raise CheckpointError(f"{checkpoint / TRAINER}: no 'optimizer' object")
    trainer = TrainerState.from_json(document.get("trainer"), checkpoint / TRAINER)
    restore_optimizer(
        optimizer,
        document["optimizer"],
        tensors,
        json_path=checkpoint / TRAINER,
        tensors_path=checkpoint / OPTIMIZER,
    )
    restore_rng(tensors, checkpoint / OPTIMIZER, rank=rank, device=device)
    return trainer
