"""The NetVLAD aggregation layer (Arandjelović et al.; Miech et al.'s "Willow" video model).

Eq. (1)-(3) of the NeXtVLAD paper: soft assignment of each frame to K clusters (FC + batch
norm + softmax), residuals to K anchors summed over the real frames, intra-normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nextvlad.nn._init import linear_variance_scaling_, variance_scaling_
from nextvlad.nn.batchnorm import BatchNorm
from nextvlad.nn.linear import Linear
from nextvlad.nn.nextvlad import L2_NORM_EPS, check_positive
from nextvlad.nn.packing import FramePacking
from nextvlad.nn.pooling import as_frame_mask


class NetVLAD(nn.Module):
    """NetVLAD over frames: (B, M, N) -> (B, N*K), flattened as index n*K + k.

    Args:
        dim: N, size of a frame feature.
        num_clusters: K.
        reference_compat: batch-norm statistics over every row, padded frames included.
    """

    def __init__(
        self, dim: int = 1024, num_clusters: int = 64, *, reference_compat: bool = False
    ) -> None:
        super().__init__()
        check_positive("NetVLAD", dim=dim, num_clusters=num_clusters)
        self.dim = dim
        self.num_clusters = num_clusters
        self.output_dim = dim * num_clusters
        self.reference_compat = reference_compat
        self.assignment = Linear(dim, num_clusters, bias=False)  # Eq. (2)
        self.assignment_bn = BatchNorm(num_clusters)
        self.anchors = nn.Parameter(torch.empty(dim, num_clusters))  # c_k
        self.reset_parameters()

    def reset_parameters(self) -> None:
        linear_variance_scaling_(self.assignment)
        variance_scaling_(self.anchors, fan_in=self.dim)
        self.assignment_bn.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | FramePacking | None = None) -> Tensor:
        """x: (B, M, N) frame features; mask: (B, M) 1 for real frames, (B,) frame counts, or a
        packing ->
        (B, N*K). Every frame is computed and the padded ones masked (no host work)."""
        b, m, n = x.shape
        track = None
        if isinstance(mask, FramePacking):
            track, mask = mask.has_frames, mask.frame_mask
        elif mask is not None:
            mask = as_frame_mask(mask, m)  # (B,) frame counts or a (B, M) mask
            track = mask.sum() > 0  # (): a batch without a real frame moves no statistics
        logits = self.assignment(x.reshape(b * m, n))  # (B*M, K)
        bn_mask = None if mask is None or self.reference_compat else mask.reshape(b * m)
        logits = self.assignment_bn(logits, bn_mask, track=track)
        assign = F.softmax(logits.reshape(b, m, self.num_clusters), dim=-1)  # (B, M, K)
        if mask is not None:
            assign = assign * mask.unsqueeze(-1).to(assign.dtype)  # padded frames out
        a_sum = assign.sum(dim=1, keepdim=True)  # (B, 1, K)
        vlad = torch.bmm(x.transpose(1, 2), assign)  # Eq. (1), (3): (B, N, K)
        vlad = vlad - a_sum * self.anchors  # (B, N, K)
        vlad = F.normalize(vlad, p=2.0, dim=1, eps=L2_NORM_EPS)  # intra-normalisation
        return vlad.reshape(b, n * self.num_clusters)  # (B, N*K)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_clusters={self.num_clusters}"
