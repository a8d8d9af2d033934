"""Training checkpoints in a run folder, written atomically, read without pickle.

``RUN/checkpoints/step-XXXXXXXX/`` holds ``model.safetensors`` + ``config.json`` (a native model
checkpoint, loadable by ``nextvlad.checkpoint.load_model``), ``input_transform.safetensors``
(dequantisation and reverse-whitening buffers), ``optimizer.safetensors`` (Adam moments and
RNG states) and ``trainer.json`` (step, epoch, data position, counters). The folder is written
under a temporary name (``.step-XXXXXXXX.tmp``), every file fsynced, and renamed into place, then
``RUN/checkpoints/latest`` is replaced atomically; old checkpoints are renamed away
(``.step-XXXXXXXX.trash``) before they are deleted. So a crash (even SIGKILL, even a full disk)
leaves every ``step-*`` folder complete: the previous checkpoint or the new one, never half.
Leftover temporary and trash folders are removed by the next save.

Test hook: with ``NEXTVLAD_TEST_CHECKPOINT_PAUSE=SECONDS`` in the environment the writer sleeps
that long after each file of a checkpoint, so that a test can kill the process in the middle
of a write (``tests/training/test_crash_safety.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, fields
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
from nextvlad.errors import CheckpointError, UsageError
from nextvlad.models import InputTransform, ModelConfig, config_to_dict

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRANSFORM = "input_transform.safetensors"
OPTIMIZER = "optimizer.safetensors"
TRAINER = "trainer.json"
PAUSE_ENV = "NEXTVLAD_TEST_CHECKPOINT_PAUSE"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_PARTIAL = re.compile(r"^\.(step-\d{8}\.(tmp|trash)|latest\..*\.tmp)$")


@dataclass
class TrainerState:
    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    batches_in_epoch: int = 0  # batches of the current epoch already read (this rank)
    examples_seen: int = 0  # global examples (all ranks) trained on, for the lr schedule
    skipped_records: int = 0  # corrupt records skipped so far (all ranks; --skip-corrupt)
    nonfinite_batches: int = 0  # batches skipped for a non-finite loss (--skip-nonfinite)

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


_OPTIONAL_COUNTERS = frozenset({"skipped_records", "nonfinite_batches"})


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pause() -> None:
    """The test hook: sleep ``$NEXTVLAD_TEST_CHECKPOINT_PAUSE`` seconds, if set."""
    value = os.environ.get(PAUSE_ENV)
    if value:
        with contextlib.suppress(ValueError):
            time.sleep(max(0.0, float(value)))


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


def checkpoint_size(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """About the bytes one training checkpoint takes: weights and buffers, Adam's moments."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = sum(
        2 * p.numel() * p.element_size() for g in optimizer.param_groups for p in g["params"]
    )
    return weights + moments + (1 << 16)


def remove_partial_checkpoints(run_dir: Path) -> None:
    """Delete what an interrupted save left behind (temporary and trash folders and files)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return
    for path in root.iterdir():
        if _PARTIAL.match(path.name):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _remove_checkpoint(path: Path) -> None:
    """Rename a checkpoint out of sight first, so that a crash never leaves half of one."""
    trash = path.with_name(f".{path.name}.trash")
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _write_files(
    tmp: Path,
    *,
    model: nn.Module,
    config: ModelConfig,
    transform: InputTransform,
    optimizer: torch.optim.Optimizer,
    trainer: TrainerState,
    preset: str,
    rank_rng: dict[str, torch.Tensor] | None,
) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model(tmp, model, config, metadata={"preset": preset, "step": trainer.step})
    _pause()
    _save_safetensors({"offset": transform.offset, "scale": transform.scale}, tmp / TRANSFORM)
    _pause()
    tensors, optimizer_meta = _optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    tensors.update(rank_rng or {})
    _save_safetensors(tensors, tmp / OPTIMIZER)
    _pause()
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
    _pause()


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
    rank_rng: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write checkpoint ``step-<trainer.step>`` and point ``latest`` at it.

    ``rank_rng``: under DDP, every process's RNG states (``rng.torch.rank<R>``,
    ``rng.cuda.rank<R>``), so that each resumes its own dropout stream.

    Raises:
        CheckpointError: the checkpoint could not be written (a full disk, an unwritable
            folder); nothing of it is left behind and the earlier checkpoints are untouched.
    """
    root = run_dir / CHECKPOINTS
    name = f"step-{trainer.step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    trash = root / f".{name}.trash"
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_partial_checkpoints(run_dir)
        _write_files(
            tmp,
            model=model,
            config=config,
            transform=transform,
            optimizer=optimizer,
            trainer=trainer,
            preset=preset,
            rank_rng=rank_rng,
        )
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
        atomic_write_bytes(root / LATEST, name.encode())
    except OSError as err:
        raise CheckpointError(
            f"wrote checkpoint {final} but could not update {root / LATEST} ({err})"
        ) from None
    for old in list_checkpoints(run_dir)[:-keep]:
        _remove_checkpoint(old)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / TRAINER).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run.

    Only complete checkpoints carry a ``step-*`` name, so this does not need ``latest``: a
    crash between a checkpoint's rename and the update of ``latest`` leaves ``latest`` one
    behind, and the newer checkpoint is still the one to resume from.
    """
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_model_dir(path: str | Path) -> Path:
    """A model checkpoint folder from a run folder, a step folder or a model folder."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such checkpoint or run folder")
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


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, (list, tuple)):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


