"""What a run tells: the progress bar, the TensorBoard scalars and the log lines (rank 0).

Log lines go to the ``nextvlad.train`` logger (``nextvlad train`` prints INFO and above on
stderr): under torchrun one line at the start with the number of processes and the global
batch; each evaluation; the counts of skipped records and batches; and at the end of every
run where its checkpoint went. While the progress bar shows they pass above it, never glued
onto it; where stderr is no terminal a plain progress line comes every 30 s instead of the
bar (``nextvlad.training.progress``). TensorBoard (``RUN/tensorboard``): ``train/loss``,
``train/gap`` (of the batch), ``train/learning_rate``, ``train/examples_per_second`` every
``--log-every`` steps; ``eval/gap``, ``eval/map``, ``eval/hit_at_one``, ``eval/perr``,
``eval/loss`` at each evaluation (``eval/segment_map`` with ``--task segments``);
``data/skipped_records`` and ``train/nonfinite_batches``
when they change and at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from nextvlad.data.errors import ClassRangeError, DataError, RecordError
from nextvlad.errors import error_message
from nextvlad.metrics import YT8MMetrics
from nextvlad.training.distributed import Context
from nextvlad.training.events import EventWriter
from nextvlad.training.options import TrainOptions
from nextvlad.training.progress import Progress, epoch_steps_estimate
from nextvlad.training.run_folder import TENSORBOARD, checkpoint_dir, last_good
from nextvlad.training.state import TrainerState

log = logging.getLogger("nextvlad.train")

EVAL_SCALARS = ("gap", "map", "hit_at_one", "perr", "loss", "segment_map")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 record``, ``2 records``, ``1 batch``, ``3 batches``."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"


def _is_class_out_of_range(err: DataError) -> bool:
    """A record with a class at or above the model's number of classes."""
    return isinstance(err, ClassRangeError)


def data_error_message(
    err: DataError, trainer: TrainerState, run: Path, last_saved: int, *, evaluating: bool = False
) -> str:
    """A data error in the middle of training (``evaluating``: in --eval-data, during an
    evaluation): what, where training was, and what to do."""
    where = f"epoch {trainer.epoch}, after step {trainer.step}"
    if evaluating:
        where = f"--eval-data, evaluating after step {trainer.step}"
    text = f"{error_message(err)} ({where})"
    if _is_class_out_of_range(err):
        return (
            f"{text}; the data has more classes than the model: train into a new --out with "
            "--set num_classes=N, N the number of classes of the data (above its largest "
            "class, which `nextvlad inspect` shows); --skip-corrupt is for corrupt records "
            "and would drop every record with such a class"
        )
    text = f"{text}; {last_good(run, last_saved)}"
    if not isinstance(err, RecordError):
        return text
    if last_saved < 0:
        return f"{text}; pass --skip-corrupt to skip and count such records"
    return (
        f"{text}; pass --skip-corrupt to skip and count such records, with --resume to "
        "continue from that checkpoint"
    )


