"""The run folder before and around training: writable, room for checkpoints, options.

``RUN/run.json`` holds every option of the run (``TrainOptions``), written before the first
step; ``RUN/checkpoints/`` the checkpoints (``nextvlad.training.state``); ``RUN/tensorboard/``
the event files.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from nextvlad.errors import ConfigError, NextVLADError
from nextvlad.training.options import TrainOptions, data_order_changes
from nextvlad.training.state import CHECKPOINTS, list_checkpoints, remove_partial_checkpoints

log = logging.getLogger("nextvlad.train")
RUN_OPTIONS = "run.json"


class TrainingError(NextVLADError):
    """Training cannot go on (a non-finite loss, an unusable run folder)."""


def size_text(num_bytes: float) -> str:
    """A byte count for people: 512 B, 4.0 KiB, 1.5 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024:
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TiB"


def check_run_folder(run: Path, checkpoint_bytes: int, keep: int) -> None:
    """Before the first step: the run folder can be written and has room for the checkpoints
    (``keep`` of ``checkpoint_bytes`` each, plus one being written)."""
    try:
        for folder in (run, run / CHECKPOINTS):
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"ok")
            probe.unlink()
    except OSError as err:
        raise TrainingError(f"cannot write to the run folder {run}: {err}") from None
    remove_partial_checkpoints(run)
    needed = checkpoint_bytes * max(1, keep + 1 - len(list_checkpoints(run)))
    free = shutil.disk_usage(run).free
    if free < needed:
        raise TrainingError(
            f"not enough free space in {run}: {size_text(free)} free, the checkpoints need "
            f"about {size_text(needed)} more ({size_text(checkpoint_bytes)} each, the newest "
            f"{keep} kept and one more while writing)"
        )


def last_good(run: Path, last_saved: int) -> str:
    """Where a failed run can be resumed from, for error messages."""
    if last_saved < 0:
        return "no checkpoint was written yet"
    return f"the last good checkpoint is {run / CHECKPOINTS / f'step-{last_saved:08d}'}"


def warn_if_data_options_changed(run: Path, options: TrainOptions) -> None:
    """Resuming with another batch size, seed, ... does not continue the same data stream."""
    path = run / RUN_OPTIONS
    if not path.is_file():
        return
    try:
        before = TrainOptions.load(path)
    except ConfigError:
        return
    changed = data_order_changes(before, options)
    if changed:
        log.warning(
            "--resume with other %s than the run had: the data order and position differ "
            "from the original run's",
            ", ".join(changed),
        )
