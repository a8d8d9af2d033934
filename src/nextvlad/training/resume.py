"""Where a run starts: a fresh run folder, its newest checkpoint (``--resume``), or the weights
of another checkpoint (``--init-from``).

Before the first step the run folder must be writable with room for the checkpoints (every
rank learns if rank 0's check failed); a folder that already holds checkpoints is refused
without ``--resume``; a checkpoint of another model is refused with what differs
(``nextvlad.training.config_diff``). ``run.json`` is written once all of that passed, for a
new run only: a resume keeps the options the run was started with there and appends what it
changed to ``resumes.jsonl``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nextvlad.checkpoint import (
    WEIGHTS,
    atomic_write_bytes,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    resolve_model_dir,
)
from nextvlad.errors import ConfigError, NextVLADError
from nextvlad.models import ModelConfig
from nextvlad.training.config_diff import check_checkpoint_fits
from nextvlad.training.distributed import Context, all_ranks_have
from nextvlad.training.options import TrainOptions
from nextvlad.training.run_folder import (
    INIT_FROM,
    RESUMES,
    RUN_OPTIONS,
    TrainingError,
    check_run_folder,
    warn_if_data_options_changed,
)
from nextvlad.training.state import TrainerState, checkpoint_size, restore_training_state

log = logging.getLogger("nextvlad.train")

INIT_HINT = "give --preset and --set options that describe the checkpoint's model"


def start_run(
    options: TrainOptions,
    ctx: Context,
    config: ModelConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> tuple[TrainerState, Path | None]:
    """Check the run folder, then resume from its newest checkpoint (``--resume``), start
    from other weights (``--init-from``) or from scratch. Returns the trainer position and
    the checkpoint resumed from (None for a new run).

    Raises:
        TrainingError: an unusable run folder, or one with checkpoints but no ``--resume``.
        CheckpointError: a checkpoint of another model, or one that cannot be read.
    """
    run = Path(options.out)
    failure: NextVLADError | None = None
    if ctx.is_main:  # only rank 0 writes; the others learn of a failure below
        try:
            check_run_folder(run, checkpoint_size(model, optimizer), options.keep_checkpoints)
        except NextVLADError as err:
            failure = err
    if not all_ranks_have(failure is None, ctx):
        raise failure or TrainingError(f"rank 0 cannot use the run folder {run}")
    trainer = TrainerState()
    checkpoint = latest_checkpoint(run) if options.resume else None
    if options.resume and checkpoint is None and ctx.is_main:
        log.warning("--resume: no checkpoint in %s yet, starting from scratch", run)
    if checkpoint is not None:
        check_checkpoint_fits(checkpoint, config, options.preset)
        trainer = restore_training_state(
            checkpoint, model, optimizer, rank=ctx.rank, device=ctx.device
        )
        if ctx.is_main:
            warn_if_data_options_changed(run, options)
            log.info("resuming from %s (step %d)", checkpoint, trainer.step)
    elif list_checkpoints(run):
        raise TrainingError(f"{run} already holds checkpoints: pass --resume, or another --out")
    elif options.init_from:
        folder = resolve_model_dir(options.init_from)
        changed = check_checkpoint_fits(
            folder, config, options.preset, hint=INIT_HINT, weights_only=True
        )
        load_state(model, folder / WEIGHTS)
        if ctx.is_main:
            log.info("starting from the weights of %s", folder)
            if changed:
                log.info("--init-from: changed from the checkpoint: %s", ", ".join(changed))
            record_init_from(run, options.init_from, folder)
    if ctx.is_main:
        if checkpoint is None or not (run / RUN_OPTIONS).is_file():
            options.save(run / RUN_OPTIONS)  # a new run (or one whose options are gone)
        else:  # run.json keeps the options the run was started with
            record_resume(run, options, trainer.step)
    return trainer, checkpoint


def record_resume(run: Path, options: TrainOptions, step: int) -> None:
    """Append to ``RUN/resumes.jsonl`` one line for this resume: the step it resumes from,
    when, and each option it gives another value than ``run.json`` has (``[before, now]``)."""
    path = run / RESUMES
    changed: dict[str, list[Any]] = {}
    try:
        before = TrainOptions.load(run / RUN_OPTIONS).to_dict()
    except ConfigError:
        before = {}
    for key, value in options.to_dict().items():
        if key != "resume" and key in before and before[key] != value:
            changed[key] = [before[key], value]
    if changed:
        log.info("--resume: options changed from %s: %s", run / RUN_OPTIONS, ", ".join(changed))
    record = {
        "step": step,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "changed": changed,
    }
    earlier = path.read_bytes() if path.is_file() else b""
    atomic_write_bytes(path, earlier + (json.dumps(record) + "\n").encode())


def record_init_from(run: Path, given: str, folder: Path) -> None:
    """``RUN/init-from.json``: the ``--init-from`` given, the model folder it named (absolute)
    and the size and modification time of its weights, to tell later which weights a
    fine-tuned run started from."""
    weights = folder / WEIGHTS
    stat = weights.stat()
    record = {
        "init_from": given,
        "model_folder": str(folder.resolve()),
        "weights_bytes": stat.st_size,
        "weights_mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime)),
    }
    atomic_write_bytes(run / INIT_FROM, (json.dumps(record, indent=2) + "\n").encode())
