"""Losses of the reference code, computed exactly as it does.

- ``cross_entropy``: YouTube-8M's cross-entropy on probabilities, with 1e-8 inside the logs,
  summed over classes and averaged over the batch (the paper's L_bce).
- ``distillation_kl``: Eq. (14)-(15), KL(p^e || p^m) between softmaxes over classes of the
  mixture and branch logits at temperature T, 1e-8 inside both logs, no stop-gradient.
- ``l2_penalty``: weight * sum(w²) / 2 over the classifier tensors.
- ``yt8m_loss``: the training objective, Eq. (16) for mixtures: CE(mixture) + Σ CE(branch)
  + λ · mean_batch Σ_m KL, plus the L2 penalty (λ = 9 plays the role of T²). With label
  weights (segment fine-tuning) every cross-entropy is weighted; the KL term is not: it
  matches whole distributions over the classes, rated or not.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_EPSILON = 1e-8


def cross_entropy(
    logits: Tensor, labels: Tensor, eps: float = LOG_EPSILON, *, weights: Tensor | None = None
) -> Tensor:
    """logits: (B, C); labels: (B, C) multi-hot -> scalar mean over B of the sum over C.

    ``weights`` (B, C): each term's weight (the 2019 segment task: 1 at the rated (segment,
    class) pairs, 0 elsewhere, as Google's ``CrossEntropyLoss`` with ``label_weights``): the
    weighted sum over C, still averaged over all B."""
    p = torch.sigmoid(logits)
    y = labels.to(p.dtype)
    ce = y * torch.log(p + eps) + (1.0 - y) * torch.log(1.0 - p + eps)  # (B, C)
    if weights is not None:
        ce = ce * weights.to(ce.dtype)
    return -ce.sum(dim=-1).mean()


def distillation_kl(
    mix_logits: Tensor, branch_logits: Tensor, temperature: float, eps: float = LOG_EPSILON
) -> Tensor:
    """Eq. (14)-(15). mix_logits: (B, C); branch_logits: (B, M, C) -> KL per (B, M)."""
    p = F.softmax(mix_logits / temperature, dim=-1).unsqueeze(1)  # (B, 1, C)
    q = F.softmax(branch_logits / temperature, dim=-1)  # (B, M, C)
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(dim=-1)  # (B, M)


def l2_penalty(tensors: Iterable[Tensor], weight: float) -> Tensor:
    """weight * Σ sum(t²) / 2 (TF's l2_regularizer)."""
    terms = [t.square().sum() / 2 for t in tensors]
    if not terms:
        return torch.zeros(())
    return weight * torch.stack(terms).sum()


def yt8m_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    branch_logits: Tensor | None = None,
    temperature: float = 3.0,
    distill_weight: float = 9.0,
    l2_tensors: Iterable[Tensor] = (),
    l2_weight: float = 1e-5,
    weights: Tensor | None = None,
) -> dict[str, Tensor]:
    """The reference's training loss and its terms.

    logits: (B, C) model (or mixture) logits; labels: (B, C) multi-hot; branch_logits:
    (B, M, C) for mixtures; weights: (B, C) label weights of every cross-entropy (None: all
    1). Returns ``total`` and the terms named as in the reference:
    ``label_loss`` (all cross-entropies), ``label_loss_mixture``, ``label_loss_aux`` (M,),
    ``regularization_loss_kl``, ``l2_regularization_sum``, ``reg_loss`` (KL + L2).
    """
    label_loss = cross_entropy(logits, labels, weights=weights)
    terms: dict[str, Tensor] = {"label_loss_mixture": label_loss}
    kl = torch.zeros((), dtype=logits.dtype, device=logits.device)
    if branch_logits is not None:
        aux = torch.stack(
            [
                cross_entropy(branch_logits[:, m], labels, weights=weights)
                for m in range(branch_logits.shape[1])
            ]
        )
        terms["label_loss_aux"] = aux
        label_loss = label_loss + aux.sum()
        if distill_weight:
            per_branch = distillation_kl(logits, branch_logits, temperature)  # (B, M)
            kl = distill_weight * per_branch.sum(dim=-1).mean()
    l2 = l2_penalty(l2_tensors, l2_weight).to(device=logits.device, dtype=logits.dtype)
    terms["label_loss"] = label_loss
    terms["regularization_loss_kl"] = kl
    terms["l2_regularization_sum"] = l2
    terms["reg_loss"] = kl + l2
    terms["total"] = label_loss + kl + l2
    return terms
