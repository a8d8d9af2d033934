"""Linear layers whose float32 products run through oneDNN on the CPU.

PyTorch's CPU build computes float32 matrix products with MKL, which on AMD processors does
not use their AVX-512 units: on the 2-core EPYC this project is measured on, MKL reaches about
170 GFLOP/s where oneDNN (also in PyTorch, and what TensorFlow uses) reaches 320-380 GFLOP/s,
for the same float32 arithmetic. :func:`linear` computes ``x @ W.T + b`` and its gradients
with oneDNN's matrix product (``torch.ops.mkldnn._linear_pointwise``) for float32 CPU tensors
outside autocast, and with ``torch.nn.functional.linear`` everywhere else (other devices and
dtypes, autocast, tracing and export). The results are float32 products like any other, in
another order of summation.

Set ``NEXTVLAD_ONEDNN_LINEAR=0`` to use ``torch.nn.functional.linear`` throughout.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _onednn_op() -> Any:
    if os.environ.get("NEXTVLAD_ONEDNN_LINEAR", "1") == "0":
        return None
    if not torch.backends.mkldnn.is_available():
        return None
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return None
    try:  # the op exists in every recent torch; check that it computes what it should
        x, w = torch.randn(3, 4), torch.randn(5, 4)
        if not torch.allclose(op(x, w, None, "none", [], ""), x @ w.t(), atol=1e-5):
            return None
    except RuntimeError:
        return None
    return op


_OP = _onednn_op()


def _mm(a: Tensor, w: Tensor) -> Tensor:
    """a @ w.T by oneDNN (a: (M, K), w: (N, K); each contiguous or the transpose of a
    contiguous matrix)."""
    return _OP(a, w, None, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """x @ W.T + b and its gradients, each a oneDNN matrix product."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # oneDNN's products of strided operands (a column slice of the features) fall back
        # to a reference kernel that is 1000s of times slower: give it plain layouts.
        x, weight = x.contiguous(), weight.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _OP(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _mm(grad, weight.t()) if ctx.needs_input_grad[0] else None  # (M, K)
        grad_w = _mm(grad.t(), x.t()) if ctx.needs_input_grad[1] else None  # (N, K)
        grad_b = grad.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _use_onednn(x: Tensor, weight: Tensor) -> bool:
    return (
        _OP is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.ndim == 2
        and x.shape[0] > 0
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``torch.nn.functional.linear``, by oneDNN for float32 CPU rows (see module doc)."""
    if _use_onednn(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state-dict keys) computed by :func:`linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
