"""Segment-rated data of the 2019 YouTube-8M task: rated segments, inference windows, classes.

A rated record (see :class:`~nextvlad.data.schema.Segments`) lists (start time, class, score)
ratings. As Google's segment reader does, the ratings are grouped by start time (the distinct
start times in order of first appearance); each group is one example: the ``segment_size``
frames (default 5) from the start time, a label vector (C,) holding the ratings (1.0 present,
0.0 absent) and a weight vector (C,) that is 1.0 only at the rated classes, so that a weighted
loss or metric counts only the rated (segment, class) pairs. End times are not used.

A segment example is a :class:`Video` with id ``"<video_id>:<start>"``, the segment's frames,
``labels`` = its positively rated classes and ``segments`` = its own ratings, so the existing
readers, shuffling and :class:`VideoCollator` apply; :class:`SegmentCollator` adds the weights.

Usage::

    dataset = SegmentDataset("validate*.tfrecord", shuffle=True)
    for batch in dataset.loader(batch_size=512):  # Batch with frames (B, 5, 1152), weights
        ...
    windows = SegmentDataset("test*.tfrecord", windows=True)  # every 5 frames of any video
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from nextvlad._yt8m import segment_id
from nextvlad.data.batch import Batch, VideoCollator
from nextvlad.data.dataset import VideoDataset, _shuffled, _SkipCountingLoader
from nextvlad.data.errors import DataError, SchemaError
from nextvlad.data.schema import SEGMENT_SIZE, Segments, Video
from nextvlad.errors import ConfigError, UsageError

__all__ = [
    "SegmentCollator",
    "SegmentDataset",
    "count_segments",
    "load_segment_classes",
    "rated_segments",
    "segment_classes_option",
    "segment_id",
    "segment_windows",
]


def _slice(video: Video, start: int, size: int) -> dict[str, np.ndarray]:
    return {name: frames[start : start + size] for name, frames in video.features.items()}


def rated_segments(video: Video, segment_size: int = SEGMENT_SIZE) -> list[Video]:
    """One :class:`Video` per distinct start time of ``video``'s ratings (first-appearance
    order): its ``segment_size`` frames from the start (fewer where the video ends first), its
    positively rated classes as ``labels`` and its ratings as ``segments``; [] for a video
    without ratings. A repeated (start, class) rating: the last one counts.

    Raises:
        SchemaError: a start time that is negative or not before the video's last frame, or a
            video that is not frame-level.
    """
    _check_size(segment_size)
    seg = video.segments
    if seg is None or seg.start_times.size == 0 or video.is_placeholder:
        return []
    if video.num_frames is None:
        raise SchemaError(f"video {video.id!r}: rated segments need frame-level data")
    starts, groups = np.unique(seg.start_times, return_inverse=True)
    order = np.argsort(np.unique(groups, return_index=True)[1], kind="stable")  # first seen
    out = []
    for g in order.tolist():
        start = int(starts[g])
        if not 0 <= start < video.num_frames:
            raise SchemaError(
                f"video {video.id!r}: segment at {start} outside its {video.num_frames} frames"
            )
        mine = np.flatnonzero(groups == g)
        classes, scores = seg.labels[mine], seg.scores[mine]
        last = {int(c): float(s) for c, s in zip(classes.tolist(), scores.tolist(), strict=True)}
        ratings = Segments.rated(np.full(len(last), start), list(last), list(last.values()), None)
        positives = np.asarray(sorted(c for c, s in last.items() if s > 0), np.int64)
        features = _slice(video, start, segment_size)
        frames = len(next(iter(features.values())))
        out.append(Video(segment_id(video.id, start), positives, features, frames, ratings))
    return out


def segment_windows(
    video: Video, segment_size: int = SEGMENT_SIZE, stride: int | None = None
) -> list[Video]:
    """Windows of ``segment_size`` frames over any frame-level video for inference: starts 0,
    ``stride`` (default ``segment_size``), 2 ``stride``, ... while a whole window fits (a video
    shorter than one window has none); ids ``"<video_id>:<start>"``, no labels."""
    _check_size(segment_size)
    stride = segment_size if stride is None else stride
    if stride < 1:
        raise ConfigError(f"stride must be positive, got {stride}")
    if video.is_placeholder:
        return []
    if video.num_frames is None:
        raise SchemaError(f"video {video.id!r}: windows need frame-level data")
    empty = np.zeros(0, np.int64)
    return [
        Video(segment_id(video.id, start), empty, _slice(video, start, segment_size), segment_size)
        for start in range(0, video.num_frames - segment_size + 1, stride)
    ]


def _check_size(segment_size: int) -> None:
    if segment_size < 1:
        raise ConfigError(f"segment_size must be positive, got {segment_size}")


class SegmentCollator(VideoCollator):
    """A :class:`VideoCollator` for rated segments: ``labels`` (B, C) hold the ratings and
    ``weights`` (B, C) are 1.0 at the rated classes (and, with ``classes``, only at those of
    them in the whitelist), 0.0 elsewhere. Windows (no ratings) get all-zero weights."""

    def __init__(
        self,
        num_classes: int,
        feature_names: Sequence[str] | None = None,
        *,
        pad_to: int | None = None,
        classes: np.ndarray | None = None,
    ) -> None:
        super().__init__(num_classes, feature_names, pad_to=pad_to)
        self.mask: np.ndarray | None = None
        if classes is not None:
            classes = np.asarray(classes, np.int64)
            if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
                raise ConfigError(f"segment classes outside [0, {num_classes})")
            self.mask = np.zeros(num_classes, np.float32)
            self.mask[classes] = 1.0

    def _specs(
        self, size: int, frame_level: bool, dim: int, lengths: list[int]
    ) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
        specs = super()._specs(size, frame_level, dim, lengths)
        return [*specs, ("weights", np.dtype(np.float32), (size, self.num_classes))]

    def __call__(self, videos: Sequence[Video]) -> Batch:
        batch = super().__call__(videos)
        if batch.weights is None:  # a batch of no video (only skip counts)
            batch.weights = torch.zeros(0, self.num_classes)
            return batch
        labels, weights = batch.labels.numpy(), batch.weights.numpy()
        weights[:] = 0.0
        real = [video for video in videos if not video.is_placeholder]
        for i, video in enumerate(real):
            if video.segments is not None:
                labels[i, video.segments.labels] = video.segments.scores
                weights[i, video.segments.labels] = 1.0
        if self.mask is not None:
            weights *= self.mask
        return batch


class SegmentDataset(IterableDataset[Video]):
    """Rated segments (or, with ``windows=True``, inference windows) of frame-level records.

    Args:
        files: as :class:`VideoDataset`; the other keyword arguments (``num_classes``,
            ``max_frames``, ``skip_corrupt``, ``seed``, ``rank``, ...) go to it as well.
        segment_size: frames of a segment (5, the 2019 task's).
        windows: every ``stride`` frames of every video instead of the rated segments.
        stride: start-to-start distance of windows (default ``segment_size``).
        classes: whitelist (e.g. :func:`load_segment_classes`): weights are 0 elsewhere.
        shuffle: shuffle files and videos (as :class:`VideoDataset`) and then segments
            through a buffer of ``shuffle_buffer`` segments.
    """

    def __init__(
        self,
        files: Any,
        *,
        segment_size: int = SEGMENT_SIZE,
        windows: bool = False,
        stride: int | None = None,
        classes: np.ndarray | None = None,
        shuffle: bool = False,
        shuffle_buffer: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        _check_size(segment_size)
        if stride is not None and stride < 1:
            raise ConfigError(f"stride must be positive, got {stride}")
        self.videos = VideoDataset(files, shuffle=shuffle, **kwargs)
        if not self.videos.schema.frame_level:
            raise ConfigError("segments need frame-level data")
        self.segment_size = segment_size
        self.windows = windows
        self.stride = stride
        self.classes = None if classes is None else np.asarray(classes, np.int64)
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer

    @property
    def num_classes(self) -> int:
        return self.videos.num_classes

    @property
    def files(self) -> list[str]:
        return self.videos.files

    def set_epoch(self, epoch: int) -> None:
        self.videos.set_epoch(epoch)

    def __iter__(self) -> Iterator[Video]:
        segments = self._segments(iter(self.videos))
        if self.shuffle:
            shard, _ = self.videos.shard()
            rng = np.random.default_rng([self.videos.seed, self.videos.epoch, shard, 3])
            segments = _shuffled(segments, self.shuffle_buffer, rng)
        return segments

    def _segments(self, videos: Iterator[Video]) -> Iterator[Video]:
        """Each video's segments; a video's skip count rides on its first segment, or on a
        placeholder when it has none."""
        for video in videos:
            if self.windows:
                parts = segment_windows(video, self.segment_size, self.stride)
            else:
                parts = rated_segments(video, self.segment_size)
            if video.skipped:
                if parts:
                    parts[0] = replace(parts[0], skipped=video.skipped)
                else:
                    parts = [Video.placeholder(video.skipped)]
            yield from parts

    def collator(self, *, pad_to: int | None = None) -> SegmentCollator:
        names = self.videos.schema.names
        return SegmentCollator(self.num_classes, names, pad_to=pad_to, classes=self.classes)

    def loader(
        self, batch_size: int, *, num_workers: int = 0, pad_to: int | None = None, **kwargs: Any
    ) -> DataLoader[Batch]:
        """A DataLoader of :class:`Batch` (with ``weights``) over the segments; skip counts
        as :meth:`VideoDataset.loader`."""
        if num_workers > 0:
            kwargs.setdefault("persistent_workers", True)
        loader = _SkipCountingLoader if self.videos.skip_corrupt else DataLoader
        return loader(
            self,  # type: ignore[arg-type]
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=self.collator(pad_to=pad_to),
            **kwargs,
        )


def load_segment_classes(
    path: str | os.PathLike[str], num_classes: int | None = None
) -> np.ndarray:
    """The class whitelist of the 2019 task: the ``Index`` column of Google's
    ``segment_label_ids.csv`` (a header line ``Index``, then one class a line; other columns,
    comma-separated, are allowed), sorted, as an int64 array.

    Raises:
        DataError: a missing file, no ``Index`` header, a value that is not a non-negative
            integer, a class listed twice, no class, or (given ``num_classes``, the model's)
            a class the model does not have; the message names file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read segment classes: {err}") from None
    if not lines:
        raise DataError(f"{path}: empty file; expected a header line 'Index'")
    header = [h.strip() for h in lines[0].lstrip("\ufeff").split(",")]
    if "Index" not in header:
        raise DataError(f"{path}:1: no 'Index' column in the header {lines[0]!r}")
    column = header.index("Index")
    seen: dict[int, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split(",")
        cell = cells[column].strip() if column < len(cells) else ""
        if not (cell.isascii() and cell.isdigit()):
            raise DataError(f"{path}:{number}: class {cell!r} is not a non-negative integer")
        value = int(cell)
        if value in seen:
            raise DataError(f"{path}:{number}: class {value} already listed on line {seen[value]}")
        seen[value] = number
    if not seen:
        raise DataError(f"{path}: no classes after the header")
    top = max(seen)
    if num_classes is not None and top >= num_classes:
        raise DataError(
            f"{path}:{seen[top]}: class {top} is not one of the model's {num_classes} classes "
            f"(0..{num_classes - 1})"
        )
    return np.asarray(sorted(seen), np.int64)


def count_segments(videos: Iterable[Video]) -> dict[str, int]:
    """Counts over the ratings of ``videos`` (what ``nextvlad inspect`` reports):
    ``num_videos_rated``, ``num_rated_segments`` (distinct (video, start time) pairs),
    ``num_segment_ratings`` ((segment, class) pairs), ``num_positive_ratings`` (score > 0),
    ``num_positive_segments`` (segments with a positive rating) and ``num_segment_classes``
    (distinct classes rated)."""
    counts = dict.fromkeys(SEGMENT_COUNT_KEYS, 0)
    classes: set[int] = set()
    for video in videos:
        seg = video.segments
        if seg is None or seg.start_times.size == 0:
            continue
        counts["num_videos_rated"] += 1
        counts["num_rated_segments"] += int(np.unique(seg.start_times).size)
        counts["num_segment_ratings"] += int(seg.start_times.size)
        positive = seg.scores > 0
        counts["num_positive_ratings"] += int(positive.sum())
        counts["num_positive_segments"] += int(np.unique(seg.start_times[positive]).size)
        classes.update(seg.labels.tolist())
    counts["num_segment_classes"] = len(classes)
    return counts


SEGMENT_COUNT_KEYS = (
    "num_videos_rated",
    "num_rated_segments",
    "num_segment_ratings",
    "num_positive_ratings",
    "num_positive_segments",
    "num_segment_classes",
)


def segment_classes_option(path: str | os.PathLike[str] | None, num_classes: int) -> Any:
    """The whitelist of a ``--segment-classes`` option (None without it), within the model's
    ``num_classes``: :func:`load_segment_classes`, its errors those of an option's file.

    Raises:
        UsageError: the file is missing or not a whitelist (exit code 2).
    """
    if path is None:
        return None
    try:
        return load_segment_classes(path, num_classes)
    except DataError as err:
        raise UsageError(f"--segment-classes {err}") from None
