"""TFRecord framing: reading and writing records with masked CRC32C checks.

A TFRecord file is a sequence of records, each laid out as::

    uint64 length            (little-endian)
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

where ``masked_crc32c(x) = rotate_right(crc32c(x), 15) + 0xA282EAD8 (mod 2**32)``.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import crc32c as _crc32c
import numpy as np

from nextvlad.data._pool import BufferPool
from nextvlad.data.errors import CorruptRecordError, NoDataFilesError
from nextvlad.data.remote import RemoteReadError, RemoteShard, is_remote, local_path, redact_url
from nextvlad.data.remote_cache import CachedCopy, check_copy, open_remote

__all__ = [
    "HEADER_SIZE",
    "RawRecord",
    "TFRecordWriter",
    "count_records",
    "encode_record",
    "iter_records",
    "masked_crc32c",
    "write_records",
]

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_HEADER = struct.Struct("<QI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size  # 12: length + its CRC
FOOTER_SIZE = _CRC.size  # 4: CRC of the data

_crc = _crc32c.crc32c


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """The masked CRC32C that TFRecord stores after the length and after the data."""
    crc = _crc(data)
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def encode_record(data: bytes) -> bytes:
    """The framed bytes of one record: header, ``data``, footer."""
    length = struct.pack("<Q", len(data))
    return length + _CRC.pack(masked_crc32c(length)) + data + _CRC.pack(masked_crc32c(data))


_POOL = BufferPool(step=1 << 16, limit=64 << 20)  # read buffers


@dataclass(slots=True)
class _Where:
    """Where a record lies: its file, index in the file and byte offset of its header."""

    path: str
    index: int
    offset: int

    def error(self, reason: str) -> CorruptRecordError:
        return CorruptRecordError(reason, path=self.path, index=self.index, offset=self.offset)


def _ends_file(reason: str, where: _Where) -> CorruptRecordError:
    err = where.error(reason)
    err.ends_file = True
    return err


class RawRecord:
    """One record as read from a file: its ``index`` in the file, byte ``offset`` of its
    header, and ``data`` (the payload, or ``None`` when the reader was told to skip it);
    ``owner`` is set for recycled buffers (see ``iter_records``)."""

    __slots__ = ("data", "index", "offset", "owner")

    def __init__(
        self,
        index: int,
        offset: int,
        data: bytes | memoryview | None,
        owner: np.ndarray | None = None,
    ) -> None:
        self.index = index
        self.offset = offset
        self.data = data
        self.owner = owner

    def __repr__(self) -> str:
        size = None if self.data is None else len(self.data)
        return f"RawRecord(index={self.index}, offset={self.offset}, size={size})"


def iter_records(
    path: str | os.PathLike[str],
    *,
    verify: bool = True,
    want: Callable[[int], bool] | None = None,
    recycle: bool = False,
) -> Iterator[RawRecord | CorruptRecordError]:
    """Records of one TFRecord file, in order.

    Corrupt records come out as :class:`CorruptRecordError` values (with file, index and offset)
    instead of being raised, so the caller decides whether to raise or to skip. After a record
    whose length cannot be trusted (length CRC mismatch, truncation) the rest of the file cannot be
    framed, so iteration ends there (that error has ``ends_file`` true); after a data CRC mismatch
    it goes on with the next record.

    Args:
        path: the file.
        verify: check the data CRCs (length CRCs are always checked: framing depends on them).
        want: ``want(index)`` false means the record's data is neither read nor checked (it comes
            out with ``data=None``); errors of unwanted records are not reported.
        recycle: read into recycled buffers: ``data`` is then a memoryview and ``owner`` a uint8
            array over the same bytes; the buffer is reused once ``owner`` (and every array made
            from it) is freed, so ``data`` must not be kept (on this project's VMs fresh memory
            costs about 4 us a page, as much as reading it).
    """
    name = os.fspath(path)
    f, size = _open(name)
    shown = redact_url(name)  # what errors name: no signature or token
    offset = index = 0
    try:
        while offset < size:
            wanted = want is None or want(index)
            where = _Where(shown, index, offset)
            framed = _read_header(f, where, size)
            if isinstance(framed, CorruptRecordError) and isinstance(f, CachedCopy):
                f = check_copy(f, offset, offset + HEADER_SIZE, framed.reason)
                if not isinstance(f, CachedCopy):
                    continue  # the same record again, from the object
            if isinstance(framed, CorruptRecordError):
                if wanted:
                    yield framed
                return
            length, end = framed
            if not wanted:
                f.seek(end)
                yield RawRecord(index, offset, None)
                offset, index = end, index + 1
                continue
            item = _read_data(f, where, length, verify=verify, recycle=recycle)
            if isinstance(item, CorruptRecordError) and isinstance(f, CachedCopy):
                f = check_copy(f, offset, end, item.reason)
                if not isinstance(f, CachedCopy):
                    continue  # the same record again, from the object
            yield item
            if isinstance(item, CorruptRecordError) and item.ends_file:
                return
            offset = end
            index += 1
    except RemoteReadError as err:
        raise RemoteReadError(f"{err} (while reading record {index} at offset {offset})") from None
    finally:
        f.close()


def _open(name: str) -> tuple[Any, int]:
    """(the file, its size): a local file unbuffered (records are read whole, into buffers of
    our own), a remote one streamed (``nextvlad.data.remote``)."""
    if is_remote(name):
        f = open_remote(name)
        return f, f.size if isinstance(f, RemoteShard) else os.fstat(f.fileno()).st_size
    try:
        f = open(local_path(name), "rb", buffering=0)  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise NoDataFilesError(f"no such file: {name}") from None
    except IsADirectoryError:
        raise NoDataFilesError(f"is a directory, not a TFRecord file: {name}") from None
    return f, os.fstat(f.fileno()).st_size


def _read_header(f: io.FileIO, where: _Where, size: int) -> tuple[int, int] | CorruptRecordError:
    """(data length, end offset) of the record whose header starts at ``where``, or the error
    that ends the file (truncated header or record, length CRC mismatch)."""
    header = f.read(HEADER_SIZE)
    first = where.offset == 0
    if first and (len(header) < HEADER_SIZE or masked_crc32c(header[:8]) != header_crc(header)):
        return _ends_file(_not_a_tfrecord(header), where)
    if len(header) < HEADER_SIZE:
        return _ends_file(
            f"truncated record header ({len(header)} of {HEADER_SIZE} bytes; file truncated?)",
            where,
        )
    length, length_crc = _HEADER.unpack(header)
    if masked_crc32c(header[:8]) != length_crc:
        return _ends_file(
            "length CRC mismatch (corrupt header; the rest of the file is unreadable)", where
        )
    end = where.offset + HEADER_SIZE + length + FOOTER_SIZE
    if end > size:
        return _ends_file(
            f"truncated record: needs {length} data bytes and a CRC but only "
            f"{size - where.offset - HEADER_SIZE} bytes remain (file truncated?)",
            where,
        )
    return length, end


def header_crc(header: bytes) -> int:
    """The length CRC stored in a full record header."""
    return int(_HEADER.unpack(header)[1])


def _not_a_tfrecord(head: bytes) -> str:
    """Why a file whose first record header does not hold is no TFRecord file, from its
    first bytes."""
    if head.startswith(b"\x1f\x8b"):
        return (
            "not a TFRecord file: it is gzip-compressed (written with GZIP compression?): gunzip it"
        )
    try:
        text = head.decode()
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c.isspace() for c in text):
        return f"not a TFRecord file: it starts with text ({text!r})"
    if len(head) < HEADER_SIZE:
        return f"not a TFRecord file: {len(head)} bytes, less than one record header"
    return (
        "not a TFRecord file: its first record's length CRC does not match (another format, "
        "or a corrupt start)"
    )


def _read_data(
    f: io.FileIO, where: _Where, length: int, *, verify: bool, recycle: bool
) -> RawRecord | CorruptRecordError:
    """The record's data and footer (the file is just after its header), checked."""
    owner = None
    data: bytes | memoryview
    if recycle:
        owner = _POOL.array(length)
        data = owner.data  # a memoryview of the recycled buffer
        got = f.readinto(data)
    else:
        data = f.read(length)
        got = len(data)
    footer = f.read(FOOTER_SIZE)
    if got != length or len(footer) != FOOTER_SIZE:  # file shrank meanwhile
        return _ends_file("truncated record (file changed while reading)", where)
    if verify and masked_crc32c(data) != _CRC.unpack(footer)[0]:
        return where.error("data CRC mismatch (corrupt record)")
    return RawRecord(where.index, where.offset, data, owner)


def count_records(path: str | os.PathLike[str]) -> int:
    """Number of records in a file (reads headers only; corrupt framing raises)."""
    n = 0
    for item in iter_records(path, want=lambda _i: False):
        if isinstance(item, CorruptRecordError):  # pragma: no cover - want() never wants
            raise item
        n += 1
    return n


class TFRecordWriter:
    """Writes framed records to a file; use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.count = 0

    def write(self, data: bytes) -> None:
        self._file.write(encode_record(data))
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_records(path: str | os.PathLike[str], records: Iterable[bytes]) -> int:
    """Writes ``records`` to a new TFRecord file; returns how many were written."""
    with TFRecordWriter(path) as writer:
        for data in records:
            writer.write(data)
        return writer.count
