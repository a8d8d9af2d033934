"""The progress bar (``nextvlad.training.progress``): on a terminal it shows the step of the
total, the epoch, the ETA, examples/s, loss and lr, and log lines pass above it on lines of
their own; elsewhere it is quiet. The steps of an epoch are estimated from the data files."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nextvlad.cli import main
from nextvlad.data import write_synthetic
from nextvlad.training.progress import Progress, epoch_steps_estimate
from tests.training._runs import SHORT, TINY


class Terminal(io.StringIO):
    """What the bar writes to, taken for a terminal."""

    def isatty(self) -> bool:
        return True


def _lines(text: str) -> list[str]:
    """What a terminal shows as separate lines: cut at newlines and carriage returns."""
    return [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]


def test_the_bar_shows_step_total_epoch_eta_speed_loss_and_lr() -> None:
    term = Terminal()
    progress = Progress(10, epochs=2, stream=term, mininterval=0)
    progress.update(1, epoch=0, examples_per_s=1234.0, loss=float("nan"), lr=2e-4)
    for step in range(2, 5):
        progress.update(step, epoch=0, examples_per_s=1234.0, loss=0.5, lr=2e-4)
    progress.update(6, epoch=1, examples_per_s=1234.0, loss=0.25, lr=2e-4)
    progress.close()
    lines = _lines(term.getvalue())
    last = lines[-1]
    assert last.startswith("epoch 2/2:  60%|")
    assert "6/10 steps" in last and "ETA 00:0" in last
    assert "1,234 ex/s, loss 0.25, lr 0.0002" in last
    assert any("1/10 steps" in line and "loss ?," in line for line in lines)  # not read yet


def test_the_total_can_come_later() -> None:
    term = Terminal()
    progress = Progress(None, stream=term, mininterval=0)
    progress.update(3, epoch=0, examples_per_s=10.0, loss=1.0, lr=1e-3)
    assert "3/? steps" in _lines(term.getvalue())[-1]
    progress.set_total(12)
    progress.update(4, epoch=0, examples_per_s=10.0, loss=1.0, lr=1e-3)
    progress.close()
    assert "4/12 steps" in _lines(term.getvalue())[-1]


@pytest.mark.parametrize("tty", [False, True])
def test_quiet_when_disabled(tty: bool) -> None:
    stream = Terminal() if tty else io.StringIO()
    progress = Progress(10, stream=stream, enabled=False, mininterval=0, interval=0)
    assert not progress.enabled
    progress.update(5, epoch=0, examples_per_s=1.0, loss=1.0, lr=1.0)
    progress.close()
    assert stream.getvalue() == ""


def test_plain_lines_every_interval_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a terminal (a log file, a pipe): no bar, a plain line every 30 s."""
    import nextvlad.training.progress as progress_module

    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    stream = io.StringIO()
    progress = Progress(100, epochs=5, stream=stream)
    assert progress.enabled and not progress.on_terminal
    for step in range(1, 21):
        now[0] += 2.0  # a step every 2 s: a line at steps 15 and 30 s later
        progress.update(step, epoch=0, examples_per_s=40.0, loss=0.5, lr=2e-4, examples=step * 80)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "epoch 1/5: 15/100 steps (15%), 1,200 examples, 40 ex/s, loss 0.5, lr 0.0002, "
        "elapsed 00:30, ETA 02:50"
    ]


@contextlib.contextmanager
def stderr_terminal() -> Iterator[Terminal]:
    """stderr is a terminal, with a console log handler on it (as `nextvlad train` has).
    Entered in the test itself: pytest puts its own stderr back between fixtures and test."""
    term, stderr = Terminal(), sys.stderr
    handler = logging.StreamHandler(term)
    sys.stderr = term
    logging.root.addHandler(handler)
    try:
        yield term
    finally:
        logging.root.removeHandler(handler)
        sys.stderr = stderr


def test_log_lines_pass_above_the_bar_on_lines_of_their_own() -> None:
    with stderr_terminal() as terminal:
        handlers = list(logging.root.handlers)
        progress = Progress(4, mininterval=0)
        assert progress.enabled
        progress.update(1, epoch=0, examples_per_s=10.0, loss=1.0, lr=1e-3)
        logging.getLogger("nextvlad.train").warning("step 1 eval: gap 0.5000")
        progress.update(2, epoch=0, examples_per_s=10.0, loss=1.0, lr=1e-3)
        progress.close()
        assert logging.root.handlers == handlers  # logging is given back
    lines = _lines(terminal.getvalue())
    assert "step 1 eval: gap 0.5000" in lines  # not glued onto the bar
    assert lines[-1].startswith("epoch 1:  50%|") and "2/4 steps" in lines[-1]


