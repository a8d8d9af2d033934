"""int8 exports: dynamic int8 quantisation of the linear layers (``--quantize int8``).

ONNX: ONNX Runtime's ``quantize_dynamic`` on the exported graph (every MatMul/Gemm with a
constant weight). TorchScript: ``torch.ao``'s ``quantize_dynamic`` on the linear layers
outside the NeXtVLAD/NetVLAD layers, before tracing. Weights are int8 with one scale per
tensor; activations are quantised on the fly, batch by batch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nextvlad.export._common import ExportError, import_onnx, quiet


def quantize_onnx(model_proto: Any) -> Any:
    """An int8 copy of an ONNX ModelProto (ONNX Runtime's ``quantize_dynamic``)."""
    onnx = import_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="nextvlad-int8-") as scratch:
        out = Path(scratch) / "int8.onnx"
        with quiet():
            # 7-bit weights: 8-bit ones can saturate the u8 x s8 products of x86 kernels
            # without VNNI (ONNX Runtime's advice); on the AVX2 test machine the largest
            # error in a probability fell from 2.9e-2 to 5.2e-3
            quantize_dynamic(model_proto, out, weight_type=QuantType.QInt8, reduce_range=True)
        return onnx.load_model(str(out))


def int8_linear(module: nn.Module) -> nn.Module:
    """``torch.ao`` dynamic int8 quantisation of the linear layers outside the VLAD layers
    (in place; returns the quantised module).

    NeXtVLAD and NetVLAD read their FC weights directly (stacked or folded products), which a
    quantised module does not offer, so their linear layers stay float32: they hold a few
    percent of a model's weights (the hidden FC and the classifier hold most of them)."""
    from nextvlad.models.quantize import as_torch_linears
    from nextvlad.nn import NetVLAD, NeXtVLAD

    as_torch_linears(module)
    try:
        with quiet():  # importing torch.ao warns of its deprecation
            from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise ExportError(
            "int8 TorchScript needs torch.ao.quantization, which this torch lacks: use "
            "--format onnx"
        ) from None
    inside = {
        id(sub)
        for layer in module.modules()
        if isinstance(layer, NeXtVLAD | NetVLAD)
        for sub in layer.modules()
    }
    spec = {
        name: default_dynamic_qconfig
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Linear) and id(sub) not in inside
    }
    with quiet():
        return quantize_dynamic(module, spec, dtype=torch.qint8)
