"""TensorFlow's table files (``tensorflow/core/lib/io/table*``, LevelDB's SSTable) without TF.

Both checkpoint formats keep their entries in such a table: a V1 checkpoint *is* one table, a
V2 checkpoint's ``.index`` file is one. Layout (all integers little-endian)::

    data block*, metaindex block, index block, footer (48 bytes)
    block   = contents, uint8 compression type (0: none), uint32 masked_crc32c(contents + type)
    contents = entry*, uint32 restart offset*, uint32 number of restarts
    entry   = varint shared, varint non_shared, varint value size,
              key[shared:] (the first ``shared`` bytes are the previous key's), value
    index block entries: a key >= every key of a data block -> its handle
                         (varint offset, varint size)
    footer  = metaindex handle, index handle, zero padding to 40 bytes, uint64 magic

TensorFlow writes its checkpoint tables uncompressed (``kNoCompression``), which is all this
reader accepts. The writer follows TF's ``TableBuilder`` (256 KiB blocks, a restart every 16
entries, shortest separators as index keys), so it writes the bytes TF would.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

import crc32c as _crc32c

from nextvlad.data._wire import WireError, read_varint, varint

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
_BLOCK_SIZE = 262144  # TF's table::Options default
_RESTART_INTERVAL = 16
_TRAILER_SIZE = 5
_U32 = struct.Struct("<I")
_U32_MASK = 0xFFFFFFFF

# The key and value of an entry; values are views of the file's bytes (nothing copied).
Entry = tuple[bytes, memoryview]


def _mask(crc: int) -> int:
    """TFRecord's CRC mask (``nextvlad.data.tfrecord.masked_crc32c``), here over a CRC extended
    piece by piece, so that a 200 MB block is never copied to be checked."""
    return ((((crc >> 15) | (crc << 17)) & _U32_MASK) + 0xA282EAD8) & _U32_MASK


def is_table(buf: bytes | bytearray | memoryview) -> bool:
    """Whether ``buf`` ends with a table footer's magic number."""
    return len(buf) >= FOOTER_SIZE and struct.unpack_from("<Q", buf, len(buf) - 8)[0] == MAGIC


def _handle(buf: memoryview, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos, end)
    size, pos = read_varint(buf, pos, end)
    return offset, size, pos


def _block(buf: memoryview, offset: int, size: int) -> memoryview:
    """The contents of the block at ``offset``, its checksum verified."""
    if offset + size + _TRAILER_SIZE > len(buf) - FOOTER_SIZE:
        raise WireError(f"block at byte {offset} ({size} bytes) runs past the end of the file")
    contents = buf[offset : offset + size]
    kind = bytes(buf[offset + size : offset + size + 1])
    if kind != b"\x00":
        raise WireError(
            f"block at byte {offset} is compressed (type {kind[0]}); TF's checkpoints are not"
        )
    (stored,) = _U32.unpack_from(buf, offset + size + 1)
    if _mask(_crc32c.crc32c(kind, _crc32c.crc32c(contents))) != stored:
        raise WireError(f"checksum mismatch in the block at byte {offset}")
    return contents


def _block_entries(contents: memoryview) -> Iterator[Entry]:
    if len(contents) < 4:
        raise WireError("block shorter than its restart count")
    (restarts,) = _U32.unpack_from(contents, len(contents) - 4)
    end = len(contents) - 4 * (restarts + 1)
    if end < 0:
        raise WireError(f"block claims {restarts} restarts, more than it holds")
    key = b""
    pos = 0
    while pos < end:
        shared, pos = read_varint(contents, pos, end)
        non_shared, pos = read_varint(contents, pos, end)
        size, pos = read_varint(contents, pos, end)
        if shared > len(key) or pos + non_shared + size > end:
            raise WireError(f"malformed block entry at byte {pos}")
        key = key[:shared] + bytes(contents[pos : pos + non_shared])
        pos += non_shared
        yield key, contents[pos : pos + size]
        pos += size


