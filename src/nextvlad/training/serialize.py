"""The optimizer's and the random generators' states as tensors and JSON, checked when read.

A training checkpoint keeps them in ``optimizer.safetensors`` (Adam's moments as
``state.<parameter index>.<name>``, the RNG states as ``rng.torch``, ``rng.cuda.<device>`` and,
under DDP, ``rng.torch.rank<R>`` / ``rng.cuda.rank<R>``) and ``trainer.json`` (the parameter
groups and Adam's scalar state). Nothing is unpickled; every tensor and value is checked
against the optimizer and the generators before it is used, and the hyper-parameters come from
the run's options, not from the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from nextvlad.errors import CheckpointError

_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")  # shaped like their parameter


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    """The optimizer's state: its tensors by name, and the rest (groups, scalars) as JSON."""
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


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    *,
    json_path: Path,
    tensors_path: Path,
) -> None:
    """Load what :func:`optimizer_tensors` gave (``meta`` read from ``json_path``, ``tensors``
    from ``tensors_path``, both named in the errors) into ``optimizer``.

    Raises:
        CheckpointError: groups, names, shapes or scalars that do not fit ``optimizer``.
    """
    groups = optimizer.state_dict()["param_groups"]
    saved_groups = meta.get("param_groups")
    sizes = [len(g["params"]) for g in groups]
    if (
        not isinstance(saved_groups, list)
        or [len(g.get("params", ())) if isinstance(g, dict) else -1 for g in saved_groups] != sizes
    ):
        raise CheckpointError(f"{json_path}: optimizer groups do not fit the model")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("state."):
            continue
        _, index_text, name = [*key.split(".", 2), "", ""][:3]
        if not index_text.isdigit() or int(index_text) >= len(params) or not name:
            raise CheckpointError(f"{tensors_path}: unexpected tensor {key!r}")
        index = int(index_text)
        if name in _MOMENTS and value.shape != params[index].shape:
            raise CheckpointError(
                f"{tensors_path}: {key} has shape {tuple(value.shape)}, the parameter "
                f"{tuple(params[index].shape)}"
            )
        state.setdefault(index, {})[name] = value
    scalars = meta.get("scalars", {})
    if not isinstance(scalars, dict):
        raise CheckpointError(f"{json_path}: optimizer scalars are not an object")
    for index_text, values in scalars.items():
        if (
            not str(index_text).isdigit()
            or int(index_text) >= len(params)
            or not isinstance(values, dict)
            or not all(isinstance(v, (int, float)) for v in values.values())
        ):
            raise CheckpointError(f"{json_path}: bad optimizer scalars {index_text!r}")
        state.setdefault(int(index_text), {}).update(values)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{tensors_path}: optimizer state does not fit ({err})") from None


def rng_tensors(rank_rng: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """This process's RNG states (``rng.torch``, ``rng.cuda.<device>``), and ``rank_rng``:
    under DDP, every process's (``rng.torch.rank<R>``, ``rng.cuda.rank<R>``)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    tensors.update(rank_rng or {})
    return tensors


def restore_rng(
    tensors: dict[str, torch.Tensor],
    where: Path,
    *,
    rank: int = 0,
    device: torch.device | None = None,
) -> None:
    """Set the RNG states of :func:`rng_tensors` (rank ``rank``'s own where saved).

    Raises:
        CheckpointError: no valid CPU generator state (the GPU states are set when they fit:
            on other GPUs only the dropout stream differs from an uninterrupted run).
    """
    rng = tensors.get(f"rng.torch.rank{rank}", tensors.get("rng.torch"))
    own_rng = torch.get_rng_state()
    if rng is None or rng.dtype != own_rng.dtype or rng.shape != own_rng.shape:
        raise CheckpointError(f"{where}: no valid 'rng.torch' state")
    torch.set_rng_state(rng)
    if not torch.cuda.is_available():
        return
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
