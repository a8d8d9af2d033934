"""The NeXtVLAD aggregation layer (Lin et al. 2018, Sec. 3.2; Eq. (5)-(8), mask Eq. (18)-(19))."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nextvlad.nn._init import linear_variance_scaling_, variance_scaling_
from nextvlad.nn.batchnorm import BatchNorm

# tf.nn.l2_normalize divides by sqrt(max(sum(x^2), 1e-12)), i.e. by max(||x||, 1e-6).
L2_NORM_EPS = 1e-6


def check_positive(layer: str, **sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{layer}: {name} must be a positive integer, got {value!r}")


class NeXtVLAD(nn.Module):
    """NeXtVLAD: group-wise NetVLAD over expanded frame features, with group attention.

    Each frame x_i (N) is expanded to ẋ_i (λN) by a linear FC, split into G groups of λN/G;
    each group is softly assigned to K clusters shared by all groups (Eq. (6), an FC without
    bias, batch norm and softmax) and weighted by a sigmoid group attention (Eq. (7)); the
    residuals to the K anchors are summed over frames and groups (Eq. (8)), intra-normalised
    and batch-normed. Output: (B, λN/G * K), flattened as index f*K + k like the reference.

    Args:
        dim: N, size of a frame feature.
        num_clusters: K.
        groups: G; must divide expansion * dim.
        expansion: λ.
        reference_compat: compute the soft-assignment batch-norm statistics over every row,
            padded frames included, as the original TensorFlow code does. The default counts
            only real frames, so that padding changes nothing.
        folded: compute the same function with the expansion FC folded into the layers after
            it (see ``forward_folded``): fewer operations per frame, same parameters.
        skip_padding: run the per-frame layers on the real frames only (given a mask), not
            on the padded ones: the same result, less work on batches of unequal videos.
    """

    def __init__(
        self,
        dim: int = 1024,
        num_clusters: int = 128,
        groups: int = 8,
        expansion: int = 2,
        *,
        reference_compat: bool = False,
        folded: bool = False,
        skip_padding: bool = True,
    ) -> None:
        super().__init__()
        check_positive("NeXtVLAD", dim=dim, num_clusters=num_clusters, groups=groups)
        check_positive("NeXtVLAD", expansion=expansion)
        if (expansion * dim) % groups:
            raise ValueError(
                f"NeXtVLAD: groups ({groups}) must divide expansion * dim ({expansion} * {dim})"
            )
        self.dim = dim
        self.num_clusters = num_clusters
        self.groups = groups
        self.expansion = expansion
        self.group_dim = expansion * dim // groups  # λN/G
        self.output_dim = self.group_dim * num_clusters
        self.reference_compat = reference_compat
        self.folded = folded
        self.skip_padding = skip_padding

        wide = expansion * dim
        self.expand = nn.Linear(dim, wide)  # x -> ẋ
        self.group_attention = nn.Linear(wide, groups)  # Eq. (7)
        self.assignment = nn.Linear(wide, groups * num_clusters, bias=False)  # Eq. (6)
        self.assignment_bn = BatchNorm(groups * num_clusters)
        self.anchors = nn.Parameter(torch.empty(self.group_dim, num_clusters))  # c_k, shared
        self.vlad_bn = BatchNorm(self.output_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        linear_variance_scaling_(self.expand)
        linear_variance_scaling_(self.group_attention)
        linear_variance_scaling_(self.assignment)
        variance_scaling_(self.anchors, fan_in=self.group_dim)
        self.assignment_bn.reset_parameters()
        self.vlad_bn.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, M, N) frame features; mask: (B, M) 1 for real frames -> (B, λN/G * K)."""
        b, m, _ = x.shape
        g, k, f = self.groups, self.num_clusters, self.group_dim
        frames, rows, frame_mask = self._frames(x, mask)  # (R, N)
        if self.folded:
            return self._forward_folded(x, frames, rows, frame_mask)
        x_dot = self.expand(frames)  # (R, λN)
        logits = F.linear(x_dot, self._head_weight())  # (R, G*K + G): Eq. (6) and (7) at once
        assign = self._assign(logits, frame_mask)  # (R, G*K)
        assign = _unpack(assign, rows, b * m).reshape(b, m * g, k)  # (B, M*G, K)
        a_sum = assign.sum(dim=1, keepdim=True)  # (B, 1, K)
        x_tilde = _unpack(x_dot, rows, b * m).reshape(b, m * g, f)  # (B, M*G, λN/G)
        vlad = torch.bmm(x_tilde.transpose(1, 2), assign)  # Eq. (5), (8): (B, λN/G, K)
        vlad = vlad - a_sum * self.anchors  # (B, λN/G, K)
        vlad = F.normalize(vlad, p=2.0, dim=1, eps=L2_NORM_EPS)  # intra-normalisation
        vlad = vlad.reshape(b, f * k)  # (B, λN/G*K), index f*K + k
        return self.vlad_bn(vlad)

    def _frames(
        self, x: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The frames the per-frame layers run on: (R, N) rows, their indices among the B*M
        frames (None: all of them) and the mask still to apply to them (None: all real).

        With ``skip_padding`` (and not ``reference_compat``, whose batch-norm statistics count
        padded frames) only the real frames are kept: R = their number, and the results are
        exactly those of masking, since a padded frame's assignment is zero either way and the
        masked batch norm counts real frames only.
        """
        b, m, n = x.shape
        flat = x.reshape(b * m, n)  # (B*M, N)
        if mask is None:
            return flat, None, None
        flat_mask = mask.reshape(b * m)  # (B*M,)
        if self.reference_compat:
            return flat, None, flat_mask
        if not self.skip_padding:
            return flat, None, None if bool(flat_mask.all()) else flat_mask
        rows = flat_mask.nonzero().squeeze(1)  # (R,)
        if rows.numel() == b * m:
            return flat, None, None
        return flat.index_select(0, rows), rows, None  # (R, N)

    def _head_weight(self) -> Tensor:
        """The soft-assignment and group-attention FCs stacked: one matmul over the frames
        instead of two, the second of which (G outputs) runs far below the machine's peak."""
        return torch.cat([self.assignment.weight, self.group_attention.weight])  # (G*K + G, λN)

    def _assign(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        """logits: (R, G*K + G) soft-assignment logits then group-attention logits without
        its bias; mask: (R,) or None -> (R, G*K): batch norm, softmax over clusters, times the
        sigmoid group attention."""
        g, k = self.groups, self.num_clusters
        logits, attention = logits.split([g * k, g], dim=1)  # (R, G*K), (R, G)
        attention = torch.sigmoid(attention + self.group_attention.bias)  # Eq. (7)
        if mask is not None:
            attention = attention * mask.unsqueeze(-1).to(attention.dtype)  # Eq. (18)
        bn_mask = None if mask is None or self.reference_compat else mask
        logits = self.assignment_bn(logits, bn_mask)  # (R, G*K)
        assign = F.softmax(logits.reshape(-1, g, k), dim=-1)  # Eq. (6): (R, G, K)
        return (assign * attention.unsqueeze(-1)).reshape(-1, g * k)  # α_g α_gk: (R, G*K)

    def forward_folded(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The same function as ``forward``, with the expansion FC ẋ = W x + b folded away.

        The assignment logits and attention are linear in ẋ, so they are computed from x with
        the products of the weights; and since Σ_i a_igk ẋ_i^g = W_g (Σ_i a_igk x_i) + b_g
        Σ_i a_igk, the residual sums run on the raw N-dimensional frames and the group blocks
        W_g of the expansion are applied once per video instead of once per frame. Per frame
        this costs N·G·K (assignment) + N·G·K (sums) multiply-adds instead of λN·N + λN·G·K
        + λN·K; per video it adds λN·N·K.
        """
        frames, rows, frame_mask = self._frames(x, mask)  # (R, N)
        return self._forward_folded(x, frames, rows, frame_mask)

    def _forward_folded(
        self, x: Tensor, frames: Tensor, rows: Tensor | None, frame_mask: Tensor | None
    ) -> Tensor:
        b, m, n = x.shape
        g, k, f = self.groups, self.num_clusters, self.group_dim
        w, bias = self.expand.weight, self.expand.bias  # (λN, N), (λN,)
        head = self._head_weight()  # (G*K + G, λN)
        logits = F.linear(frames, head @ w, head @ bias)  # (R, G*K + G): Eq. (6) and (7)
        assign = self._assign(logits, frame_mask)  # (R, G*K)
        assign = _unpack(assign, rows, b * m).reshape(b, m, g * k)  # (B, M, G*K)
        a_gk = assign.sum(dim=1).reshape(b, g, k)  # (B, G, K)
        sums = torch.bmm(x.transpose(1, 2), assign)  # (B, N, G*K)
        sums = sums.reshape(b, n * g, k)  # (B, N*G, K), row n*G + g
        w_blocks = w.reshape(g, f, n).permute(1, 2, 0).reshape(f, n * g)  # (λN/G, N*G)
        vlad = torch.matmul(w_blocks, sums)  # Σ_g W_g Σ_i a_igk x_i: (B, λN/G, K)
        vlad = vlad + torch.matmul(bias.reshape(g, f).t(), a_gk)  # + Σ_g b_g a_gk
        vlad = vlad - a_gk.sum(dim=1, keepdim=True) * self.anchors  # Eq. (8): (B, λN/G, K)
        vlad = F.normalize(vlad, p=2.0, dim=1, eps=L2_NORM_EPS)  # intra-normalisation
        return self.vlad_bn(vlad.reshape(b, f * k))  # (B, λN/G*K)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_clusters={self.num_clusters}, groups={self.groups}, "
            f"expansion={self.expansion}, reference_compat={self.reference_compat}, "
            f"folded={self.folded}, skip_padding={self.skip_padding}"
        )


def _unpack(rows_values: Tensor, rows: Tensor | None, total: int) -> Tensor:
    """(R, C) values of the real frames -> (total, C) with zeros at the padded frames."""
    if rows is None:
        return rows_values
    out = rows_values.new_zeros(total, rows_values.shape[1])  # (B*M, C)
    return out.index_copy(0, rows, rows_values)
