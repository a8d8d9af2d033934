"""Two-stream frame-level model (Fig. 3): NeXtVLAD, NetVLAD or mean pool per stream."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nextvlad.models.config import FrameModelConfig, StreamConfig
from nextvlad.models.output import ModelOutput
from nextvlad.nn import (
    BatchNorm,
    ContextGating,
    LogisticClassifier,
    MeanPool,
    MoEClassifier,
    NetVLAD,
    NeXtVLAD,
    SEContextGating,
)
from nextvlad.nn._init import linear_variance_scaling_
from nextvlad.nn.linear import Linear
from nextvlad.nn.packing import FramePacking, as_packing


def frame_input(
    features: Tensor, num_frames: Tensor | FramePacking | None, feature_dim: int
) -> FramePacking | None:
    """Check frame features (B, T, D) and their frame counts (B,); return the batch's packing.

    ``num_frames`` on the host (the batch's own tensor, as the loader makes it) or a
    :class:`FramePacking` costs the device nothing; frame counts on a device are copied to the
    host first, which waits for the device (the training step passes a packing)."""
    if features.ndim != 3 or features.shape[-1] != feature_dim:
        raise ValueError(
            f"expected frame features of shape (batch, frames, {feature_dim}), "
            f"got {tuple(features.shape)}"
        )
    if isinstance(num_frames, FramePacking):
        if (num_frames.batch_size, num_frames.length) != tuple(features.shape[:2]):
            raise ValueError(
                f"the packing is for {num_frames.batch_size} videos of {num_frames.length} "
                f"frames, the features have shape {tuple(features.shape)}"
            )
        return num_frames
    if num_frames is not None and tuple(num_frames.shape) != (features.shape[0],):
        raise ValueError(
            f"num_frames must have shape ({features.shape[0]},), got {tuple(num_frames.shape)}"
        )
    return as_packing(num_frames, features)


def _aggregator(stream: StreamConfig, config: FrameModelConfig) -> nn.Module:
    dim = stream.reduce_dim or stream.dim
    compat = config.reference_compat
    if config.aggregator == "nextvlad":
        return NeXtVLAD(
            dim, stream.num_clusters, stream.groups, stream.expansion, reference_compat=compat
        )
    if config.aggregator == "netvlad":
        return NetVLAD(dim, stream.num_clusters, reference_compat=compat)
    return MeanPool(dim)


def _output_dim(aggregator: nn.Module) -> int:
    dim = aggregator.output_dim
    assert isinstance(dim, int)
    return dim


class FrameModel(nn.Module):
    """Frame features (B, T, D) -> logits (B, C); D is the streams' sizes concatenated."""

    def __init__(self, config: FrameModelConfig) -> None:
        super().__init__()
        self.config = config
        self.reducers = nn.ModuleList(
            Linear(s.dim, s.reduce_dim) if s.reduce_dim else nn.Identity() for s in config.streams
        )
        self.aggregators = nn.ModuleList(_aggregator(s, config) for s in config.streams)
        pooled = sum(_output_dim(a) for a in self.aggregators)
        self.dropout = nn.Dropout(config.dropout)
        self.hidden = Linear(pooled, config.hidden_size, bias=False)
        self.hidden_bn = BatchNorm(config.hidden_size)
        self.gating: nn.Module
        if config.gating == "se":
            self.gating = SEContextGating(config.hidden_size, config.gating_reduction)
        elif config.gating == "context":
            self.gating = ContextGating(config.hidden_size)
        else:
            self.gating = nn.Identity()
        self.classifier: LogisticClassifier | MoEClassifier
        if config.classifier == "moe":
            self.classifier = MoEClassifier(
                config.hidden_size, config.num_classes, config.moe_mixtures
            )
        else:
            self.classifier = LogisticClassifier(config.hidden_size, config.num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for reducer in self.reducers:
            if isinstance(reducer, nn.Linear):
                linear_variance_scaling_(reducer)
        linear_variance_scaling_(self.hidden)
        self.hidden_bn.reset_parameters()

    def regularized_parameters(self) -> list[Tensor]:
        """The classifier tensors that carry the L2 penalty."""
        return self.classifier.regularized_parameters()

    def forward(
        self, features: Tensor, num_frames: Tensor | FramePacking | None = None
    ) -> ModelOutput:
        """features: (B, T, D) frame features (reverse-whitened); num_frames: (B,) real
        frames of each video, best on the host (None: all T are real), or the batch's
        :class:`FramePacking` -> ModelOutput with logits (B, C)."""
        packing = frame_input(features, num_frames, self.config.feature_dim)
        track = None if packing is None else packing.has_frames  # no frame: no BN update
        pooled = []
        start = 0
        for stream, reduce, aggregate in zip(
            self.config.streams, self.reducers, self.aggregators, strict=True
        ):
            x = features[..., start : start + stream.dim]  # (B, T, N)
            start += stream.dim
            if isinstance(reduce, nn.Linear):  # (B, T, N) -> (B, T, N')
                b, t, _ = x.shape
                x = reduce(x.reshape(b * t, -1)).reshape(b, t, -1)
            pooled.append(aggregate(x, packing))  # (B, P_s)
        h = self.dropout(torch.cat(pooled, dim=-1))  # (B, sum P_s)
        h = self.hidden_bn(self.hidden(h), track=track)  # (B, H)
        if not isinstance(self.gating, nn.Identity):
            h = self.gating(h, track)  # (B, H)
        return ModelOutput(logits=self.classifier(h))
