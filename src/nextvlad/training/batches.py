"""Batches on their way to the device: padding, the frame packing, asynchronous copies.

The packing of a batch's real frames (``nextvlad.nn.FramePacking``) is worked out here, on
the host, from the frame counts the loader already made, and travels with the batch; the
device never reports it back. Label weights (rated segments of the 2019 task) travel too.

Under ``--compile`` a batch's frames are padded to a multiple of :data:`FRAME_BUCKET` (at most
``max_frames``) and its packed rows to a multiple of B x :data:`ROW_BUCKET_FRAMES`, so that a
compiled step meets one shape per bucket (B, bucket length, rows) instead of one per batch.
Reference-compatible models (``nextvlad import-tf``) get every batch padded to the original's
300 frames: its batch-norm statistics and mixture gate count the padded frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nextvlad.data import Batch
from nextvlad.nn import FramePacking, pack_frames
from nextvlad.nn.packing import round_up

FRAME_BUCKET = 32
ROW_BUCKET_FRAMES = 32
REFERENCE_FRAMES = 300  # the original pads every video to 300 frames


@dataclass
class DeviceBatch:
    """A batch on the device, with what the host knows about it."""

    inputs: Tensor  # (B, T, D) uint8 frames or (B, D) float features, on the device
    labels: Tensor  # (B, C) float, on the device
    packing: FramePacking | None  # frame-level batches: where the real frames are
    size: int  # B
    num_skipped: int = 0  # corrupt records skipped while reading it
    weights: Tensor | None = None  # (B, C) label weights (rated segments), on the device


def bucket_length(longest: int, max_frames: int) -> int:
    """The padded frame count of a batch whose longest video has ``longest`` frames under
    ``--compile``: the next multiple of :data:`FRAME_BUCKET`, at most ``max_frames``."""
    return min(max(FRAME_BUCKET, round_up(longest, FRAME_BUCKET)), max_frames)


def device_batch(
    batch: Batch,
    device: torch.device,
    *,
    pad_to: int | None = None,
    bucket_max: int | None = None,
) -> DeviceBatch:
    """The batch on ``device``: frames padded to ``pad_to`` frames, or to their bucket (at
    most ``bucket_max``) if given, with their packing (row budget when bucketed, one spare row
    on GPUs for the gather-based sums); copies are asynchronous from pinned memory."""
    pin = device.type == "cuda"
    labels = batch.labels.to(device, non_blocking=pin)
    weights = None if batch.weights is None else batch.weights.to(device, non_blocking=pin)
    if batch.frames is None:
        assert batch.features is not None
        features = batch.features.to(device, non_blocking=pin)
        return DeviceBatch(features, labels, None, len(batch), batch.num_skipped, weights)
    assert batch.num_frames is not None
    frames, length = batch.frames, batch.frames.shape[1]
    target = pad_to or (bucket_length(length, bucket_max) if bucket_max else None)
    if target is not None and target > length:
        frames = _pad_frames(frames, target, pin)
    row_multiple = None
    if bucket_max:
        row_multiple = len(batch) * ROW_BUCKET_FRAMES
    elif device.type != "cpu":
        row_multiple = 1
    packing = pack_frames(batch.num_frames, frames.shape[1], row_multiple=row_multiple)
    if pin:
        packing = packing.pin_memory()
    return DeviceBatch(
        frames.to(device, non_blocking=pin),
        labels,
        packing.to(device, non_blocking=pin),
        len(batch),
        batch.num_skipped,
        weights,
    )


def _pad_frames(frames: Tensor, length: int, pin: bool) -> Tensor:
    """(B, T, D) uint8 -> (B, length, D), zeros after T (length >= T)."""
    b, t, d = frames.shape
    out = torch.zeros(b, length, d, dtype=frames.dtype, pin_memory=pin)
    out[:, :t] = frames
    return out
