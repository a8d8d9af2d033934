"""Fixtures of the training tests: the tiny generated data set, and one uninterrupted run of
it as a subprocess that the crash-safety tests of several files compare with, and a run
folder with one checkpoint."""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

import pytest

from nextvlad.checkpoint import latest_checkpoint
from nextvlad.data import write_synthetic
from tests.training._runs import FINAL, SHORT, newest_step, process_env, train, train_command


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 short frame-level videos of 25 classes in two shards: ``tiny_data / "*.tfrecord"``."""
    root = tmp_path_factory.mktemp("tiny-data")
    write_synthetic(root, videos=24, shards=2, num_classes=25, seed=1, config=SHORT)
    return root


@pytest.fixture(scope="session")
def uninterrupted(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A run of ``train_command`` left alone, and the seconds between two of its checkpoints."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = subprocess.Popen(
        train_command(tiny_data, run),
        env=process_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen: dict[int, float] = {}
    while proc.poll() is None:
        seen.setdefault(newest_step(run), time.monotonic())
        time.sleep(0.005)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert latest_checkpoint(run) == run / "checkpoints" / FINAL
    times = [seen[step] for step in (5, 10, 15, 20) if step in seen]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return run, gaps[len(gaps) // 2] if gaps else 0.5


@pytest.fixture(scope="session")
def one_step_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of the tiny model trained one step, with its checkpoint ``step-00000001``
    (tests copy it before they change anything)."""
    run = tmp_path_factory.mktemp("one-step") / "run"
    assert train(tiny_data / "*.tfrecord", run, "--max-steps", "1") == 0
    return run
