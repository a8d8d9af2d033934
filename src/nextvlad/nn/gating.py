"""Context gating (Miech et al. 2017) and the paper's SE context gating (Fig. 4, Eq. (10))."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nextvlad.nn._init import linear_variance_scaling_
from nextvlad.nn.batchnorm import BatchNorm
from nextvlad.nn.linear import Linear
from nextvlad.nn.nextvlad import check_positive


class ContextGating(nn.Module):
    """y = x * sigmoid(BN(W x)), W: dim x dim (the Willow model's gating)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        check_positive("ContextGating", dim=dim)
        self.dim = dim
        self.fc = Linear(dim, dim, bias=False)
        self.bn = BatchNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        linear_variance_scaling_(self.fc)
        self.bn.reset_parameters()

    def forward(self, x: Tensor, track: Tensor | None = None) -> Tensor:
        """x: (B, F) -> (B, F); track: see ``BatchNorm.forward``."""
        return x * torch.sigmoid(self.bn(self.fc(x), track=track))


class SEContextGating(nn.Module):
    """Squeeze-and-excitation context gating, 2F²/r parameters (Eq. (10)).

    y = x * sigmoid(W2 ReLU(BN(W1 x))), W1: F -> F/r and W2: F/r -> F, both without bias,
    exactly as the reference (`gating_weights_1`, `gating_bn`, `gating_weights_2`; the batch
    norm is TF's fused one, hence the unbiased moving-variance update).
    """

    def __init__(self, dim: int, reduction: int = 8) -> None:
        super().__init__()
        check_positive("SEContextGating", dim=dim, reduction=reduction)
        if dim // reduction == 0:
            raise ValueError(f"SEContextGating: reduction {reduction} leaves no units of {dim}")
        self.dim = dim
        self.reduction = reduction
        self.fc1 = Linear(dim, dim // reduction, bias=False)
        self.bn = BatchNorm(dim // reduction, unbiased_update=True)
        self.fc2 = Linear(dim // reduction, dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        linear_variance_scaling_(self.fc1)
        linear_variance_scaling_(self.fc2)
        self.bn.reset_parameters()

    def forward(self, x: Tensor, track: Tensor | None = None) -> Tensor:
        """x: (B, F) -> (B, F); track: see ``BatchNorm.forward``."""
        gates = torch.relu(self.bn(self.fc1(x), track=track))  # (B, F/r)
        return x * torch.sigmoid(self.fc2(gates))  # (B, F)
