"""Batches of videos: padding, multi-hot labels, and moving to a device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from nextvlad.data.errors import SchemaError
from nextvlad.data.schema import Video
from nextvlad.errors import ConfigError

__all__ = ["Batch", "VideoCollator"]


@dataclass
class Batch:
    """A batch of B videos.

    Frame-level data fills ``frames`` and ``num_frames``; video-level data fills ``features``.
    The other fields are None. Items can also be read as ``batch["frames"]``.
    """

    ids: list[str]  # B video ids
    labels: Tensor  # (B, C) float32 multi-hot (1.0 where the video has the class)
    frames: Tensor | None = None  # (B, T, D) uint8 quantised frames, features concatenated in
    # schema order (rgb then audio: D = 1024 + 128), zero after each video's num_frames;
    # T = the longest video of the batch (at least 1), or the collator's pad_to.
    num_frames: Tensor | None = None  # (B,) int64 real frames of each video (0 is possible)
    features: Tensor | None = None  # (B, D) float32 video-level features (mean_rgb ++ mean_audio)
    num_skipped: int = 0  # corrupt records skipped while reading this batch (skip_corrupt=True)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: str) -> object:
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The batch with its tensors on ``device`` (frames stay uint8)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            ids=self.ids,
            labels=self.labels.to(device, non_blocking=non_blocking),
            frames=move(self.frames),
            num_frames=move(self.num_frames),
            features=move(self.features),
            num_skipped=self.num_skipped,
        )

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)``."""

        def pin(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.pin_memory()

        return Batch(
            ids=self.ids,
            labels=self.labels.pin_memory(),
            frames=pin(self.frames),
            num_frames=pin(self.num_frames),
            features=pin(self.features),
            num_skipped=self.num_skipped,
        )


_FIELDS = frozenset(f.name for f in fields(Batch))


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised tensor; in a DataLoader worker it is put in shared memory from the
    start, which saves the copy the worker would otherwise make to send it."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape, strides)


class VideoCollator:
    """Turns a list of :class:`Video` into a :class:`Batch` (``collate_fn`` of a DataLoader).

    Args:
        num_classes: width C of the multi-hot labels.
        feature_names: features to concatenate, in order (default: each video's own order,
            which is its schema's).
        pad_to: pad frames to this many (e.g. 300 for a fixed-length model input) instead of
            the longest video in the batch; a longer video is an error.
    """

    def __init__(
        self,
        num_classes: int,
        feature_names: Sequence[str] | None = None,
        *,
        pad_to: int | None = None,
    ) -> None:
        if num_classes <= 0:
            raise ConfigError(f"num_classes must be positive, got {num_classes}")
        if pad_to is not None and pad_to <= 0:
            raise ConfigError(f"pad_to must be positive, got {pad_to}")
        self.num_classes = num_classes
        self.feature_names = tuple(feature_names) if feature_names is not None else None
        self.pad_to = pad_to

    def __call__(self, videos: Sequence[Video]) -> Batch:
        if not videos:
            raise ValueError("cannot collate an empty list of videos")
        names = self.feature_names or tuple(videos[0].features)
        size = len(videos)
        labels = torch.zeros(size, self.num_classes, dtype=torch.float32)
        label_view = labels.numpy()
        for i, video in enumerate(videos):
            if video.labels.size:
                if video.labels.min() < 0 or video.labels.max() >= self.num_classes:
                    raise SchemaError(
                        f"video {video.id!r} has labels {video.labels.tolist()} outside "
                        f"[0, {self.num_classes})"
                    )
                label_view[i, video.labels] = 1.0
        ids = [video.id for video in videos]
        skipped = sum(video.skipped for video in videos)

        if videos[0].num_frames is None:  # video-level
            dims = [videos[0].features[n].shape[-1] for n in names]
            features = _empty((size, sum(dims)), torch.float32)
            view = features.numpy()
            for i, video in enumerate(videos):
                col = 0
                for name, dim in zip(names, dims, strict=True):
                    view[i, col : col + dim] = video.features[name]
                    col += dim
            return Batch(ids=ids, labels=labels, features=features, num_skipped=skipped)

        lengths = [video.num_frames or 0 for video in videos]
        longest = max(max(lengths), 1)
        if self.pad_to is not None:
            if longest > self.pad_to:
                raise ConfigError(
                    f"a video has {longest} frames, more than pad_to={self.pad_to}; "
                    "cut it with max_frames"
                )
            longest = self.pad_to
        dims = [videos[0].features[n].shape[-1] for n in names]
        frames = _empty((size, longest, sum(dims)), torch.uint8)
        view = frames.numpy()
        for i, (video, length) in enumerate(zip(videos, lengths, strict=True)):
            col = 0
            for name, dim in zip(names, dims, strict=True):
                view[i, :length, col : col + dim] = video.features[name]
                col += dim
            if length < longest:
                view[i, length:] = 0
        num_frames = torch.tensor(lengths, dtype=torch.int64)
        return Batch(
            ids=ids, labels=labels, frames=frames, num_frames=num_frames, num_skipped=skipped
        )
