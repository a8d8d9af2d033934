"""TensorFlow checkpoints written without TensorFlow, byte for byte as TF's ``Save`` (V1) and
``SaveV2`` ops write them (the formats: :mod:`nextvlad.extract._tf_checkpoint`). The tests'
factories use them; nothing in the product writes checkpoints.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nextvlad.data._wire import LEN, len_field, varint
from nextvlad.data.tfrecord import masked_crc32c
from nextvlad.extract._table import write_table
from nextvlad.extract._tf_checkpoint import _CHECKPOINT_VERSION, _ENUM, _FIELD

__all__ = ["tensor_slice_key", "write_v1_checkpoint", "write_v2_checkpoint"]


def _ordered_num(value: int) -> bytes:
    """OrderedCode ``WriteNumIncreasing``: a length byte, then big-endian bytes."""
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(body)]) + body


def _ordered_signed(value: int) -> bytes:
    """OrderedCode ``WriteSignedNumIncreasing``: the value's two's complement in L bytes, L the
    fewest that hold it, its top L bits flipped (L ones lead a positive number)."""
    magnitude = ~value if value < 0 else value
    length = next(n for n in range(1, 11) if magnitude < 1 << (7 * n - 1))
    bits = 8 * length
    header = ((1 << length) - 1) << (bits - length)
    return ((value & ((1 << bits) - 1)) ^ header).to_bytes(length, "big")


def _ordered_string(text: bytes) -> bytes:
    """OrderedCode ``WriteString``: 0x00 -> 0x00 0xff, 0xff -> 0xff 0x00, then 0x00 0x01."""
    escaped = (b"\x00\xff" if c == 0 else b"\xff\x00" if c == 0xFF else bytes([c]) for c in text)
    return b"".join(escaped) + b"\x00\x01"


def tensor_slice_key(name: str, rank: int) -> bytes:
    """``EncodeTensorNameSlice`` of a whole tensor (every extent: start 0, length -1)."""
    return (
        _ordered_num(0)
        + _ordered_string(name.encode())
        + _ordered_num(rank)
        + (_ordered_signed(0) + _ordered_signed(-1)) * rank
    )


def _shape_proto(shape: tuple[int, ...]) -> bytes:
    return b"".join(len_field(2, b"\x08" + varint(n) if n else b"") for n in shape)


def _whole_slice(rank: int) -> bytes:
    return len_field(1, b"") * rank


def _tensor_values(array: np.ndarray) -> list[bytes | memoryview]:
    """A TensorProto holding ``array``'s values in its typed field, as buffers: a float array's
    bytes are not copied."""
    number = _FIELD[_ENUM[array.dtype]]
    flat = array.reshape(-1)
    if not flat.size:
        return []
    if number in (5, 6):
        packed = np.ascontiguousarray(flat, "<f4" if number == 5 else "<f8")
        payload: bytes | memoryview = packed.view(np.uint8).data
    else:
        payload = b"".join(varint(int(v)) for v in flat.astype(np.int64))
    return [varint(number << 3 | LEN) + varint(len(payload)), payload]


def _message(number: int, parts: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """Field ``number`` holding the message ``parts`` (a list of buffers, not joined)."""
    size = sum(memoryview(p).nbytes for p in parts)
    return [varint(number << 3 | LEN) + varint(size), *parts]


def write_v1_checkpoint(path: str | Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Writes ``tensors`` as a V1 checkpoint, byte for byte what TF's ``Save`` op writes."""
    names = sorted(tensors)
    arrays = {name: np.asarray(tensors[name]) for name in names}
    for name, array in arrays.items():
        if array.dtype not in _ENUM or array.dtype == np.float16:
            raise ValueError(f"{name}: dtype {array.dtype} is not written by this writer")
    meta = b"".join(
        len_field(
            1,
            len_field(1, name.encode())
            + len_field(2, _shape_proto(arrays[name].shape))
            + b"\x18"
            + varint(_ENUM[arrays[name].dtype])
            + len_field(4, _whole_slice(arrays[name].ndim)),
        )
        for name in names
    ) + len_field(2, b"\x08" + varint(_CHECKPOINT_VERSION))
    entries: list[tuple[bytes, bytes | list[bytes | memoryview]]] = [(b"", len_field(1, meta))]
    data = []
    for name in names:
        array = arrays[name]
        head = len_field(1, name.encode()) + len_field(2, _whole_slice(array.ndim))
        saved = [head, *_message(3, _tensor_values(array))]
        data.append((tensor_slice_key(name, array.ndim), _message(2, saved)))
    entries += sorted(data, key=lambda entry: entry[0])
    with open(path, "wb") as file:
        write_table(file, entries)


def write_v2_checkpoint(prefix: str | Path, tensors: Mapping[str, np.ndarray]) -> None:
    """Writes ``tensors`` as a V2 checkpoint: ``PREFIX.index`` and one data shard, the layout of
    TF's ``BundleWriter`` (raw little-endian bytes, each with its masked CRC32C)."""
    prefix = Path(prefix)
    names = sorted(tensors)
    entries: list[tuple[bytes, bytes]] = []
    offset = 0
    data_path = prefix.with_name(prefix.name + ".data-00000-of-00001")
    with open(data_path, "wb") as data:
        for name in names:
            array = np.asarray(tensors[name])
            if array.dtype not in _ENUM:
                raise ValueError(f"{name}: dtype {array.dtype} is not written by this writer")
            raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            data.write(raw)
            entry = b"\x08" + varint(_ENUM[array.dtype]) + len_field(2, _shape_proto(array.shape))
            if offset:
                entry += b"\x20" + varint(offset)
            if raw:
                entry += b"\x28" + varint(len(raw))
            entry += b"\x35" + struct.pack("<I", masked_crc32c(raw))
            entries.append((name.encode(), entry))
            offset += len(raw)
    header = b"\x08\x01" + len_field(3, b"\x08" + varint(_CHECKPOINT_VERSION))
    with open(prefix.with_name(prefix.name + ".index"), "wb") as index:
        write_table(index, [(b"", header), *entries])
