"""Export a trained model for serving: ONNX or TorchScript, uint8 frames in, probabilities out.

The exported graph is :class:`ServingModel` (``serving``): the input transform
(dequantisation, zeroed padding, reverse whitening of Eq. (11)), the model (a whole mixture or
one of its branches) and the sigmoid, in eval mode. Frame-level models take ``frames`` uint8
(B, T, D) and ``num_frames`` int64 (B,), with B and T free; video-level models take
``features`` float32 (B, D). Both return ``probabilities`` float32 (B, C).

- ``onnx``: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` underneath), or the
  TorchScript-based exporter with ``dynamo=False``, the documented fallback;
- ``torchscript``: ``torch.jit.trace``;
- ``quantize``: ``quantize="int8"``, dynamic int8 quantisation of the linear layers (ONNX
  Runtime's ``quantize_dynamic``; ``torch.ao``'s for TorchScript). ``dtype="fp16"`` stores the
  weight matrices in float16 and casts them back to float32 in the graph;
- ``runtime``: :func:`load_exported` and the predictors (``nextvlad predict`` on an ``.onnx``
  file);
- ``compare``: :func:`parity` on generated batches and :func:`compare_gap` on real ones.

Every file carries the model's configuration as JSON metadata and is written atomically. The
2nd YouTube-8M challenge (2018) limited models to 1 GB; :data:`BUDGET_BYTES` takes that as
10^9 bytes. See docs/export.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nextvlad.errors import UsageError
from nextvlad.export._common import (
    BUDGET_BYTES,
    DTYPES,
    FORMATS,
    QUANTIZATIONS,
    ExportError,
)
from nextvlad.export.compare import (
    PARITY_SHAPES,
    PARITY_TOLERANCE,
    GapComparison,
    compare_gap,
    iter_exported_predictions,
    parity,
)
from nextvlad.export.onnx import LEGACY_ONNX_OPSET, ONNX_METADATA_KEY, ONNX_OPSET, export_onnx
from nextvlad.export.runtime import (
    ExportedModel,
    OnnxPredictor,
    TorchScriptPredictor,
    load_exported,
)
from nextvlad.export.serving import METADATA_FORMAT, METADATA_VERSION, ServingModel, metadata
from nextvlad.export.torchscript import TORCHSCRIPT_METADATA_FILE, export_torchscript

__all__ = [
    "BUDGET_BYTES",
    "DTYPES",
    "FORMATS",
    "LEGACY_ONNX_OPSET",
    "METADATA_FORMAT",
    "METADATA_VERSION",
    "ONNX_METADATA_KEY",
    "ONNX_OPSET",
    "PARITY_SHAPES",
    "PARITY_TOLERANCE",
    "QUANTIZATIONS",
    "TORCHSCRIPT_METADATA_FILE",
    "ExportError",
    "ExportedModel",
    "GapComparison",
    "OnnxPredictor",
    "ServingModel",
    "TorchScriptPredictor",
    "compare_gap",
    "export",
    "export_onnx",
    "export_torchscript",
    "iter_exported_predictions",
    "load_exported",
    "metadata",
    "parity",
]


def export(
    serving: ServingModel,
    out: str | Path,
    *,
    format: str = "onnx",
    dtype: str = "fp32",
    quantize: str = "none",
    extra_metadata: dict[str, Any] | None = None,
    dynamo: bool = True,
) -> Path:
    """``export_onnx`` or ``export_torchscript`` by ``format``; ``dynamo=False`` selects the
    TorchScript-based ONNX exporter (ONNX only)."""
    if format not in FORMATS:
        raise UsageError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    if format == "torchscript":
        if not dynamo:
            raise UsageError("the legacy ONNX exporter applies to --format onnx only")
        return export_torchscript(
            serving, out, dtype=dtype, quantize=quantize, extra_metadata=extra_metadata
        )
    return export_onnx(
        serving, out, dtype=dtype, quantize=quantize, extra_metadata=extra_metadata, dynamo=dynamo
    )
