"""One tiny trained run and its data, shared by the command-line tests of eval and predict."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nextvlad.cli import main
from nextvlad.data import write_synthetic
from nextvlad.data.synth import SynthConfig

NUM_CLASSES = 25
EVAL_VIDEOS = 16
# The small preset made smaller still: a few seconds of CPU for a couple of steps.
TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", f"num_classes={NUM_CLASSES}"]


@dataclass(frozen=True)
class TinyRun:
    run: Path  # RUN: run.json, checkpoints/step-00000002, checkpoints/latest
    frames: str  # glob of frame-level TFRecords (EVAL_VIDEOS videos)
    videos: str  # glob of video-level TFRecords
    train_stdout: dict[str, Any]  # what `nextvlad train` printed: the final evaluation

    @property
    def step(self) -> Path:
        return self.run / "checkpoints" / "step-00000002"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    root = tmp_path_factory.mktemp("tiny-run")
    short = SynthConfig(NUM_CLASSES, min_frames=8, max_frames=16, min_run=1, max_run=3)
    write_synthetic(root / "train", videos=16, shards=1, seed=1, config=short)
    write_synthetic(root / "eval", videos=EVAL_VIDEOS, shards=1, seed=2, config=short)
    write_synthetic(root / "veval", videos=8, shards=1, seed=3, frame_level=False)
    frames = str(root / "eval" / "*.tfrecord")
    argv = ["train", "--preset", "nextvlad-8g-16k-256h", *TINY, "--out", str(root / "run")]
    argv += ["--train-data", str(root / "train" / "*.tfrecord"), "--eval-data", frames]
    argv += ["--max-steps", "2", "--eval-every", "0", "--batch-size", "8"]
    argv += ["--num-workers", "0", "--no-progress", "--eigenvals", "none"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return TinyRun(
        root / "run", frames, str(root / "veval" / "*.tfrecord"), json.loads(out.getvalue())
    )


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``main(argv)``, a usage error's SystemExit included."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def one_line(text: str) -> str:
    """``text`` with its whitespace runs as single spaces (argparse wraps help text)."""
    return " ".join(text.split())
