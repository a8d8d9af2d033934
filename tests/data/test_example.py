"""The generic Example / SequenceExample codec, including encodings TensorFlow does not write."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from nextvlad.data import (
    CorruptRecordError,
    decode_video,
    encode_example,
    encode_sequence_example,
    parse_example,
    parse_sequence_example,
)
from nextvlad.data._wire import len_field, varint


def test_example_round_trip_all_kinds() -> None:
    features: dict[str, Any] = {
        "id": b"abc",
        "names": [b"x", b"", b"yz"],
        "text": "h\u00e9",
        "ints": np.array([0, 1, 127, 128, 2**40, -1, -(2**63)], np.int64),
        "floats": np.array([0.5, -2.0, 1e30], np.float32),
        "more_ints": [3, 4],
        "more_floats": [0.25],
    }
    parsed = parse_example(encode_example(features))
    assert list(parsed) == list(features)
    assert parsed["id"] == [b"abc"]
    assert parsed["names"] == [b"x", b"", b"yz"]
    assert parsed["text"] == ["h\u00e9".encode()]
    np.testing.assert_array_equal(parsed["ints"], features["ints"])
    np.testing.assert_array_equal(parsed["floats"], features["floats"])
    assert parsed["floats"].dtype == np.float32  # type: ignore[union-attr]
    np.testing.assert_array_equal(parsed["more_ints"], [3, 4])
    np.testing.assert_array_equal(parsed["more_floats"], [0.25])


def test_empty_lists() -> None:
    parsed = parse_example(
        encode_example({"i": np.zeros(0, np.int64), "f": np.zeros(0, np.float32)})
    )
    assert parsed["i"].dtype == np.int64 and parsed["i"].size == 0  # type: ignore[union-attr]
    assert parsed["f"].dtype == np.float32 and parsed["f"].size == 0  # type: ignore[union-attr]
    with pytest.raises(TypeError, match="ambiguous"):
        encode_example({"x": []})


def test_sequence_example_round_trip() -> None:
    frames = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5)
    data = encode_sequence_example(
        {"id": b"v", "labels": np.array([2], np.int64)},
        {"rgb": frames, "scores": [np.array([1.0], np.float32), [2, 3]]},
    )
    context, lists = parse_sequence_example(data)
    assert context["id"] == [b"v"]
    assert [f[0] for f in lists["rgb"]] == [bytes(row) for row in frames]
    np.testing.assert_array_equal(lists["scores"][1], [2, 3])


def _feature(payload: bytes) -> bytes:
    return len_field(1, len_field(1, payload))  # Feature{bytes_list{value: payload}}


def _seq_record(rgb_body: bytes, audio_body: bytes, context: bytes | None = None) -> bytes:
    def entry(key: str, value: bytes) -> bytes:
        return len_field(1, len_field(1, key.encode()) + len_field(2, value))

    if context is None:
        context = entry("id", _feature(b"vid")) + entry(
            "labels", len_field(3, len_field(1, bytes([1, 2])))
        )
    lists = entry("rgb", rgb_body) + entry("audio", audio_body)
    return len_field(1, context) + len_field(2, lists)


def test_non_canonical_frames_take_the_general_path() -> None:
    """Frames with unknown fields, split bytes_list fields or long varints still decode."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 1024), dtype=np.uint8)
    audio = rng.integers(0, 256, (4, 128), dtype=np.uint8)
    canonical = _seq_record(
        b"".join(len_field(1, _feature(bytes(r))) for r in rgb),
        b"".join(len_field(1, _feature(bytes(a))) for a in audio),
    )
    # An unknown varint field (number 7) inside every second audio Feature.
    odd_audio = b"".join(
        len_field(1, _feature(bytes(a)) + (varint(7 << 3) + varint(5) if i % 2 else b""))
        for i, a in enumerate(audio)
    )
    # A non-minimal length varint (0x80 0x88 0x00 = 1024) in the first rgb value.
    first = b"\x0a" + b"\x80\x88\x00" + bytes(rgb[0])
    odd_rgb = len_field(1, len_field(1, first)) + b"".join(
        len_field(1, _feature(bytes(r))) for r in rgb[1:]
    )
    for record in (canonical, _seq_record(odd_rgb, odd_audio)):
        video = decode_video(record)
        np.testing.assert_array_equal(video.features["rgb"], rgb)
        np.testing.assert_array_equal(video.features["audio"], audio)
        assert video.num_frames == 4 and video.id == "vid" and video.labels.tolist() == [1, 2]


def test_unpacked_and_merged_lists() -> None:
    # Int64List with unpacked values, FloatList with unpacked fixed32 values, a repeated
    # Features map entry (the last one wins) and a repeated bytes_list (merged).
    ints = len_field(3, varint(1 << 3) + varint(5) + varint(1 << 3) + varint(2**64 - 3))
    floats = len_field(2, b"\x0d" + np.float32(1.5).tobytes() + b"\x0d" + np.float32(-1).tobytes())
    merged = len_field(1, len_field(1, b"a")) + len_field(1, len_field(1, b"b"))

    def entry(key: bytes, value: bytes) -> bytes:
        return len_field(1, len_field(1, key) + len_field(2, value))

    features = entry(b"i", ints) + entry(b"f", floats) + entry(b"m", merged)
    features += entry(b"i", len_field(3, len_field(1, b"\x07")))
    parsed = parse_example(len_field(1, features))
    np.testing.assert_array_equal(parsed["i"], [7])
    np.testing.assert_array_equal(parsed["f"], [1.5, -1.0])
    assert parsed["m"] == [b"a", b"b"]
    only_first = parse_example(len_field(1, entry(b"i", ints)))
    np.testing.assert_array_equal(only_first["i"], [5, -3])


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a",  # truncated length
        b"\x0a\x05abc",  # length past the end
        b"\x0b",  # group start (wire type 3)
        b"\x00\x00",  # field number 0
        b"\x08" + b"\xff" * 11,  # varint longer than 10 bytes
        len_field(1, len_field(1, len_field(1, b"\xff\xfe") + len_field(2, b""))),  # bad key
        len_field(1, len_field(1, len_field(2, len_field(2, len_field(1, b"abc"))))),  # floats
    ],
)
def test_malformed_bytes_raise_corrupt_record_error(data: bytes) -> None:
    with pytest.raises(CorruptRecordError, match="malformed"):
        parse_example(data)
    with pytest.raises(CorruptRecordError):
        parse_sequence_example(data)
