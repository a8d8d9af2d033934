"""What every model returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class ModelOutput:
    """Model outputs. Probabilities are ``sigmoid(logits)``.

    logits: (B, C). For mixtures also branch_logits: (B, M, C) and mix_weights: (B, M).
    """

    logits: Tensor
    branch_logits: Tensor | None = None
    mix_weights: Tensor | None = None
