"""TensorBoard event files (``nextvlad.training.events``), read back by tensorboard itself;
and the one varint writer under them (``nextvlad.data._wire.varint``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextvlad.data._wire import read_varint, to_int64, varint
from nextvlad.data.tfrecord import iter_records
from nextvlad.training.events import EventWriter
from tests.training._events import tensorboard_scalars


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**63 - 1, b"\xff" * 8 + b"\x7f"),
        (-1, b"\xff" * 9 + b"\x01"),  # int64 -1: 64-bit two's complement, 10 bytes
        (-2, b"\xfe" + b"\xff" * 8 + b"\x01"),
        (-(2**63), b"\x80" * 9 + b"\x01"),
    ],
)
def test_varint_writes_int64_as_protobuf_does(value: int, encoded: bytes) -> None:
    assert varint(value) == encoded
    decoded, end = read_varint(encoded, 0, len(encoded))
    assert end == len(encoded) and to_int64(decoded) == value


def test_every_negative_int64_takes_ten_bytes() -> None:
    for value in (-1, -7, -(2**31), -(2**62) - 5, -(2**63)):
        assert len(varint(value)) == 10, value


STEPS = [0, 1, 2, 10, 2**31 + 5, 2**40]  # increasing, as a run writes them


def test_tensorboard_reads_back_tags_steps_and_values(tmp_path: Path) -> None:
    writer = EventWriter(tmp_path)
    for i, step in enumerate(STEPS):
        writer.scalar("train/loss", 1.0 / (i + 1), step)
        writer.scalar("eval/gap", 0.25 * i, step)
    writer.scalar("data/skipped_records", 3, STEPS[-1])  # an int, as the loop writes counts
    writer.close()
    scalars = tensorboard_scalars(tmp_path)
    assert set(scalars) == {"train/loss", "eval/gap", "data/skipped_records"}
    assert [s for s, _ in scalars["train/loss"]] == STEPS
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(
        [1.0 / (i + 1) for i in range(len(STEPS))], rel=1e-7
    )
    assert scalars["eval/gap"] == [(s, 0.25 * i) for i, s in enumerate(STEPS)]
    assert scalars["data/skipped_records"] == [(2**40, 3.0)]


def test_a_negative_step_is_written_and_read_as_int64(tmp_path: Path) -> None:
    writer = EventWriter(tmp_path)
    writer.scalar("x", 5.0, -3)
    writer.close()
    assert tensorboard_scalars(writer.path) == {"x": [(-3, 5.0)]}


def test_the_file_is_a_tfrecord_file_that_starts_with_the_version_and_a_start(
    tmp_path: Path,
) -> None:
    writer = EventWriter(tmp_path / "tensorboard")
    writer.scalar("a", 1.5, 7)
    writer.close()
    assert writer.path.parent == tmp_path / "tensorboard"
    assert writer.path.name.startswith("events.out.tfevents.")
    records = [bytes(r.data) for r in iter_records(writer.path)]
    assert len(records) == 3  # the version, the START of the session, the scalar
    assert b"brain.Event:2" in records[0] and b"a" in records[2]


def test_a_resumed_run_replaces_what_was_logged_after_its_checkpoint(tmp_path: Path) -> None:
    """A run logs steps 1 to 5 and stops; resumed from its checkpoint at step 3, a second
    writer in the same folder logs steps 4 to 6: TensorBoard shows one run, the second
    writer's steps 4 and 5 in place of the first's."""
    first = EventWriter(tmp_path)
    for step in range(1, 6):
        first.scalar("train/loss", 1.0, step)
    first.close()
    second = EventWriter(tmp_path, start_step=4)
    for step in range(4, 7):
        second.scalar("train/loss", 2.0, step)
    second.close()
    assert tensorboard_scalars(tmp_path)["train/loss"] == [
        (1, 1.0),
        (2, 1.0),
        (3, 1.0),
        (4, 2.0),
        (5, 2.0),
        (6, 2.0),
    ]


def test_two_writers_in_the_same_second_write_two_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run resumed within the second its predecessor started (or two writers at once) gets
    a file of its own, named after the first so that TensorBoard reads them in order."""
    import time

    import nextvlad.training.events as events

    monkeypatch.setattr(events.time, "time", lambda: 1_700_000_000.25)
    assert time.time() == 1_700_000_000.25
    first = EventWriter(tmp_path)
    first.scalar("train/loss", 1.0, 1)
    second = EventWriter(tmp_path, start_step=2)
    second.scalar("train/loss", 2.0, 2)
    first.close()
    second.close()
    assert first.path != second.path
    assert sorted(tmp_path.iterdir()) == [first.path, second.path]
    for writer in (first, second):  # each file begins with its own version record
        assert len(list(iter_records(writer.path))) == 3
    assert tensorboard_scalars(tmp_path)["train/loss"] == [(1, 1.0), (2, 2.0)]
