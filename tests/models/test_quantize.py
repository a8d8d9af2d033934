"""int8 inference copies: which layers become int8, how close they stay, what is left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nextvlad.models import create_model
from nextvlad.models.quantize import quantize_int8
from nextvlad.nn import NeXtVLAD


def _int8_layers(model: nn.Module) -> set[str]:
    return {
        name
        for name, m in model.named_modules()
        if "DynamicQuantizedLinear" in type(m).__name__
        or type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")
    }


@pytest.mark.parametrize("name", ["nextvlad-8g-16k-256h", "mix3-nextvlad-8g-112k-2048h"])
def test_int8_copy_quantises_the_per_frame_and_hidden_layers(name: str) -> None:
    torch.manual_seed(0)
    overrides = (
        {"num_classes": 25}
        if "16k" in name
        else {"num_clusters": 8, "hidden_size": 64, "num_classes": 25}
    )
    model = create_model(name, **overrides).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_int8(model)
    layers = _int8_layers(quantized)
    prefix = "branches.0." if "mix" in name else ""
    for layer in ("aggregators.0.expand", "aggregators.0.head", "hidden", "classifier.fc"):
        assert prefix + layer in layers, sorted(layers)
    assert not any(n.endswith(("assignment", "group_attention")) for n in layers)  # in head
    for k, v in model.state_dict().items():  # the float model is left as it was
        assert torch.equal(v, before[k]), k
    assert all(isinstance(m, NeXtVLAD) is False or m.head is None for m in model.modules())
    x = torch.randn(6, 40, 1152)
    num_frames = torch.tensor([40, 30, 12, 1, 0, 25])
    with torch.no_grad():
        expected = torch.sigmoid(model(x, num_frames).logits)
        got = torch.sigmoid(quantized(x, num_frames).logits)
    error = (got - expected).abs()
    assert float(error.max()) < 0.05 and float(error.mean()) < 0.01
    assert float(error.max()) > 0  # it did change the arithmetic
