"""Video-level models: a classifier over the mean features of a video."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nextvlad.models.config import VideoModelConfig
from nextvlad.models.output import ModelOutput
from nextvlad.nn import LogisticClassifier, MoEClassifier, frame_mask, masked_mean
from nextvlad.nn.packing import FramePacking


class VideoModel(nn.Module):
    """Video features (B, D) -> logits (B, C). Frame features (B, T, D) with ``num_frames`` are
    averaged over the real frames first. ``input_norm="l2"`` L2-normalises the concatenated
    input, as the YouTube-8M starter code does for video-level models."""

    def __init__(self, config: VideoModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.feature_dim
        self.classifier: LogisticClassifier | MoEClassifier
        if config.classifier == "moe":
            self.classifier = MoEClassifier(dim, config.num_classes, config.moe_mixtures)
        else:
            self.classifier = LogisticClassifier(dim, config.num_classes)

    def regularized_parameters(self) -> list[Tensor]:
        return self.classifier.regularized_parameters()

    def forward(
        self, features: Tensor, num_frames: Tensor | FramePacking | None = None
    ) -> ModelOutput:
        """features: (B, D) video features, or (B, T, D) frames with num_frames (B,)."""
        dim = self.config.feature_dim
        if features.shape[-1] != dim or features.ndim not in (2, 3):
            raise ValueError(
                f"expected video features (batch, {dim}) or frames (batch, frames, {dim}), "
                f"got {tuple(features.shape)}"
            )
        x = features
        if x.ndim == 3:
            mask: Tensor | FramePacking | None = num_frames
            if isinstance(num_frames, Tensor):
                mask = frame_mask(num_frames.to(x.device), x.shape[1], x.dtype)  # (B, T)
            x = masked_mean(x, mask)  # (B, D)
        if self.config.input_norm == "l2":
            x = F.normalize(x, p=2.0, dim=-1, eps=1e-6)  # tf.nn.l2_normalize, eps 1e-12 on x²
        return ModelOutput(logits=self.classifier(x))
