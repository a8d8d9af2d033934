"""Protocol-buffer wire format: the few pieces needed for tf.train.Example and SequenceExample.

Decoding works on ``bytes`` with explicit ``[start, end)`` bounds so that nothing is copied until
a value is taken out; every failure raises :class:`WireError`, which the callers turn into a
:class:`~nextvlad.data.errors.CorruptRecordError` that names the file and record.

Message definitions (tensorflow/core/example/{example,feature}.proto)::

    BytesList       { repeated bytes value = 1; }
    FloatList       { repeated float value = 1 [packed = true]; }
    Int64List       { repeated int64 value = 1 [packed = true]; }
    Feature         { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                                   Int64List int64_list = 3; } }
    Features        { map<string, Feature> feature = 1; }
    FeatureList     { repeated Feature feature = 1; }
    FeatureLists    { map<string, FeatureList> feature_list = 1; }
    Example         { Features features = 1; }
    SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }

A map field is a repeated ``Entry { key = 1; value = 2; }`` message.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np

# Wire types.
VARINT = 0
I64 = 1
LEN = 2
I32 = 5

_U64 = (1 << 64) - 1

# What the decoder reads: bytes, or a view of a (recycled) read buffer.
Buffer = bytes | bytearray | memoryview


class WireError(ValueError):
    """Malformed protocol-buffer bytes (internal; callers attach the location)."""


def read_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """Decodes the varint at ``pos``; returns (value as unsigned 64-bit, position after it)."""
    if pos >= end:
        raise WireError(f"truncated varint at byte {pos}")
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    result = b & 0x7F
    shift = 7
    pos += 1
    while True:
        if pos >= end:
            raise WireError(f"truncated varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def iter_fields(buf: Buffer, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Fields of the message in ``buf[pos:end]`` as (number, wire type, a, b).

    For LEN fields ``buf[a:b]`` is the payload; for VARINT ``a`` is the value (``b`` = 0); for
    I32/I64 ``buf[a:b]`` holds the 4 or 8 bytes. Groups (wire types 3 and 4) are rejected.
    """
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        number = key >> 3
        wire = key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        if wire == LEN:
            size, pos = read_varint(buf, pos, end)
            stop = pos + size
            if stop > end:
                raise WireError(
                    f"field {number} claims {size} bytes at byte {pos} but only {end - pos} remain"
                )
            yield number, wire, pos, stop
            pos = stop
        elif wire == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield number, wire, value, 0
        elif wire in (I32, I64):
            stop = pos + (4 if wire == I32 else 8)
            if stop > end:
                raise WireError(f"truncated fixed-width field {number} at byte {pos}")
            yield number, wire, pos, stop
            pos = stop
        else:
            raise WireError(f"unsupported wire type {wire} (field {number}) at byte {pos}")


def to_int64(value: int) -> int:
    """Unsigned 64-bit varint value to the signed int64 it encodes."""
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_packed_varints(buf: Buffer, pos: int, end: int) -> list[int]:
    out = []
    while pos < end:
        b = buf[pos]
        if b < 0x80:  # the common case for labels: one byte
            out.append(b)
            pos += 1
        else:
            value, pos = read_varint(buf, pos, end)
            out.append(to_int64(value))
    return out


# A decoded Feature: ("bytes", list[bytes]) | ("float", float32 array) | ("int64", int64 array);
# kind "" for a Feature with no kind set.
FeatureKind = str


