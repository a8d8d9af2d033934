"""Per-tensor gradient clipping against the definition of TF1's ``tf.clip_by_norm``.

``tf.clip_by_norm(g, c) = g * c / max(||g||_2, c)``: a gradient whose norm is at most c is
left as it is (zero stays zero), a longer one is scaled to norm c, and each tensor is clipped
on its own, not by the norm of all of them together (``tf.clip_by_global_norm``). The
reference clips every gradient tensor so, with c = 1.0, before Adam.

The gradients here are made by hand, with norms that are exact in float32 (0.5, 1.0, 5.0,
13.0), so that "at the limit" is exactly at it.
"""

from __future__ import annotations

import math

import pytest
import torch

from nextvlad.training.step import Recipe, TrainStep, clip_each_gradient, gradient_norms

# Hand-made gradients and their exact norms.
BELOW = torch.tensor([0.25, 0.25, 0.25, 0.25])  # norm 0.5
AT = torch.tensor([[0.5, 0.5], [0.5, 0.5]])  # norm 1.0
ABOVE = torch.tensor([3.0, 0.0, 4.0])  # norm 5.0
FAR_ABOVE = torch.tensor([[5.0], [12.0]])  # norm 13.0
ZERO = torch.zeros(2, 3)


def _clip_by_norm(g: torch.Tensor, c: float) -> torch.Tensor:
    """TF1's clip_by_norm, in float64 from its definition."""
    g = g.double()
    return g * c / max(math.sqrt(float((g * g).sum())), c)


def _parameters(*grads: torch.Tensor) -> list[torch.nn.Parameter]:
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g.clone()
        params.append(p)
    return params


def test_below_and_at_the_limit_nothing_changes() -> None:
    params = _parameters(BELOW, AT)
    clip_each_gradient(params, 1.0)
    assert torch.equal(params[0].grad, BELOW)  # bit for bit: the factor is exactly 1
    assert torch.equal(params[1].grad, AT)


def test_above_the_limit_the_norm_becomes_the_limit() -> None:
    params = _parameters(ABOVE, FAR_ABOVE)
    clip_each_gradient(params, 1.0)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.6, 0.0, 0.8]))
    torch.testing.assert_close(params[1].grad, torch.tensor([[5.0 / 13], [12.0 / 13]]))
    for p in params:
        assert p.grad is not None
        assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-6)


def test_a_zero_gradient_stays_zero_and_finite() -> None:
    params = _parameters(ZERO)
    clip_each_gradient(params, 1.0)
    assert params[0].grad is not None
    assert torch.equal(params[0].grad, ZERO)


@pytest.mark.parametrize("limit", [0.5, 1.0, 2.0, 5.0, 13.0, 100.0])
def test_each_tensor_is_clipped_on_its_own(limit: float) -> None:
    """Every tensor against clip_by_norm with its own norm; never the global norm's factor
    (sqrt(0.25 + 1 + 25 + 169) = 13.96 here, which would shrink even the short ones)."""
    grads = (BELOW, AT, ABOVE, FAR_ABOVE, ZERO)
    params = _parameters(*grads)
    clip_each_gradient(params, limit)
    global_norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    for p, g in zip(params, grads, strict=True):
        assert p.grad is not None
        expected = _clip_by_norm(g, limit)
        torch.testing.assert_close(p.grad.double(), expected, rtol=1e-6, atol=0)
        by_global_norm = g.double() * limit / max(global_norm, limit)
        if limit < global_norm and g.abs().sum() > 0 and float(g.norm()) < global_norm:
            assert not torch.allclose(p.grad.double(), by_global_norm, rtol=1e-3)


def test_the_given_norms_are_used_and_a_missing_gradient_is_skipped() -> None:
    with_grad = _parameters(ABOVE)[0]
    without = torch.nn.Parameter(torch.ones(3))  # frozen or unused: no gradient
    norms = gradient_norms([with_grad, without])
    assert len(norms) == 1 and norms[0].item() == 5.0
    clip_each_gradient([with_grad, without], 1.0, norms)
    assert without.grad is None
    torch.testing.assert_close(with_grad.grad, torch.tensor([0.6, 0.0, 0.8]))


def test_a_limit_of_zero_turns_clipping_off() -> None:
    """``--clip-norm 0`` means no clipping (TF's clip_by_norm(g, 0) would zero everything)."""
    params = _parameters(ABOVE, BELOW)
    clip_each_gradient(params, 0.0)
    assert torch.equal(params[0].grad, ABOVE) and torch.equal(params[1].grad, BELOW)


class _Tiny(torch.nn.Module):
    """Parameters shaped like the hand-made gradients; what TrainStep asks of a model."""

    def __init__(self) -> None:
        super().__init__()
        self.tensors = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros_like(g)) for g in (BELOW, AT, ABOVE, FAR_ABOVE, ZERO)]
        )

    def regularized_parameters(self) -> list[torch.Tensor]:
        return []


@pytest.mark.parametrize("limit", [1.0, 2.5])
def test_the_training_step_clips_each_gradient_at_its_recipes_limit(limit: float) -> None:
    """The step's own clipping (what runs between backward and Adam) on hand-made gradients,
    at the recipe's ``clip_norm``, and its finiteness flag."""
    model = _Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    step = TrainStep(
        model,
        torch.nn.Identity(),  # type: ignore[arg-type]
        optimizer,
        Recipe(clip_norm=limit),
        device=torch.device("cpu"),
    )
    grads = (BELOW, AT, ABOVE, FAR_ABOVE, ZERO)
    for p, g in zip(model.tensors, grads, strict=True):
        p.grad = g.clone()
    finite = step._clip_and_check(torch.tensor(1.0))
    assert bool(finite)
    for p, g in zip(model.tensors, grads, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad.double(), _clip_by_norm(g, limit), rtol=1e-6, atol=0)
