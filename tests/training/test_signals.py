"""Stopping on SIGINT and SIGTERM (``nextvlad.training.signals``): the first signal finishes
the step, writes a checkpoint, exits with 128 + the signal and prints the command that
resumes (running it ends with the uninterrupted weights); a second one stops at once; the
previous handlers come back when training ends."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nextvlad.checkpoint import latest_checkpoint, list_checkpoints
from nextvlad.training.signals import StopSignal
from tests.training._runs import (
    FINAL,
    assert_checkpoints_sound,
    assert_same_state,
    process_env,
    train,
    train_command,
    wait_for,
)


def test_the_first_signal_is_noted_and_a_second_one_stops_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with StopSignal() as stop:
        assert stop.signum == 0
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        assert "SIGTERM: stopping after this step with a checkpoint" in caplog.text
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_stop_signal_puts_the_previous_handlers_back() -> None:
    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not while training")

    before = signal.signal(signal.SIGTERM, mine)
    try:
        with StopSignal():
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_training_puts_the_signal_handlers_back(tiny_data: Path, tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert train(tiny_data / "*.tfrecord", tmp_path / "run", "--max-steps", "1") == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@pytest.mark.slow  # several training processes
@pytest.mark.parametrize(
    ("signum", "to_group"),
    [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["sigint-group", "sigterm", "sigterm-group"],
)
def test_signal_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume(
    tiny_data: Path,
    uninterrupted: tuple[Path, float],
    tmp_path: Path,
    signum: int,
    to_group: bool,
) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        train_command(tiny_data, run, pause=0.2),  # slower checkpoints: still running then
        env=process_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell job: Ctrl-C reaches all
    )
    try:
        assert wait_for(lambda: bool(list_checkpoints(run)), proc, 180)
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
    assert "trained to step" not in stderr  # the interruption said where the checkpoint is
    assert_checkpoints_sound(run)

    command = shlex.split(found.group(4))
    assert command[:2] == ["nextvlad", "train"] and command[-1] == "--resume"
    assert {"--deterministic", "--seed", "--set", "--no-progress"} <= set(command)
    finish = subprocess.run(
        [sys.executable, "-m", "nextvlad", *command[1:]],
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finish.returncode == 0, finish.stderr
    assert "trained to step 24 (96 examples); checkpoint " in finish.stderr
    assert_same_state(run / "checkpoints" / FINAL, uninterrupted[0] / "checkpoints" / FINAL)
