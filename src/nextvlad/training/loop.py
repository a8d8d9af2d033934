"""`nextvlad train`: the run loop around the training step, on CPU, one GPU or many (torchrun).

The paper's recipe (Sec. 4.2) is the default: Adam (lr 2e-4, epsilon 1e-8), learning rate
x0.8 every 2M examples (staircase), each gradient tensor clipped to norm 1.0 separately, L2
1e-5 on the classifier, batch 80 per process; the mixture presets train with the
distillation objective of Eq. (16). The step itself is ``nextvlad.training.step``; this
module runs it over epochs and around it evaluates, writes checkpoints
(``nextvlad.training.state``) and stops on signals; ``nextvlad.training.report`` tells what
happens (progress bar, TensorBoard, log lines). See ``nextvlad.training.distributed`` for the
launch recipe.

The loop reads what the device knows (each step's loss and whether it was finite) every
``--log-every`` steps and before each evaluation, checkpoint and stop, never in between.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nextvlad.data import Batch
from nextvlad.data.errors import DataError
from nextvlad.data.remote import cache_dir_applied
from nextvlad.errors import NextVLADError
from nextvlad.models import build_model, get_config
from nextvlad.nn import BatchNorm
from nextvlad.training.distributed import (
    Context,
    all_ranks_have,
    average_batch_norm_statistics,
    gather_rng,
    setup,
    sum_over_ranks,
    teardown,
)
from nextvlad.training.evaluate import evaluate_all_ranks
from nextvlad.training.inputs import datasets, input_transform, loader_options
from nextvlad.training.optim import adam
from nextvlad.training.options import TrainOptions, resume_command
from nextvlad.training.report import Reporter, data_error_message
from nextvlad.training.resume import start_run
from nextvlad.training.run_folder import TrainingError, checkpoint_dir, last_good
from nextvlad.training.segments import SegmentEvaluation
from nextvlad.training.signals import StopSignal
from nextvlad.training.state import TrainerState, TrainingParts, save_training_checkpoint
from nextvlad.training.step import bf16_is_native, build_step

log = logging.getLogger("nextvlad.train")
MIN_TRAIN_BATCH = 2  # examples a process's batch needs for batch statistics

__all__ = ["TrainingError", "train"]


def train(options: TrainOptions) -> dict[str, Any]:
    """Train as ``options`` say; returns a summary (steps, examples seen, last evaluation,
    ``signal``: the number of the signal that stopped training early, else 0)."""
    ctx = setup(options.device)
    try:
        with StopSignal() as stop, cache_dir_applied(options.cache_dir):
            summary = _Run(options, ctx, stop).run()
        if ctx.distributed:  # every process done before the group goes (gloo's threads abort
            torch.distributed.barrier(group=ctx.host_group)  # a process that leaves first)
        return summary
    finally:
        teardown()


@dataclass
class _Pending:
    """A step the host has run but whose outcome the device has not reported yet."""

    step: int  # its number, if every step since the last read was finite
    epoch: int
    batch: int  # its batch of the epoch (1-based)
    examples: int  # global examples it trained on


class _Run:
    """One `nextvlad train` run: set up, epochs of steps, evaluation, checkpoints, the end."""

    def __init__(self, options: TrainOptions, ctx: Context, stop: StopSignal) -> None:
        self.options, self.ctx, self.stop = options, ctx, stop
        self.run_dir = Path(options.out)
        self.trainer = TrainerState()
        self.pending: list[_Pending] = []
        self.last_eval: dict[str, float] | None = None
        self.last_loss = float("nan")
        self.done_at: dict[str, int] = {}  # step at which logging, evaluation, saving last ran
        self.speeds: list[float] = []  # examples/s of each --log-every interval
        self.stopped_by = 0
        self.speed = [0, time.perf_counter()]  # examples and start time since the last log
        self.report: Reporter | None = None
        self.batches: Iterator[Batch] | None = None
        self.epoch_steps = 0  # steps of the current epoch (1 if resumed in its middle)

    # Set-up.

    def _build(self) -> None:
        options, ctx = self.options, self.ctx
        if options.deterministic:
            if ctx.device.type == "cuda":  # cuBLAS needs this for deterministic matmuls
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(options.seed + ctx.rank)
        self.config = get_config(options.preset, **dict(options.model_overrides))
        self.train_set, self.eval_set, schema = datasets(options, self.config)
        self.transform = input_transform(options, self.config, schema, ctx).to(ctx.device)
        self.model = build_model(self.config).to(ctx.device)
        for module in self.model.modules():
            if isinstance(module, BatchNorm) and ctx.distributed and options.sync_batchnorm:
                module.sync = True
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = adam(parameters, options.learning_rate, options.adam_epsilon)
        self.trainer, resumed = start_run(options, ctx, self.config, self.model, self.optimizer)
        self.start_step = self.trainer.step
        self.last_saved = self.trainer.step if resumed is not None else -1
        self.saved_position = self._position()
        net: nn.Module = self.model
        if ctx.distributed:  # moving statistics stay per process, averaged when read
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=device_ids, broadcast_buffers=False)
        self.step = build_step(
            self.model,
            self.transform,
            options,
            self.config,
            ctx.device,
            optimizer=self.optimizer,
            net=net,
        )
        self.loader = self.train_set.loader(
            options.batch_size,
            num_workers=options.num_workers,
            pin_memory=ctx.device.type == "cuda",
            **loader_options(options, 0),
        )
        self.report = Reporter(options, ctx, self.run_dir)
        self.report.start(self.trainer, self.train_set.files)
        if options.precision == "bf16" and not bf16_is_native(ctx.device) and ctx.is_main:
            log.warning(
                "--precision bf16: this CPU has neither AVX512-BF16 nor AMX, so its bf16 "
                "products are emulated and training runs slower than in float32 "
                "(docs/performance.md); --precision fp32 is faster here"
            )

    def _position(self) -> tuple[int, int, int]:
        t = self.trainer
        return (t.step, t.epoch, t.batches_in_epoch)

    # The run.

    def run(self) -> dict[str, Any]:
        self._build()
        assert self.report is not None
        try:
            done = (
                self.options.max_steps is not None and self.trainer.step >= self.options.max_steps
            )
            while not done and (
                self.options.epochs is None or self.trainer.epoch < self.options.epochs
            ):
                ended = self._epoch()
                if ended in ("signal", "done"):
                    break
                if self.trainer.batches_in_epoch == 0:
                    raise TrainingError(self._no_examples())
                if self.epoch_steps == 0:
                    raise TrainingError(self._only_small_batches())
                self.report.epoch_ended(self.trainer.batches_in_epoch)
                self.trainer.epoch += 1
                self.trainer.batches_in_epoch = self.trainer.skipped_in_epoch = 0
            self._finish()
        finally:
            self._close()
        self.report.finished(self.trainer, self.last_saved, stopped=bool(self.stopped_by))
        return self._summary()

    def _epoch(self) -> str:
        """One pass over the data (resuming mid-epoch where the checkpoint was): "end" of the
        data, "done" (--max-steps) or "signal"."""
        self.train_set.set_epoch(self.trainer.epoch)
        self.batches = iter(self.loader)
        self.epoch_steps = int(self.trainer.batches_in_epoch > 0)  # resumed: it had steps
        for _ in range(self.trainer.batches_in_epoch):  # resume mid-epoch: same order, skip
            self._next_batch()
        while True:
            if self.stop.signum and not self.ctx.distributed:  # during evaluation or saving
                self.stopped_by = self.stop.signum
                return "signal"
            batch = self._next_batch()
            # A batch of no video carries only the skips after a stream's last video.
            have, size, skipped, signalled, small = sum_over_ranks(
                [
                    float(batch is not None and len(batch) > 0),
                    len(batch or ()),
                    0 if batch is None else batch.num_skipped,
                    self.stop.signum,
                    float(batch is not None and 0 < len(batch) < MIN_TRAIN_BATCH),
                ],
                self.ctx,
            )
            self._count_skips(int(skipped))
            if have < self.ctx.world_size:
                return "end"
            assert batch is not None
            if small:  # decided on the host from the batch sizes: no wait for the device
                self._drop_small_batch()
            else:
                self._train_on(batch, int(size))
                self.epoch_steps += 1
            if signalled:
                self.stopped_by = self.stop.signum or signal.SIGTERM
                return "signal"
            if self._reached_max_steps():
                return "done"

    def _train_data(self) -> str:
        """--train-data as it may be printed (signed URLs redacted)."""
        from nextvlad.data.remote import redact_url

        return " ".join(redact_url(url) for url in self.options.train_data)

    def _no_examples(self) -> str:
        data = self._train_data()
        if self.options.task == "segments":
            return (
                f"--task segments: no rated segment in --train-data {data} (segment-rated "
                "records have segment_start_times, segment_labels and segment_scores, as "
                "YouTube-8M's 3/frame/validate; `nextvlad inspect` counts them)"
            )
        return f"an epoch of no example: --train-data {data} holds no video to train on"

    def _count_skips(self, skipped: int) -> None:
        """Corrupt records skipped (--skip-corrupt): every epoch meets the same ones again,
        so a record counts once, in the epoch that met the most."""
        trainer = self.trainer
        trainer.skipped_in_epoch += skipped
        trainer.skipped_records = max(trainer.skipped_records, trainer.skipped_in_epoch)

    def _only_small_batches(self) -> str:
        return (
            f"an epoch of no batch of two videos or more: --train-data "
            f"{self._train_data()} gave each process batches of one "
            f"{'segment' if self.options.task == 'segments' else 'video'} only (batch "
            "normalisation needs two a batch): give more data or fewer processes"
        )

    def _drop_small_batch(self) -> None:
        """A process has a batch of one example (the remainder of a data stream): batch
        statistics of one row are no statistics (the unbiased update divides by n - 1), so
        every process drops its batch; it counts as read (the resume position) and in
        ``small_batches``."""
        self.trainer.batches_in_epoch += 1
        self.trainer.small_batches += 1

    def _next_batch(self) -> Batch | None:
        """The next batch, None at the end of the epoch; data errors say where training is."""
        assert self.batches is not None
        try:
            return next(self.batches, None)
        except DataError as err:
            message = data_error_message(err, self.trainer, self.run_dir, self.last_saved)
            raise TrainingError(message) from None

    def _train_on(self, batch: Batch, examples: int) -> None:
        """One step on ``batch`` (``examples`` over all processes), and what follows it."""
        trainer, options = self.trainer, self.options
        assert self.report is not None
        prepared = self.step.prepare(batch)
        with self.step.sync_debug(options.sync_debug):
            logits = self.step(prepared, trainer.examples_seen)
        trainer.batches_in_epoch += 1
        trainer.examples_seen += examples
        trainer.step += 1
        self.pending.append(
            _Pending(trainer.step, trainer.epoch, trainer.batches_in_epoch, examples)
        )
        self.speed[0] += examples
        if self._due(options.log_every, "log"):
            self._log(logits, batch.labels)
        lr = self.step.recipe.learning_rate_at(trainer.examples_seen)
        self.report.step(trainer, self._examples_per_s(), self.last_loss, lr)
        started = time.perf_counter()
        evaluate = self._due(options.eval_every, "eval")
        save = self._due(options.checkpoint_every, "checkpoint")
        if evaluate:
            self._evaluate(save_on_error=save)
        if save:
            self._save()
        self.speed[1] += time.perf_counter() - started  # examples/s of the steps alone

    def _due(self, every: int, action: str) -> bool:
        """Whether ``action`` (every ``every`` steps) is due after the step just done: its
        number is a multiple of ``every`` once the device has said which steps were skipped
        (read only when the optimistic count is one), and the action has not run at it."""
        if not every or self.trainer.step % every:
            return False
        self._settle()
        step = self.trainer.step
        if step % every or self.done_at.get(action) == step:
            return False
        self.done_at[action] = step
        return True

    def _reached_max_steps(self) -> bool:
        max_steps = self.options.max_steps
        if max_steps is None or self.trainer.step < max_steps:
            return False
        self._settle()  # skipped steps do not count
        return self.trainer.step >= max_steps

    def _examples_per_s(self) -> float:
        """Since the last log; right after it (no example since), that interval's figure."""
        if not self.speed[0] and self.speeds:
            return self.speeds[-1]
        return self.speed[0] / max(time.perf_counter() - self.speed[1], 1e-9)

    # What the device knows.

    def _settle(self) -> None:
        """Read the steps' outcomes from the device; stop on a non-finite one, or (with
        --skip-nonfinite) count it and take it out of the step and example counts."""
        records, pending = self.step.read(), self.pending
        self.pending = []
        trainer, skipped = self.trainer, 0
        for record, where in zip(records, pending, strict=True):
            if record.finite:
                self.last_loss = record.loss
                continue
            number = where.step - skipped
            what = f"loss ({record.loss})" if not math.isfinite(record.loss) else "gradient"
            if not self.options.skip_nonfinite:
                raise TrainingError(
                    f"non-finite {what} at step {number} (epoch {where.epoch}, batch "
                    f"{where.batch} of the epoch); training stopped; "
                    f"{last_good(self.run_dir, self.last_saved)}: resume from it with --resume "
                    "(e.g. with a lower --lr), or pass --skip-nonfinite to skip such batches"
                )
            skipped += 1
            trainer.step -= 1
            trainer.examples_seen -= where.examples
            trainer.nonfinite_batches += 1
            if self.ctx.is_main:
                log.warning(
                    "non-finite %s at step %d: batch skipped (--skip-nonfinite; %d so far)",
                    what,
                    number,
                    trainer.nonfinite_batches,
                )
        if skipped and self.report is not None:
            self.report.nonfinite(trainer)

    def _log(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """TensorBoard scalars every --log-every steps: the loss, the batch's GAP, ..."""
        assert self.report is not None
        self.speeds.append(self._examples_per_s())  # the device has caught up: a true figure
        self.report.train_scalars(
            self.trainer,
            logits,
            labels,
            loss=self.last_loss,
            lr=self.step.recipe.learning_rate_at(self.trainer.examples_seen),
            examples_per_s=self.speeds[-1],
        )
        self.speed = [0, time.perf_counter()]

    # Evaluation and checkpoints.

    def _evaluate(self, *, save_on_error: bool = False) -> None:
        """Evaluate on --eval-data; a data error there stops training like one in the
        training data, naming the step and the last good checkpoint, after writing the
        checkpoint due at this step (``save_on_error``: the weights are good)."""
        if self.eval_set is None:
            return
        try:
            self._evaluate_now()
        except DataError as err:
            if save_on_error:
                self._save()
            message = data_error_message(
                err, self.trainer, self.run_dir, self.last_saved, evaluating=True
            )
            raise TrainingError(message) from None

    def _evaluate_now(self) -> None:
        assert self.eval_set is not None
        self._settle()
        if not self.options.sync_batchnorm:
            average_batch_norm_statistics(self.model, self.ctx)
        options = self.options
        if isinstance(self.eval_set, SegmentEvaluation):
            result = self.eval_set(
                self.model, self.transform, self.ctx,
                batch_size=options.batch_size, num_workers=min(options.num_workers, 2),
                max_batches=options.eval_max_batches, precision=options.precision,
                **loader_options(options, 1),
            )  # fmt: skip
        else:
            result = evaluate_all_ranks(
                self.model, self.transform, self.eval_set, options, self.ctx, self.config,
                loader_options(options, 1),
            )  # fmt: skip
        if result is not None and self.ctx.is_main:
            assert self.report is not None
            self.last_eval = result
            self.report.evaluation(self.trainer.step, result)

    def _save(self) -> None:
        self._settle()
        if not self.options.sync_batchnorm:
            average_batch_norm_statistics(self.model, self.ctx)
        tensors = [*self.model.parameters(), *self.model.buffers()]
        finite = torch.stack([torch.isfinite(t).all() for t in tensors if t.is_floating_point()])
        if not bool(finite.all()):  # one read, at checkpoint time
            raise TrainingError(
                f"the weights or batch-norm statistics are non-finite after step "
                f"{self.trainer.step}; {last_good(self.run_dir, self.last_saved)}; resume from "
                "it with --resume and a lower --lr"
            )
        rank_rng = gather_rng(self.ctx)
        error: NextVLADError | None = None
        if self.ctx.is_main:
            try:
                parts = TrainingParts(
                    self.model, self.config, self.transform, self.optimizer, self.trainer,
                    self.options.preset, rank_rng,
                )  # fmt: skip
                save_training_checkpoint(self.run_dir, parts, keep=self.options.keep_checkpoints)
            except NextVLADError as err:
                error = err
        if not all_ranks_have(error is None, self.ctx):  # also the barrier after the write
            raise error or TrainingError("rank 0 could not write a checkpoint")
        self.last_saved = self.trainer.step
        self.saved_position = self._position()

    def _finish(self) -> None:
        """The last checkpoint, the resume hint after a signal, the final evaluation."""
        self._settle()
        options, trainer = self.options, self.trainer
        if trainer.step != self.last_saved or (
            self.stopped_by and self._position() != self.saved_position
        ):
            self._save()  # (a stop after skipped batches saves their position too)
        if self.stopped_by and self.ctx.is_main:
            log.warning(
                "interrupted by %s at step %d (checkpoint %s); resume with: %s",
                signal.Signals(self.stopped_by).name,
                trainer.step,
                checkpoint_dir(self.run_dir, trainer.step),
                resume_command(options, distributed=self.ctx.distributed),
            )
        elif self.eval_set is not None and (
            not options.eval_every or trainer.step % options.eval_every
        ):
            self._evaluate()
        if self.report is not None:
            self.report.final_counts(trainer)

    def _close(self) -> None:
        """Progress bar, event file, and the data loader's workers (released now, even
        with an error on its way out, whose traceback would keep them alive)."""
        if self.report is not None:
            self.report.close()
        self.batches = None
        self.loader = None  # type: ignore[assignment]  # persistent workers live in the loader

    def _summary(self) -> dict[str, Any]:
        trainer = self.trainer
        return {
            "run": str(self.run_dir),
            "steps": trainer.step,
            "steps_this_run": trainer.step - self.start_step,
            "epochs_completed": trainer.epoch,
            "examples_seen": trainer.examples_seen,
            # steady state: the median interval after the first (start-up, compilation)
            "examples_per_s": statistics.median(self.speeds[1:] or self.speeds or [0.0]),
            "skipped_records": trainer.skipped_records,
            "nonfinite_batches": trainer.nonfinite_batches,
            "small_batches": trainer.small_batches,
            "eval": self.last_eval,
            "signal": int(self.stopped_by),
        }