def decode_feature(buf: Buffer, pos: int, end: int) -> tuple[FeatureKind, list[bytes] | np.ndarray]:
    """Decodes a Feature message. Repeated occurrences of the same list merge, a different list
    replaces the previous one (protobuf ``oneof`` semantics)."""
    kind = ""
    bytes_values: list[bytes] = []
    float_parts: list[np.ndarray] = []
    int_values: list[int] = []
    for number, wire, a, b in iter_fields(buf, pos, end):
        if wire != LEN or number > 3:
            continue  # unknown field (or a known field with a foreign wire type): skipped
        if number == 1:
            if kind != "bytes":
                kind, bytes_values = "bytes", []
            for n2, w2, a2, b2 in iter_fields(buf, a, b):
                if n2 == 1:
                    if w2 != LEN:
                        raise WireError(f"BytesList value with wire type {w2}")
                    bytes_values.append(bytes(buf[a2:b2]))
        elif number == 2:
            if kind != "float":
                kind, float_parts = "float", []
            for n2, w2, a2, b2 in iter_fields(buf, a, b):
                if n2 != 1:
                    continue
                if w2 == LEN:
                    if (b2 - a2) % 4:
                        raise WireError(
                            f"packed FloatList of {b2 - a2} bytes (not a multiple of 4)"
                        )
                    float_parts.append(np.frombuffer(buf, "<f4", (b2 - a2) // 4, a2))
                elif w2 == I32:
                    float_parts.append(np.frombuffer(buf, "<f4", 1, a2))
                else:
                    raise WireError(f"FloatList value with wire type {w2}")
        else:
            if kind != "int64":
                kind, int_values = "int64", []
            for n2, w2, a2, b2 in iter_fields(buf, a, b):
                if n2 != 1:
                    continue
                if w2 == LEN:
                    int_values.extend(decode_packed_varints(buf, a2, b2))
                elif w2 == VARINT:
                    int_values.append(to_int64(a2))
                else:
                    raise WireError(f"Int64List value with wire type {w2}")
    if kind == "bytes":
        return kind, bytes_values
    if kind == "float":
        if len(float_parts) == 1:
            return kind, float_parts[0].astype(np.float32)  # native order, owns its memory
        if not float_parts:
            return kind, np.zeros(0, np.float32)
        return kind, np.concatenate(float_parts).astype(np.float32)
    if kind == "int64":
        return kind, np.array(int_values, dtype=np.int64)
    return kind, []


def decode_map_entry(buf: Buffer, pos: int, end: int) -> tuple[str, list[tuple[int, int]]]:
    """A map entry: its key and the byte ranges of its value (several if the value field repeats,
    which protobuf merges; an absent value is an empty message)."""
    # Fast path: the layout every writer uses, key (field 1) then value (field 2), once each.
    if end - pos >= 3 and buf[pos] == 0x0A and buf[pos + 1] < 0x80:
        key_end = pos + 2 + buf[pos + 1]
        if key_end < end and buf[key_end] == 0x12:
            size, start = read_varint(buf, key_end + 1, end)
            if start + size == end:
                return _utf8(buf[pos + 2 : key_end]), [(start, end)]
    key: Buffer = b""
    value: list[tuple[int, int]] = []
    for number, wire, a, b in iter_fields(buf, pos, end):
        if wire != LEN:
            continue
        if number == 1:
            key = buf[a:b]
        elif number == 2:
            value.append((a, b))
    return _utf8(key), value


def _utf8(key: Buffer) -> str:
    try:
        return str(key, "utf-8")
    except UnicodeDecodeError:
        raise WireError(f"map key is not UTF-8: {bytes(key[:40])!r}") from None


def decode_features(buf: Buffer, pos: int, end: int) -> dict[str, list[tuple[int, int]]]:
    """A Features or FeatureLists message: key -> byte ranges of the value (last entry wins)."""
    out: dict[str, list[tuple[int, int]]] = {}
    while pos < end and buf[pos] == 0x0A:  # fast path: consecutive field-1 entries
        size, start = read_varint(buf, pos + 1, end)
        stop = start + size
        if stop > end:
            raise WireError(
                f"map entry claims {size} bytes at byte {start} but only {end - start} remain"
            )
        key, value = decode_map_entry(buf, start, stop)
        out[key] = value
        pos = stop
    for number, wire, a, b in iter_fields(buf, pos, end):
        if number == 1 and wire == LEN:
            key, value = decode_map_entry(buf, a, b)
            out[key] = value
    return out


def decode_feature_ranges(
    buf: Buffer, ranges: list[tuple[int, int]]
) -> tuple[FeatureKind, list[bytes] | np.ndarray]:
    """A Feature given as the byte ranges of its (merged) occurrences."""
    if len(ranges) == 1:
        return decode_feature(buf, *ranges[0])
    if not ranges:
        return "", []
    return decode_feature(b"".join(buf[a:b] for a, b in ranges), 0, sum(b - a for a, b in ranges))


def decode_top(buf: Buffer) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Top level of an Example / SequenceExample: byte ranges of field 1 (features / context)
    and of field 2 (feature_lists)."""
    first: list[tuple[int, int]] = []
    second: list[tuple[int, int]] = []
    for number, wire, a, b in iter_fields(buf, 0, len(buf)):
        if wire != LEN:
            continue
        if number == 1:
            first.append((a, b))
        elif number == 2:
            second.append((a, b))
    return first, second


# ---------------------------------------------------------------------------------------------
# Encoding


def varint(value: int) -> bytes:
    """The varint of an int64 (or uint64): 7 bits a byte, low bits first. A negative number is
    written as protobuf writes an ``int64``, its 64-bit two's complement: always 10 bytes (what
    :func:`read_varint` then :func:`to_int64` read back). The one varint writer of the project
    (records, TensorBoard events)."""
    value &= _U64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message, packed list): key, size, payload."""
    return varint(number << 3 | LEN) + varint(len(payload)) + payload


@lru_cache(maxsize=64)
def frame_header(dim: int) -> bytes:
    """The 9-ish bytes that precede a ``dim``-byte frame inside a FeatureList: the ``feature``
    field tag and length, the ``bytes_list`` tag and length, the ``value`` tag and length."""
    value = b"\x0a" + varint(dim)
    bytes_list = b"\x0a" + varint(len(value) + dim) + value
    return b"\x0a" + varint(len(bytes_list) + dim) + bytes_list


@lru_cache(maxsize=64)
def _entry_dtype(dim: int) -> np.dtype:
    """A structured dtype whose items are whole FeatureList entries of ``dim``-byte frames: a
    ``header`` field over the entry's framing bytes and a ``frame`` field over the frame."""
    header = len(frame_header(dim))
    return np.dtype(
        {
            "names": ["header", "frame"],
            "formats": [f"V{header}", (np.uint8, (dim,))],
            "offsets": [0, header],
            "itemsize": header + dim,
        }
    )


def decode_frames(
    buf: Buffer,
    ranges: list[tuple[int, int]],
    dim: int,
    name: str,
    owner: np.ndarray | None = None,
) -> np.ndarray:
    """The frames of a FeatureList of ``dim``-byte ``bytes_list`` features, as (T, dim) uint8.

    Fast path: when every frame is encoded as the canonical ``Feature{bytes_list{value: <dim
    bytes>}}`` (what TensorFlow writes), the FeatureList body is T identical-size entries; all T
    entry headers are checked at once and the frames are returned as a strided read-only view of
    ``buf`` (no copy; of ``owner``, a uint8 array over the same bytes, when given, so that the
    frames keep ``owner`` alive). Otherwise each entry is decoded on its own (general path).

    Raises:
        WireError: malformed bytes.
        FrameSizeError: a frame that is not exactly one ``dim``-byte value.
    """
    if len(ranges) == 1:
        start, end = ranges[0]
        if start == end:
            return np.zeros((0, dim), np.uint8)
        entry = _entry_dtype(dim)
        count, rest = divmod(end - start, entry.itemsize)
        if not rest:
            # Base the view on ``owner`` (not ``buf``) when given, so the frames keep it alive.
            entries = np.frombuffer(buf if owner is None else owner, entry, count, start)
            if entries["header"].tobytes() == frame_header(dim) * count:  # all T headers at once
                return entries["frame"]  # (T, dim) uint8, a strided view
    frames: list[bytes] = []
    for a, b in ranges:
        for number, wire, fa, fb in iter_fields(buf, a, b):
            if number != 1 or wire != LEN:
                continue
            kind, values = decode_feature(buf, fa, fb)
            if kind != "bytes" or len(values) != 1 or len(values[0]) != dim:
                got = (
                    f"{len(values)} bytes values of sizes {[len(v) for v in values][:4]}"
                    if kind == "bytes"
                    else f"a {kind or 'empty'} feature"
                )
                raise FrameSizeError(
                    f"feature list {name!r} frame {len(frames)}: expected one {dim}-byte value, "
                    f"got {got}"
                )
            frames.append(values[0])
    if not frames:
        return np.zeros((0, dim), np.uint8)
    return np.frombuffer(b"".join(frames), np.uint8).reshape(len(frames), dim)


class FrameSizeError(ValueError):
    """A frame of the wrong size or type (internal; callers raise SchemaError)."""
