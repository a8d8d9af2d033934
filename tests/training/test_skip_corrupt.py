"""``nextvlad train --skip-corrupt`` on a truncated shard counts its one bad record: in the
checkpoint's trainer.json, in the end-of-run warning and in TensorBoard, with 0, 1 and 2 data
workers (the skip comes after the last good record of the file, and of a worker's stream)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nextvlad.cli import main
from nextvlad.data import write_synthetic
from nextvlad.data.synth import SynthConfig

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=25"]
TINY += ["--set", "expansion=1"]
SHORT = SynthConfig(num_classes=25, min_frames=8, max_frames=16, min_run=1, max_run=3)
VIDEOS = 12


@pytest.fixture(scope="module")
def truncated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shard of 12 short videos, cut in the middle of its last record (11 readable)."""
    root = tmp_path_factory.mktemp("truncated")
    [path] = write_synthetic(root, videos=VIDEOS, shards=1, num_classes=25, seed=4, config=SHORT)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    return path


@pytest.mark.parametrize("workers", ["0", "1", "2"])
def test_a_truncated_shard_counts_one_skip(
    truncated: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, workers: str
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--preset", "nextvlad-8g-128k-2048h", *TINY, "--train-data", str(truncated)]
    # Batches of 3: no batch of one video (batch norm) from 2 workers' 6 and 5 videos.
    argv += ["--out", str(run), "--batch-size", "3", "--epochs", "1", "--eval-every", "0"]
    argv += ["--num-workers", workers, "--eigenvals", "none", "--no-progress", "--skip-corrupt"]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    assert "skipped 1 corrupt record" in caplog.text  # the end-of-run warning

    latest = (run / "checkpoints" / "latest").read_text().strip()
    trainer = json.loads((run / "checkpoints" / latest / "trainer.json").read_text())["trainer"]
    assert trainer["skipped_records"] == 1
    assert trainer["examples_seen"] == VIDEOS - 1

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert "data/skipped_records" in events.Tags()["scalars"]
    last = events.Scalars("data/skipped_records")[-1]
    assert (last.step, last.value) == (trainer["step"], 1.0)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_bad_record_read_again_each_epoch_counts_once(
    truncated: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, workers: str
) -> None:
    """Three epochs read the bad record three times: one corrupt record, counted once (the
    count is the most any epoch met), also across a resume in the middle of an epoch."""
    run = tmp_path / "run"
    argv = ["train", "--preset", "nextvlad-8g-128k-2048h", *TINY, "--train-data", str(truncated)]
    argv += ["--out", str(run), "--batch-size", "3", "--eval-every", "0", "--checkpoint-every"]
    argv += ["2", "--num-workers", workers, "--eigenvals", "none", "--no-progress"]
    argv += ["--skip-corrupt"]
    with caplog.at_level(logging.WARNING):
        assert main([*argv, "--max-steps", "6"]) == 0  # 4 steps an epoch: into the second
        assert "skipped 1 corrupt record (--skip-corrupt)" in caplog.text
        caplog.clear()
        assert main([*argv, "--epochs", "3", "--resume"]) == 0
        assert "skipped 1 corrupt record (--skip-corrupt)" in caplog.text
    latest = (run / "checkpoints" / "latest").read_text().strip()
    trainer = json.loads((run / "checkpoints" / latest / "trainer.json").read_text())["trainer"]
    assert (trainer["step"], trainer["skipped_records"]) == (12, 1)
    assert trainer["examples_seen"] == 3 * (VIDEOS - 1)
