"""Video-level classifiers: logistic regression and the starter code's mixture of experts.

Both return logits; probabilities are sigmoid(logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nextvlad.nn._init import linear_xavier_
from nextvlad.nn.linear import Linear
from nextvlad.nn.nextvlad import check_positive


class LogisticClassifier(nn.Module):
    """Logits = W x + b (the reference's `LogisticModel`, L2-regularised weight and bias)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        check_positive("LogisticClassifier", dim=dim, num_classes=num_classes)
        self.fc = Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        linear_xavier_(self.fc)

    def regularized_parameters(self) -> list[Tensor]:
        """Tensors the reference applies its L2 penalty to."""
        return [self.fc.weight, self.fc.bias]

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, F) -> logits (B, C)."""
        return self.fc(x)


class MoEClassifier(nn.Module):
    """Mixture of logistic experts per class (YouTube-8M starter code's `MoeModel`).

    p_c = sum_m softmax_m(gates)_c,m * sigmoid(expert_c,m), with a dummy (M+1)-th expert that
    always says 0. Returned as logits log p - log(1 - p), computed in log space.
    """

    def __init__(self, dim: int, num_classes: int, num_mixtures: int = 2) -> None:
        super().__init__()
        check_positive("MoEClassifier", dim=dim, num_classes=num_classes)
        check_positive("MoEClassifier", num_mixtures=num_mixtures)
        self.num_classes = num_classes
        self.num_mixtures = num_mixtures
        self.gates = Linear(dim, num_classes * (num_mixtures + 1), bias=False)
        self.experts = Linear(dim, num_classes * num_mixtures)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        linear_xavier_(self.gates)
        linear_xavier_(self.experts)

    def regularized_parameters(self) -> list[Tensor]:
        """Tensors the starter code applies its L2 penalty to (weights only)."""
        return [self.gates.weight, self.experts.weight]

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, F) -> logits (B, C)."""
        b = x.shape[0]
        m = self.num_mixtures
        gates = self.gates(x).reshape(b, self.num_classes, m + 1)
        log_gates = F.log_softmax(gates, dim=-1)  # (B, C, M + 1)
        experts = self.experts(x).reshape(b, self.num_classes, m)  # (B, C, M)
        log_p = torch.logsumexp(log_gates[..., :m] + F.logsigmoid(experts), dim=-1)  # (B, C)
        log_not_p = torch.logsumexp(
            torch.cat([log_gates[..., :m] + F.logsigmoid(-experts), log_gates[..., m:]], -1),
            dim=-1,
        )  # (B, C)
        return log_p - log_not_p
