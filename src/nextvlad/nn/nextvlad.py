"""The NeXtVLAD aggregation layer (Lin et al. 2018, Sec. 3.2; Eq. (5)-(8), mask Eq. (18)-(19))."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nextvlad.nn._init import linear_variance_scaling_, variance_scaling_
from nextvlad.nn.batchnorm import LOW_PRECISION, BatchNorm
from nextvlad.nn.linear import Linear, linear
from nextvlad.nn.packing import FramePacking, as_packing
from nextvlad.nn.pooling import as_frame_mask

# tf.nn.l2_normalize divides by sqrt(max(sum(x^2), 1e-12)), i.e. by max(||x||, 1e-6).
L2_NORM_EPS = 1e-6
# ``folded="auto"`` folds on CPUs for batches of at least this many frames a video on average
# (docs/performance.md, "Folded or not": measured at 120-300 frames, train and inference).
FOLD_MIN_FRAMES = 200


def _full(x: Tensor) -> Tensor:
    """float32 for autocast's bf16/fp16 products (normalisation stays in float32)."""
    return x.float() if x.dtype in LOW_PRECISION else x


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
            it (see ``forward_folded``): fewer operations per frame, same parameters. "auto"
            (the default): folded in eager mode on CPUs for batches of at least
            ``FOLD_MIN_FRAMES`` frames a video on average, where it is the faster; not in
            ``reference_compat`` mode (float rounding as the original's), on other devices,
            or while tracing, exporting or compiling.
        skip_padding: run the per-frame layers on the real frames only (given a mask or a
            packing), not on the padded ones: the same result, less work on batches of
            unequal videos.
    """

    def __init__(
        self,
        dim: int = 1024,
        num_clusters: int = 128,
        groups: int = 8,
        expansion: int = 2,
        *,
        reference_compat: bool = False,
        folded: bool | str = "auto",
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
        if folded not in (True, False, "auto"):
            raise ValueError(f"NeXtVLAD: folded must be True, False or 'auto', got {folded!r}")
        self.folded: bool | str = folded
        self.skip_padding = skip_padding

        wide = expansion * dim
        self.expand = Linear(dim, wide)  # x -> ẋ
        self.group_attention = Linear(wide, groups)  # Eq. (7)
        self.assignment = Linear(wide, groups * num_clusters, bias=False)  # Eq. (6)
        self.assignment_bn = BatchNorm(groups * num_clusters)
        self.anchors = nn.Parameter(torch.empty(self.group_dim, num_clusters))  # c_k, shared
        self.vlad_bn = BatchNorm(self.output_dim)
        self.head: nn.Module | None = None  # int8 inference copies: the stacked FCs as one
        self.reset_parameters()

    def reset_parameters(self) -> None:
        linear_variance_scaling_(self.expand)
        linear_variance_scaling_(self.group_attention)
        linear_variance_scaling_(self.assignment)
        variance_scaling_(self.anchors, fan_in=self.group_dim)
        self.assignment_bn.reset_parameters()
        self.vlad_bn.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | FramePacking | None = None) -> Tensor:
        """x: (B, M, N) frame features; mask: (B, M) 1 for real frames, (B,) frame counts, or
        the batch's :class:`FramePacking` (worked out on the host) -> (B, λN/G * K), in every
        mode (``reference_compat``, ``skip_padding``, ``folded``) alike.

        A mask on a device is copied to the host to skip the padded frames (the device waits);
        pass a packing (``pack_frames``) to avoid that."""
        frames = _Frames.of(self, x, mask)
        if self._folds(x, frames):
            return self._forward_folded(x, frames)
        b, g, k, f = x.shape[0], self.groups, self.num_clusters, self.group_dim
        x_dot = self.expand(frames.rows)  # (R, λN)
        logits = self._head(x_dot)  # (R, G*K + G): Eq. (6) and (7) at once
        assign = self._assign(logits, frames)  # (R, G*K)
        vlad, a_sum = frames.sums(x_dot, assign, g, f, k)  # Eq. (5), (8): (B, λN/G, K), (B, 1, K)
        vlad = _full(vlad) - _full(a_sum) * self.anchors  # (B, λN/G, K), float32 under autocast
        vlad = F.normalize(vlad, p=2.0, dim=1, eps=L2_NORM_EPS)  # intra-normalisation
        return self.vlad_bn(vlad.reshape(b, f * k), track=frames.track)  # (B, λN/G*K), f*K + k

    def _folds(self, x: Tensor, frames: _Frames) -> bool:
        """Whether this forward runs folded (``folded``; "auto": see the class)."""
        if self.folded != "auto":
            return bool(self.folded)
        if self.reference_compat or x.device.type != "cpu" or self.head is not None:
            return False
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return False
        if torch.compiler.is_compiling():
            return False
        # Rows the per-frame layers run on: the real frames when padding is skipped, else
        # every padded frame (which the unfolded layers run on too).
        return frames.rows.shape[0] >= FOLD_MIN_FRAMES * frames.batch

    def _head(self, x_dot: Tensor) -> Tensor:
        """(R, λN) -> (R, G*K + G) soft-assignment and group-attention logits (no bias); by
        ``head`` when an int8 copy has one (``nextvlad.models.quantize``)."""
        if self.head is not None:
            return self.head(x_dot)
        return linear(x_dot, self._head_weight())

    def _head_weight(self) -> Tensor:
        """The soft-assignment and group-attention FCs stacked: one matmul over the frames
        instead of two, the second of which (G outputs) runs far below the machine's peak."""
        return torch.cat([self.assignment.weight, self.group_attention.weight])  # (G*K + G, λN)

    def _assign(self, logits: Tensor, frames: _Frames, clusters_major: bool = False) -> Tensor:
        """logits: (R, G*K + G) soft-assignment logits then group-attention logits without
        its bias -> (R, G*K): batch norm, softmax over clusters, times the sigmoid group
        attention (zero for padded frames); with ``clusters_major``, (R, K*G), column
        k*G + g."""
        g, k = self.groups, self.num_clusters
        # One split (its gradient is one concatenation, where two slices would each fill a
        # zero tensor of the whole width), and a contiguous copy when gradients are needed:
        # batch norm's backward is several times slower on a strided view.
        logits, attention = logits.split([g * k, g], dim=1)  # (R, G*K), (R, G)
        if logits.requires_grad:
            logits = logits.contiguous()
        attention = torch.sigmoid(attention + self.group_attention.bias)  # Eq. (7)
        if frames.mask is not None:
            attention = attention * frames.mask.unsqueeze(-1).to(attention.dtype)  # Eq. (18)
        logits = self.assignment_bn(logits, frames.bn_mask, track=frames.track)
        assign = F.softmax(logits.reshape(-1, g, k), dim=-1)  # Eq. (6): (R, G, K)
        if clusters_major:
            # The product with the attention written as (R, K, G): the softmax stays over the
            # last dimension, about twice as fast as over the middle one of (R, K, G) logits.
            assign = assign.transpose(1, 2) * attention.unsqueeze(1)  # α_g α_gk: (R, K, G)
            return assign.reshape(-1, k * g)
        return (assign * attention.unsqueeze(-1)).reshape(-1, g * k)  # α_g α_gk: (R, G*K)

    def forward_folded(self, x: Tensor, mask: Tensor | FramePacking | None = None) -> Tensor:
        """The same function as ``forward``, with the expansion FC ẋ = W x + b folded away.

        The assignment logits and attention are linear in ẋ, so they are computed from x with
        the products of the weights; and since Σ_i a_igk ẋ_i^g = W_g (Σ_i a_igk x_i) + b_g
        Σ_i a_igk, the residual sums run on the raw N-dimensional frames and the group blocks
        W_g of the expansion are applied once per video instead of once per frame. Per frame
        this costs N·G·K (assignment) + N·G·K (sums) multiply-adds instead of λN·N + λN·G·K
        + λN·K; per video it adds λN·N·K.
        """
        return self._forward_folded(x, _Frames.of(self, x, mask))

    def _forward_folded(self, x: Tensor, frames: _Frames) -> Tensor:
        b, n = x.shape[0], x.shape[2]
        g, k, f = self.groups, self.num_clusters, self.group_dim
        w, bias = self.expand.weight, self.expand.bias  # (λN, N), (λN,)
        head = self._head_weight()  # (G*K + G, λN)
        logits = linear(frames.rows, head @ w, head @ bias)  # (R, G*K + G): Eq. (6) and (7)
        # The soft assignment clusters major (column k*G + g), so that the per-video sums
        # come out as (K, G, N), the layout of the one product over the batch below:
        # regrouping them from (G, K, N) instead copied (B, G*K, N) floats forward and
        # backward, a sixth of the training step at 300 frames.
        assign = self._assign(logits, frames, clusters_major=True)  # (R, K*G)
        # S[b, k, g, :] = Σ_i a_igk x_i: (B, K*G, N), (B, 1, K*G)
        sums, a_sum = frames.sums(frames.rows, assign, 1, n, k * g, clusters_first=True)
        a_kg = _full(a_sum.reshape(b, k, g))  # (B, K, G)
        # Σ_g W_g S[b, k, g] for the whole batch as one product, (B*K, G*N) @ (G*N, λN/G)
        w_blocks = w.reshape(g, f, n).transpose(0, 1).reshape(f, g * n)  # (λN/G, G*N)
        vlad = linear(sums.reshape(b * k, g * n), w_blocks).reshape(b, k, f)  # (B, K, λN/G)
        vlad = _full(vlad) + torch.matmul(a_kg, _full(bias.reshape(g, f)))  # + Σ_g b_g a_gk
        vlad = vlad - a_kg.sum(dim=2, keepdim=True) * self.anchors.t()  # Eq. (8): (B, K, λN/G)
        vlad = F.normalize(vlad, p=2.0, dim=2, eps=L2_NORM_EPS)  # intra-normalisation
        vlad = vlad.transpose(1, 2).reshape(b, f * k)  # (B, λN/G*K), index f*K + k
        return self.vlad_bn(vlad, track=frames.track)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_clusters={self.num_clusters}, groups={self.groups}, "
            f"expansion={self.expansion}, reference_compat={self.reference_compat}, "
            f"folded={self.folded}, skip_padding={self.skip_padding}"
        )


