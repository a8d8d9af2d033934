"""What the training tests share: a tiny model, short generated videos, `nextvlad train` run in
process or as a subprocess (with a checkpoint writer slowed down from the test's side), and
the checks of a run folder after a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from nextvlad.checkpoint import list_checkpoints, load_model, read_config
from nextvlad.cli import main
from nextvlad.data.synth import SynthConfig
from nextvlad.models import build_model
from nextvlad.training.optim import adam
from nextvlad.training.state import restore_training_state

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=25"]
TINY += ["--set", "expansion=1"]
SHORT = SynthConfig(num_classes=25, min_frames=8, max_frames=16, min_run=1, max_run=3)
CHECKPOINT_FILES = [
    "config.json",
    "input_transform.safetensors",
    "model.safetensors",
    "optimizer.safetensors",
    "trainer.json",
]
FINAL = "step-00000024"  # train_command: 24 videos / batch 4 = 6 steps an epoch, 4 epochs


def train(
    train_glob: str | Path,
    run: Path,
    *extra: str,
    preset: str = "nextvlad-8g-128k-2048h",
    tiny: bool = True,
) -> int:
    """`nextvlad train` in process, batch 4, no evaluation: of the tiny model, or (``tiny``
    False) of ``preset`` with the --set options in ``extra``."""
    return main(
        [
            "train",
            "--preset",
            preset,
            *(TINY if tiny else []),
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


# `python -c SLOW_WRITER SECONDS train ...` is `nextvlad train ...` whose checkpoint writer
# sleeps SECONDS after each file of a checkpoint: the test's own fault injection (the product
# has no switch for it), so that a test can kill the process in the middle of a write.
SLOW_WRITER = """
import sys, time
import nextvlad.training.state as state

pause = float(sys.argv.pop(1))

def slowed(write):
    def wrapper(*args, **kwargs):
        result = write(*args, **kwargs)
        time.sleep(pause)
        return result
    return wrapper

for name in ("save_model", "save_tensors", "atomic_write_bytes"):
    setattr(state, name, slowed(getattr(state, name)))

from nextvlad.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def train_command(data: Path, run: Path, *extra: str, pause: float | None = None) -> list[str]:
    """`nextvlad train` as a subprocess: 4 epochs of the 24 videos, deterministic, one worker;
    with ``pause``, the writer sleeps that long after each file of a checkpoint.

    Checkpoints every 5 steps: 5 (epoch 0, batch 5), 10 (epoch 1, batch 4), 15 (epoch 2,
    batch 3), 20 (epoch 3, batch 2), so resuming crosses epoch boundaries and starts
    mid-epoch."""
    start = ["-m", "nextvlad"] if pause is None else ["-c", SLOW_WRITER, str(pause)]
    return [
        sys.executable,
        *start,
        "train",
        "--preset",
        "nextvlad-8g-128k-2048h",
        *TINY,
        "--train-data",
        str(data / "*.tfrecord"),
        "--out",
        str(run),
        "--batch-size",
        "4",
        "--epochs",
        "4",
        "--checkpoint-every",
        "5",
        "--eval-every",
        "0",
        "--num-workers",
        "1",
        "--deterministic",
        "--seed",
        "7",
        "--eigenvals",
        "none",
        "--no-progress",
        *extra,
    ]


def process_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def newest_step(run: Path) -> int:
    """The step of the newest complete checkpoint (0 if none)."""
    found = list_checkpoints(run)
    return int(found[-1].name.split("-")[1]) if found else 0


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float) -> bool:
    """Poll ``condition`` every 10 ms; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("timed out")


def assert_checkpoints_sound(run: Path) -> list[str]:
    """Every ``step-*`` folder complete and loadable; ``latest`` names one of them."""
    root = run / "checkpoints"
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.name.startswith("step-"))
    assert folders == list_checkpoints(run)
    for folder in folders:
        assert sorted(f.name for f in folder.iterdir()) == CHECKPOINT_FILES, folder
        config, _ = read_config(folder)
        load_model(folder)
        model = build_model(config)
        optimizer = adam([p for p in model.parameters() if p.requires_grad], 1e-3, 1e-8)
        restore_training_state(folder, model, optimizer)
    if (root / "latest").exists():
        assert (root / (root / "latest").read_text()).is_dir()
    return [p.name for p in folders]


def assert_same_state(ours: Path, theirs: Path) -> None:
    """Two checkpoints with the same tensors (weights, Adam, RNG) and the same position."""
    for name in ("model.safetensors", "optimizer.safetensors", "input_transform.safetensors"):
        a, b = load_file(str(ours / name)), load_file(str(theirs / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=key)
    positions = [json.loads((c / "trainer.json").read_text())["trainer"] for c in (ours, theirs)]
    assert positions[0] == positions[1]