_RESUME_HINT = (
    "resume with the --preset and --set options the run was started with, or train into "
    "another --out"
)


def check_checkpoint_fits(
    checkpoint: Path, config: ModelConfig, preset: str, *, hint: str = _RESUME_HINT
) -> None:
    """Refuse to resume (or start) from a checkpoint of another model, saying what differs."""
    saved, document = read_config(checkpoint)
    if saved == config:
        return
    theirs, ours = _flatten(config_to_dict(saved)), _flatten(config_to_dict(config))
    missing = object()
    keys = [
        k for k in dict.fromkeys([*theirs, *ours]) if theirs.get(k, missing) != ours.get(k, missing)
    ]

    def show(values: dict[str, Any]) -> str:
        return ", ".join(f"{k} {values.get(k, '-')}" for k in keys[:6]) + (
            ", ..." if len(keys) > 6 else ""
        )

    saved_preset = document.get("preset")
    saved_name = saved_preset if isinstance(saved_preset, str) else "a model"
    raise CheckpointError(
        f"{checkpoint} does not fit this run: the checkpoint is {saved_name} ({show(theirs)}), "
        f"this run asks for {preset} ({show(ours)}); {hint}"
    )


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
    load_state(model, checkpoint / "model.safetensors")
    try:
        document = json.loads((checkpoint / TRAINER).read_text())
        tensors = load_file(str(checkpoint / OPTIMIZER))
    except (OSError, SafetensorError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{checkpoint}: unreadable training state ({err})") from None
    if not isinstance(document, dict) or not isinstance(document.get("optimizer"), dict):
        raise CheckpointError(f"{checkpoint / TRAINER}: no 'optimizer' object")
    trainer = TrainerState.from_json(document.get("trainer"), checkpoint / TRAINER)
    _restore_optimizer(checkpoint, optimizer, document["optimizer"], tensors)
    rng = tensors.get(f"rng.torch.rank{rank}", tensors.get("rng.torch"))
    own_rng = torch.get_rng_state()
    if rng is None or rng.dtype != own_rng.dtype or rng.shape != own_rng.shape:
        raise CheckpointError(f"{checkpoint / OPTIMIZER}: no valid 'rng.torch' state")
    torch.set_rng_state(rng)
    if torch.cuda.is_available():
        try:
            own = tensors.get(f"rng.cuda.rank{rank}")
            names = [k for k in tensors if re.match(r"^rng\.cuda\.\d+$", k)]
            states = [tensors[k] for k in sorted(names, key=lambda k: int(k.split(".")[2]))]
            if own is not None and device is not None and device.type == "cuda":
                torch.cuda.set_rng_state(own, device)
            elif len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        except (RuntimeError, TypeError):
            pass  # another GPU: only the dropout stream differs from an uninterrupted run
    return trainer


def _restore_optimizer(
    checkpoint: Path,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
) -> None:
    where = checkpoint / OPTIMIZER
    groups = optimizer.state_dict()["param_groups"]
    saved_groups = meta.get("param_groups")
    sizes = [len(g["params"]) for g in groups]
    if (
        not isinstance(saved_groups, list)
        or [len(g.get("params", ())) if isinstance(g, dict) else -1 for g in saved_groups] != sizes
    ):
        raise CheckpointError(f"{checkpoint / TRAINER}: optimizer groups do not fit the model")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("state."):
            continue
        _, index_text, name = [*key.split(".", 2), "", ""][:3]
        if not index_text.isdigit() or int(index_text) >= len(params) or not name:
            raise CheckpointError(f"{where}: unexpected tensor {key!r}")
        index = int(index_text)
        if name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") and (
            value.shape != params[index].shape
        ):
            raise CheckpointError(
                f"{where}: {key} has shape {tuple(value.shape)}, the parameter "
                f"{tuple(params[index].shape)}"
            )
        state.setdefault(index, {})[name] = value
    scalars = meta.get("scalars", {})
    if not isinstance(scalars, dict):
        raise CheckpointError(f"{checkpoint / TRAINER}: optimizer scalars are not an object")
    for index_text, values in scalars.items():
        if (
            not str(index_text).isdigit()
            or int(index_text) >= len(params)
            or not isinstance(values, dict)
            or not all(isinstance(v, (int, float)) for v in values.values())
        ):
            raise CheckpointError(f"{checkpoint / TRAINER}: bad optimizer scalars {index_text!r}")
        state.setdefault(int(index_text), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{checkpoint}: optimizer state does not fit ({err})") from None
