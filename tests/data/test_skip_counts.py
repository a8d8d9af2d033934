"""Every skipped record is counted: the ``num_skipped`` of the batches a loader yields add up to
the bad records of the epoch, wherever they lie (the middle or the end of a file, the end of a
shard, a shard with no good record) and with 0, 1 or 2 DataLoader workers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import nextvlad.data.dataset as dataset_module
from nextvlad.data import (
    Batch,
    ReadStats,
    Video,
    VideoCollator,
    VideoDataset,
    encode_video,
    iter_records,
    read_videos,
    synthetic_videos,
    write_records,
)
from tests.data.conftest import copy_bytes


def _truncated(src: str, dst: Path) -> str:
    """The file cut in the middle of its last record (12 records, 11 readable)."""
    raw = Path(src).read_bytes()
    return copy_bytes(src, dst, raw[: len(raw) - 1000])


def _flipped(src: str, dst: Path, index: int) -> str:
    """The file with a flipped data byte in record ``index`` (a CRC mismatch; reading goes on)."""
    offsets = [r.offset for r in iter_records(src)]
    raw = bytearray(Path(src).read_bytes())
    raw[offsets[index] + 12 + 100] ^= 0xFF
    return copy_bytes(src, dst, bytes(raw))


def _all_bad(src: str, dst: Path) -> str:
    """A file of one record, cut short: no good record at all."""
    offsets = [r.offset for r in iter_records(src)]
    return copy_bytes(src, dst, Path(src).read_bytes()[: offsets[1] - 10])


def _bad_label_last(dst: Path) -> str:
    """Two good videos, then one with a label out of range (off-schema, skipped)."""
    good = list(synthetic_videos(2, seed=9))
    bad = next(synthetic_videos(1, seed=9, start=2))
    bad = Video("bad-label", np.array([30]), bad.features, bad.num_frames)
    write_records(dst, [encode_video(v) for v in (*good, bad)])
    return str(dst)


# name -> (files from the 4 synthetic files and a folder, bad records, good videos)
Case = Callable[[list[str], Path], list[str]]
CASES: dict[str, tuple[Case, int, int]] = {
    "truncated alone": (lambda f, d: [_truncated(f[0], d / "t.tfrecord")], 1, 11),
    "truncated, good": (lambda f, d: [_truncated(f[0], d / "t.tfrecord"), f[1]], 1, 23),
    "good, truncated": (lambda f, d: [f[1], _truncated(f[0], d / "t.tfrecord")], 1, 23),
    "flipped in the middle": (lambda f, d: [_flipped(f[0], d / "m.tfrecord", 5)], 1, 11),
    "flipped at the end": (lambda f, d: [_flipped(f[0], d / "e.tfrecord", 11)], 1, 11),
    "both": (
        lambda f, d: [_flipped(f[0], d / "m.tfrecord", 5), _truncated(f[1], d / "t.tfrecord")],
        2,
        22,
    ),
    "off-schema at the end": (lambda f, d: [_bad_label_last(d / "l.tfrecord")], 1, 2),
    "all bad, good": (lambda f, d: [_all_bad(f[0], d / "b.tfrecord"), f[1]], 1, 12),
    "good, all bad": (lambda f, d: [f[1], _all_bad(f[0], d / "b.tfrecord")], 1, 12),
    "all bad alone": (lambda f, d: [_all_bad(f[0], d / "b.tfrecord")], 1, 0),
}


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_batches_count_every_skipped_record(
    frame_files: list[str], tmp_path: Path, case: str, workers: int
) -> None:
    build, bad, good = CASES[case]
    files = build(frame_files, tmp_path)
    dataset = VideoDataset(files, num_classes=25, skip_corrupt=True, shuffle=True, shuffle_buffer=4)
    loader = dataset.loader(4, num_workers=workers)
    for epoch in (0, 1):  # persistent workers: each epoch counts its skips again
        dataset.set_epoch(epoch)
        batches = list(loader)
        assert sum(b.num_skipped for b in batches) == bad
        ids = [vid for b in batches for vid in b.ids]
        assert len(ids) == len(set(ids)) == good
        if good:
            assert all(len(b) for b in batches)  # batches of no video are folded away
        else:
            [batch] = batches
            assert batch.frames is None and batch.labels.shape == (0, 25)


def test_the_last_video_carries_the_skips_after_it(frame_files: list[str], tmp_path: Path) -> None:
    stats = ReadStats()
    files = [frame_files[1], _truncated(frame_files[0], tmp_path / "t.tfrecord")]
    videos = list(read_videos(files, skip_corrupt=True, stats=stats))
    assert len(videos) == 23 and stats.num_corrupt == 1
    assert [v.skipped for v in videos] == [0] * 22 + [1]
    middle = [_flipped(frame_files[0], tmp_path / "m.tfrecord", 5)]
    assert [v.skipped for v in read_videos(middle, skip_corrupt=True)] == [0] * 5 + [1] + [0] * 5


def test_a_shard_of_no_good_record_ends_with_a_placeholder(
    frame_files: list[str], tmp_path: Path
) -> None:
    files = [_all_bad(frame_files[0], tmp_path / "b.tfrecord")]
    stats = ReadStats()
    assert list(read_videos(files, skip_corrupt=True, stats=stats)) == []  # the plain reader
    assert stats.num_corrupt == 1
    [placeholder] = read_videos(files, skip_corrupt=True, placeholder=True)
    assert placeholder.is_placeholder and placeholder.skipped == 1
    assert not next(synthetic_videos(1)).is_placeholder


def test_collator_keeps_only_the_count_of_placeholders() -> None:
    collate = VideoCollator(25)
    empty = collate([Video.placeholder(2)])
    assert len(empty) == 0 and empty.num_skipped == 2 and empty.labels.shape == (0, 25)
    video = next(synthetic_videos(1, seed=1))
    video = Video(video.id, video.labels, video.features, video.num_frames, skipped=1)
    batch = collate([video, Video.placeholder(3)])
    assert batch.ids == [video.id] and batch.num_skipped == 4
    assert batch.frames is not None and batch.frames.shape[0] == 1


def _batch(size: int, skipped: int) -> Batch:
    return Batch(
        ids=[str(i) for i in range(size)], labels=torch.zeros(size, 3), num_skipped=skipped
    )


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        ([(2, 0), (0, 1), (2, 0)], [(2, 0), (2, 1)]),  # to the next batch with videos
        ([(0, 1), (2, 1)], [(2, 2)]),
        ([(2, 1), (2, 0), (0, 2), (0, 1)], [(2, 1), (2, 3)]),  # after the last: to the last
        ([(0, 1), (0, 2)], [(0, 3)]),  # no video at all: one batch of none
        ([], []),
    ],
)
def test_batches_of_no_video_are_folded(
    stream: list[tuple[int, int]], expected: list[tuple[int, int]]
) -> None:
    out = list(dataset_module._fold_empty_batches(iter([_batch(*b) for b in stream])))
    assert [(len(b), b.num_skipped) for b in out] == expected


def test_without_skip_corrupt_the_loader_is_a_plain_dataloader(frame_files: list[str]) -> None:
    plain = VideoDataset(frame_files, num_classes=25).loader(4)
    counting = VideoDataset(frame_files, num_classes=25, skip_corrupt=True).loader(4)
    assert type(plain) is torch.utils.data.DataLoader
    assert [b.ids for b in plain] == [b.ids for b in counting]
