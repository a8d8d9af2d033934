"""The run folder: its layout, the checks before training, and pruning old checkpoints.

``RUN/run.json`` holds every option of the run (``TrainOptions``), written before the first
step and kept as it was by ``--resume``; ``RUN/resumes.jsonl`` a line for each resume (the
step, the time, the options changed from ``run.json``: ``{"batch_size": [80, 64]}``); ``RUN/checkpoints/step-XXXXXXXX/`` the checkpoints (written by
``nextvlad.training.state``) and ``RUN/checkpoints/latest`` the name of the newest;
``RUN/tensorboard/`` the event files. Only complete checkpoints carry a ``step-*`` name:
what an interrupted save or prune leaves behind is a ``.step-XXXXXXXX.tmp`` or
``.step-XXXXXXXX.trash`` folder (or a ``.latest.*.tmp`` file), removed by the next start or
save; a re-save of a step interrupted between its two renames (no ``step-N``, its old folder
as ``.step-N.trash`` and the complete new one as ``.step-N.tmp``) is finished first, so
that the step keeps its new checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from nextvlad.checkpoint import CHECKPOINTS, STEP_DIR, TRAINER, list_checkpoints
from nextvlad.errors import ConfigError, NextVLADError
from nextvlad.training.options import TrainOptions, data_order_changes

log = logging.getLogger("nextvlad.train")
RUN_OPTIONS = "run.json"
RESUMES = "resumes.jsonl"  # one line a --resume: its step, time, and the options it changed
INIT_FROM = "init-from.json"  # where --init-from's weights came from
TENSORBOARD = "tensorboard"
_PARTIAL = re.compile(r"^\.(step-\d{8}\.(tmp|trash)|latest\..*\.tmp)$")


class TrainingError(NextVLADError):
    """Training cannot go on (a non-finite loss, an unusable run folder)."""


def checkpoint_dir(run: Path, step: int) -> Path:
    """``RUN/checkpoints/step-XXXXXXXX``, the checkpoint of ``step``."""
    return run / CHECKPOINTS / f"step-{step:08d}"


def _finish_resave(root: Path) -> None:
    """Re-saving ``step-N`` renames it to ``.step-N.trash``, then the complete
    ``.step-N.tmp`` to ``step-N``: a crash between the two renames leaves no ``step-N``, and
    the new checkpoint under its temporary name. Put it in place."""
    for trash in root.glob(".step-*.trash"):
        name = trash.name[1 : -len(".trash")]
        tmp, final = root / f".{name}.tmp", root / name
        if STEP_DIR.match(name) and not final.exists() and (tmp / TRAINER).is_file():
            try:
                os.rename(tmp, final)
            except OSError as err:
                raise TrainingError(
                    f"cannot restore checkpoint {final} from {tmp}: {err}"
                ) from None
            log.warning("%s: finished re-saving it, which a crash had interrupted", final)


def remove_partial_checkpoints(run_dir: Path) -> None:
    """Finish a re-save a crash interrupted between its renames (``_finish_resave``), then
    delete what interrupted saves and prunes left behind (temporary and trash folders and
    files)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return
    _finish_resave(root)
    for path in root.iterdir():
        if _PARTIAL.match(path.name):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, each renamed out of sight first, so
    that a crash never leaves half of one under a ``step-*`` name."""
    for old in list_checkpoints(run_dir)[:-keep]:
        trash = old.with_name(f".{old.name}.trash")
        try:
            os.rename(old, trash)
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)


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
    return f"the last good checkpoint is {checkpoint_dir(run, last_saved)}"


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
