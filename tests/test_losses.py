"""Losses: cross-entropy, distillation KL and L2 as the reference computes them."""

from __future__ import annotations

import numpy as np
import pytest
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


# Hand-made logits (B 2, M 2 branches, C 4) on which the two directions of the KL, and the
# temperatures 3 and 1, give clearly different values: the mixture is peaked on class 0, the
# first branch puts little mass there; the second branch is flat.
MIX = np.array([[6.0, 0.0, 0.0, 0.0], [0.0, 6.0, -3.0, 0.0]])
BRANCHES = np.array(
    [
        [[-6.0, 3.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]],
        [[6.0, 0.0, 0.0, -6.0], [0.0, 0.0, 0.0, 0.0]],
    ]
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) over the last axis, with the reference's 1e-8 inside both logs."""
    return (p * (np.log(p + 1e-8) - np.log(q + 1e-8))).sum(axis=-1)


def _eq_14(mix: np.ndarray, branches: np.ndarray, t_mix: float, t_branch: float) -> np.ndarray:
    """Eq. (14)-(15) written out: KL(p^e || p^m), p^e = softmax(z^e / T) of the mixture,
    p^m = softmax(z^m / T) of branch m -> (B, M)."""
    p_mix = _softmax(mix / t_mix)[:, None, :]  # (B, 1, C)
    p_branch = _softmax(branches / t_branch)  # (B, M, C)
    return _kl(p_mix, p_branch)


def test_kl_is_mixture_to_branch_at_temperature_t() -> None:
    expected = _eq_14(MIX, BRANCHES, 3.0, 3.0)  # (B, M)
    actual = distillation_kl(torch.from_numpy(MIX), torch.from_numpy(BRANCHES), temperature=3.0)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12, atol=1e-15)
    # What a wrong loss would give, each clearly apart from Eq. (14) on these inputs: the
    # other direction KL(p^m || p^e), no temperature (T = 1), the temperature on one side.
    p_mix, p_branch = _softmax(MIX / 3.0)[:, None, :], _softmax(BRANCHES / 3.0)
    wrong = {
        "KL(branch || mixture)": _kl(p_branch, p_mix),
        "T = 1": _eq_14(MIX, BRANCHES, 1.0, 1.0),
        "T on the mixture only": _eq_14(MIX, BRANCHES, 3.0, 1.0),
        "T on the branches only": _eq_14(MIX, BRANCHES, 1.0, 3.0),
    }
    for name, value in wrong.items():
        assert abs(value[0, 0] - expected[0, 0]) > 0.4 * expected[0, 0], name
        assert not np.allclose(actual.numpy(), value, rtol=0.05), name


def test_mixture_objective_uses_eq_14_at_the_given_temperature() -> None:
    mix, branches = torch.from_numpy(MIX), torch.from_numpy(BRANCHES)
    labels = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    for t in (3.0, 1.0, 5.0):
        terms = yt8m_loss(mix, labels, branch_logits=branches, temperature=t, distill_weight=9.0)
        expected = 9.0 * _eq_14(MIX, BRANCHES, t, t).sum(axis=1).mean()  # Σ_m, mean over B
        np.testing.assert_allclose(terms["regularization_loss_kl"].item(), expected, rtol=1e-12)
    at_3 = yt8m_loss(mix, labels, branch_logits=branches, temperature=3.0, distill_weight=9.0)
    at_1 = yt8m_loss(mix, labels, branch_logits=branches, temperature=1.0, distill_weight=9.0)
    assert abs(at_3["total"].item() - at_1["total"].item()) > 1.0  # T reaches the total


def test_kl_has_gradients_for_the_mixture_and_the_branches() -> None:
    """No stop-gradient (as the reference): the mixture is pulled towards the branches too."""
    mix = torch.from_numpy(MIX).requires_grad_()
    branches = torch.from_numpy(BRANCHES).requires_grad_()
    distillation_kl(mix, branches, temperature=3.0).sum().backward()
    assert mix.grad is not None and branches.grad is not None
    assert mix.grad.abs().max() > 1e-3 and branches.grad.abs().max() > 1e-3


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


def test_weighted_cross_entropy_counts_only_the_weighted_terms() -> None:
    """Segment fine-tuning (Google's CrossEntropyLoss with label_weights): each (example,
    class) term times its weight, summed over classes, averaged over all examples."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 9, generator=g, dtype=torch.float64)
    labels = (torch.rand(6, 9, generator=g) > 0.5).double()
    weights = (torch.rand(6, 9, generator=g) > 0.7).double()
    weights[0] = 0.0  # an example of no rated pair still counts in the mean
    p = torch.sigmoid(logits)
    total = 0.0
    for b in range(6):
        for c in range(9):
            if weights[b, c]:
                y = labels[b, c]
                total -= float(
                    y * torch.log(p[b, c] + 1e-8) + (1 - y) * torch.log(1 - p[b, c] + 1e-8)
                )
    assert float(cross_entropy(logits, labels, weights=weights)) == pytest.approx(total / 6)
    ones = torch.ones_like(weights)
    assert torch.equal(cross_entropy(logits, labels, weights=ones), cross_entropy(logits, labels))
    logits.requires_grad_(True)
    cross_entropy(logits, labels, weights=weights).backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[weights == 0] == 0) and torch.all(logits.grad[weights == 1] != 0)


def test_weights_reach_every_cross_entropy_of_a_mixture_but_not_the_kl() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 7, generator=g)
    branches = torch.randn(4, 3, 7, generator=g)
    labels = (torch.rand(4, 7, generator=g) > 0.5).float()
    weights = (torch.rand(4, 7, generator=g) > 0.5).float()
    terms = yt8m_loss(logits, labels, branch_logits=branches, distill_weight=5.0, weights=weights)
    plain = yt8m_loss(logits, labels, branch_logits=branches, distill_weight=5.0)
    assert torch.allclose(
        terms["label_loss_mixture"], cross_entropy(logits, labels, weights=weights)
    )
    for m in range(3):
        expected = cross_entropy(branches[:, m], labels, weights=weights)
        assert torch.allclose(terms["label_loss_aux"][m], expected)
    assert torch.equal(terms["regularization_loss_kl"], plain["regularization_loss_kl"])
    assert not torch.allclose(terms["label_loss"], plain["label_loss"])
