"""Rated segments, inference windows, their dataset and collator, and the class whitelist."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from nextvlad.data import (
    SEGMENT_SIZE,
    DataError,
    SchemaError,
    SegmentCollator,
    SegmentDataset,
    Segments,
    TFRecordWriter,
    Video,
    count_segments,
    decode_video,
    encode_video,
    iter_records,
    load_segment_classes,
    rated_segments,
    read_videos,
    segment_windows,
    synthetic_videos,
    write_synthetic,
)
from nextvlad.data.tfrecord import RawRecord
from nextvlad.errors import ConfigError
from tests.conftest import shared_path

C = 25


def _video(frames: int = 23, segments: Segments | None = None, vid: str = "v") -> Video:
    rgb = (np.arange(frames * 1024) % 251).astype(np.uint8).reshape(frames, 1024)
    audio = (np.arange(frames * 128) % 13).astype(np.uint8).reshape(frames, 128)
    return Video(vid, np.array([2, 7]), {"rgb": rgb, "audio": audio}, frames, segments)


def _write(path: Path, videos: list[Video]) -> str:
    with TFRecordWriter(path) as writer:
        for video in videos:
            writer.write(encode_video(video))
    return str(path)


def _only_record(path: str) -> bytes:
    (item,) = list(iter_records(path))
    assert isinstance(item, RawRecord) and item.data is not None
    return bytes(item.data)


# Ratings of the hand-made video: start 10 rated for 3 (yes) and 7 (no), start 0 for 7 (yes),
# start 15 for 3 (no); so three segments in first-appearance order 10, 0, 15.
RATINGS = Segments.rated([10, 0, 10, 15], [3, 7, 7, 3], [1.0, 1.0, 0.0, 0.0])


def test_rated_segments_group_by_start_in_first_seen_order() -> None:
    video = _video(23, RATINGS)
    parts = rated_segments(video)
    assert [p.id for p in parts] == ["v:10", "v:0", "v:15"]
    assert [p.num_frames for p in parts] == [5, 5, 5]
    np.testing.assert_array_equal(parts[0].features["rgb"], video.features["rgb"][10:15])
    np.testing.assert_array_equal(parts[2].features["audio"], video.features["audio"][15:20])
    assert parts[0].labels.tolist() == [3] and parts[1].labels.tolist() == [7]
    assert parts[2].labels.tolist() == []
    first = parts[0].segments
    assert first is not None and sorted(first.labels.tolist()) == [3, 7]
    assert rated_segments(_video(23)) == []
    # A segment that runs past the end is cut there; one that starts past it is an error.
    cut = rated_segments(_video(12, Segments.rated([10], [1], [1.0])))
    assert cut[0].num_frames == 2 and cut[0].features["rgb"].shape == (2, 1024)
    with pytest.raises(SchemaError, match="segment at 12 outside its 12 frames"):
        rated_segments(_video(12, Segments.rated([12], [1], [1.0])))


def test_collator_labels_are_ratings_and_weights_mark_rated_pairs() -> None:
    parts = rated_segments(_video(23, RATINGS))
    batch = SegmentCollator(C)(parts)
    assert batch.ids == ["v:10", "v:0", "v:15"]
    assert batch.frames is not None and tuple(batch.frames.shape) == (3, 5, 1152)
    assert batch.num_frames is not None and batch.num_frames.tolist() == [5, 5, 5]
    assert batch.weights is not None and tuple(batch.weights.shape) == (3, C)
    expected_w = np.zeros((3, C), np.float32)
    expected_w[0, [3, 7]] = expected_w[1, 7] = expected_w[2, 3] = 1.0
    expected_y = np.zeros((3, C), np.float32)
    expected_y[0, 3] = expected_y[1, 7] = 1.0
    np.testing.assert_array_equal(batch.weights.numpy(), expected_w)
    np.testing.assert_array_equal(batch.labels.numpy(), expected_y)
    # The whitelist zeroes the weights of other classes; labels stay.
    masked = SegmentCollator(C, classes=np.array([3]))(parts)
    assert masked.weights is not None
    assert masked.weights.sum().item() == 2.0 and masked.weights[:, 3].tolist() == [1, 0, 1]
    np.testing.assert_array_equal(masked.labels.numpy(), expected_y)
    again = pickle.loads(pickle.dumps(batch))
    assert again.weights is not None and again.weights.equal(batch.weights)
    with pytest.raises(ConfigError, match="outside"):
        SegmentCollator(C, classes=np.array([C]))


def test_windows_every_stride() -> None:
    video = _video(23)
    windows = segment_windows(video)
    assert [w.id for w in windows] == ["v:0", "v:5", "v:10", "v:15"]  # 20..22 is not whole
    assert all(w.num_frames == 5 and w.labels.size == 0 for w in windows)
    np.testing.assert_array_equal(windows[3].features["rgb"], video.features["rgb"][15:20])
    strided = segment_windows(video, segment_size=4, stride=3)
    assert [w.id for w in strided] == [f"v:{s}" for s in range(0, 20, 3)]
    assert segment_windows(_video(4)) == []
    with pytest.raises(ConfigError, match="stride"):
        segment_windows(video, stride=0)
    batch = SegmentCollator(C)(windows)
    assert batch.weights is not None and batch.weights.sum().item() == 0.0


def test_dataset_over_our_records(tmp_path: Path) -> None:
    videos = [_video(23, RATINGS, "a"), _video(30, None, "b"), _video(8, RATINGS, "c")]
    videos[2] = replace(videos[2], segments=Segments.rated([0, 0], [1, 2], [0.0, 1.0]))
    path = _write(tmp_path / "rated.tfrecord", videos)
    dataset = SegmentDataset(path, num_classes=C)
    assert [s.id for s in dataset] == ["a:10", "a:0", "a:15", "c:0"]
    batches = list(dataset.loader(batch_size=3))
    assert [len(b) for b in batches] == [3, 1]
    last = batches[1]
    assert last.weights is not None and last.weights[0, [1, 2]].tolist() == [1.0, 1.0]
    assert last.labels[0, [1, 2]].tolist() == [0.0, 1.0] and last.weights.sum().item() == 2
    windows = SegmentDataset(path, num_classes=C, windows=True, stride=10)
    assert [w.id for w in windows] == ["a:0", "a:10", "b:0", "b:10", "b:20", "c:0"]
    shuffled = SegmentDataset(path, num_classes=C, shuffle=True, seed=1)
    assert sorted(s.id for s in shuffled) == sorted(s.id for s in dataset)


def test_dataset_over_synthetic_rated_records(tmp_path: Path) -> None:
    paths = write_synthetic(tmp_path, videos=6, shards=2, seed=2, segment_ratings=5)
    dataset = SegmentDataset([str(p) for p in paths], num_classes=C)
    counts = count_segments(read_videos([str(p) for p in paths]))
    batch = next(iter(dataset.loader(batch_size=1000)))
    assert len(batch) == counts["num_rated_segments"]
    assert batch.weights is not None
    assert batch.weights.sum().item() == counts["num_segment_ratings"]
    assert (batch.labels * batch.weights).sum().item() == counts["num_positive_ratings"]
    assert (batch.labels <= batch.weights).all()  # a positive is always a rated pair


def test_real_frame_record_with_segments_added(tmp_path: Path) -> None:
    source = shared_path("data/yt8m-2018-frame-sample/SjJ3.tfrecord")
    video = decode_video(_only_record(str(source)))
    assert video.id == "SjJ3" and video.num_frames == 170 and video.segments is None
    ratings = Segments.rated([25, 100, 165, 25], [11, 11, 3, 40], [1.0, 0.0, 1.0, 0.0])
    path = _write(tmp_path / "sjj3.tfrecord", [replace(video, segments=ratings)])
    again = decode_video(_only_record(path))
    assert again.segments is not None and again.segments.end_times.tolist() == [30, 105, 170, 30]
    batches = list(SegmentDataset(path).loader(batch_size=8))
    (batch,) = batches
    assert batch.ids == ["SjJ3:25", "SjJ3:100", "SjJ3:165"]
    assert batch.frames is not None and tuple(batch.frames.shape) == (3, 5, 1152)
    np.testing.assert_array_equal(batch.frames[1, :, :1024].numpy(), video.features["rgb"][100:105])
    np.testing.assert_array_equal(batch.frames[2, :, 1024:].numpy(), video.features["audio"][165:])
    assert batch.weights is not None and tuple(batch.weights.shape) == (3, 3862)
    assert batch.weights.sum().item() == 4 and batch.weights[0, [11, 40]].tolist() == [1, 1]
    assert batch.labels[:, 11].tolist() == [1, 0, 0] and batch.labels[2, 3].item() == 1
    windows = list(SegmentDataset(path, windows=True))
    assert len(windows) == 34 and windows[-1].id == "SjJ3:165"


def test_skip_counts_ride_on_segments() -> None:
    video = replace(_video(23, RATINGS), skipped=2)
    dataset = SegmentDataset.__new__(SegmentDataset)  # only _segments' settings are needed
    dataset.windows, dataset.segment_size, dataset.stride = False, SEGMENT_SIZE, None
    parts = list(dataset._segments(iter([video, replace(_video(9), skipped=3)])))
    assert [p.skipped for p in parts] == [2, 0, 0, 3] and parts[3].is_placeholder


def test_load_segment_classes_real_csv() -> None:
    classes = load_segment_classes(shared_path("data/yt8m-2019/segment_label_ids.csv"))
    assert classes.dtype == np.int64 and classes.shape == (1000,)
    assert np.all(np.diff(classes) > 0) and classes[0] >= 0 and classes[-1] < 3862
    assert classes[:3].tolist() == [3, 7, 8]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("Class\n3\n", ":1: no 'Index' column"),
        ("Index\n3\nx7\n", ":3: class 'x7' is not a non-negative integer"),
        ("Index\n3\n-1\n", ":3: class '-1'"),
        ("Index\n3\n5\n3\n", ":4: class 3 already listed on line 2"),
        ("Index\n\n", "no classes"),
        ("Name,Index\na,4\nb\n", ":3: class ''"),
    ],
)
def test_load_segment_classes_malformed(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "classes.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_segment_classes(path)
    assert str(path) in str(info.value)


def test_load_segment_classes_other_columns(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("Name,Index\r\nb,9\r\na,4\r\n")
    assert load_segment_classes(path).tolist() == [4, 9]
    with pytest.raises(DataError, match="cannot read"):
        load_segment_classes(tmp_path / "missing.csv")


def test_synthetic_video_ratings_follow_the_concepts() -> None:
    for video in synthetic_videos(10, seed=5, segment_ratings=5):
        seg = video.segments
        assert seg is not None and 1 <= seg.start_times.size <= 5
        assert set(seg.labels.tolist()) <= set(video.labels.tolist())
        assert np.all(seg.start_times % SEGMENT_SIZE == 0)
        assert np.all(seg.start_times + SEGMENT_SIZE <= (video.num_frames or 0))
        assert np.array_equal(seg.end_times, seg.start_times + SEGMENT_SIZE)
        assert set(seg.scores.tolist()) <= {0.0, 1.0}


def test_loader_with_workers_and_skipped_records(tmp_path: Path) -> None:
    """Weights cross from DataLoader workers intact (shared-memory batches), and the skip
    count of a corrupt record reaches a batch."""
    videos = [_video(23, RATINGS, f"v{i}") for i in range(4)]
    path = Path(_write(tmp_path / "r.tfrecord", videos))
    expected = next(iter(SegmentDataset(str(path), num_classes=C).loader(batch_size=12)))
    (batch,) = list(SegmentDataset(str(path), num_classes=C).loader(12, num_workers=1))
    assert batch.ids == expected.ids and len(batch) == 12
    assert batch.weights is not None and expected.weights is not None
    assert batch.weights.equal(expected.weights) and batch.labels.equal(expected.labels)
    raw = bytearray(path.read_bytes())
    size = len(raw) // 4  # the four records have the same size
    raw[size + size // 2] ^= 0x10  # inside the frames of record 1
    path.write_bytes(bytes(raw))
    dataset = SegmentDataset(str(path), num_classes=C, skip_corrupt=True)
    batches = list(dataset.loader(batch_size=2))
    assert sum(b.num_skipped for b in batches) == 1 and sum(len(b) for b in batches) == 9
