"""Batch norm semantics, gating and classifiers."""

from __future__ import annotations

import pytest
import torch

from nextvlad.nn import (
    BatchNorm,
    ContextGating,
    LogisticClassifier,
    MoEClassifier,
    SEContextGating,
)


@pytest.mark.parametrize("unbiased", [False, True])
def test_batchnorm_update_follows_tf(unbiased: bool) -> None:
    bn = BatchNorm(3, unbiased_update=unbiased).train()
    x = torch.randn(5, 3)
    out = bn(x)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    torch.testing.assert_close(out, (x - mean) / torch.sqrt(var + 1e-3))
    update_var = x.var(0, unbiased=unbiased)
    torch.testing.assert_close(bn.running_mean, 0.001 * mean)
    torch.testing.assert_close(bn.running_var, 0.999 + 0.001 * update_var)


def test_batchnorm_mask_uses_real_rows_only() -> None:
    x = torch.randn(6, 2)
    mask = torch.tensor([1, 1, 0, 1, 0, 0.0])
    bn, ref = BatchNorm(2).train(), BatchNorm(2).train()
    out = bn(x, mask)
    expected = ref(x[mask.bool()])
    torch.testing.assert_close(out[mask.bool()], expected)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)


def test_batchnorm_eval_uses_moving_statistics() -> None:
    bn = BatchNorm(2).eval()
    with torch.no_grad():
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0)
    x = torch.randn(3, 2)
    torch.testing.assert_close(bn(x), (x - 1.0) / torch.sqrt(torch.tensor(4.0 + 1e-3)))


def test_se_context_gating_parameters_follow_eq_10() -> None:
    gating = SEContextGating(64, reduction=8)
    weights = gating.fc1.weight.numel() + gating.fc2.weight.numel()
    assert weights == 2 * 64 * 64 // 8
    out = gating.eval()(torch.randn(4, 64))
    assert out.shape == (4, 64)
    with pytest.raises(ValueError, match="leaves no units"):
        SEContextGating(4, reduction=8)


def test_context_gating_gates_between_zero_and_input() -> None:
    gating = ContextGating(5).eval()
    x = torch.rand(3, 5) + 0.1
    out = gating(x)
    assert torch.all(out > 0) and torch.all(out < x)


def test_moe_logits_are_the_starter_code_probability() -> None:
    torch.manual_seed(0)
    moe = MoEClassifier(6, 4, num_mixtures=3)
    x = torch.randn(5, 6, dtype=torch.float64)
    moe = moe.double()
    gates = torch.softmax(moe.gates(x).reshape(5, 4, 4), dim=-1)
    experts = torch.sigmoid(moe.experts(x).reshape(5, 4, 3))
    probability = (gates[..., :3] * experts).sum(-1)
    torch.testing.assert_close(torch.sigmoid(moe(x)), probability)
    assert len(moe.regularized_parameters()) == 2


def test_logistic_classifier() -> None:
    clf = LogisticClassifier(3, 2)
    assert clf(torch.zeros(1, 3)).shape == (1, 2)
    with pytest.raises(ValueError):
        LogisticClassifier(3, 0)
