"""int8 inference: dynamic quantisation of a model's linear layers (``--quantize int8``).

The weights of every linear layer are stored in int8 (per tensor) and the inputs are
quantised on the fly, batch by batch; the products run on the CPU's int8 units (fbgemm or
oneDNN, VNNI where the processor has it). NeXtVLAD's per-frame layers are included: the
expansion FC and the stacked soft-assignment and attention FCs (as one int8 layer, ``head``),
which carry most of a frame-level model's work, then the hidden FC and the classifier. The
batch norms, softmaxes and sums stay float32. The 2018 winners quantised their FCs like this
to fit the 1 GB limit; ``benchmarks/train_throughput.py --modes int8`` measures the speed,
``nextvlad eval --quantize int8`` the GAP.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from nextvlad.errors import ConfigError
from nextvlad.nn import Linear, NeXtVLAD


def as_torch_linears(model: nn.Module) -> nn.Module:
    """Make the model's ``nextvlad.nn.Linear`` layers plain ``torch.nn.Linear`` (in place):
    torch.ao's quantiser swaps exactly ``nn.Linear`` modules. Their function is unchanged."""
    for module in model.modules():
        if type(module) is Linear:
            module.__class__ = nn.Linear  # type: ignore[assignment]
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of ``model`` for inference (CPU), in eval mode; the model is untouched."""
    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError:
        raise ConfigError("int8 needs torch.ao.quantization, which this torch lacks") from None
    model = copy.deepcopy(model).cpu().eval()
    skip: set[int] = set()
    for layer in model.modules():
        if isinstance(layer, NeXtVLAD):
            layer.folded = False
            weight = layer._head_weight().detach()  # (G*K + G, λN)
            head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            head.weight = nn.Parameter(weight.clone(), requires_grad=False)
            layer.head = head
            skip.update(id(m) for m in (layer.assignment, layer.group_attention))
    as_torch_linears(model)
    spec = {
        name: default_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and id(module) not in skip
    }
    with warnings.catch_warnings():  # torch.ao's deprecation notices
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8)
