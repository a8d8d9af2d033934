"""Fuzzing: random and mutated records and files only ever raise the project's own errors."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextvlad.data import (
    FRAME_LEVEL,
    VIDEO_LEVEL,
    CorruptRecordError,
    FeatureSpec,
    RecordError,
    Schema,
    decode_video,
    encode_example,
    encode_sequence_example,
    infer_schema,
    iter_records,
    parse_example,
    parse_sequence_example,
    read_videos,
)
from nextvlad.data.tfrecord import encode_record

SMALL = Schema(features=(FeatureSpec("rgb", 16), FeatureSpec("audio", 4)))
SMALL_VIDEO = Schema(features=(FeatureSpec("mean_rgb", 16),), frame_level=False)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _seed_records() -> list[bytes]:
    rng = np.random.default_rng(0)
    segs = {
        "segment_start_times": np.array([0, 5]),
        "segment_end_times": np.array([5, 10]),
        "segment_labels": np.array([1, 300]),
        "segment_scores": np.array([1.0, 0.0], np.float32),
    }
    return [
        encode_sequence_example(
            {"id": b"ab", "labels": np.array([1, 200, 3]), **segs},
            {
                "rgb": rng.integers(0, 256, (3, 16), dtype=np.uint8),
                "audio": rng.integers(0, 256, (3, 4), dtype=np.uint8),
            },
        ),
        encode_example(
            {"video_id": b"cd", "labels": [2], "mean_rgb": rng.random(16, dtype=np.float32)}
        ),
    ]


SEEDS = _seed_records()


def _decode_everything(data: bytes) -> None:
    for call in (
        lambda: parse_example(data),
        lambda: parse_sequence_example(data),
        lambda: infer_schema(data),
        lambda: decode_video(data, SMALL, max_frames=2, num_classes=250),
        lambda: decode_video(data, SMALL_VIDEO),
        lambda: decode_video(data, FRAME_LEVEL),
        lambda: decode_video(data, VIDEO_LEVEL),
    ):
        with contextlib.suppress(RecordError):
            call()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0x00, 0x0A, 0x12, 0x1A, 0x80, 0xFF]))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            del data[pos:]
    return bytes(data)


def test_seed_records_decode() -> None:
    assert decode_video(SEEDS[0], SMALL).num_frames == 3
    assert decode_video(SEEDS[1], SMALL_VIDEO).id == "cd"


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _decode_everything(data)


@FUZZ
@given(mutated())
def test_mutated_records(data: bytes) -> None:
    _decode_everything(data)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(SEEDS), mutated()), max_size=4), mutated())
def test_mutated_files(records: list[bytes], noise: bytes) -> None:
    raw = bytearray(b"".join(encode_record(r) for r in records))
    if raw and noise:  # damage the framing too: overwrite a few bytes somewhere
        pos = noise[0] * 7 % len(raw)
        raw[pos : pos + len(noise[:4])] = noise[:4]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.tfrecord"
        path.write_bytes(bytes(raw))
        for item in iter_records(path):
            assert isinstance(item, CorruptRecordError) or item.data is not None
        skipped = list(read_videos([str(path)], SMALL, skip_corrupt=True))
        assert len(skipped) <= len(records)
        try:
            list(read_videos([str(path)], SMALL))
        except RecordError as err:
            assert err.path == str(path) and err.index is not None and err.offset is not None


@FUZZ
@given(st.binary(max_size=200))
def test_random_files(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.tfrecord"
        path.write_bytes(raw)
        list(read_videos([str(path)], SMALL, skip_corrupt=True))
