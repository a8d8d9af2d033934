"""A training batch of one video (batch statistics of one row) is dropped and counted, never a
crash nor NaN statistics: whatever the data size, the data workers, the processes and the task
leave as the remainder of an epoch."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nextvlad.cli import main
from nextvlad.data import SegmentDataset, detect_schema, resolve_files, write_synthetic
from tests.training._runs import SHORT, TINY, train


def _trainer(run: Path) -> dict[str, int]:
    latest = (run / "checkpoints" / "latest").read_text().strip()
    return json.loads((run / "checkpoints" / latest / "trainer.json").read_text())["trainer"]


def _finite_statistics(run: Path) -> None:
    latest = (run / "checkpoints" / "latest").read_text().strip()
    weights = load_file(str(run / "checkpoints" / latest / "model.safetensors"))
    for key, tensor in weights.items():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), key


@pytest.mark.parametrize(
    ("videos", "shards", "workers", "steps", "dropped"),
    [
        (5, 1, "0", 2, 2),  # 4 + 1 an epoch, 2 epochs
        (10, 2, "2", 4, 4),  # each worker's shard of 5: 4 + 1
        (9, 1, "0", 4, 2),  # 4 + 4 + 1
    ],
)
def test_a_batch_of_one_video_is_dropped_and_counted(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    videos: int,
    shards: int,
    workers: str,
    steps: int,
    dropped: int,
) -> None:
    data = tmp_path / "data"
    write_synthetic(data, videos=videos, shards=shards, num_classes=25, seed=2, config=SHORT)
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert train(data / "*.tfrecord", run, "--epochs", "2", "--num-workers", workers) == 0
    trainer = _trainer(run)
    assert trainer["step"] == steps
    assert trainer["examples_seen"] == 2 * videos - dropped
    assert trainer["small_batches"] == dropped
    assert f"dropped {dropped} batches of one example" in caplog.text
    _finite_statistics(run)


def test_a_dropped_batch_keeps_the_resume_position(tmp_path: Path) -> None:
    """The dropped batch counts as read: a run resumed after it reads on from the next."""
    data = tmp_path / "data"
    write_synthetic(data, videos=9, shards=1, num_classes=25, seed=2, config=SHORT)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(data / "*.tfrecord", whole, "--epochs", "2", "--deterministic") == 0
    assert train(data / "*.tfrecord", parts, "--max-steps", "2", "--deterministic") == 0
    assert train(data / "*.tfrecord", parts, "--epochs", "2", "--deterministic", "--resume") == 0
    assert _trainer(whole) == _trainer(parts)


def test_only_batches_of_one_video_is_an_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    write_synthetic(data, videos=1, shards=1, num_classes=25, seed=2, config=SHORT)
    assert train(data / "*.tfrecord", tmp_path / "run", "--max-steps", "3") == 1
    err = capsys.readouterr().err
    assert "no batch of two videos or more" in err and "Traceback" not in err


def test_batch_size_one_is_a_usage_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = ["train", "--preset", "nextvlad-8g-128k-2048h", "--train-data", "x", "--out"]
    argv += [str(tmp_path / "run"), "--batch-size", "1", "--max-steps", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "--batch-size: at least 2 for training" in capsys.readouterr().err


def test_segment_task_drops_a_batch_of_one_segment(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    write_synthetic(data, videos=6, shards=1, num_classes=25, seed=3, segment_ratings=2)
    files = resolve_files([str(data / "*.tfrecord")])
    schema = detect_schema(files)
    segments = sum(1 for _ in SegmentDataset(files, schema=schema, num_classes=25))
    assert segments >= 3
    run = tmp_path / "run"
    batch = str(segments - 1)  # one full batch, then one segment
    with caplog.at_level(logging.INFO):
        code = train(data / "*.tfrecord", run, "--task", "segments", "--epochs", "1",
                     "--batch-size", batch)  # fmt: skip
    assert code == 0
    trainer = _trainer(run)
    assert (trainer["step"], trainer["small_batches"]) == (1, 1)
    assert "dropped 1 batch of one example" in caplog.text
    _finite_statistics(run)


@pytest.mark.slow
def test_two_processes_drop_together(tmp_path: Path) -> None:
    """Each of 2 processes reads a shard of 5 videos: 4 + 1; both drop the batch of one."""
    data = tmp_path / "data"
    write_synthetic(data, videos=10, shards=2, num_classes=25, seed=2, config=SHORT)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "nextvlad", "train"]
    command += ["--preset", "nextvlad-8g-128k-2048h", *TINY, "--train-data"]
    command += [str(data / "*.tfrecord"), "--out", str(run), "--batch-size", "4", "--epochs"]
    command += ["2", "--num-workers", "0", "--no-progress", "--device", "cpu"]
    command += ["--eval-every", "0", "--eigenvals", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    trainer = _trainer(run)
    assert (trainer["step"], trainer["examples_seen"]) == (2, 16)
    assert trainer["small_batches"] == 2
    assert result.stderr.count("dropped 2 batches of one example") == 1
    _finite_statistics(run)
