"""ONNX export: ``torch.onnx.export(..., dynamo=True)``, or the TorchScript-based fallback.

The default is the current exporter (``torch.export`` underneath, opset
:data:`ONNX_OPSET`), with dynamic ``batch`` and ``frames`` axes. ``dynamo=False`` selects
the TorchScript-based exporter (``torch.jit.trace`` underneath, opset
:data:`LEGACY_ONNX_OPSET`, ``dynamic_axes``), which torch 2.13 marks as deprecated: it is kept
as the fallback for a model the current exporter cannot take (docs/export.md). Both give one
self-contained file (no external data), written atomically.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextvlad.checkpoint import atomic_write_bytes
from nextvlad.export._common import ExportError, check_options, import_onnx, quiet
from nextvlad.export.quantize import quantize_onnx
from nextvlad.export.serving import ServingModel, metadata, traced_inputs

ONNX_OPSET = 18  # the current exporter's own opset (no version conversion)
LEGACY_ONNX_OPSET = 17
ONNX_METADATA_KEY = "nextvlad"  # key of the JSON document in the ONNX model's metadata_props
ONNX_SIZE_LIMIT = 2**31 - 1  # protobuf's limit on one serialised message
OUTPUT_NAME = "probabilities"
_FOLD_ANY = 2**62  # no size limit on constant folding


def _axes(serving: ServingModel) -> dict[str, dict[int, str]]:
    """Dynamic axes by input name (and the output's)."""
    axes = {name: {0: "batch"} for name in [*serving.input_names, OUTPUT_NAME]}
    if serving.frame_level:
        axes["frames"] = {0: "batch", 1: "frames"}
    return axes


def _dynamo_proto(serving: ServingModel) -> Any:
    """The ModelProto of the current exporter. ``dynamic_shapes`` is keyed by ``forward``'s
    parameter names; named axes become the graph's symbolic dimensions."""
    shapes: dict[str, Any] = {"x": {0: "batch"}}
    if serving.frame_level:
        shapes = {"x": {0: "batch", 1: "frames"}, "num_frames": {0: "batch"}}
    program = torch.onnx.export(
        serving,
        traced_inputs(serving),
        dynamo=True,
        opset_version=ONNX_OPSET,
        input_names=list(serving.input_names),
        output_names=[OUTPUT_NAME],
        dynamic_shapes=shapes,
        optimize=True,
    )
    assert program is not None
    # Fold every constant expression, whatever its size, as the TorchScript-based exporter
    # does: the default pass stops at 512 x 512 outputs, which leaves NeXtVLAD's stacked
    # assignment and attention weights (Eq. (6), (7)) a Concat computed at run time, and
    # int8 quantisation then keeps them float32 (+6.3 MB on nextvlad-8g-128k-2048h).
    import onnxscript.optimizer

    onnxscript.optimizer.optimize(
        program.model, input_size_limit=_FOLD_ANY, output_size_limit=_FOLD_ANY
    )
    model_proto = program.model_proto
    for node in model_proto.graph.node:  # the exporter's notes: source paths, stack traces
        del node.metadata_props[:]
    return model_proto


def _legacy_proto(serving: ServingModel) -> Any:
    """The ModelProto of the TorchScript-based exporter (traced), by way of a scratch file
    (and its external data, were the model over 2 GB)."""
    onnx = import_onnx()
    with tempfile.TemporaryDirectory(prefix="nextvlad-onnx-") as scratch:
        path = Path(scratch) / "model.onnx"
        _legacy_export(serving, path)
        return onnx.load_model(str(path))


def _legacy_export(serving: ServingModel, path: Path) -> None:
    torch.onnx.export(
        serving,
        traced_inputs(serving),
        str(path),
        dynamo=False,
        opset_version=LEGACY_ONNX_OPSET,
        input_names=list(serving.input_names),
        output_names=[OUTPUT_NAME],
        dynamic_axes=_axes(serving),
    )


def fp16_initializers(model_proto: Any) -> int:
    """Store every float32 initializer with two or more dimensions as float16, followed by a
    Cast back to float32 (ONNX Runtime folds the casts when it loads the model). Returns the
    number of tensors converted; values beyond float16's range stay float32."""
    import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    graph = model_proto.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or len(init.dims) < 2:
            continue
        values = numpy_helper.to_array(init)
        if not np.all(np.abs(values) <= np.finfo(np.float16).max):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}__fp16"))
        casts.append(helper.make_node("Cast", [init.name], [name], to=TensorProto.FLOAT))
    for node in reversed(casts):
        graph.node.insert(0, node)
    return len(casts)


def set_metadata(model_proto: Any, document: dict[str, Any]) -> None:
    """Store ``document`` as JSON under :data:`ONNX_METADATA_KEY` (replacing any)."""
    for prop in list(model_proto.metadata_props):
        if prop.key == ONNX_METADATA_KEY:
            model_proto.metadata_props.remove(prop)
    prop = model_proto.metadata_props.add()
    prop.key = ONNX_METADATA_KEY
    prop.value = json.dumps(document)


def _serialise(model_proto: Any) -> bytes:
    size = model_proto.ByteSize()
    if size >= ONNX_SIZE_LIMIT:
        raise ExportError(
            f"the ONNX model is {size / 1e9:.2f} GB, over ONNX's 2 GB limit on one file: use "
            "--dtype fp16 or --quantize int8"
        )
    return bytes(model_proto.SerializeToString())


def export_onnx(
    serving: ServingModel,
    out: str | Path,
    *,
    dtype: str = "fp32",
    quantize: str = "none",
    extra_metadata: dict[str, Any] | None = None,
    dynamo: bool = True,
) -> Path:
    """Write ``serving`` as one ONNX file with dynamic batch and frame axes; returns its Path.

    Inputs ``frames`` (batch, frames, D) + ``num_frames`` (batch,), or ``features`` (batch, D);
    output ``probabilities`` (batch, C). ``dynamo=False``: the TorchScript-based exporter
    (the fallback). Written atomically (``nextvlad.checkpoint.atomic_write_bytes``).
    """
    check_options(dtype, quantize)
    import_onnx()
    out = Path(out)
    exporter = "dynamo" if dynamo else "torchscript"
    try:
        with quiet(), torch.no_grad():
            model_proto = _dynamo_proto(serving) if dynamo else _legacy_proto(serving)
    except Exception as err:  # the exporters raise many kinds; report them as one
        hint = "" if not dynamo else " (--legacy-onnx selects the TorchScript-based exporter)"
        raise ExportError(f"ONNX export failed: {type(err).__name__}: {err}{hint}") from err
    document = metadata(
        serving, dtype=dtype, quantize=quantize, onnx_exporter=exporter, **(extra_metadata or {})
    )
    if dtype == "fp16":
        fp16_initializers(model_proto)
    if quantize == "int8":
        model_proto = quantize_onnx(model_proto)
    set_metadata(model_proto, document)
    atomic_write_bytes(out, _serialise(model_proto))
    return out
