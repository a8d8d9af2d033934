"""TensorFlow checkpoints read without TensorFlow: the V1 format (one file) and V2 (index + data).

Google's ``vggish_model.ckpt`` is a single file: ``vggish_slim.load_vggish_slim_checkpoint``
restores it with ``tf.train.Saver(..., write_version=1)``, the V1 format of TF's
``TensorSliceWriter``. A V1 checkpoint is one table (``_table``) whose entries are serialized
``SavedTensorSlices`` messages (``tensorflow/core/protobuf/saved_tensor_slice.proto``)::

    key ""                         -> SavedTensorSlices{ meta = 1: SavedTensorSliceMeta }
    key EncodeTensorNameSlice(...) -> SavedTensorSlices{ data = 2: SavedSlice }
    SavedTensorSliceMeta { repeated SavedSliceMeta tensor = 1; VersionDef versions = 2; }
    SavedSliceMeta { string name = 1; TensorShapeProto shape = 2; DataType type = 3;
                     repeated TensorSliceProto slice = 4; }
    SavedSlice     { string name = 1; TensorSliceProto slice = 2; TensorProto data = 3; }
    TensorSliceProto { repeated Extent extent = 1; }  Extent { int64 start = 1; int64 length = 2; }
    TensorShapeProto { repeated Dim dim = 2; }         Dim { int64 size = 1; }
    TensorProto: the values in the typed repeated field (float_val = 5, double_val = 6,
                 int_val = 7, int64_val = 10, bool_val = 11), never tensor_content

An extent without a length covers the whole dimension. A data key is the OrderedCode of
(0, name, rank, start_0, length_0, ...) with length -1 for a whole dimension.

A V2 checkpoint ``PREFIX`` is ``PREFIX.index``, a table of ``BundleHeaderProto`` (key "") and
``BundleEntryProto``s (key: the tensor name; dtype = 1, shape = 2, shard_id = 3, offset = 4,
size = 5, crc32c = 6), and ``PREFIX.data-0000K-of-0000N`` holding the raw little-endian bytes.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nextvlad.data._wire import (
    I32,
    I64,
    LEN,
    VARINT,
    WireError,
    iter_fields,
    read_varint,
)
from nextvlad.data._wire import to_int64 as _int64
from nextvlad.data.tfrecord import masked_crc32c
from nextvlad.extract._table import is_table, read_table

__all__ = ["CheckpointFormatError", "TFCheckpoint", "read_checkpoint"]

# DataType enum (tensorflow/core/framework/types.proto) -> NumPy dtype, and the TensorProto
# field V1 stores such values in.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    17: np.dtype("<u2"),
    19: np.dtype("<f2"),
}
_FIELD = {1: 5, 2: 6, 3: 7, 4: 7, 5: 7, 6: 7, 9: 10, 10: 11, 17: 7, 19: 13}
_ENUM = {dtype: number for number, dtype in _DTYPES.items()}
_DATA_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}$")
_CHECKPOINT_VERSION = 1  # TF_CHECKPOINT_VERSION, what TF writes as the producer


class CheckpointFormatError(ValueError):
    """A file that is not a TF checkpoint of a known format, or a broken one (internal: the
    loaders turn it into a ``UsageError`` naming the file)."""


@dataclass
class _Slices:
    """Where a V1 tensor's values are: one (extents, value bytes) per saved slice."""

    dtype: int
    shape: tuple[int, ...]
    parts: list[tuple[list[tuple[int, int]], memoryview]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Protocol-buffer pieces


def _shape(buf: memoryview) -> tuple[int, ...]:
    dims = []
    for number, wire, a, b in iter_fields(buf, 0, len(buf)):
        if number == 2 and wire == LEN:
            size = 0
            for n2, w2, v, _ in iter_fields(buf, a, b):
                if n2 == 1 and w2 == VARINT:
                    size = _int64(v)
            dims.append(size)
        elif number == 3 and wire == VARINT and a:
            raise WireError("a tensor of unknown rank")
    return tuple(dims)


def _extents(buf: memoryview, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """A TensorSliceProto as (start, stop) per dimension."""
    out: list[tuple[int, int]] = []
    for number, wire, a, b in iter_fields(buf, 0, len(buf)):
        if number != 1 or wire != LEN:
            continue
        start, length = 0, -1
        for n2, w2, v, _ in iter_fields(buf, a, b):
            if w2 == VARINT and n2 == 1:
                start = _int64(v)
            elif w2 == VARINT and n2 == 2:
                length = _int64(v)
        dim = len(out)
        if dim >= len(shape):
            raise WireError(f"a slice of more dimensions than the shape {shape}")
        stop = shape[dim] if length < 0 else start + length
        if not 0 <= start <= stop <= shape[dim]:
            raise WireError(f"slice extent {start}:{stop} outside dimension {shape[dim]}")
        out.append((start, stop))
    if not out:  # a slice proto of a scalar, or written without extents: the whole tensor
        out = [(0, n) for n in shape]
    if len(out) != len(shape):
        raise WireError(f"a slice of {len(out)} dimensions for the shape {shape}")
    return out


def _submessage(buf: memoryview, number: int) -> memoryview | None:
    found = None
    for n, wire, a, b in iter_fields(buf, 0, len(buf)):
        if n == number and wire == LEN:
            found = buf[a:b]
    return found


def _values(proto: memoryview, dtype: int, count: int) -> np.ndarray:
    """The ``count`` values of a TensorProto of type ``dtype``, as a flat array."""
    np_dtype = _DTYPES[dtype]
    number = _FIELD[dtype]
    chunks: list[np.ndarray] = []
    ints: list[int] = []
    for n, wire, a, b in iter_fields(proto, 0, len(proto)):
        if n == 4 and wire == LEN:  # tensor_content: TF's V1 writer never uses it, accepted
            chunks.append(np.frombuffer(proto[a:b], np_dtype))
        elif n != number:
            continue
        elif number in (5, 6) and wire in (LEN, I32, I64):  # packed, or one value a field
            chunks.append(np.frombuffer(proto[a:b], "<f4" if number == 5 else "<f8"))
        elif wire == LEN:  # packed varints
            pos = a
            while pos < b:
                value, pos = _read(proto, pos, b)
                ints.append(value)
        elif wire == VARINT:
            ints.append(_int64(a))
    if ints:
        chunks.append(np.array(ints, np.int64))
    flat = np.concatenate(chunks) if len(chunks) > 1 else (chunks[0] if chunks else None)
    if flat is None:
        flat = np.zeros(0, np_dtype)
    if flat.size != count:
        raise WireError(f"{flat.size} values where the shape holds {count}")
    if number == 13:  # half_val: the bits of each float16 in an int32
        return flat.astype("<u2").view(np.float16)
    return flat.astype(np_dtype, copy=False)


def _read(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value, pos = read_varint(buf, pos, end)
    return _int64(value), pos


# ---------------------------------------------------------------------------------------------
# Reading


class TFCheckpoint:
    """The tensors of a TF checkpoint, decoded on demand.

    ``TFCheckpoint.open(path)`` takes a V1 checkpoint file, or a V2 checkpoint's prefix or its
    ``.index`` file. ``shapes`` maps every tensor name to its shape; ``get(name)`` decodes one.

    Raises:
        CheckpointFormatError: not a checkpoint, or a corrupt one (its message says why).
    """

    def __init__(
        self, path: str, shapes: dict[str, tuple[int, ...]], loader: Callable[[str], np.ndarray]
    ) -> None:
        self.path = path
        self.shapes = shapes
        self._loader = loader

    @classmethod
    def open(cls, path: str | Path) -> TFCheckpoint:
        path = Path(path)
        prefix = path.with_suffix("") if path.suffix == ".index" else path
        shard = _DATA_SHARD.search(path.name)
        if shard:  # a V2 data file given: its prefix
            prefix = path.with_name(path.name[: shard.start()])
            path = prefix
        index = prefix.with_name(prefix.name + ".index")
        try:
            if path.is_file() and path.suffix != ".index":
                data = _read_file(path)
                if is_table(data):
                    return cls._v1(str(path), data)
                if index.is_file():
                    return cls._v2(str(path), prefix, index.read_bytes())
                raise CheckpointFormatError("not a TensorFlow checkpoint (no table footer)")
            if index.is_file():
                return cls._v2(str(path), prefix, index.read_bytes())
        except WireError as err:
            raise CheckpointFormatError(f"corrupt TensorFlow checkpoint: {err}") from None
        raise CheckpointFormatError("no such checkpoint file (nor a V2 .index beside it)")

    def get(self, name: str) -> np.ndarray:
        """The tensor ``name`` (an array that may be a view of the file's bytes)."""
        if name not in self.shapes:
            raise KeyError(name)
        try:
            return self._loader(name)
        except WireError as err:
            raise CheckpointFormatError(f"tensor {name!r}: {err}") from None

    # V1 ----------------------------------------------------------------------------------
    @classmethod
    def _v1(cls, path: str, data: bytearray) -> TFCheckpoint:
        tensors: dict[str, _Slices] = {}
        meta_seen = False
        for key, value in read_table(data):
            if key == b"":
                meta = _submessage(value, 1) or memoryview(b"")
                for n, wire, a, b in iter_fields(meta, 0, len(meta)):
                    if n == 1 and wire == LEN:
                        name, slices = _slice_meta(meta[a:b])
                        tensors[name] = slices
                meta_seen = True
                continue
            if not meta_seen:
                raise WireError("the first entry is not the checkpoint's metadata")
            saved = _submessage(value, 2)
            if saved is None:
                continue
            name, extents, proto = _saved_slice(saved, tensors)
            tensors[name].parts.append((extents, proto))
        if not meta_seen:
            raise WireError("no metadata entry (is this a TensorFlow checkpoint?)")

        def load(name: str) -> np.ndarray:
            entry = tensors[name]
            if entry.dtype not in _DTYPES:
                raise WireError(f"unsupported dtype (DataType {entry.dtype})")
            if len(entry.parts) == 1 and all(
                (a, b) == (0, n) for (a, b), n in zip(entry.parts[0][0], entry.shape, strict=True)
            ):
                count = int(np.prod(entry.shape, dtype=np.int64))
                return _values(entry.parts[0][1], entry.dtype, count).reshape(entry.shape)
            return _assemble(entry)

        return cls(path, {name: t.shape for name, t in tensors.items()}, load)

    # V2 ----------------------------------------------------------------------------------
    @classmethod
    def _v2(cls, path: str, prefix: Path, index: bytes | bytearray) -> TFCheckpoint:
        entries: dict[str, tuple[int, tuple[int, ...], int, int, int, int | None]] = {}
        num_shards = 1
        for key, value in read_table(index):
            if key == b"":
                for n, wire, a, _ in iter_fields(value, 0, len(value)):
                    if n == 1 and wire == VARINT:
                        num_shards = a
                    elif n == 2 and wire == VARINT and a != 0:
                        raise WireError("a big-endian checkpoint")
                continue
            ints = {1: 0, 3: 0, 4: 0, 5: 0}  # dtype, shard_id, offset, size
            shape: tuple[int, ...] = ()
            crc = None
            for n, wire, a, b in iter_fields(value, 0, len(value)):
                if n in ints and wire == VARINT:
                    ints[n] = a
                elif n == 2 and wire == LEN:
                    shape = _shape(value[a:b])
                elif n == 6 and wire == I32:
                    crc = struct.unpack_from("<I", value, a)[0]
                elif n == 7:
                    raise WireError(f"tensor {key.decode(errors='replace')!r} is partitioned")
            entries[key.decode()] = (ints[1], shape, ints[3], ints[4], ints[5], crc)
        files: dict[int, bytearray] = {}

        def load(name: str) -> np.ndarray:
            dtype, shape, shard, offset, size, crc = entries[name]
            if dtype not in _DTYPES:
                raise WireError(f"unsupported dtype (DataType {dtype})")
            if shard not in files:
                data_path = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")
                if not data_path.is_file():
                    raise WireError(f"data file {data_path} missing")
                files[shard] = _read_file(data_path)
            raw = memoryview(files[shard])[offset : offset + size]
            if len(raw) != size or size != _DTYPES[dtype].itemsize * int(np.prod(shape)):
                raise WireError(f"{size} bytes at offset {offset} do not hold a {shape} tensor")
            if crc is not None and masked_crc32c(raw) != crc:
                raise WireError("checksum mismatch")
            return np.frombuffer(raw, _DTYPES[dtype]).reshape(shape)

        return cls(path, {name: e[1] for name, e in entries.items()}, load)


def _read_file(path: Path) -> bytearray:
    """The bytes of ``path``, writable: arrays over them can become torch tensors uncopied."""
    with open(path, "rb") as file:
        buf = bytearray(os.fstat(file.fileno()).st_size)
        view = memoryview(buf)
        done = 0
        while done < len(buf):
            got = file.readinto(view[done:])
            if not got:
                raise WireError(f"{path} shrank while being read")
            done += got
    return buf


def _slice_meta(buf: memoryview) -> tuple[str, _Slices]:
    name, dtype = "", 0
    shape: tuple[int, ...] = ()
    for n, wire, a, b in iter_fields(buf, 0, len(buf)):
        if n == 1 and wire == LEN:
            name = bytes(buf[a:b]).decode()
        elif n == 2 and wire == LEN:
            shape = _shape(buf[a:b])
        elif n == 3 and wire == VARINT:
            dtype = a
    return name, _Slices(dtype, shape)


def _saved_slice(
    buf: memoryview, tensors: dict[str, _Slices]
) -> tuple[str, list[tuple[int, int]], memoryview]:
    name, slice_proto, proto = "", None, memoryview(b"")
    for n, wire, a, b in iter_fields(buf, 0, len(buf)):
        if n == 1 and wire == LEN:
            name = bytes(buf[a:b]).decode()
        elif n == 2 and wire == LEN:
            slice_proto = buf[a:b]
        elif n == 3 and wire == LEN:
            proto = buf[a:b]
    if name not in tensors:
        raise WireError(f"data for {name!r}, which the metadata does not list")
    shape = tensors[name].shape
    extents = _extents(slice_proto, shape) if slice_proto is not None else [(0, n) for n in shape]
    return name, extents, proto


def _assemble(entry: _Slices) -> np.ndarray:
    """A tensor saved as several slices (a partitioned variable), put back together."""
    out = np.zeros(entry.shape, _DTYPES[entry.dtype])
    covered = np.zeros(entry.shape, bool)
    for extents, proto in entry.parts:
        region = tuple(slice(a, b) for a, b in extents)
        sub = tuple(b - a for a, b in extents)
        out[region] = _values(proto, entry.dtype, int(np.prod(sub, dtype=np.int64))).reshape(sub)
        covered[region] = True
    if not covered.all():
        raise WireError("its saved slices do not cover the whole tensor")
    return out


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a TF checkpoint (see :class:`TFCheckpoint`)."""
    ckpt = TFCheckpoint.open(path)
    return {name: ckpt.get(name) for name in ckpt.shapes}
