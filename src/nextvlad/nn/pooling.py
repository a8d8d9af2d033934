"""Frame masks and masked mean pooling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nextvlad.nn.packing import FramePacking


def frame_mask(num_frames: Tensor, max_frames: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Eq. (19): (B, T) mask, 1 for frames i < num_frames (real frames), 0 for padding.

    num_frames: (B,) integer frame counts.
    """
    steps = torch.arange(max_frames, device=num_frames.device)  # (T,)
    return (steps.unsqueeze(0) < num_frames.unsqueeze(1)).to(dtype)  # (B, T)


def as_frame_mask(mask: Tensor, length: int) -> Tensor:
    """A (B, T) frame mask from what the layers take as ``mask``: (B,) frame counts (Eq. (19),
    on their device: no host work) or a (B, T) mask, returned as it is."""
    if mask.ndim == 1:
        return frame_mask(mask, length)
    return mask


def masked_mean(x: Tensor, mask: Tensor | FramePacking | None) -> Tensor:
    """Mean over frames of x: (B, T, D) counting only mask: (B, T) == 1 (or a packing's
    frame mask, or (B,) frame counts) -> (B, D). A video with zero frames gets the zero vector.
    """
    if mask is None:
        return x.mean(dim=1)
    mask = mask.frame_mask if isinstance(mask, FramePacking) else as_frame_mask(mask, x.shape[1])
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (B, D)


class MeanPool(nn.Module):
    """The mean-pool aggregator: average of the real frames of each video."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"MeanPool: dim must be positive, got {dim}")
        self.dim = dim
        self.output_dim = dim

    def forward(self, x: Tensor, mask: Tensor | FramePacking | None = None) -> Tensor:
        """x: (B, T, N) frame features; mask: (B, T) 1 for real frames, or a packing ->
        (B, N)."""
        return masked_mean(x, mask)
