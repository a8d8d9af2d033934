"""Mixture of frame models with a gate on the frame-mean features (Fig. 5, Eq. (12)-(13))."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nextvlad.models.config import MixtureConfig
from nextvlad.models.frame import FrameModel, frame_input
from nextvlad.models.output import ModelOutput
from nextvlad.nn import BatchNorm, masked_mean
from nextvlad.nn._init import linear_variance_scaling_
from nextvlad.nn.linear import Linear
from nextvlad.nn.packing import FramePacking


class MixtureModel(nn.Module):
    """M frame-model branches; mixture logits z^e = sum_m a_m(x̄) z^m (Eq. (12)), with the
    gate a(x̄) = softmax(FC(BN(x̄))) on the mean frame features x̄ (Eq. (13)).

    In the default mode x̄ is the mean over the real frames. With ``reference_compat`` it is
    the mean over all T frames, padding included, as the original code computes it (which
    pads every video to 300 frames).
    """

    def __init__(self, config: MixtureConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.feature_dim
        self.gate_bn = BatchNorm(dim, unbiased_update=True)  # TF fused batch norm
        self.gate = Linear(dim, config.num_branches)
        self.branches = nn.ModuleList(FrameModel(config.branch) for _ in range(config.num_branches))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.gate_bn.reset_parameters()
        linear_variance_scaling_(self.gate)

    def regularized_parameters(self) -> list[Tensor]:
        """Every branch's classifier tensors (the reference penalises each branch's)."""
        return [p for b in self.branches for p in b.regularized_parameters()]  # type: ignore[operator]

    def extract_branch(self, index: int) -> FrameModel:
        """A standalone copy of branch ``index`` (the paper's "single NeXtVLAD", Table 2)."""
        if not 0 <= index < len(self.branches):
            raise IndexError(f"branch {index} out of range: the mixture has {len(self.branches)}")
        branch = copy.deepcopy(self.branches[index])
        assert isinstance(branch, FrameModel)
        return branch

    def forward(
        self, features: Tensor, num_frames: Tensor | FramePacking | None = None
    ) -> ModelOutput:
        """features: (B, T, D); num_frames: (B,) (best on the host) or the batch's
        :class:`FramePacking` -> logits (B, C), branch_logits (B, M, C), mix_weights (B, M)."""
        packing = frame_input(features, num_frames, self.config.feature_dim)
        track = None if packing is None else packing.has_frames
        if packing is None or self.config.reference_compat:
            mean = features.mean(dim=1)  # (B, D)
        else:
            mean = masked_mean(features, packing)  # (B, D)
        weights = F.softmax(self.gate(self.gate_bn(mean, track=track)), dim=-1)  # Eq. (13)
        branch_logits = torch.stack(
            [branch(features, packing).logits for branch in self.branches], dim=1
        )  # (B, M, C)
        logits = (weights.unsqueeze(-1) * branch_logits).sum(dim=1)  # (B, C), Eq. (12)
        return ModelOutput(logits=logits, branch_logits=branch_logits, mix_weights=weights)