class Reporter:
    """The progress bar, the TensorBoard scalars and the log lines of one run. Only rank 0
    writes events and logs; every rank may call every method."""

    def __init__(self, options: TrainOptions, ctx: Context, run_dir: Path) -> None:
        self.options, self.ctx, self.run_dir = options, ctx, run_dir
        self.main = ctx.is_main
        self.events: EventWriter | None = None
        self.progress = Progress(None, enabled=False)
        self.epoch_steps: int | None = None  # steps of an epoch, once one has ended

    def start(self, trainer: TrainerState, files: Sequence[str | Path]) -> None:
        """The event file (TensorBoard drops what an earlier run in the folder logged after
        ``trainer``'s step), the torchrun line and the progress bar (its total estimated from
        ``files``)."""
        options, ctx = self.options, self.ctx
        if self.main:
            self.events = EventWriter(self.run_dir / TENSORBOARD, start_step=trainer.step + 1)
        if ctx.distributed and self.main:
            log.info(
                "training on %d processes (torchrun): batch %d each, %d a step",
                ctx.world_size,
                options.batch_size,
                options.batch_size * ctx.world_size,
            )
        self.progress = Progress(
            None,
            initial=trainer.step,
            epochs=options.epochs,
            enabled=options.progress and self.main,
        )
        if self.progress.enabled and options.epochs is not None:
            self.epoch_steps = epoch_steps_estimate(files, options.batch_size * ctx.world_size)
        self.progress.set_total(self._total())

    def _total(self) -> int | None:
        epochs, max_steps = self.options.epochs, self.options.max_steps
        total = epochs * self.epoch_steps if epochs is not None and self.epoch_steps else None
        if max_steps is not None:
            total = max_steps if total is None else min(total, max_steps)
        return total

    def epoch_ended(self, batches: int) -> None:
        """An epoch of ``batches`` batches has ended: the total is now known."""
        if batches and self.progress.enabled:
            self.epoch_steps = batches
            self.progress.set_total(self._total())

    def step(self, trainer: TrainerState, examples_per_s: float, loss: float, lr: float) -> None:
        self.progress.update(
            trainer.step,
            epoch=trainer.epoch,
            examples_per_s=examples_per_s,
            loss=loss,
            lr=lr,
            examples=trainer.examples_seen,
        )

    def train_scalars(
        self,
        trainer: TrainerState,
        logits: torch.Tensor,
        labels: torch.Tensor,
        *,
        loss: float,
        lr: float,
        examples_per_s: float,
    ) -> None:
        """Every --log-every steps: the loss, the batch's GAP, the learning rate, the speed."""
        if self.events is None:
            return
        events, step = self.events, trainer.step
        metrics = YT8MMetrics(logits.shape[-1])
        metrics.update(torch.sigmoid(logits.float()).cpu(), labels)
        events.scalar("train/gap", float(metrics.compute()["gap"]), step)
        events.scalar("train/loss", loss, step)
        events.scalar("train/learning_rate", lr, step)
        events.scalar("train/examples_per_second", examples_per_s, step)
        if trainer.skipped_records:
            events.scalar("data/skipped_records", trainer.skipped_records, step)
        events.flush()

    def nonfinite(self, trainer: TrainerState) -> None:
        if self.events is not None:
            self.events.scalar("train/nonfinite_batches", trainer.nonfinite_batches, trainer.step)
            self.events.flush()

    def evaluation(self, step: int, result: dict[str, float]) -> None:
        if self.events is not None:
            for key in EVAL_SCALARS:
                if key in result:
                    self.events.scalar(f"eval/{key}", result[key], step)
            self.events.flush()
            shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if not k.startswith("num_"))
            log.info("step %d eval: %s", step, shown)

    def final_counts(self, trainer: TrainerState) -> None:
        """The counts of skipped records and batches, whatever step they last changed at."""
        if self.events is None:
            return
        if self.options.skip_corrupt:
            self.events.scalar("data/skipped_records", trainer.skipped_records, trainer.step)
        if self.options.skip_nonfinite:
            self.events.scalar("train/nonfinite_batches", trainer.nonfinite_batches, trainer.step)

    def close(self) -> None:
        """The progress bar and the event file."""
        self.progress.close()
        if self.events is not None:
            self.events.close()

    def finished(self, trainer: TrainerState, last_saved: int, stopped: bool) -> None:
        """The end of the run: the counts of what was skipped, where the checkpoint went (a
        stop by a signal has said so already)."""
        if not self.main:
            return
        if trainer.skipped_records:
            corrupt = plural(trainer.skipped_records, "corrupt record")
            log.warning("skipped %s (--skip-corrupt)", corrupt)
        if trainer.nonfinite_batches:
            batches = plural(trainer.nonfinite_batches, "batch", "batches")
            log.warning("skipped %s with a non-finite loss (--skip-nonfinite)", batches)
        if trainer.small_batches:
            batches = plural(trainer.small_batches, "batch", "batches")
            log.warning(
                "dropped %s of one example (a process's last batch of an epoch; batch "
                "statistics need two examples)",
                batches,
            )
        if not stopped and last_saved >= 0:
            log.info(
                "trained to step %d (%s); checkpoint %s",
                trainer.step,
                plural(trainer.examples_seen, "example"),
                checkpoint_dir(self.run_dir, last_saved),
            )