def read_table(data: bytes | bytearray | memoryview) -> Iterator[Entry]:
    """The entries of the table in ``data``, in key order.

    Raises:
        WireError: not a table, or a malformed or corrupt one.
    """
    buf = memoryview(data)
    if not is_table(buf):
        raise WireError("no table footer (bad magic number)")
    footer = len(buf) - FOOTER_SIZE
    _, _, pos = _handle(buf, footer, len(buf) - 8)  # the metaindex block: nothing in it for us
    index_offset, index_size, _ = _handle(buf, pos, len(buf) - 8)
    for _, handle in _block_entries(_block(buf, index_offset, index_size)):
        offset, size, _ = _handle(handle, 0, len(handle))
        yield from _block_entries(_block(buf, offset, size))


# ---------------------------------------------------------------------------------------------
# Writing


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's ``BytewiseComparator::FindShortestSeparator``: a short key in [start, limit)."""
    n = 0
    while n < min(len(start), len(limit)) and start[n] == limit[n]:
        n += 1
    if n < min(len(start), len(limit)) and start[n] < 0xFF and start[n] + 1 < limit[n]:
        return start[:n] + bytes([start[n] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    """LevelDB's ``FindShortSuccessor``: a short key >= ``key``."""
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key


# A value to write: bytes, or a sequence of buffers written one after the other (so that a
# tensor's bytes go to the file without being copied into one string first).
Value = bytes | Sequence[bytes | memoryview]


def _parts(value: Value) -> list[bytes | memoryview]:
    return [value] if isinstance(value, bytes | bytearray | memoryview) else list(value)


class _BlockBuilder:
    def __init__(self, restart_interval: int) -> None:
        self.interval = restart_interval
        self.parts: list[bytes | memoryview] = []
        self.size = 0
        self.restarts = [0]
        self.count = 0
        self.last = b""

    def add(self, key: bytes, value: Value) -> None:
        shared = 0
        if self.count < self.interval:
            while shared < min(len(key), len(self.last)) and key[shared] == self.last[shared]:
                shared += 1
        else:
            self.restarts.append(self.size)
            self.count = 0
        pieces = _parts(value)
        size = sum(memoryview(p).nbytes for p in pieces)
        head = varint(shared) + varint(len(key) - shared) + varint(size) + key[shared:]
        self.parts += [head, *pieces]
        self.size += len(head) + size
        self.count += 1
        self.last = key

    def estimate(self) -> int:
        return self.size + 4 * len(self.restarts) + 4

    def finish(self) -> list[bytes | memoryview]:
        tail = b"".join(_U32.pack(r) for r in self.restarts) + _U32.pack(len(self.restarts))
        return [*self.parts, tail]


def write_table(file: BinaryIO, entries: Iterable[tuple[bytes, Value]]) -> None:
    """Writes a table holding ``entries`` (keys sorted bytewise, each once) to ``file``."""
    offset = 0

    def block(parts: list[bytes | memoryview]) -> bytes:
        nonlocal offset
        size = 0
        crc = 0
        for part in parts:
            view = memoryview(part).cast("B")
            file.write(view)
            crc = _crc32c.crc32c(view, crc)
            size += view.nbytes
        crc = _crc32c.crc32c(b"\x00", crc)
        file.write(b"\x00" + _U32.pack(_mask(crc)))
        handle = varint(offset) + varint(size)
        offset += size + _TRAILER_SIZE
        return handle

    index = _BlockBuilder(1)
    data = _BlockBuilder(_RESTART_INTERVAL)
    pending: bytes | None = None  # the handle of a block whose index key waits for the next key
    previous: bytes | None = None
    for key, value in entries:
        if previous is not None and key <= previous:
            raise ValueError(f"table keys out of order or repeated: {key!r}")
        if pending is not None and previous is not None:
            index.add(_shortest_separator(previous, key), pending)
            pending = None
        data.add(key, value)
        previous = key
        if data.estimate() >= _BLOCK_SIZE:
            pending = block(data.finish())
            data = _BlockBuilder(_RESTART_INTERVAL)
    if data.count:
        pending = block(data.finish())
    if pending is not None and previous is not None:
        index.add(_short_successor(previous), pending)
    metaindex = block(_BlockBuilder(_RESTART_INTERVAL).finish())
    index_handle = block(index.finish())
    footer = (metaindex + index_handle).ljust(FOOTER_SIZE - 8, b"\x00") + struct.pack("<Q", MAGIC)
    file.write(footer)
