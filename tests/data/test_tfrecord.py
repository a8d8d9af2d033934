"""TFRecord framing: CRCs, round trips, truncation and corruption."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from nextvlad.data import CorruptRecordError, NoDataFilesError, TFRecordWriter, iter_records
from nextvlad.data.tfrecord import count_records, encode_record, masked_crc32c, write_records

PAYLOADS = [b"", b"a", b"hello world" * 10, bytes(range(256)) * 40]


def _write(tmp_path: Path, payloads: list[bytes] = PAYLOADS) -> Path:
    path = tmp_path / "x.tfrecord"
    write_records(path, payloads)
    return path


def test_masked_crc_known_value() -> None:
    # crc32c("123456789") = 0xE3069283 (RFC 3720), masked: rotate right 15, add 0xA282EAD8.
    crc = 0xE3069283
    expected = ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"123456789") == expected


def test_round_trip(tmp_path: Path) -> None:
    path = _write(tmp_path)
    records = list(iter_records(path))
    assert [r.data for r in records] == PAYLOADS  # type: ignore[union-attr]
    offsets = [r.offset for r in records]
    sizes = [16 + len(p) for p in PAYLOADS]
    assert offsets == [sum(sizes[:i]) for i in range(len(PAYLOADS))]
    assert count_records(path) == len(PAYLOADS)


def test_writer_context_and_framing(tmp_path: Path) -> None:
    path = tmp_path / "w.tfrecord"
    with TFRecordWriter(path) as writer:
        writer.write(b"abc")
    raw = path.read_bytes()
    assert raw == encode_record(b"abc")
    assert struct.unpack("<Q", raw[:8])[0] == 3
    assert struct.unpack("<I", raw[8:12])[0] == masked_crc32c(raw[:8])
    assert struct.unpack("<I", raw[-4:])[0] == masked_crc32c(b"abc")


def test_empty_file_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.tfrecord"
    path.write_bytes(b"")
    assert list(iter_records(path)) == []


@pytest.mark.parametrize("cut", [1, 5, 11, 12, 13, 20])
def test_truncated_last_record(tmp_path: Path, cut: int) -> None:
    path = _write(tmp_path)
    raw = path.read_bytes()
    last_offset = len(raw) - (16 + len(PAYLOADS[-1]))
    path.write_bytes(raw[: last_offset + cut])
    items = list(iter_records(path))
    assert all(not isinstance(i, CorruptRecordError) for i in items[:-1])
    err = items[-1]
    assert isinstance(err, CorruptRecordError)
    assert err.ends_file
    assert err.index == len(PAYLOADS) - 1 and err.offset == last_offset
    assert str(path) in str(err) and "record 3" in str(err) and "truncated" in str(err)


def test_flipped_data_byte_is_a_crc_mismatch_and_reading_goes_on(tmp_path: Path) -> None:
    path = _write(tmp_path)
    raw = bytearray(path.read_bytes())
    offset = 16 + 0 + 16 + 1  # records 0 (empty) and 1 ("a"): record 2 starts at 33
    raw[offset + 12 + 3] ^= 0x01
    path.write_bytes(bytes(raw))
    items = list(iter_records(path))
    assert isinstance(items[2], CorruptRecordError) and not items[2].ends_file
    assert items[2].index == 2 and items[2].offset == offset
    assert "data CRC mismatch" in str(items[2])
    assert items[3].data == PAYLOADS[3]  # type: ignore[union-attr]
    # Without verification the flipped byte goes through.
    assert not any(isinstance(i, CorruptRecordError) for i in iter_records(path, verify=False))


def test_flipped_length_byte_ends_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[16 + 0] ^= 0x40  # length of record 1
    path.write_bytes(bytes(raw))
    items = list(iter_records(path))
    assert len(items) == 2
    assert isinstance(items[1], CorruptRecordError) and items[1].ends_file
    assert "length CRC mismatch" in str(items[1]) and "byte offset 16" in str(items[1])


def test_unwanted_records_are_skipped_unread(tmp_path: Path) -> None:
    path = _write(tmp_path)
    items = list(iter_records(path, want=lambda i: i % 2 == 1))
    assert [i.data for i in items] == [None, PAYLOADS[1], None, PAYLOADS[3]]  # type: ignore[union-attr]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NoDataFilesError, match="no such file"):
        list(iter_records(tmp_path / "nope.tfrecord"))
    with pytest.raises(NoDataFilesError, match="directory"):
        list(iter_records(tmp_path))


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"id,labels\nabc,1 2 3\nxyz,4\n", "starts with text"),
        (b"yes\n", "starts with text"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "gzip"),
        (bytes(range(200, 256)) * 3, "not a TFRecord file"),
    ],
)
def test_a_file_that_is_not_a_tfrecord_says_so(tmp_path: Path, data: bytes, said: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    (err,) = list(iter_records(path))
    assert isinstance(err, CorruptRecordError) and err.index == 0
    message = str(err)
    assert "not a TFRecord file" in message and said in message and str(path) in message
