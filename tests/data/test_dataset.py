"""VideoDataset: sharding over workers and ranks, shuffling, batches, corrupt records."""

from __future__ import annotations

import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import nextvlad.data.dataset as dataset_module
from nextvlad.data import (
    VIDEO_LEVEL,
    Batch,
    CorruptRecordError,
    NoDataFilesError,
    SchemaError,
    Video,
    VideoCollator,
    VideoDataset,
    encode_video,
    read_videos,
    synthetic_videos,
    write_records,
)
from nextvlad.errors import ConfigError
from tests.data.conftest import FRAME_VIDEOS, VIDEO_VIDEOS, copy_bytes


def _ids_of_shard(
    monkeypatch: pytest.MonkeyPatch, dataset: VideoDataset, worker: int, workers: int
) -> list[str]:
    info = types.SimpleNamespace(id=worker, num_workers=workers)
    monkeypatch.setattr(dataset_module, "get_worker_info", lambda: info)
    return [video.id for video in dataset]


@pytest.mark.parametrize(("world", "workers"), [(1, 1), (1, 2), (2, 2), (3, 1), (2, 3), (4, 4)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_shards_cover_every_record_once(
    monkeypatch: pytest.MonkeyPatch,
    frame_files: list[str],
    world: int,
    workers: int,
    shuffle: bool,
) -> None:
    # 4 files: by file for up to 4 shards, by record beyond.
    seen: Counter[str] = Counter()
    for rank in range(world):
        dataset = VideoDataset(
            frame_files, num_classes=25, shuffle=shuffle, rank=rank, world_size=world, seed=5
        )
        dataset.set_epoch(2)
        for worker in range(workers):
            seen.update(_ids_of_shard(monkeypatch, dataset, worker, workers))
    assert len(seen) == FRAME_VIDEOS
    assert set(seen.values()) == {1}


def test_rank_and_world_size_from_environment(
    monkeypatch: pytest.MonkeyPatch, frame_files: list[str]
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    dataset = VideoDataset(frame_files, num_classes=25)
    assert dataset.shard() == (1, 2)
    assert len(list(dataset)) == FRAME_VIDEOS // 2  # files 1 and 3, 12 videos each
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="rank 2"):
        dataset.shard()


def test_order_is_deterministic_and_changes_with_epoch_and_seed(frame_files: list[str]) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        dataset = VideoDataset(
            frame_files, num_classes=25, shuffle=True, shuffle_buffer=8, seed=seed
        )
        dataset.set_epoch(epoch)
        return [video.id for video in dataset]

    first = order(0, 0)
    assert first == order(0, 0)
    assert sorted(first) == sorted(order(0, 1)) and first != order(0, 1)
    assert first != order(1, 0)
    plain = [v.id for v in VideoDataset(frame_files, num_classes=25)]
    assert plain == sorted(plain)  # no shuffle: file order, record order


def test_sample_frames(frame_files: list[str]) -> None:
    dataset = VideoDataset(frame_files[:1], num_classes=25, sample_frames=20, seed=1)
    full = {v.id: v for v in VideoDataset(frame_files[:1], num_classes=25)}
    videos = list(dataset)
    assert [v.id for v in videos] == [v.id for v in list(dataset)]
    for video in videos:
        assert video.num_frames == 20
        rgb = video.features["rgb"]
        assert rgb.shape == (20, 1024)
        source = {bytes(row) for row in full[video.id].features["rgb"]}
        assert all(bytes(row) in source for row in rgb)
    again = [v.features["rgb"] for v in dataset]
    assert all(np.array_equal(a, v.features["rgb"]) for a, v in zip(again, videos, strict=True))
    with pytest.raises(ConfigError):
        VideoDataset(frame_files, VIDEO_LEVEL, sample_frames=3)


def _video(vid: str, frames: int, labels: list[int]) -> Video:
    rng = np.random.default_rng(frames)
    features = {
        "rgb": rng.integers(1, 256, (frames, 1024), dtype=np.uint8),
        "audio": rng.integers(1, 256, (frames, 128), dtype=np.uint8),
    }
    return Video(vid, np.array(labels, np.int64), features, frames)


def test_collate_frame_level() -> None:
    videos = [_video("a", 3, [1, 4]), _video("b", 0, []), _video("c", 5, [0])]
    batch = VideoCollator(num_classes=6)(videos)
    assert isinstance(batch, Batch) and len(batch) == 3
    assert batch.ids == ["a", "b", "c"]
    assert batch.frames is not None and batch.num_frames is not None
    assert batch.frames.dtype == torch.uint8 and batch.frames.shape == (3, 5, 1152)
    assert batch.num_frames.dtype == torch.int64 and batch.num_frames.tolist() == [3, 0, 5]
    assert batch.features is None
    assert batch.labels.dtype == torch.float32
    assert batch.labels.tolist() == [[0, 1, 0, 0, 1, 0], [0] * 6, [1, 0, 0, 0, 0, 0]]
    np.testing.assert_array_equal(batch.frames[0, :3, :1024].numpy(), videos[0].features["rgb"])
    np.testing.assert_array_equal(batch.frames[0, :3, 1024:].numpy(), videos[0].features["audio"])
    assert int(batch.frames[0, 3:].sum()) == 0 and int(batch.frames[1].sum()) == 0
    assert batch["frames"] is batch.frames
    with pytest.raises(KeyError):
        batch["nope"]
    padded = VideoCollator(num_classes=6, pad_to=300)(videos)
    assert padded.frames is not None and padded.frames.shape == (3, 300, 1152)
    with pytest.raises(ConfigError, match="pad_to"):
        VideoCollator(num_classes=6, pad_to=4)(videos)
    with pytest.raises(SchemaError, match="outside"):
        VideoCollator(num_classes=4)(videos)
    empty = VideoCollator(num_classes=6)([_video("z", 0, [])])
    assert empty.frames is not None and empty.frames.shape == (1, 1, 1152)  # never T = 0
    moved = batch.to("cpu")
    assert moved.frames is not None and torch.equal(moved.frames, batch.frames)


def test_video_level_batches(video_files: list[str]) -> None:
    dataset = VideoDataset(video_files, VIDEO_LEVEL, num_classes=25)
    batches = list(dataset.loader(16))
    assert [len(b) for b in batches] == [16, 16, 8]
    first = batches[0]
    assert first.frames is None and first.num_frames is None
    assert first.features is not None and first.features.shape == (16, 1152)
    assert first.features.dtype == torch.float32
    assert first.labels.shape == (16, 25)
    assert sum(len(b) for b in batches) == VIDEO_VIDEOS


def test_dataloader_with_workers_matches_one_process(frame_files: list[str]) -> None:
    dataset = VideoDataset(frame_files, num_classes=25)
    reference = {}
    for batch in dataset.loader(8):
        assert batch.frames is not None and batch.num_frames is not None
        for i, vid in enumerate(batch.ids):
            n = int(batch.num_frames[i])
            reference[vid] = (batch.frames[i, :n].clone(), batch.labels[i].clone())
    held = list(dataset.loader(8, num_workers=2))  # held: segments cannot be reused
    for _ in range(2):  # and again while releasing batches: segments are reused
        held += list(dataset.loader(8, num_workers=2))
    ids: Counter[str] = Counter()
    for batch in held:
        assert batch.frames is not None and batch.num_frames is not None
        for i, vid in enumerate(batch.ids):
            n = int(batch.num_frames[i])
            assert torch.equal(batch.frames[i, :n], reference[vid][0])
            assert torch.equal(batch.labels[i], reference[vid][1])
            assert int(batch.frames[i, n:].sum()) == 0
            ids[vid] += 1
    assert len(ids) == FRAME_VIDEOS and set(ids.values()) == {3}


def _corrupt_copy(frame_files: list[str], tmp_path: Path) -> list[str]:
    """Copies of the 4 synthetic files: file 1 with a flipped byte in record 2, file 3 cut in
    the middle of its last record, plus a file with a label out of range in record 0."""
    paths = [copy_bytes(f, tmp_path / Path(f).name) for f in frame_files]
    raw = bytearray(Path(paths[1]).read_bytes())
    offsets = [r.offset for r in __import__("nextvlad.data", fromlist=["x"]).iter_records(paths[1])]
    raw[offsets[2] + 500] ^= 0xFF
    Path(paths[1]).write_bytes(bytes(raw))
    raw3 = Path(paths[3]).read_bytes()
    Path(paths[3]).write_bytes(raw3[: len(raw3) - 1000])
    bad = next(synthetic_videos(1, seed=9))
    bad = Video("bad-label", np.array([30]), bad.features, bad.num_frames)
    good = next(synthetic_videos(1, seed=9, start=1))
    extra = tmp_path / "labels.tfrecord"
    write_records(extra, [encode_video(bad), encode_video(good)])
    return [*paths, str(extra)]


def test_corrupt_records_raise_with_file_and_index(frame_files: list[str], tmp_path: Path) -> None:
    files = _corrupt_copy(frame_files, tmp_path)
    with pytest.raises(
        CorruptRecordError, match=r"record 2, byte offset \d+: data CRC mismatch"
    ) as err:
        list(VideoDataset(files, num_classes=25))
    assert err.value.path == files[1] and err.value.index == 2
    with pytest.raises(CorruptRecordError, match=r"record 11.*truncated"):
        list(VideoDataset(files[3:4], num_classes=25))
    with pytest.raises(
        SchemaError, match=r"labels.tfrecord, record 0, byte offset 0: labels has class 30"
    ):
        list(VideoDataset(files[4:], num_classes=25))


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_corrupt_counts(frame_files: list[str], tmp_path: Path, workers: int) -> None:
    files = _corrupt_copy(frame_files, tmp_path)
    dataset = VideoDataset(files, num_classes=25, skip_corrupt=True, shuffle=True)
    batches = list(dataset.loader(8, num_workers=workers))
    assert sum(len(b) for b in batches) == FRAME_VIDEOS - 2 + 1  # 2 of ours bad, 1 extra good
    assert sum(b.num_skipped for b in batches) == 3
    if workers == 0:
        assert dataset.stats.num_corrupt == 3
        assert {e.index for e in dataset.stats.corrupt} == {0, 2, 11}


def test_skip_corrupt_keeps_record_sharding_a_partition(
    monkeypatch: pytest.MonkeyPatch, frame_files: list[str], tmp_path: Path
) -> None:
    files = _corrupt_copy(frame_files, tmp_path)[:2]  # 2 files, 3 workers: by record
    seen: Counter[str] = Counter()
    skipped = 0
    dataset = VideoDataset(files, num_classes=25, skip_corrupt=True)
    for worker in range(3):
        info = types.SimpleNamespace(id=worker, num_workers=3)
        monkeypatch.setattr(dataset_module, "get_worker_info", lambda info=info: info)
        for video in dataset:
            seen[video.id] += 1
            skipped += video.skipped
    assert len(seen) == 2 * 12 - 1 and set(seen.values()) == {1} and skipped == 1


def test_missing_files(tmp_path: Path, frame_files: list[str]) -> None:
    with pytest.raises(NoDataFilesError, match="no files match"):
        VideoDataset(str(tmp_path / "*.tfrecord"))
    with pytest.raises(NoDataFilesError, match="no such file"):
        VideoDataset([frame_files[0], str(tmp_path / "gone.tfrecord")])
    with pytest.raises(NoDataFilesError, match="directory"):
        VideoDataset(str(tmp_path))
    with pytest.raises(NoDataFilesError):
        VideoDataset([])


def test_read_videos_rejects_bad_shard(frame_files: list[str]) -> None:
    with pytest.raises(ValueError, match="shard"):
        list(read_videos(frame_files, shard=2, num_shards=2))


def test_recycled_read_buffers_never_change_a_live_video(frame_files: list[str]) -> None:
    """Read buffers are reused once a video is freed; videos still held keep their bytes."""
    kept = {}
    for i, video in enumerate(read_videos(frame_files, num_classes=25)):
        if i % 5 == 0:
            kept[video.id] = video  # the others are dropped and their buffers reused
    expected = {v.id: v for v in synthetic_videos(FRAME_VIDEOS, seed=3)}
    for vid, video in kept.items():
        assert not video.features["rgb"].flags.owndata  # still a view of a read buffer
        np.testing.assert_array_equal(video.features["rgb"], expected[vid].features["rgb"])
        np.testing.assert_array_equal(video.features["audio"], expected[vid].features["audio"])


def test_persistent_workers_follow_set_epoch(frame_files: list[str]) -> None:
    dataset = VideoDataset(frame_files, num_classes=25, shuffle=True, shuffle_buffer=8, seed=2)
    loader = dataset.loader(8, num_workers=1)  # one worker: the same order as one process
    assert loader.persistent_workers
    orders = []
    for epoch in (0, 1, 0):
        dataset.set_epoch(epoch)
        in_loader = [vid for batch in loader for vid in batch.ids]
        assert in_loader == [video.id for video in dataset]
        orders.append(in_loader)
    assert orders[0] == orders[2] != orders[1]


def test_recycled_batch_memory_never_changes_a_live_batch(frame_files: list[str]) -> None:
    """In one process batch memory is reused once a batch is freed; batches held are intact."""
    expected = {v.id: v for v in synthetic_videos(FRAME_VIDEOS, seed=3)}
    dataset = VideoDataset(frame_files, num_classes=25, shuffle=True, shuffle_buffer=4)
    kept = [batch for i, batch in enumerate(dataset.loader(4)) if i % 3 == 0]
    for batch in kept:
        assert batch.frames is not None and batch.num_frames is not None
        for i, vid in enumerate(batch.ids):
            n = int(batch.num_frames[i])
            video = expected[vid]
            np.testing.assert_array_equal(batch.frames[i, :n, :1024].numpy(), video.features["rgb"])
            np.testing.assert_array_equal(
                batch.frames[i, :n, 1024:].numpy(), video.features["audio"]
            )
            assert int(batch.frames[i, n:].sum()) == 0
            assert batch.labels[i].nonzero().flatten().tolist() == video.labels.tolist()


def test_workers_without_memfd_fall_back(
    monkeypatch: pytest.MonkeyPatch, frame_files: list[str]
) -> None:
    import os

    def refuse(*args: object) -> int:
        raise OSError("memfd_create not permitted")

    monkeypatch.setattr(os, "memfd_create", refuse)
    dataset = VideoDataset(frame_files[:2], num_classes=25)
    ids = [vid for batch in dataset.loader(8, num_workers=2) for vid in batch.ids]
    assert sorted(ids) == sorted(v.id for v in dataset)
