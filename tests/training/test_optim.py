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


def test_the_fused_kernel_skips_an_update_where_found_inf_is_set() -> None:
    """``nextvlad.training.step`` skips a non-finite step on the device through
    ``torch.optim.Adam``'s ``found_inf`` attribute, a private protocol of torch's GradScaler.
    If torch renames or drops it, this fails: the step would then update with NaN
    gradients."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4))
    optimizer = torch.optim.Adam([weight], lr=0.1, fused=True)
    weight.grad = torch.ones(4)
    optimizer.step()
    before = weight.detach().clone()
    state = {k: v.clone() for k, v in optimizer.state[weight].items()}
    weight.grad = torch.full((4,), float("nan"))
    optimizer.found_inf = torch.tensor(1.0)  # type: ignore[attr-defined]
    optimizer.step()
    del optimizer.found_inf  # type: ignore[attr-defined]
    assert torch.equal(weight.detach(), before), "found_inf no longer skips the fused update"
    for key, value in optimizer.state[weight].items():
        assert torch.equal(value, state[key]), key
    weight.grad = torch.ones(4)
    optimizer.found_inf = torch.tensor(0.0)  # type: ignore[attr-defined]
    optimizer.step()
    assert not torch.equal(weight.detach(), before)
    assert int(optimizer.state[weight]["step"]) == 2


def test_the_training_step_uses_the_fused_kernel_here() -> None:
    """The step's skip on the device is the fused kernel's (another optimizer makes the step
    read a flag a step): this torch has it on the CPU."""
    from nextvlad.training.optim import adam

    weight = torch.nn.Parameter(torch.randn(4))
    assert adam([weight], 1e-3, 1e-8).defaults.get("fused") is True
