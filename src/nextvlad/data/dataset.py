"""A PyTorch ``IterableDataset`` of YouTube-8M-style TFRecords.

Usage::

    dataset = VideoDataset("train*.tfrecord", shuffle=True, seed=0)
    loader = dataset.loader(batch_size=80, num_workers=2)
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for batch in loader:  # Batch: frames (B, T, 1152) uint8, num_frames, labels, ids
            ...

Sharding: every (torchrun rank, DataLoader worker) pair is one shard; ranks come from
``torch.distributed`` when it is initialised, else from the ``RANK`` / ``WORLD_SIZE``
environment variables. Files are dealt to shards when there are at least as many files as
shards, records otherwise; either way each record is read by exactly one shard. Shards may get
different numbers of videos (whole files), so distributed training must not assume equal batch
counts per rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from nextvlad._yt8m import MAX_FRAMES, YT8M_NUM_CLASSES
from nextvlad.data.batch import Batch, VideoCollator
from nextvlad.data.reader import PathsLike, ReadStats, read_videos, resolve_files
from nextvlad.data.schema import FRAME_LEVEL, Schema, Video
from nextvlad.errors import ConfigError

__all__ = ["VideoDataset", "distributed_rank"]


def distributed_rank() -> tuple[int, int]:
    """(rank, world size): from ``torch.distributed`` if initialised, else ``RANK`` and
    ``WORLD_SIZE`` from the environment, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError("RANK and WORLD_SIZE must be integers") from None
    return rank, world


