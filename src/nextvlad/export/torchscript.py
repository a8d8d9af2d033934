"""TorchScript export: ``torch.jit.trace`` of the serving model, metadata in the archive.

torch 2.13 marks ``torch.jit`` as deprecated; it still traces and loads. The file runs with
``torch.jit.load`` alone (no nextvlad needed), which is its point next to ONNX.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nextvlad.checkpoint import atomic_write
from nextvlad.export._common import ExportError, check_options, quiet
from nextvlad.export.quantize import int8_linear
from nextvlad.export.serving import ServingModel, metadata, traced_inputs

TORCHSCRIPT_METADATA_FILE = "nextvlad.json"  # extra file of the TorchScript archive


class _ToFloat32(nn.Module):
    """Parametrisation: a float16 stored tensor used as float32."""

    def forward(self, x: Tensor) -> Tensor:
        return x.to(torch.float32)


def fp16_parameters(module: nn.Module) -> int:
    """Store every parameter with two or more dimensions as float16, cast to float32 where
    it is used (``torch.nn.utils.parametrize``). Returns the number converted."""
    from torch.nn.utils import parametrize

    converted = 0
    for name, param in list(module.named_parameters()):
        if param.ndim < 2 or not torch.all(param.abs() <= torch.finfo(torch.float16).max):
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        parametrize.register_parametrization(owner, leaf, _ToFloat32(), unsafe=True)
        half = nn.Parameter(param.detach().to(torch.float16), requires_grad=False)
        owner.parametrizations[leaf].original = half  # type: ignore[union-attr,index]
        converted += 1
    return converted


def export_torchscript(
    serving: ServingModel,
    out: str | Path,
    *,
    dtype: str = "fp32",
    quantize: str = "none",
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``serving`` traced with ``torch.jit.trace`` (any batch size and frame count).

    ``torch.jit.load(out)(frames, num_frames)`` -> probabilities (B, C); the metadata is the
    archive's extra file ``nextvlad.json``. Written atomically.
    """
    check_options(dtype, quantize)
    out = Path(out)
    module: nn.Module = serving
    if dtype == "fp16":
        module = copy.deepcopy(serving)
        fp16_parameters(module)
    if quantize == "int8":
        module = int8_linear(copy.deepcopy(serving))
    document = metadata(serving, dtype=dtype, quantize=quantize, **(extra_metadata or {}))
    extra_files = {TORCHSCRIPT_METADATA_FILE: json.dumps(document)}
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(module, traced_inputs(serving), check_trace=False)
        with atomic_write(out) as tmp, quiet():
            torch.jit.save(traced, str(tmp), _extra_files=extra_files)
    except Exception as err:  # tracing raises many kinds; report them as one
        raise ExportError(f"TorchScript export failed: {type(err).__name__}: {err}") from err
    return out
