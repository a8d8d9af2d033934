"""Decoding YouTube-8M records: the real shards in ../shared, and every off-schema case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nextvlad.data import (
    FRAME_LEVEL,
    VIDEO_LEVEL,
    YT8M_NUM_CLASSES,
    FeatureSpec,
    Schema,
    SchemaError,
    Segments,
    Video,
    decode_video,
    encode_example,
    encode_sequence_example,
    encode_video,
    infer_schema,
    iter_records,
    read_videos,
    resolve_files,
)
from nextvlad.data.tfrecord import RawRecord, encode_record
from nextvlad.errors import ConfigError
from tests.conftest import shared_path

SJJ3 = "data/yt8m-2018-frame-sample/SjJ3.tfrecord"


def _only_record(path: Path) -> bytes:
    (record,) = list(iter_records(path))
    assert isinstance(record, RawRecord) and record.data is not None
    return record.data


def test_real_frame_level_sample() -> None:
    video = decode_video(_only_record(shared_path(SJJ3)), num_classes=YT8M_NUM_CLASSES)
    assert video.id == "SjJ3"
    assert video.labels.tolist() == [11]
    assert video.num_frames == 170
    assert list(video.features) == ["rgb", "audio"]
    assert video.features["rgb"].shape == (170, 1024)
    assert video.features["audio"].shape == (170, 128)
    assert video.features["rgb"].dtype == np.uint8 and video.features["audio"].dtype == np.uint8
    assert not video.features["rgb"].flags.owndata  # the vectorised path: a view, no copy
    assert video.segments is None


def test_rewriting_the_real_sample_reproduces_tensorflows_bytes() -> None:
    """TensorFlow wrote map entries in its own (hash) order: context labels before id, feature
    lists audio before rgb. Encoding in that order gives the file back byte for byte."""
    path = shared_path(SJJ3)
    raw = path.read_bytes()
    video = decode_video(_only_record(path))
    data = encode_sequence_example(
        {"labels": video.labels, "id": video.id.encode()},
        {"audio": video.features["audio"], "rgb": video.features["rgb"]},
    )
    assert encode_record(data) == raw
    # encode_video writes the canonical 2018 layout (id first, rgb first): same content.
    again = decode_video(encode_video(video))
    assert again.id == video.id and again.labels.tolist() == [11]
    for name in ("rgb", "audio"):
        np.testing.assert_array_equal(again.features[name], video.features[name])


def test_real_video_level_shards() -> None:
    shared_path("data/yt8m-2018-video-level/validate0000.tfrecord")
    files = resolve_files(str(shared_path("data/yt8m-2018-video-level")) + "/*.tfrecord")
    assert len(files) == 60
    ids = []
    low, high = YT8M_NUM_CLASSES, -1
    for video in read_videos(files, VIDEO_LEVEL, num_classes=YT8M_NUM_CLASSES):
        ids.append(video.id)
        assert video.features["mean_rgb"].shape == (1024,)
        assert video.features["mean_audio"].shape == (128,)
        assert video.features["mean_rgb"].dtype == np.float32
        assert video.num_frames is None
        if video.labels.size:
            low, high = min(low, int(video.labels.min())), max(high, int(video.labels.max()))
    assert len(ids) == 17_499
    assert len(set(ids)) == 17_499
    assert low >= 0 and high < YT8M_NUM_CLASSES


def test_infer_schema_on_real_data() -> None:
    assert infer_schema(_only_record(shared_path(SJJ3))) == FRAME_LEVEL
    first = next(
        iter(iter_records(shared_path("data/yt8m-2018-video-level/validate0000.tfrecord")))
    )
    assert infer_schema(first.data) == VIDEO_LEVEL  # type: ignore[union-attr,arg-type]


def _frames(count: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, dim), dtype=np.uint8)


def _frame_record(
    rgb: np.ndarray | None = None,
    audio: np.ndarray | None = None,
    labels: object = None,
    id_key: str = "id",
    extra: dict[str, object] | None = None,
) -> bytes:
    rgb = _frames(5, 1024) if rgb is None else rgb
    audio = _frames(5, 128, 1) if audio is None else audio
    context: dict[str, object] = {id_key: b"v1"}
    context["labels"] = np.array([3, 7], np.int64) if labels is None else labels
    context.update(extra or {})
    return encode_sequence_example(context, {"rgb": rgb, "audio": audio})  # type: ignore[arg-type]


def test_2017_video_id_key_and_missing_labels() -> None:
    video = decode_video(_frame_record(id_key="video_id"))
    assert video.id == "v1"
    record = encode_sequence_example(
        {"id": b"x"}, {"rgb": _frames(2, 1024), "audio": _frames(2, 128)}
    )
    assert decode_video(record).labels.tolist() == []


def test_max_frames_cuts() -> None:
    video = decode_video(_frame_record(_frames(9, 1024), _frames(9, 128)), max_frames=4)
    assert video.num_frames == 4
    assert video.features["rgb"].shape == (4, 1024) and video.features["audio"].shape == (4, 128)
    np.testing.assert_array_equal(video.features["rgb"], _frames(9, 1024)[:4])


def test_zero_frame_video_is_valid() -> None:
    video = decode_video(_frame_record(_frames(0, 1024), _frames(0, 128)))
    assert video.num_frames == 0
    assert video.features["rgb"].shape == (0, 1024)


def test_segments_are_exposed() -> None:
    segs = {
        "segment_start_times": np.array([0, 25], np.int64),
        "segment_end_times": np.array([5, 30], np.int64),
        "segment_labels": np.array([3, 7], np.int64),
        "segment_scores": np.array([1.0, 0.0], np.float32),
    }
    video = decode_video(_frame_record(extra=segs))
    assert isinstance(video.segments, Segments)
    assert video.segments.start_times.tolist() == [0, 25]
    assert video.segments.end_times.tolist() == [5, 30]
    assert video.segments.labels.tolist() == [3, 7]
    assert video.segments.scores.tolist() == [1.0, 0.0]
    again = decode_video(encode_video(video))
    assert again.segments is not None and again.segments.labels.tolist() == [3, 7]


def test_segment_end_times_are_optional() -> None:
    """Without ``segment_end_times`` the end is start + 5 (Google's reader never reads it);
    with it, the record's values are kept, even when they are not start + 5."""
    segs: dict[str, object] = {
        "segment_start_times": np.array([0, 25], np.int64),
        "segment_labels": np.array([3, 7], np.int64),
        "segment_scores": np.array([1.0, 0.0], np.float32),
    }
    video = decode_video(_frame_record(extra=segs))
    assert video.segments is not None
    assert video.segments.start_times.tolist() == [0, 25]
    assert video.segments.end_times.tolist() == [5, 30]
    assert video.segments.labels.tolist() == [3, 7]
    odd = decode_video(_frame_record(extra={**segs, "segment_end_times": np.array([4, 31])}))
    assert odd.segments is not None and odd.segments.end_times.tolist() == [4, 31]
    # A partial set without a start time or without scores is still incomplete.
    for key in ("segment_start_times", "segment_scores", "segment_labels"):
        rest = {k: v for k, v in segs.items() if k != key}
        with pytest.raises(SchemaError, match=f"missing \\['{key}'\\]"):
            decode_video(_frame_record(extra=rest))
    made = Segments.rated([10], [4], [1.0])
    assert made.end_times.tolist() == [15] and made.scores.dtype == np.float32


@pytest.mark.parametrize(
    ("record", "schema", "num_classes", "message"),
    [
        (_frame_record(_frames(5, 1000)), FRAME_LEVEL, None, "frame 0: expected one 1024-byte"),
        (_frame_record(_frames(5, 1024), _frames(4, 128)), FRAME_LEVEL, None, "differ in length"),
        (_frame_record(labels=np.array([3, 3862])), FRAME_LEVEL, 3862, "class 3862, not below"),
        (_frame_record(labels=np.array([-1])), FRAME_LEVEL, None, "negative class -1"),
        (_frame_record(labels=np.array([0.5], np.float32)), FRAME_LEVEL, None, "float list"),
        (_frame_record(id_key="name"), FRAME_LEVEL, None, "no id"),
        (_frame_record(extra={"segment_labels": [1]}), FRAME_LEVEL, None, "incomplete"),
        (_frame_record(), VIDEO_LEVEL, None, "frame-level data read with a video-level schema"),
        (encode_example({"id": b"v", "mean_rgb": np.zeros(1024, np.float32)}), FRAME_LEVEL, None, "no feature lists"),
        (encode_example({"id": b"v", "mean_rgb": np.zeros(1024, np.float32)}), VIDEO_LEVEL, None, "no feature 'mean_audio'"),
        (encode_example({"id": b"v", "mean_rgb": np.zeros(1000, np.float32), "mean_audio": np.zeros(128, np.float32)}), VIDEO_LEVEL, None, "has 1000 values, expected 1024"),
        (encode_example({"id": [b"a", b"b"]}), VIDEO_LEVEL, None, "not a single bytes value"),
        (encode_example({"id": b"\xff"}), VIDEO_LEVEL, None, "not UTF-8"),
        (encode_sequence_example({"id": b"v"}, {"rgb": _frames(2, 1024)}), FRAME_LEVEL, None, "no feature list 'audio'"),
    ],
)  # fmt: skip
def test_off_schema_records_raise_schema_error(
    record: bytes, schema: Schema, num_classes: int | None, message: str
) -> None:
    with pytest.raises(SchemaError, match=message):
        decode_video(record, schema, num_classes=num_classes)


def test_custom_schema() -> None:
    schema = Schema.from_specs("flow:16,rgb:1024")
    assert schema.features == (FeatureSpec("flow", 16), FeatureSpec("rgb", 1024))
    assert schema.dim == 1040
    record = encode_sequence_example(
        {"id": b"c"}, {"rgb": _frames(3, 1024), "flow": _frames(3, 16)}
    )
    video = decode_video(record, schema)
    assert list(video.features) == ["flow", "rgb"] and video.num_frames == 3
    with pytest.raises(ConfigError):
        Schema.from_specs("rgb")
    with pytest.raises(ConfigError):
        Schema(features=(FeatureSpec("a", 1), FeatureSpec("a", 2)))
    with pytest.raises(ConfigError):
        Schema(features=(FeatureSpec("a", 0),))


def test_video_is_plain_data() -> None:
    video = Video("x", np.array([1]), {"rgb": _frames(1, 1024)}, 1)
    assert video.skipped == 0 and video.segments is None
