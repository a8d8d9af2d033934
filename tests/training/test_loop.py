"""The run loop (``nextvlad.training.loop``) meeting trouble: a non-finite loss, non-finite
batch-norm statistics, NaN features, corrupt records and classes the model does not have in
the middle of a run. Each stops with a one-line error that says where and what to do and
keeps the last good checkpoint, or (with --skip-nonfinite / --skip-corrupt) goes on and
counts what it skipped, at the end and in TensorBoard."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import nextvlad.training.step as step
from nextvlad.checkpoint import latest_checkpoint, list_checkpoints, load_model
from nextvlad.cli import main
from nextvlad.data import write_synthetic
from nextvlad.data.schema import VIDEO_LEVEL, encode_video
from nextvlad.data.synth import synthetic_videos
from nextvlad.data.tfrecord import TFRecordWriter, iter_records
from tests.training._events import tensorboard_scalars
from tests.training._runs import SHORT, TINY, train


def _scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    return tensorboard_scalars(run / "tensorboard")[tag]


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
    tiny_data: Path, tmp_path: Path, nan_loss_at: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    nan_loss_at(4)
    run = tmp_path / "run"
    glob = tiny_data / "*.tfrecord"
    assert train(glob, run, "--max-steps", "6", "--checkpoint-every", "2") == 1
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
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
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
    glob = tiny_data / "*.tfrecord"
    assert train(glob, run, "--max-steps", "6", "--checkpoint-every", "2") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "the weights or batch-norm statistics are non-finite after step 4" in err
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]


def test_skip_nonfinite_skips_counts_and_reports(
    tiny_data: Path,
    tmp_path: Path,
    nan_loss_at: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nan_loss_at(2, 5)
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="nextvlad.train"):
        assert train(tiny_data / "*.tfrecord", run, "--max-steps", "6", "--skip-nonfinite") == 0
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


def _error_line(err: str) -> str:
    assert "Traceback" not in err and "Original" not in err
    [line] = [x for x in err.splitlines() if x.startswith("nextvlad train: error:")]
    return line


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
    assert train(corrupt.parent / "*.tfrecord", run, *extra) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"{corrupt}, record 10, byte offset" in line and "data CRC mismatch" in line
    last = latest_checkpoint(run)
    assert last is not None  # steps were done, and their checkpoints kept
    assert line.endswith(
        f"the last good checkpoint is {last}; pass --skip-corrupt to skip and count such "
        "records, with --resume to continue from that checkpoint"
    )
    load_model(last)

    # As the message says: --skip-corrupt with --resume finishes, and counts the record.
    with caplog.at_level(logging.WARNING):
        assert train(corrupt.parent / "*.tfrecord", run, *extra, "--resume", "--skip-corrupt") == 0
    assert "skipped 1 corrupt record (--skip-corrupt)" in caplog.text
    final = latest_checkpoint(run)
    assert final is not None and final.name == "step-00000006"  # 23 videos in 6 batches
    assert _scalars(run, "data/skipped_records")[-1] == (6, 1.0)


def test_a_corrupt_record_before_any_checkpoint_is_not_told_to_resume(
    corrupt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    extra = ["--epochs", "1", "--checkpoint-every", "1000", "--shuffle-buffer", "2"]
    assert train(corrupt.parent / "*.tfrecord", run, *extra) == 1
    line = _error_line(capsys.readouterr().err)
    assert "data CRC mismatch" in line and "--resume" not in line
    assert line.endswith(
        "; no checkpoint was written yet; pass --skip-corrupt to skip and count such records"
    )
    assert list_checkpoints(run) == []


def test_a_class_the_model_does_not_have_advises_num_classes_not_skip_corrupt(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data has 25 classes, the model 3: the fix is the number of classes, since
    --skip-corrupt would drop nearly every record."""
    overrides = [*TINY, "--set", "num_classes=3"]  # the last --set wins
    run = tmp_path / "run"
    assert train(tiny_data / "*.tfrecord", run, *overrides, "--max-steps", "6", tiny=False) == 1
    line = _error_line(capsys.readouterr().err)
    assert "not below the number of classes 3" in line
    assert "--set num_classes=N, N the number of classes of the data" in line
    assert "`nextvlad inspect`" in line
    assert "pass --skip-corrupt" not in line and "--resume" not in line


def test_a_corrupt_eval_record_names_the_step_and_keeps_the_checkpoint_due(
    corrupt: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An evaluation that meets a corrupt --eval-data record at a step that is also due a
    checkpoint: the checkpoint is written (the weights are good) and the error names the
    step and that checkpoint, as a training-data error does."""
    run = tmp_path / "run"
    extra = ["--max-steps", "4", "--eval-every", "2", "--checkpoint-every", "2"]
    extra += ["--eval-data", str(corrupt)]
    assert train(tiny_data / "*.tfrecord", run, *extra) == 1
    line = _error_line(capsys.readouterr().err)
    assert f"{corrupt}, record 10, byte offset" in line
    assert "(--eval-data, evaluating after step 2)" in line
    saved = run / "checkpoints" / "step-00000002"
    assert line.endswith(
        f"the last good checkpoint is {saved}; pass --skip-corrupt to skip and count such "
        "records, with --resume to continue from that checkpoint"
    )
    assert list_checkpoints(run) == [saved]
    load_model(saved)
