"""The reference Adam: TensorFlow 1's epsilon, checked against its update written out."""

from __future__ import annotations

import math

import pytest
import torch

from nextvlad.training.optim import ReferenceAdam, adam


def _tf1_adam(theta, grads, lr, eps, b1=0.9, b2=0.999):  # type: ignore[no-untyped-def]
    """TF1 AdamOptimizer's update, step by step (float64)."""
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        theta = theta - lr_t * m / (v.sqrt() + eps)
    return theta


@pytest.mark.parametrize("fused", [False, True])
def test_matches_tf1_adam_where_torch_adam_does_not(fused: bool) -> None:
    torch.manual_seed(0)
    theta0 = torch.randn(50, dtype=torch.float64)
    # Gradient elements of the size the per-tensor clipping leaves (1e-7): there the two
    # placements of epsilon differ.
    grads = [torch.randn(50, dtype=torch.float64) * 1e-7 for _ in range(5)]
    expected = _tf1_adam(theta0, grads, lr=2e-4, eps=1e-8)
    results = {}
    for name, cls in (("reference", ReferenceAdam), ("torch", torch.optim.Adam)):
        p = torch.nn.Parameter(theta0.clone())
        opt = cls([p], lr=2e-4, eps=1e-8, fused=fused)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        results[name] = p.detach()
    torch.testing.assert_close(results["reference"], expected, rtol=0, atol=1e-12)
    assert (results["torch"] - expected).abs().max() > 1e-6  # plain Adam is off by ~lr


def test_resumed_state_dict_continues_the_same_steps() -> None:
    torch.manual_seed(1)
    grads = [torch.randn(8) * 1e-6 for _ in range(4)]
    p = torch.nn.Parameter(torch.zeros(8))
    opt = adam([p], lr=1e-3, eps=1e-8)
    for g in grads:
        p.grad = g.clone()
        opt.step()
    q = torch.nn.Parameter(torch.zeros(8))
    first = adam([q], lr=1e-3, eps=1e-8)
    for g in grads[:2]:
        q.grad = g.clone()
        first.step()
    second = adam([q], lr=1e-3, eps=1e-8)
    second.load_state_dict(first.state_dict())
    for g in grads[2:]:
        q.grad = g.clone()
        second.step()
    torch.testing.assert_close(q.detach(), p.detach(), rtol=0, atol=0)