class VideoDataset(IterableDataset[Video]):
    """Videos from TFRecord files, sharded, optionally shuffled; yields :class:`Video`.

    Args:
        files: a path or glob, or a list of them (globs expand sorted; missing files raise
            :class:`NoDataFilesError` here, not when iterating).
        schema: record layout; :data:`FRAME_LEVEL` (default) or :data:`VIDEO_LEVEL` or your own.
        num_classes: labels must lie in [0, num_classes); the width of the multi-hot labels.
        max_frames: frames after this many are cut (frame-level data).
        sample_frames: if set, each video is replaced by this many frames drawn uniformly at
            random with replacement (kept in temporal order), as the NetVLAD_random baseline;
            a zero-frame video stays empty.
        shuffle: shuffle file order each epoch and videos through a buffer.
        shuffle_buffer: videos held for shuffling per shard (each frame-level video is ~200 KB).
        seed: seed of the shuffling and sampling; with ``set_epoch`` the order is deterministic.
        skip_corrupt: skip (log and count) corrupt or off-schema records instead of raising;
            the count travels in ``Video.skipped`` and then ``Batch.num_skipped`` (see
            :meth:`loader`).
        verify_crc: check each record's data CRC.
        rank, world_size: override the distributed rank and world size.
        bucket_size: group videos of similar length: windows of ``bucket_size * 16`` videos are
            sorted by length and cut into runs of ``bucket_size``, emitted in random order.
            With the loader's batch size equal to ``bucket_size`` each batch holds videos of
            similar length, so little time is spent on padded frames.
    """

    def __init__(
        self,
        files: PathsLike,
        schema: Schema = FRAME_LEVEL,
        *,
        num_classes: int = YT8M_NUM_CLASSES,
        max_frames: int = MAX_FRAMES,
        sample_frames: int | None = None,
        shuffle: bool = False,
        shuffle_buffer: int = 256,
        seed: int = 0,
        skip_corrupt: bool = False,
        verify_crc: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        bucket_size: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ConfigError(f"num_classes must be positive, got {num_classes}")
        if max_frames <= 0:
            raise ConfigError(f"max_frames must be positive, got {max_frames}")
        if sample_frames is not None and sample_frames <= 0:
            raise ConfigError(f"sample_frames must be positive, got {sample_frames}")
        if shuffle_buffer <= 0:
            raise ConfigError(f"shuffle_buffer must be positive, got {shuffle_buffer}")
        if bucket_size is not None and bucket_size <= 0:
            raise ConfigError(f"bucket_size must be positive, got {bucket_size}")
        if sample_frames is not None and not schema.frame_level:
            raise ConfigError("sample_frames needs frame-level data")
        self.files = resolve_files(files)
        self.schema = schema
        self.num_classes = num_classes
        self.max_frames = max_frames
        self.sample_frames = sample_frames
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.skip_corrupt = skip_corrupt
        self.verify_crc = verify_crc
        self.rank = rank
        self.world_size = world_size
        self.bucket_size = bucket_size
        # The epoch lives in shared memory so that persistent DataLoader workers see set_epoch.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        # Counts of this process's iterations (DataLoader workers keep their own copies: use
        # Batch.num_skipped to count corrupt records there).
        self.stats = ReadStats()

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Selects the shuffle order of an epoch; call before each epoch's ``iter(loader)``
        (DataLoader workers, persistent ones included, read it when an epoch starts)."""
        self._epoch[0] = epoch

    def shard(self) -> tuple[int, int]:
        """(this shard, number of shards) for the calling process and DataLoader worker."""
        rank, world = distributed_rank()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        if not 0 <= rank < world:
            raise ConfigError(f"rank {rank} not in [0, world size {world})")
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers

    def __iter__(self) -> Iterator[Video]:
        shard, num_shards = self.shard()
        epoch = self.epoch
        files = list(self.files)
        if self.shuffle:  # same permutation in every shard, so the split stays a partition
            order = np.random.default_rng([self.seed, epoch]).permutation(len(files))
            files = [files[i] for i in order]
        videos = read_videos(
            files,
            self.schema,
            max_frames=self.max_frames if self.schema.frame_level else None,
            num_classes=self.num_classes,
            skip_corrupt=self.skip_corrupt,
            verify=self.verify_crc,
            shard=shard,
            num_shards=num_shards,
            stats=self.stats,
            placeholder=True,
        )
        if self.sample_frames is not None:
            videos = self._sampled(videos, np.random.default_rng([self.seed, epoch, shard, 1]))
        if self.shuffle:
            videos = _shuffled(
                videos,
                self.shuffle_buffer,
                np.random.default_rng([self.seed, epoch, shard, 0]),
            )
        if self.bucket_size is not None and self.schema.frame_level:
            videos = _bucketed(
                videos, self.bucket_size, np.random.default_rng([self.seed, epoch, shard, 2])
            )
        return videos

    def _sampled(self, videos: Iterator[Video], rng: np.random.Generator) -> Iterator[Video]:
        count = self.sample_frames
        assert count is not None
        for video in videos:
            n = video.num_frames or 0
            if n == 0:
                yield video
                continue
            index = np.sort(rng.integers(0, n, size=count))
            features = {name: frames[index] for name, frames in video.features.items()}
            yield replace(video, features=features, num_frames=count)

    def collator(self, *, pad_to: int | None = None) -> VideoCollator:
        """The collate function for this dataset's videos (see :class:`VideoCollator`)."""
        return VideoCollator(self.num_classes, self.schema.names, pad_to=pad_to)

    def loader(
        self,
        batch_size: int,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        drop_last: bool = False,
        pad_to: int | None = None,
        **kwargs: Any,
    ) -> DataLoader[Batch]:
        """A DataLoader of :class:`Batch` over this dataset (extra ``kwargs`` go to DataLoader).

        With workers, they are persistent by default (``persistent_workers=True``): they start
        once, keep their buffers warm across epochs and still follow ``set_epoch``.

        With ``skip_corrupt`` the ``num_skipped`` of the batches of an epoch add up to every
        record skipped in it (unless ``drop_last`` drops a batch): the skips after a shard's last
        video ride on that video, and a shard whose every record was skipped sends a batch of
        no video that the loader folds into a batch with videos (it then yields each batch
        once the next has arrived). Only an epoch with no video at all yields a batch of none.
        """
        if num_workers > 0:
            kwargs.setdefault("prefetch_factor", 2)
            kwargs.setdefault("persistent_workers", True)
        loader = _SkipCountingLoader if self.skip_corrupt else DataLoader
        return loader(
            self,  # type: ignore[arg-type]
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory and torch.cuda.is_available(),
            drop_last=drop_last,
            collate_fn=self.collator(pad_to=pad_to),
            **kwargs,
        )


def _shuffled(videos: Iterator[Video], size: int, rng: np.random.Generator) -> Iterator[Video]:
    """Shuffles a stream through a buffer of ``size`` items; pending skip counts are carried
    by whatever video leaves the buffer next."""
    buffer: list[Video] = []
    pending = 0
    for video in videos:
        if video.skipped:
            pending += video.skipped
            video = replace(video, skipped=0)
        if len(buffer) < size:
            buffer.append(video)
            continue
        j = int(rng.integers(size))
        out, buffer[j] = buffer[j], video
        if pending:
            out, pending = replace(out, skipped=pending), 0
        yield out
    rng.shuffle(buffer)
    for out in buffer:
        if pending:
            out, pending = replace(out, skipped=pending), 0
        yield out


def _bucketed(
    videos: Iterator[Video], size: int, rng: np.random.Generator, window_batches: int = 16
) -> Iterator[Video]:
    """Runs of ``size`` videos of similar length: each window of ``size * window_batches``
    videos is sorted by length, cut into runs, and the runs are emitted in random order."""
    window: list[Video] = []

    def flush() -> Iterator[Video]:
        window.sort(key=lambda v: v.num_frames or 0)
        runs = [window[i : i + size] for i in range(0, len(window), size)]
        for r in rng.permutation(len(runs)):
            yield from runs[int(r)]
        window.clear()

    for video in videos:
        window.append(video)
        if len(window) == size * window_batches:
            yield from flush()
    if window:
        yield from flush()


class _SkipCountingLoader(DataLoader[Batch]):
    """A DataLoader whose batches of no video (from a shard whose every record was skipped) are
    folded into batches with videos, so that their counts reach a batch that is used."""

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        return _fold_empty_batches(super().__iter__())


def _fold_empty_batches(batches: Iterator[Batch]) -> Iterator[Batch]:
    """The batches with videos, one behind (each is yielded once the next has arrived), the
    ``num_skipped`` of a batch of no video added to the next batch with videos (to the last one
    when none comes after it); a stream with no video at all yields one batch of none."""
    held: Batch | None = None
    empty: Batch | None = None
    pending = 0
    for batch in batches:
        if not len(batch):
            pending += batch.num_skipped
            empty = batch
            continue
        if held is not None:
            yield held
        held = batch
        held.num_skipped += pending
        pending = 0
    if held is not None:
        held.num_skipped += pending
        yield held
    elif empty is not None:
        empty.num_skipped = pending
        yield empty