def test_a_run_on_a_terminal_shows_its_epochs_and_says_where_its_checkpoint_went(
    tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    glob = str(tiny_data / "*.tfrecord")
    with stderr_terminal() as terminal, caplog.at_level(logging.INFO, logger="nextvlad.train"):
        code = main([
            "train", "--preset", "nextvlad-8g-128k-2048h", *TINY, "--train-data", glob,
            "--eval-data", glob, "--out", str(run), "--batch-size", "4", "--epochs", "2",
            "--eval-every", "6", "--num-workers", "0", "--eigenvals", "none",
        ])  # fmt: skip
    assert code == 0
    lines = _lines(terminal.getvalue())
    bars = [line for line in lines if line.startswith("epoch ")]
    assert any(b.startswith("epoch 1/2:") and "/12 steps" in b for b in bars)  # estimated
    assert bars[-1].startswith("epoch 2/2: 100%|") and "12/12 steps" in bars[-1]
    assert "ETA" in bars[-1] and "ex/s, loss" in bars[-1]
    assert any(line.startswith("step 6 eval: gap ") for line in lines)
    assert any(line.startswith("step 12 eval: gap ") for line in lines)
    assert lines[-1] == (
        f"trained to step 12 (48 examples); checkpoint {run / 'checkpoints' / 'step-00000012'}"
    )


def test_the_steps_of_an_epoch_are_counted_or_estimated(tmp_path: Path) -> None:
    paths = write_synthetic(tmp_path, videos=24, shards=6, num_classes=25, seed=1, config=SHORT)
    assert epoch_steps_estimate(paths[:2], 4) == 2  # 8 videos in all files counted
    assert epoch_steps_estimate(paths, 4, sample=6) == 6  # 24 videos, all counted
    estimate = epoch_steps_estimate(paths, 4, sample=2)  # 2 files counted, scaled by size
    assert estimate is not None and 5 <= estimate <= 7
    assert epoch_steps_estimate([], 4) is None
    assert epoch_steps_estimate([tmp_path / "missing.tfrecord"], 4) is None
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    assert epoch_steps_estimate([tmp_path / "empty.tfrecord"], 4) is None


def test_a_run_not_on_a_terminal_prints_plain_progress_lines(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    import nextvlad.training.progress as progress_module

    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL", 0.0)
    code = main([
        "train", "--preset", "nextvlad-8g-128k-2048h", *TINY, "--train-data",
        str(tiny_data / "*.tfrecord"), "--out", str(tmp_path / "run"), "--batch-size", "4",
        "--epochs", "1", "--eval-every", "0", "--num-workers", "0", "--eigenvals", "none",
        "--log-every", "2",
    ])  # fmt: skip
    assert code == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("epoch 1/1: ")]
    assert [line.split(",")[0] for line in lines] == [
        f"epoch 1/1: {step}/6 steps ({round(100 * step / 6)}%)" for step in range(1, 7)
    ]
    assert lines[-1].split(", ")[1] == "24 examples"
    # never '0 ex/s' right after a log step (2, 4, 6): that interval's speed
    assert all(" 0 ex/s" not in line for line in lines), lines


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_show_the_videos_done(
    one_step_run: Path,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,  # type: ignore[no-untyped-def]
    command: str,
) -> None:
    """On a terminal a bar over the videos; elsewhere a plain line every 30 s (here every
    batch), the total estimated from the data files."""
    import nextvlad.training.progress as progress_module

    argv = [command, "--checkpoint", str(one_step_run), "--data", str(tiny_data / "*.tfrecord")]
    argv += ["--batch-size", "8", "--num-workers", "0", "--device", "cpu"]
    if command == "predict":
        argv += ["--out", str(tmp_path / "predictions.csv")]
    with stderr_terminal() as terminal:
        assert main(argv) == 0
    bars = [x for x in _lines(terminal.getvalue()) if x.startswith(f"{command}: ")]
    assert bars and bars[-1].startswith(f"{command}: 100%|") and "24/24 videos" in bars[-1]

    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL", 0.0)
    capsys.readouterr()
    if command == "predict":
        (tmp_path / "predictions.csv").unlink()
    assert main(argv) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith(f"{command}: ")]
    assert [x.split(", elapsed")[0] for x in lines] == [
        f"{command}: 8/24 videos (33%)",
        f"{command}: 16/24 videos (67%)",
        f"{command}: 24/24 videos (100%)",
    ]
