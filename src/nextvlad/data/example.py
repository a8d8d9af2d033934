"""Generic ``tf.train.Example`` / ``tf.train.SequenceExample`` decoding and encoding.

No TensorFlow and no generated protobuf code: the wire format is decoded directly (see
:mod:`nextvlad.data._wire`). A feature value is one of

* ``list[bytes]`` for a ``bytes_list``,
* a float32 array of shape (N,) for a ``float_list``,
* an int64 array of shape (N,) for an ``int64_list``.

Encoding writes fields in the canonical order TensorFlow's writer uses and map entries in the
order of the mapping given, so a record read and re-encoded with its keys in the same order
comes out byte for byte the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

import numpy as np

from nextvlad.data import _wire
from nextvlad.data.errors import CorruptRecordError

__all__ = [
    "FeatureLike",
    "FeatureValue",
    "encode_example",
    "encode_feature",
    "encode_sequence_example",
    "parse_example",
    "parse_sequence_example",
]

FeatureValue: TypeAlias = list[bytes] | np.ndarray
FeatureLike: TypeAlias = (
    bytes | str | np.ndarray | Sequence[bytes] | Sequence[str] | Sequence[int] | Sequence[float]
)


def _corrupt(err: Exception) -> CorruptRecordError:
    return CorruptRecordError(f"malformed protocol buffer: {err}")


def merged_features(
    buf: _wire.Buffer, ranges: list[tuple[int, int]]
) -> dict[str, list[tuple[int, int]]]:
    """``{key: byte ranges of its value}`` of the ``Features`` (or ``FeatureLists``) message
    whose pieces lie at ``ranges`` of ``buf``: as protobuf merges a map, a key's later entry
    replaces an earlier one. The one merge loop of the decoders.

    Raises:
        _wire.WireError: malformed bytes.
    """
    out: dict[str, list[tuple[int, int]]] = {}
    for a, b in ranges:
        out.update(_wire.decode_features(buf, a, b))
    return out


def parse_example(data: bytes) -> dict[str, FeatureValue]:
    """Decodes a serialized ``tf.train.Example`` into ``{key: value}`` (file order of keys).

    Raises:
        CorruptRecordError: bytes that are not a valid message.
    """
    try:
        features, _ = _wire.decode_top(data)
        return {
            key: _wire.decode_feature_ranges(data, ranges)[1]
            for key, ranges in merged_features(data, features).items()
        }
    except _wire.WireError as err:
        raise _corrupt(err) from None


def parse_sequence_example(
    data: bytes,
) -> tuple[dict[str, FeatureValue], dict[str, list[FeatureValue]]]:
    """Decodes a serialized ``tf.train.SequenceExample`` into (context, feature_lists).

    ``feature_lists[key]`` is the list of the per-step feature values (this general form is slow
    for long videos; :func:`nextvlad.data.decode_video` reads frames as one array instead).

    Raises:
        CorruptRecordError: bytes that are not a valid message.
    """
    try:
        context_ranges, list_ranges = _wire.decode_top(data)
        context = {
            key: _wire.decode_feature_ranges(data, ranges)[1]
            for key, ranges in merged_features(data, context_ranges).items()
        }
        lists: dict[str, list[FeatureValue]] = {}
        for key, ranges in merged_features(data, list_ranges).items():
            steps: list[FeatureValue] = []
            for a, b in ranges:
                for number, wire, fa, fb in _wire.iter_fields(data, a, b):
                    if number == 1 and wire == _wire.LEN:
                        steps.append(_wire.decode_feature(data, fa, fb)[1])
            lists[key] = steps
        return context, lists
    except _wire.WireError as err:
        raise _corrupt(err) from None


# ---------------------------------------------------------------------------------------------
# Encoding


def _coerce(value: FeatureLike) -> tuple[int, bytes]:
    """(Feature field number, list payload) for a value."""
    if isinstance(value, (bytes, str)):
        value = [value]  # type: ignore[assignment]
    if isinstance(value, np.ndarray):
        arr = value.reshape(-1)
        if arr.dtype.kind == "f":
            return 2, _float_payload(arr)
        if arr.dtype.kind in "iub":
            return 3, _int_payload(arr)
        if arr.dtype.kind in "SO":
            value = list(arr)
        else:
            raise TypeError(f"cannot encode an array of dtype {arr.dtype} as a feature")
    items = list(value)
    if not items:
        raise TypeError("empty list is ambiguous: pass an int64 or float32 array, or [b'']")
    if all(isinstance(v, (bytes, str)) for v in items):
        payload = b"".join(
            _wire.len_field(1, v.encode("utf-8") if isinstance(v, str) else v) for v in items
        )
        return 1, payload
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        return 3, _int_payload(np.asarray(items, np.int64))
    return 2, _float_payload(np.asarray(items, np.float32))


def _float_payload(arr: np.ndarray) -> bytes:
    if arr.size == 0:
        return b""
    return _wire.len_field(1, arr.astype("<f4").tobytes())


def _int_payload(arr: np.ndarray) -> bytes:
    if arr.size == 0:
        return b""
    values = arr.astype(np.int64)
    if values.min() >= 0 and values.max() < 0x80:
        packed = values.astype(np.uint8).tobytes()
    else:
        packed = b"".join(_wire.varint(int(v)) for v in values)
    return _wire.len_field(1, packed)


def encode_feature(value: FeatureLike) -> bytes:
    """Serialized ``Feature`` for a value (bytes/str lists, float or integer arrays)."""
    number, payload = _coerce(value)
    return _wire.len_field(number, payload)


def _encode_map(entries: Mapping[str, bytes]) -> bytes:
    return b"".join(
        _wire.len_field(1, _wire.len_field(1, key.encode("utf-8")) + _wire.len_field(2, value))
        for key, value in entries.items()
    )


def _encode_features(features: Mapping[str, FeatureLike]) -> bytes:
    return _encode_map({key: encode_feature(value) for key, value in features.items()})


def _encode_feature_list(steps: np.ndarray | Sequence[FeatureLike]) -> bytes:
    if isinstance(steps, np.ndarray) and steps.dtype == np.uint8 and steps.ndim == 2:
        # Each row is one frame: Feature{bytes_list{value: row}}, built in one go.
        count, dim = steps.shape
        header = np.frombuffer(_wire.frame_header(dim), np.uint8)
        rows = np.empty((count, len(header) + dim), np.uint8)
        rows[:, : len(header)] = header
        rows[:, len(header) :] = steps
        return rows.tobytes()
    return b"".join(_wire.len_field(1, encode_feature(step)) for step in steps)


def encode_example(features: Mapping[str, FeatureLike]) -> bytes:
    """Serialized ``tf.train.Example`` with the given features (in mapping order)."""
    return _wire.len_field(1, _encode_features(features))


def encode_sequence_example(
    context: Mapping[str, FeatureLike],
    feature_lists: Mapping[str, np.ndarray | Sequence[FeatureLike]],
) -> bytes:
    """Serialized ``tf.train.SequenceExample``.

    Args:
        context: context features (in mapping order).
        feature_lists: per key, the steps' values; a (T, D) uint8 array is T frames of one
            D-byte ``bytes_list`` value each (YouTube-8M's frame features).
    """
    lists = _encode_map({key: _encode_feature_list(steps) for key, steps in feature_lists.items()})
    return _wire.len_field(1, _encode_features(context)) + _wire.len_field(2, lists)