class _Frames:
    """The frames a NeXtVLAD forward runs its per-frame layers on, and how to sum them.

    ``rows``: (R, N) frame features; ``mask``: (R,) 1 for real rows, or None (all real), which
    multiplies the group attention; ``bn_mask``: the rows that count in the soft-assignment
    batch-norm statistics (None: all); ``track``: () 0 for a batch without a real frame, whose
    statistics must not move the batch norms' moving averages (None: it has frames).

    Three layouts, one function: every padded frame (no mask, or ``reference_compat``, or
    ``skip_padding`` off, or while tracing for export, or a packing without padding); the real
    frames only, summed per video by a matmul on each video's rows (a packing with exact
    ``sizes``, on the CPU in eager mode; the folded sums, big a video, go back into the
    padded layout for one batched matmul instead); or the real frames and a row budget,
    summed by a gather into the padded layout and one batched matmul (a packing with
    ``slots``: under ``torch.compile`` and on GPUs).
    """

    def __init__(
        self,
        rows: Tensor,
        *,
        batch: int,
        length: int,
        mask: Tensor | None = None,
        bn_mask: Tensor | None = None,
        track: Tensor | None = None,
        packing: FramePacking | None = None,
    ) -> None:
        self.rows, self.batch, self.length = rows, batch, length
        self.mask, self.bn_mask, self.track, self.packing = mask, bn_mask, track, packing

    @classmethod
    def of(cls, layer: NeXtVLAD, x: Tensor, mask: Tensor | FramePacking | None) -> _Frames:
        b, m, n = x.shape
        flat = x.reshape(b * m, n)  # (B*M, N)
        if mask is None:
            return cls(flat, batch=b, length=m)
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        packed = layer.skip_padding and not layer.reference_compat and not exporting
        if packed and not isinstance(mask, FramePacking) and torch.compiler.is_compiling():
            packed = False  # a mask tensor's real frames are not known while tracing
        if packed:
            packing = as_packing(mask, x)
            assert packing is not None
            if packing.slots is None and packing.num_rows == b * m:
                # No padding: every frame is real, so the padded layout is the packed one and
                # needs no gather; the sums run as one batched matmul. With padding, packed
                # frames summed per video: the padded layout, masked, was no faster at 86%
                # real frames in training and slower in inference, and scattering the packed
                # rows into it for one bmm slower still (docs/performance.md, "Dense or
                # packed").
                return cls(flat, batch=b, length=m, track=packing.has_frames)
            rows = flat.index_select(0, packing.rows)  # (R_pad, N)
            return cls(
                rows,
                batch=b,
                length=m,
                mask=packing.row_mask,
                bn_mask=packing.row_mask,
                track=packing.has_frames,
                packing=packing,
            )
        frame_mask = mask.frame_mask if isinstance(mask, FramePacking) else as_frame_mask(mask, m)
        flat_mask = frame_mask.reshape(b * m)  # (B*M,)
        track = mask.has_frames if isinstance(mask, FramePacking) else (flat_mask.sum() > 0)
        bn_mask = None if layer.reference_compat else flat_mask
        return cls(flat, batch=b, length=m, mask=flat_mask, bn_mask=bn_mask, track=track)

    def sums(
        self,
        values: Tensor,
        assign: Tensor,
        groups: int,
        dim: int,
        clusters: int,
        *,
        clusters_first: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Σ over each video's frames and groups of values ⊗ assignments.

        values: (R, G*D) (group g in columns g*D..); assign: (R, G*K), zero at padded rows ->
        (B, D, K) sums, or (B, K, D) with ``clusters_first``, and (B, 1, K) the assignments'
        sums."""
        b, t, g = self.batch, self.length, groups
        packing = self.packing
        if packing is not None and packing.slots is None and clusters_first:
            # The folded sums are (K, D) = (G*K, N) a video, 4 MB in the paper's model: stacking
            # 80 of them per-video products cost more than the products (docs/performance.md,
            # "Folded or not"), so the packed rows go back into the padded layout (zero at the
            # padded frames) for one batched product.
            values = _padded(values, packing.rows, b * t)  # (B*T, D)
            assign = _padded(assign, packing.rows, b * t)  # (B*T, K)
        elif packing is not None and packing.slots is None:  # per video, on its own rows
            sizes = list(packing.sizes)
            per_video, totals = [], []
            for v, a in zip(torch.split(values, sizes), torch.split(assign, sizes), strict=True):
                a, v = a.reshape(-1, clusters), v.reshape(-1, dim)  # (n*G, K), (n*G, D)
                per_video.append(v.t() @ a)  # (D, K)
                totals.append(a.sum(dim=0, keepdim=True))  # (1, K)
            return torch.stack(per_video), torch.stack(totals)
        elif packing is not None:  # into the padded layout; padded frames read a zero row
            assert packing.slots is not None
            values = values.index_select(0, packing.slots)  # (B*T, G*D)
            assign = assign.index_select(0, packing.slots)  # (B*T, G*K)
        assign = assign.reshape(b, t * g, clusters)  # (B, T*G, K)
        values = values.reshape(b, t * g, dim)  # (B, T*G, D)
        if clusters_first:
            sums = torch.bmm(assign.transpose(1, 2), values)  # (B, K, D)
        else:
            sums = torch.bmm(values.transpose(1, 2), assign)  # (B, D, K)
        return sums, assign.sum(dim=1, keepdim=True)


def _padded(rows: Tensor, index: Tensor, length: int) -> Tensor:
    """(R, C) packed rows -> (length, C), row index[r] = rows[r], zero elsewhere."""
    return rows.new_zeros(length, rows.shape[1]).index_copy(0, index, rows)
