"""What a run tells (``nextvlad.training.report``): the scalars the loop writes, as TensorBoard
reads them; the messages for data errors; the torchrun line; and, from a real `nextvlad train`
process with neither progress bar nor evaluation, the line that says where the checkpoint
went."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nextvlad.data.errors import (
    ClassRangeError,
    CorruptRecordError,
    NoDataFilesError,
)
from nextvlad.training.distributed import Context
from nextvlad.training.options import TrainOptions
from nextvlad.training.report import Reporter, data_error_message, plural
from nextvlad.training.state import TrainerState
from tests.training._events import tensorboard_scalars
from tests.training._runs import TINY, process_env


def test_plural() -> None:
    assert plural(1, "corrupt record") == "1 corrupt record"
    assert plural(2, "corrupt record") == "2 corrupt records"
    assert plural(0, "example") == "0 examples"
    assert [plural(n, "batch", "batches") for n in (1, 3)] == ["1 batch", "3 batches"]


def test_data_error_messages_say_what_to_do(tmp_path: Path) -> None:
    trainer = TrainerState(step=7, epoch=1)
    where = {"path": "a.tfrecord", "index": 3, "offset": 120}
    corrupt = CorruptRecordError("data CRC mismatch (corrupt record)", **where)
    first = data_error_message(corrupt, trainer, tmp_path, -1)
    assert first == (
        "a.tfrecord, record 3, byte offset 120: data CRC mismatch (corrupt record) (epoch 1, "
        "after step 7); no checkpoint was written yet; pass --skip-corrupt to skip and count "
        "such records"
    )
    later = data_error_message(corrupt, trainer, tmp_path, 5)
    assert later.endswith(
        f"the last good checkpoint is {tmp_path / 'checkpoints' / 'step-00000005'}; pass "
        "--skip-corrupt to skip and count such records, with --resume to continue from that "
        "checkpoint"
    )
    label = ClassRangeError("labels has class 30, not below the number of classes 25", **where)
    for last_saved in (-1, 5):
        text = data_error_message(label, trainer, tmp_path, last_saved)
        assert "--set num_classes=N, N the number of classes of the data" in text
        assert "`nextvlad inspect`" in text and "would drop every record" in text
        assert "pass --skip-corrupt" not in text and "--resume" not in text
    missing = data_error_message(
        NoDataFilesError("x*.tfrecord: no such files"), trainer, tmp_path, 5
    )
    assert "--skip-corrupt" not in missing and missing.startswith("x*.tfrecord: no such files")


def _options(tmp_path: Path, **changes: object) -> TrainOptions:
    return TrainOptions(
        preset="nextvlad-8g-128k-2048h",
        train_data=[str(tmp_path / "*.tfrecord")],
        out=str(tmp_path / "run"),
        max_steps=10,
        **changes,  # type: ignore[arg-type]
    )


def _context(rank: int = 0, world_size: int = 1) -> Context:
    return Context(rank=rank, local_rank=rank, world_size=world_size, device=torch.device("cpu"))


def test_the_scalars_the_loop_writes_read_back_in_tensorboard(tmp_path: Path) -> None:
    options = _options(tmp_path, skip_corrupt=True, skip_nonfinite=True)
    reporter = Reporter(options, _context(), tmp_path / "run")
    reporter.start(TrainerState(), [])
    trainer = TrainerState(step=10, examples_seen=800, skipped_records=1)
    logits = torch.tensor([[4.0, -4.0, -4.0], [-4.0, -4.0, 4.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    reporter.train_scalars(trainer, logits, labels, loss=0.5, lr=2e-4, examples_per_s=123.0)
    result = {"gap": 0.75, "map": 0.5, "hit_at_one": 1.0, "perr": 0.25, "loss": 1.5}
    reporter.evaluation(10, {**result, "num_videos": 4})
    trainer.step, trainer.nonfinite_batches = 12, 1
    reporter.nonfinite(trainer)
    reporter.final_counts(trainer)
    reporter.close()
    scalars = tensorboard_scalars(tmp_path / "run" / "tensorboard")
    assert scalars["train/gap"] == [(10, 1.0)]  # both videos ranked right
    assert scalars["train/loss"] == [(10, 0.5)]
    assert scalars["train/learning_rate"] == [(10, pytest.approx(2e-4))]
    assert scalars["train/examples_per_second"] == [(10, 123.0)]
    assert scalars["data/skipped_records"] == [(10, 1.0), (12, 1.0)]
    assert scalars["train/nonfinite_batches"] == [(12, 1.0), (12, 1.0)]
    for key, value in result.items():
        assert scalars[f"eval/{key}"] == [(10, value)]
    assert set(scalars) == {
        *(f"eval/{k}" for k in result),
        "train/gap",
        "train/loss",
        "train/learning_rate",
        "train/examples_per_second",
        "data/skipped_records",
        "train/nonfinite_batches",
    }


def test_torchrun_says_how_many_processes_train(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="nextvlad.train"):
        for rank in (0, 1):
            reporter = Reporter(_options(tmp_path, batch_size=80), _context(rank, 2), tmp_path)
            reporter.start(TrainerState(), [])
            reporter.finished(TrainerState(step=3, examples_seen=480), 3, stopped=False)
            reporter.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "training on 2 processes (torchrun): batch 80 each, 160 a step",
        f"trained to step 3 (480 examples); checkpoint {tmp_path / 'checkpoints' / 'step-00000003'}",
    ]  # rank 1 says nothing
    assert len(list((tmp_path / "tensorboard").iterdir())) == 1  # and writes no events


def test_a_quiet_run_still_says_where_its_checkpoint_went(tiny_data: Path, tmp_path: Path) -> None:
    """--no-progress, no --eval-data: a real process, with the CLI's own logging."""
    run = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable, "-m", "nextvlad", "train", "--preset", "nextvlad-8g-128k-2048h",
            *TINY, "--train-data", str(tiny_data / "*.tfrecord"), "--out", str(run),
            "--batch-size", "4", "--max-steps", "2", "--num-workers", "0", "--eigenvals",
            "none", "--no-progress",
        ],
        env=process_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        f"trained to step 2 (8 examples); checkpoint {run / 'checkpoints' / 'step-00000002'}"
    )
