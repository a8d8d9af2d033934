"""Losses: cross-entropy, distillation KL and L2 as the reference computes them."""

from __future__ import annotations

import numpy as np
import torch

from nextvlad.losses import cross_entropy, distillation_kl, l2_penalty, yt8m_loss


def test_cross_entropy_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6)) * 5
    labels = (rng.random((4, 6)) < 0.4).astype(np.float64)
    p = 1 / (1 + np.exp(-logits))
    expected = -(labels * np.log(p + 1e-8) + (1 - labels) * np.log(1 - p + 1e-8)).sum(1).mean()
    actual = cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels))
    np.testing.assert_allclose(actual.item(), expected, rtol=1e-12)
    # Saturated logits stay finite thanks to the 1e-8 inside the logs.
    assert torch.isfinite(cross_entropy(torch.tensor([[100.0, -100.0]]), torch.tensor([[0, 1]])))


def test_kl_is_zero_for_identical_logits_and_positive_otherwise() -> None:
    mix = torch.randn(3, 5)
    same = distillation_kl(mix, mix.unsqueeze(1).repeat(1, 2, 1), temperature=3.0)
    torch.testing.assert_close(same, torch.zeros(3, 2), atol=1e-6, rtol=0)
    other = distillation_kl(mix, torch.randn(3, 2, 5), temperature=3.0)
    assert (other > 0).all()


def test_mixture_objective_is_eq_16() -> None:
    torch.manual_seed(0)
    mix, branches = torch.randn(4, 5), torch.randn(4, 3, 5)
    labels = (torch.rand(4, 5) < 0.5).float()
    w = [torch.randn(2, 5), torch.randn(5)]
    terms = yt8m_loss(mix, labels, branch_logits=branches, l2_tensors=w, temperature=3.0)
    expected = (
        cross_entropy(mix, labels)
        + sum(cross_entropy(branches[:, m], labels) for m in range(3))
        + 9.0 * distillation_kl(mix, branches, 3.0).sum(1).mean()
        + 1e-5 * sum((t**2).sum() / 2 for t in w)
    )
    torch.testing.assert_close(terms["total"], expected)
    no_distill = yt8m_loss(mix, labels, branch_logits=branches, distill_weight=0.0)
    assert no_distill["regularization_loss_kl"] == 0


def test_l2_penalty() -> None:
    torch.testing.assert_close(l2_penalty([torch.tensor([3.0, 4.0])], 0.1), torch.tensor(1.25))
    assert l2_penalty([], 0.1) == 0
