"""Training that meets trouble: a non-finite loss, a full disk, an unwritable run folder,
corrupt records in the middle of a run. Each stops with a one-line error that says where and
what to do, keeps the last good checkpoint, or (with --skip-nonfinite / --skip-corrupt) goes
on and counts what it skipped, at the end and in TensorBoard."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import nextvlad.training.run_folder as run_folder
import nextvlad.training.state as state
import nextvlad.training.step as step
from nextvlad.checkpoint import load_model
from nextvlad.cli import main
from nextvlad.data import write_synthetic
from nextvlad.data.schema import VIDEO_LEVEL, encode_video
from nextvlad.data.synth import SynthConfig, synthetic_videos
from nextvlad.data.tfrecord import TFRecordWriter, iter_records
from nextvlad.training.events import read_scalars
from nextvlad.training.state import latest_checkpoint, list_checkpoints

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=25"]
TINY += ["--set", "expansion=1"]
SHORT = SynthConfig(num_classes=25, min_frames=8, max_frames=16, min_run=1, max_run=3)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("failures")
    write_synthetic(root / "train", videos=24, shards=2, num_classes=25, seed=1, config=SHORT)
    return root


def _train(train_glob: str | Path, run: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "--preset",
            "nextvlad-8g-128k-2048h",
            *TINY,
            "--train-data",
            str(train_glob),
            "--out",
            str(run),
            "--batch-size",
            "4",
            "--eval-every",
            "0",
            "--num-workers",
            "0",
            "--eigenvals",
            "none",
            "--no-progress",
            *extra,
        ]
    )


def _scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    return [
        (step, value)
        for path in sorted((run / "tensorboard").iterdir())
        for name, step, value in read_scalars(path)
        if name == tag
    ]


@pytest.fixture
def nan_loss_at(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the loss NaN at the given (1-based) calls of the training loss."""

    def install(*calls: int) -> None:
        real = step.yt8m_loss
        count = 0

        def loss(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            nonlocal count
            count += 1
            terms = real(*args, **kwargs)
            if count in calls:
                terms["total"] = terms["total"] * float("nan")
            return terms

        monkeypatch.setattr(step, "yt8m_loss", loss)

    return install


def test_a_non_finite_loss_stops_naming_the_step_and_the_last_good_checkpoint(
    data: Path, tmp_path: Path, nan_loss_at: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    nan_loss_at(4)
    run = tmp_path / "run"
    assert (
        _train(data / "train" / "*.tfrecord", run, "--max-steps", "6", "--checkpoint-every", "2")
        == 1
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        f"nextvlad train: error: non-finite loss (nan) at step 4 (epoch 0, batch 4 of the epoch); "
        f"training stopped; the last good checkpoint is {run / 'checkpoints' / 'step-00000002'}: "
        "resume from it with --resume" in err
    )
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]
    load_model(run / "checkpoints" / "step-00000002")


def test_a_checkpoint_is_never_written_from_non_finite_batch_norm_statistics(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The weights stay finite but a moving variance does not: the checkpoint is refused."""
    real = step.TrainStep._apply
    calls = 0

    def apply(self: step.TrainStep, finite: torch.Tensor, saved: list[torch.Tensor]) -> None:
        nonlocal calls
        real(self, finite, saved)
        calls += 1
        if calls == 3:
            self.model.hidden_bn.running_var.fill_(float("inf"))  # type: ignore[union-attr]

    monkeypatch.setattr(step.TrainStep, "_apply", apply)
    run = tmp_path / "run"
    code = _train(data / "train" / "*.tfrecord", run, "--max-steps", "6", "--checkpoint-every", "2")
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "the weights or batch-norm statistics are non-finite after step 4" in err
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]


def test_skip_nonfinite_skips_counts_and_reports(
    data: Path,
    tmp_path: Path,
    nan_loss_at: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nan_loss_at(2, 5)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="nextvlad.train"):
        assert (
            _train(data / "train" / "*.tfrecord", run, "--max-steps", "6", "--skip-nonfinite") == 0
        )
    assert "skipped 2 batches with a non-finite loss (--skip-nonfinite)" in caplog.text
    assert "non-finite loss (nan) at step 2: batch skipped" in caplog.text
    final = latest_checkpoint(run)
    assert final is not None and final.name == "step-00000006"  # 6 updates, 8 batches read
    trainer = json.loads((final / "trainer.json").read_text())["trainer"]
    assert trainer["nonfinite_batches"] == 2 and trainer["batches_in_epoch"] == 2
    assert _scalars(run, "train/nonfinite_batches")[-1] == (6, 2.0)
    for name, tensor in load_file(str(final / "model.safetensors")).items():
        assert torch.isfinite(tensor.float()).all(), name


def _write_video_level_with_a_nan(path: Path) -> None:
    videos = list(synthetic_videos(16, num_classes=25, seed=3, frame_level=False))
    bad = videos[5].features["mean_rgb"].copy()
    bad[7] = np.nan
    videos[5].features["mean_rgb"] = bad
    path.parent.mkdir(parents=True, exist_ok=True)
    with TFRecordWriter(path) as writer:
        for video in videos:
            writer.write(encode_video(video, VIDEO_LEVEL))


def test_a_nan_feature_in_the_data_stops_or_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shard = tmp_path / "video" / "nan.tfrecord"
    _write_video_level_with_a_nan(shard)
    common = ["train", "--preset", "video-logistic", "--set", "num_classes=25"]
    common += ["--train-data", str(shard), "--batch-size", "4", "--epochs", "1"]
    common += ["--num-workers", "0", "--no-progress", "--checkpoint-every", "1"]
    assert main([*common, "--out", str(tmp_path / "stop")]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss (nan) at step" in err and "Traceback" not in err
    assert main([*common, "--out", str(tmp_path / "skip"), "--skip-nonfinite"]) == 0
    final = latest_checkpoint(tmp_path / "skip")
    assert final is not None and final.name == "step-00000003"  # 4 batches, one skipped
    for tensor in load_file(str(final / "model.safetensors")).values():
        assert torch.isfinite(tensor).all()


FULL_DISK = "No space left on device"
# safetensors reports a full disk as a SafetensorError of its own, Python as an OSError.
FULL_DISK_ERRORS = [
    lambda path: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)),
    lambda path: SafetensorError(f"Error while serializing: I/O error: {FULL_DISK} (os error 28)"),
]


@pytest.mark.parametrize("error", FULL_DISK_ERRORS, ids=["oserror", "safetensorerror"])
def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Any,
) -> None:
    real = state._save_safetensors
    calls = 0

    def full_disk(tensors: dict[str, torch.Tensor], path: Path) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:  # the second checkpoint's optimizer state: half written, then ENOSPC
            path.write_bytes(b"\x00" * 100)
            raise error(path)
        real(tensors, path)

    monkeypatch.setattr(state, "_save_safetensors", full_disk)
    run = tmp_path / "run"
    train_glob = data / "train" / "*.tfrecord"
    assert _train(train_glob, run, "--max-steps", "6", "--checkpoint-every", "2") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    previous = run / "checkpoints" / "step-00000002"
    [line] = [x for x in err.splitlines() if x.startswith("nextvlad train: error: ")]
    assert line.startswith(
        f"nextvlad train: error: could not write checkpoint {run / 'checkpoints' / 'step-00000004'}"
    )
    assert FULL_DISK in line and line.endswith(
        f"; the last complete checkpoint, {previous}, is untouched"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000002"]
    load_model(previous)
    monkeypatch.setattr(state, "_save_safetensors", real)  # space again: resume and finish
    assert _train(train_glob, run, "--max-steps", "6", "--resume") == 0
    assert latest_checkpoint(run) == run / "checkpoints" / "step-00000006"


def test_too_little_free_space_is_refused_before_training(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = type("usage", (), {"total": 10**9, "used": 10**9 - 4096, "free": 4096})
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: usage)
    run = tmp_path / "run"
    assert _train(data / "train" / "*.tfrecord", run, "--max-steps", "2") == 1
    err = capsys.readouterr().err
    assert f"nextvlad train: error: not enough free space in {run}: 4.0 KiB free" in err
    assert "the newest 3 kept and one more while writing" in err
    assert not (run / "run.json").exists() and not list_checkpoints(run)


def test_an_unwritable_run_folder_is_refused_before_training(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert _train(data / "train" / "*.tfrecord", blocker / "run", "--max-steps", "2") == 1
    err = capsys.readouterr().err
    assert f"nextvlad train: error: cannot write to the run folder {blocker / 'run'}" in err
    assert "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_run_folder_is_refused_before_training(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o500)
    try:
        assert _train(data / "train" / "*.tfrecord", run, "--max-steps", "2") == 1
    finally:
        run.chmod(0o700)
    assert "cannot write to the run folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards of 12 videos; record 10 of the second has a flipped byte in its data."""
    root = tmp_path_factory.mktemp("corrupt")
    paths = write_synthetic(root, videos=24, shards=2, num_classes=25, seed=4, config=SHORT)
    records: Iterator[Any] = iter_records(paths[1])
    offset = [r.offset for r in records][10]
    raw = bytearray(paths[1].read_bytes())
    raw[offset + 12 + 40] ^= 0xFF  # 12 header bytes, then the data
    paths[1].write_bytes(bytes(raw))
    return paths[1]


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_corrupt_record_mid_run_stops_naming_file_and_record(
    corrupt: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    workers: str,
) -> None:
    run = tmp_path / "run"
    extra = ["--epochs", "1", "--checkpoint-every", "1", "--shuffle-buffer", "2"]
    extra += ["--num-workers", workers]
    assert _train(corrupt.parent / "*.tfrecord", run, *extra) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Original" not in err
    [line] = [x for x in err.splitlines() if x.startswith("nextvlad train: error:")]
    assert f"{corrupt}, record 10, byte offset" in line and "data CRC mismatch" in line
    last = latest_checkpoint(run)
    assert last is not None  # steps were done, and their checkpoints kept
    assert f"the last good checkpoint is {last}; pass --skip-corrupt" in line
    load_model(last)

    # As the message says: --skip-corrupt with --resume finishes, and counts the record.
    with caplog.at_level(logging.WARNING):
        assert _train(corrupt.parent / "*.tfrecord", run, *extra, "--resume", "--skip-corrupt") == 0
    assert "skipped 1 corrupt records (--skip-corrupt)" in caplog.text
    final = latest_checkpoint(run)
    assert final is not None and final.name == "step-00000006"  # 23 videos in 6 batches
    assert _scalars(run, "data/skipped_records")[-1] == (6, 1.0)


def test_training_puts_the_signal_handlers_back(data: Path, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert _train(data / "train" / "*.tfrecord", tmp_path / "run", "--max-steps", "1") == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
