"""Initialisers of the reference implementation (TF slim), used by every ``reset_parameters``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


@torch.no_grad()
def variance_scaling_(weight: Tensor, fan_in: int, factor: float = 2.0) -> Tensor:
    """slim.variance_scaling_initializer() (He, fan-in): truncated normal, std sqrt(1.3*f/n)."""
    std = math.sqrt(1.3 * factor / max(1, fan_in))
    return nn.init.trunc_normal_(weight, std=std, a=-2.0 * std, b=2.0 * std)


@torch.no_grad()
def linear_variance_scaling_(linear: nn.Linear) -> None:
    """He-initialise a Linear's weight (out, in) over its fan-in; zero its bias."""
    variance_scaling_(linear.weight, linear.in_features)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


@torch.no_grad()
def linear_xavier_(linear: nn.Linear) -> None:
    """slim.fully_connected's default: Glorot uniform weight, zero bias."""
    nn.init.xavier_uniform_(linear.weight)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
