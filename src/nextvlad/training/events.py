"""TensorBoard scalars without TensorFlow or tensorboard: ``Event`` protos in a TFRecord file.

``tensorboard --logdir RUN/tensorboard`` reads what this writes.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from nextvlad.data.tfrecord import encode_record


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + body


def scalar_event(tag: str, value: float, step: int, wall_time: float) -> bytes:
    """Event{wall_time, step, summary: Summary{value: [Value{tag, simple_value}]}}."""
    value_proto = _bytes_field(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
    summary = _bytes_field(1, value_proto)
    return _event(wall_time, step, _bytes_field(5, summary))


class EventWriter:
    """Appends scalars to ``<logdir>/events.out.tfevents.<time>.<host>``."""

    def __init__(self, logdir: str | Path) -> None:
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = logdir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self._file.write(encode_record(_event(now, 0, _bytes_field(3, b"brain.Event:2"))))
        self._file.flush()

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._file.write(encode_record(scalar_event(tag, float(value), step, time.time())))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: ints for varints, bytes otherwise."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            out.append((number, value))
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            out.append((number, buf[pos : pos + size]))
            pos += size
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            out.append((number, buf[pos : pos + length]))
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def read_scalars(path: str | Path) -> list[tuple[str, int, float]]:
    """(tag, step, value) of every scalar in an event file (for tests and tools)."""
    from nextvlad.data.tfrecord import iter_records

    out = []
    for record in iter_records(path):
        data = getattr(record, "data", None)
        if data is None:
            continue
        event = dict(_fields(data))
        summary = event.get(5)
        if not isinstance(summary, bytes):
            continue
        step = event.get(2, 0)
        assert isinstance(step, int)
        for number, value_proto in _fields(summary):
            if number == 1 and isinstance(value_proto, bytes):
                value = dict(_fields(value_proto))
                tag, simple = value.get(1), value.get(2)
                if isinstance(tag, bytes) and isinstance(simple, bytes):
                    out.append((tag.decode(), step, struct.unpack("<f", simple)[0]))
    return out
