"""Crash safety of `nextvlad train`, as a subprocess on generated data.

SIGKILL at seeded random moments, in the middle of steps and in the middle of checkpoint
writes (``NEXTVLAD_TEST_CHECKPOINT_PAUSE`` makes the writer sleep between files, and the kill
comes while the temporary folder exists), then ``--resume`` until the run completes: every
checkpoint folder is complete and loadable after every kill, and the resumed run ends with the
weights, optimizer state and position of an uninterrupted run (CPU, ``--deterministic``).

SIGINT and SIGTERM finish the step, write a checkpoint, exit with 128 + the signal and print
the command that resumes; running that command ends, again, with the uninterrupted weights.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nextvlad.checkpoint import load_model, read_config
from nextvlad.data import write_synthetic
from nextvlad.data.synth import SynthConfig
from nextvlad.models import build_model
from nextvlad.training.optim import adam
from nextvlad.training.state import (
    PAUSE_ENV,
    latest_checkpoint,
    list_checkpoints,
    restore_training_state,
)

pytestmark = pytest.mark.slow  # several training processes each

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=25"]
TINY += ["--set", "expansion=1"]
FILES = [
    "config.json",
    "input_transform.safetensors",
    "model.safetensors",
    "optimizer.safetensors",
    "trainer.json",
]
FINAL = "step-00000024"  # 24 videos / batch 4 = 6 steps an epoch, 4 epochs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-data")
    config = SynthConfig(num_classes=25, min_frames=8, max_frames=16, min_run=1, max_run=3)
    write_synthetic(root, videos=24, shards=2, num_classes=25, seed=1, config=config)
    return root


def _command(data: Path, run: Path, *extra: str) -> list[str]:
    # Checkpoints every 5 steps: 5 (epoch 0, batch 5), 10 (epoch 1, batch 4), 15 (epoch 2,
    # batch 3), 20 (epoch 3, batch 2), so resuming crosses epoch boundaries and starts
    # mid-epoch.
    return [
        sys.executable,
        "-m",
        "nextvlad",
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


def _env(pause: float | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != PAUSE_ENV}
    env["OMP_NUM_THREADS"] = "1"
    if pause is not None:
        env[PAUSE_ENV] = str(pause)
    return env


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """An uninterrupted run, and the seconds between two of its checkpoints (5 steps)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.Popen(
        _command(data, run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen: dict[int, float] = {}
    while proc.poll() is None:
        seen.setdefault(_step(run), time.monotonic())
        time.sleep(0.005)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert latest_checkpoint(run) == run / "checkpoints" / FINAL
    times = [seen[step] for step in (5, 10, 15, 20) if step in seen]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return run, gaps[len(gaps) // 2] if gaps else 0.5


def _step(run: Path) -> int:
    """The step of the newest complete checkpoint (0 if none)."""
    found = list_checkpoints(run)
    return int(found[-1].name.split("-")[1]) if found else 0


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float) -> bool:
    """Poll ``condition`` every 10 ms; False if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("timed out")


def _assert_checkpoints_sound(run: Path) -> list[str]:
    """Every ``step-*`` folder complete and loadable; ``latest`` names one of them."""
    root = run / "checkpoints"
    if not root.is_dir():
        return []
    folders = sorted(p for p in root.iterdir() if p.name.startswith("step-"))
    assert folders == list_checkpoints(run)
    for folder in folders:
        assert sorted(f.name for f in folder.iterdir()) == FILES, folder
        config, _ = read_config(folder)
        load_model(folder)
        model = build_model(config)
        optimizer = adam([p for p in model.parameters() if p.requires_grad], 1e-3, 1e-8)
        restore_training_state(folder, model, optimizer)
    if (root / "latest").exists():
        assert (root / (root / "latest").read_text()).is_dir()
    return [p.name for p in folders]


def _assert_same_final_state(run: Path, reference: Path) -> None:
    ours, theirs = run / "checkpoints" / FINAL, reference / "checkpoints" / FINAL
    for name in ("model.safetensors", "optimizer.safetensors", "input_transform.safetensors"):
        a, b = load_file(str(ours / name)), load_file(str(theirs / name))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=key)
    positions = [json.loads((c / "trainer.json").read_text())["trainer"] for c in (ours, theirs)]
    assert positions[0] == positions[1]


def test_sigkill_anywhere_then_resume_ends_with_the_uninterrupted_weights(
    data: Path, reference: tuple[Path, float], tmp_path: Path
) -> None:
    reference_run, interval = reference
    rng = random.Random(20261125)
    run = tmp_path / "run"
    final_step = int(FINAL.split("-")[1])
    outcomes = []
    for mode in ("step", "checkpoint", "step", "checkpoint", "step"):
        if _step(run) == final_step:
            break
        start_step = _step(run)
        proc = subprocess.Popen(
            _command(data, run, "--resume"),
            env=_env(pause=0.4 if mode == "checkpoint" else None),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if mode == "checkpoint":  # while the temporary folder is being written
                landed = _wait_for(lambda: any(run.glob("checkpoints/.step-*.tmp")), proc, 180)
            else:  # after the next checkpoint, at a random moment before the one after it
                progressed = _wait_for(
                    lambda: _step(run) > start_step,  # noqa: B023
                    proc,
                    180,
                )
                time.sleep(rng.uniform(0.0, 0.9) * interval)
                landed = progressed and proc.poll() is None
            before = sorted(p.name for p in run.glob("checkpoints/*"))
            proc.kill()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr = proc.stderr.read() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
        assert "Traceback" not in stderr, stderr
        after = _assert_checkpoints_sound(run)
        outcomes.append((mode, landed, before, after))
        if mode == "checkpoint" and landed:
            assert any(name.endswith(".tmp") for name in before)  # killed mid-write
    print(f"\n{interval:.2f} s between checkpoints; kills:")
    for mode, landed, before, after in outcomes:
        print(f"  {mode:<10} landed {landed!s:<5} before {before} after {after}")
    assert sum(landed for mode, landed, _, _ in outcomes if mode == "checkpoint") >= 1
    assert sum(landed for mode, landed, _, _ in outcomes if mode == "step") >= 2
    finish = subprocess.run(
        _command(data, run, "--resume"), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert finish.returncode == 0, finish.stderr
    assert not list(run.glob("checkpoints/.*"))  # the killed writes' leftovers are gone
    _assert_checkpoints_sound(run)
    _assert_same_final_state(run, reference_run)


@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["sigint-group", "sigterm", "sigterm-group"],
)
def test_signal_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume(
    data: Path, reference: tuple[Path, float], tmp_path: Path, signum: int, to_group: bool
) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _command(data, run),
        env=_env(pause=0.2),  # slower checkpoints: the run cannot finish before the signal
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell job: Ctrl-C reaches all
    )
    try:
        assert _wait_for(lambda: bool(list_checkpoints(run)), proc, 180)
        if to_group:  # the main process and its DataLoader worker, as Ctrl-C or scancel
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr, stderr
    found = re.search(
        r"^interrupted by (SIG\w+) at step (\d+) \(checkpoint (\S+)\); resume with: (.+)$",
        stderr,
        re.MULTILINE,
    )
    assert found, stderr
    assert found.group(1) == signal.Signals(signum).name
    step = int(found.group(2))
    assert 5 <= step < 24
    assert (
        latest_checkpoint(run) == Path(found.group(3)) == run / "checkpoints" / f"step-{step:08d}"
    )
    _assert_checkpoints_sound(run)

    command = shlex.split(found.group(4))
    assert command[:2] == ["nextvlad", "train"] and command[-1] == "--resume"
    assert {"--deterministic", "--seed", "--set", "--no-progress"} <= set(command)
    finish = subprocess.run(
        [sys.executable, "-m", "nextvlad", *command[1:]],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finish.returncode == 0, finish.stderr
    _assert_same_final_state(run, reference[0])
