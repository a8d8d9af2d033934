"""Batches of videos: padding, multi-hot labels, and moving to a device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

from nextvlad.data import _shm
from nextvlad.data._pool import BufferPool
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
    # (B, C) float32 weight of each label: 1.0 only for the rated (segment, class) pairs of a
    # batch of rated segments (see nextvlad.data.segments); None for video batches.
    weights: Tensor | None = None
    # Shared-memory segment holding the tensors (batches made in DataLoader workers).
    _segment: _shm.Segment | None = field(default=None, init=False, repr=False, compare=False)

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
            weights=move(self.weights),
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
            weights=pin(self.weights),
        )

    def __reduce__(self) -> tuple[object, ...]:
        if self._segment is None:
            state = {name: getattr(self, name) for name in _FIELDS}
            return (_rebuild, (state,))
        # Tensors in a shared segment: send its descriptor and where each tensor lies.
        base = self._segment.data.ctypes.data
        layout = []
        for name in _TENSORS:
            t = getattr(self, name)
            if t is not None:
                layout.append((name, t.data_ptr() - base, str(t.numpy().dtype), tuple(t.shape)))
        ref = _shm.SegmentRef(self._segment)
        return (_rebuild_shared, (ref, layout, self.ids, self.num_skipped))


_FIELDS = tuple(f.name for f in fields(Batch) if not f.name.startswith("_"))
_TENSORS = ("labels", "frames", "num_frames", "features", "weights")


def _rebuild(state: dict[str, object]) -> Batch:
    return Batch(**state)  # type: ignore[arg-type]


def _rebuild_shared(
    ref: _shm.SegmentRef,
    layout: list[tuple[str, int, str, tuple[int, ...]]],
    ids: list[str],
    num_skipped: int,
) -> Batch:
    data = ref.open()
    tensors: dict[str, Tensor] = {}
    for name, offset, dtype, shape in layout:
        count = int(np.prod(shape))
        array = data[offset : offset + count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)
        tensors[name] = torch.from_numpy(array)
    return Batch(ids=ids, num_skipped=num_skipped, **tensors)


def _allocate(
    specs: list[tuple[str, np.dtype, tuple[int, ...]]],
) -> tuple[dict[str, np.ndarray], _shm.Segment | None]:
    """Uninitialised arrays for a batch, carved from one recycled block: in a DataLoader worker
    (on Linux) a shared-memory segment, otherwise a buffer that is reused once the batch's
    tensors are freed (fresh pages are slow; see ``_pool``)."""
    offsets = []
    total = 0
    for _, dtype, shape in specs:
        offsets.append(total)
        total += _shm.align(int(np.prod(shape)) * dtype.itemsize)
    segment = None
    if _shm.AVAILABLE and torch.utils.data.get_worker_info() is not None:
        try:
            segment = _shm.pool().take(total)
        except OSError:  # no memfd here (sandbox, old kernel): PyTorch's own sharing instead
            _shm.AVAILABLE = False
    block = segment.data if segment is not None else _BATCH_POOL.array(total)
    arrays = {}
    for (name, dtype, shape), offset in zip(specs, offsets, strict=True):
        nbytes = int(np.prod(shape)) * dtype.itemsize
        arrays[name] = block[offset : offset + nbytes].view(dtype).reshape(shape)
    return arrays, segment


_BATCH_POOL = BufferPool(step=1 << 20, limit=256 << 20)


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
        skipped = sum(video.skipped for video in videos)
        if any(video.is_placeholder for video in videos):
            videos = [video for video in videos if not video.is_placeholder]
            if not videos:  # a shard whose every record was skipped: only the count
                return Batch(ids=[], labels=torch.zeros(0, self.num_classes), num_skipped=skipped)
        names = self.feature_names or tuple(videos[0].features)
        frame_level = videos[0].num_frames is not None
        dims = [videos[0].features[n].shape[-1] for n in names]
        lengths = [video.num_frames or 0 for video in videos]
        arrays, segment = _allocate(self._specs(len(videos), frame_level, sum(dims), lengths))
        self._fill_labels(arrays["labels"], videos)
        if frame_level:
            _fill_frames(arrays["frames"], videos, names, dims, lengths)
            arrays["num_frames"][:] = lengths
        else:
            _fill_features(arrays["features"], videos, names, dims)
        batch = Batch(
            ids=[video.id for video in videos],
            num_skipped=skipped,
            **{name: torch.from_numpy(array) for name, array in arrays.items()},
        )
        batch._segment = segment
        return batch

    def _specs(
        self, size: int, frame_level: bool, dim: int, lengths: list[int]
    ) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
        """(name, dtype, shape) of the batch's arrays: frames padded to the longest video (at
        least 1) or to ``pad_to``."""
        specs: list[tuple[str, np.dtype, tuple[int, ...]]] = [
            ("labels", np.dtype(np.float32), (size, self.num_classes))
        ]
        if not frame_level:
            specs.append(("features", np.dtype(np.float32), (size, dim)))
            return specs
        longest = max(max(lengths), 1)
        if self.pad_to is not None:
            if longest > self.pad_to:
                raise ConfigError(
                    f"a video has {longest} frames, more than pad_to={self.pad_to}; "
                    "cut it with max_frames"
                )
            longest = self.pad_to
        specs.append(("frames", np.dtype(np.uint8), (size, longest, dim)))
        specs.append(("num_frames", np.dtype(np.int64), (size,)))
        return specs

    def _fill_labels(self, labels: np.ndarray, videos: Sequence[Video]) -> None:
        """(B, C) multi-hot labels."""
        labels[:] = 0
        for i, video in enumerate(videos):
            classes = video.labels.tolist()  # plain ints: faster than numpy for a few labels
            if classes:
                if min(classes) < 0 or max(classes) >= self.num_classes:
                    raise SchemaError(
                        f"video {video.id!r} has labels {classes} outside [0, {self.num_classes})"
                    )
                labels[i, classes] = 1.0


def _fill_frames(
    frames: np.ndarray,
    videos: Sequence[Video],
    names: Sequence[str],
    dims: list[int],
    lengths: list[int],
) -> None:
    """(B, T, D) frames, features side by side, zero after each video's frames."""
    longest = frames.shape[1]
    for i, (video, length) in enumerate(zip(videos, lengths, strict=True)):
        col = 0
        for name, dim in zip(names, dims, strict=True):
            frames[i, :length, col : col + dim] = video.features[name]
            col += dim
        if length < longest:
            frames[i, length:] = 0


def _fill_features(
    features: np.ndarray, videos: Sequence[Video], names: Sequence[str], dims: list[int]
) -> None:
    """(B, D) video-level features, side by side."""
    for i, video in enumerate(videos):
        col = 0
        for name, dim in zip(names, dims, strict=True):
            features[i, col : col + dim] = video.features[name]
            col += dim
