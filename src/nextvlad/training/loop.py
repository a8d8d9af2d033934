"""`nextvlad train`: the paper's recipe, on CPU, one GPU or many (torchrun, DDP).

Adam (lr 2e-4, epsilon 1e-8), learning rate x0.8 every 2M examples (staircase), each gradient
tensor clipped to norm 1.0 separately, L2 1e-5 on the classifier, batch 80 per process; the
mixture presets train with the distillation objective of Eq. (16). See
``nextvlad.training.distributed`` for the launch recipe.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nextvlad.data import Batch, VideoDataset, detect_schema, resolve_files
from nextvlad.data.errors import DataError, RecordError
from nextvlad.data.schema import Schema
from nextvlad.errors import ConfigError, NextVLADError, error_message
from nextvlad.losses import yt8m_loss
from nextvlad.metrics import YT8MMetrics
from nextvlad.models import (
    FrameModelConfig,
    InputTransform,
    MixtureConfig,
    ModelConfig,
    build_model,
    get_config,
    load_eigenvalues,
)
from nextvlad.nn import BatchNorm, NeXtVLAD
from nextvlad.training.distributed import (
    Context,
    all_ranks_have,
    setup,
    sum_over_ranks,
    teardown,
)
from nextvlad.training.evaluate import evaluate, model_inputs
from nextvlad.training.events import EventWriter
from nextvlad.training.optim import adam
from nextvlad.training.options import TrainOptions, resume_command
from nextvlad.training.progress import Progress
from nextvlad.training.state import (
    CHECKPOINTS,
    TrainerState,
    check_checkpoint_fits,
    checkpoint_size,
    latest_checkpoint,
    list_checkpoints,
    remove_partial_checkpoints,
    restore_training_state,
    save_training_checkpoint,
)

log = logging.getLogger("nextvlad.train")
RUN_OPTIONS = "run.json"
_WORKER_GRACE_S = 10  # seconds a DataLoader worker serves on after a SIGTERM from outside
# Options that fix the data order and position: resuming with other values of these does not
# continue the original run's data stream.
_DATA_ORDER_OPTIONS = (
    "train_data",
    "batch_size",
    "num_workers",
    "shuffle_buffer",
    "seed",
    "bucket_by_length",
    "max_frames",
)


class TrainingError(NextVLADError):
    """Training cannot go on (a non-finite loss, an unusable run folder)."""


def check_data_fits(config: ModelConfig, schema: Schema, what: str) -> None:
    """Frame- or video-level data as the preset expects, with the feature sizes it expects."""
    level = "frame" if schema.frame_level else "video"
    if level != config.input_level:
        raise ConfigError(
            f"{what} is {level}-level data but the model takes {config.input_level}-level "
            f"input; choose a {'frame' if level == 'frame' else 'video'}-level preset "
            f"(`nextvlad list-models`)"
        )
    dims = tuple(f.dim for f in schema.features)
    if dims != config.stream_dims:
        found = ", ".join(f"{f.name} {f.dim}" for f in schema.features)
        raise ConfigError(
            f"{what} has features ({found}); the model expects sizes {config.stream_dims}"
        )


def learning_rate(options: TrainOptions, examples_seen: int) -> float:
    """Staircase exponential decay: lr * decay ** floor(examples / decay_examples)."""
    return options.learning_rate * options.lr_decay ** (examples_seen // options.lr_decay_examples)


@torch.no_grad()
def gradient_norms(parameters: list[nn.Parameter]) -> list[torch.Tensor]:
    """The L2 norm of each gradient (of the parameters that have one)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return list(torch._foreach_norm(grads)) if grads else []


@torch.no_grad()
def clip_each_gradient(
    parameters: list[nn.Parameter], max_norm: float, norms: list[torch.Tensor] | None = None
) -> None:
    """TF's clip_by_norm on every gradient tensor separately: g * c / max(||g||, c).

    ``norms``: the gradients' norms if already computed (``gradient_norms``)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or max_norm <= 0:
        return
    if norms is None:
        norms = list(torch._foreach_norm(grads))
    factors = [max_norm / torch.clamp(n, min=max_norm) for n in norms]
    torch._foreach_mul_(grads, factors)


def _datasets(
    options: TrainOptions, config: ModelConfig
) -> tuple[VideoDataset, VideoDataset | None, Schema]:
    files = resolve_files(options.train_data)
    schema = detect_schema(files, skip_corrupt=options.skip_corrupt)
    if schema is None:
        raise ConfigError(f"no record in {options.train_data} shows a known schema")
    check_data_fits(config, schema, "the training data")
    frame_config = config.branch if isinstance(config, MixtureConfig) else config
    sample = frame_config.sample_frames if isinstance(frame_config, FrameModelConfig) else None
    common: dict[str, Any] = {
        "schema": schema,
        "num_classes": config.num_classes,
        "max_frames": options.max_frames,
        "skip_corrupt": options.skip_corrupt,
    }
    train = VideoDataset(
        files,
        shuffle=True,
        shuffle_buffer=options.shuffle_buffer,
        seed=options.seed,
        sample_frames=sample,
        bucket_size=options.batch_size if options.bucket_by_length else None,
        **common,
    )
    evaluation = None
    if options.eval_data:
        eval_files = resolve_files(options.eval_data)
        eval_schema = detect_schema(eval_files, skip_corrupt=options.skip_corrupt)
        if eval_schema is None:
            raise ConfigError(f"no record in {options.eval_data} shows a known schema")
        check_data_fits(config, eval_schema, "the evaluation data")
        evaluation = VideoDataset(eval_files, **{**common, "schema": eval_schema})
    return train, evaluation, schema


def _transform(
    options: TrainOptions, config: ModelConfig, schema: Schema, ctx: Context
) -> InputTransform:
    dims = config.stream_dims
    if not schema.frame_level:
        return InputTransform(dims, dequantize=False)
    eigenvalues = None
    if options.eigenvals and options.eigenvals != "none":
        eigenvalues = load_eigenvalues(options.eigenvals, dims[0])
    elif options.eigenvals is None and ctx.is_main:
        log.warning(
            "no --eigenvals given: training without reverse whitening of the %s features "
            "(Eq. (11)); pass Google's yt8m_pca/eigenvals.npy for YouTube-8M data, or "
            "--eigenvals none for features that are not PCA-whitened",
            schema.features[0].name,
        )
    return InputTransform(dims, eigenvalues)


def _evaluate_all_ranks(
    model: nn.Module,
    transform: InputTransform,
    dataset: VideoDataset,
    options: TrainOptions,
    ctx: Context,
    num_classes: int,
) -> dict[str, float] | None:
    loader = dataset.loader(
        options.batch_size, num_workers=min(options.num_workers, 2), **_loader_options(options, 1)
    )
    metrics, loss_sum, count = evaluate(
        model,
        transform,
        loader,
        ctx.device,
        num_classes,
        max_batches=options.eval_max_batches,
        precision=options.precision,
    )
    if ctx.distributed:
        gathered: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(gathered, (metrics, loss_sum, count))
        if not ctx.is_main:
            return None
        metrics = gathered[0][0]
        loss_sum = sum(g[1] for g in gathered)
        count = sum(g[2] for g in gathered)
        for other in gathered[1:]:
            metrics.merge(other[0])
    if count == 0:
        return None
    result = {k: float(v) for k, v in metrics.compute().items()}
    result["loss"] = loss_sum / count
    result["num_videos"] = float(count)
    return result


class _StopSignal:
    """SIGINT/SIGTERM while training: finish the step, write a checkpoint, stop.

    The handlers only set ``signum``; the loop looks at it after each step. A second signal
    raises KeyboardInterrupt at once (checkpoints are atomic, so that is safe too). The
    previous handlers are put back when training ends. Outside the main thread (where Python
    cannot install handlers) nothing is installed.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous = signal.signal(signum, self._handle)
                self._previous[signum] = signal.SIG_DFL if previous is None else previous
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s: stopping after this step with a checkpoint (send it again to stop at once)",
            signal.Signals(signum).name,
        )


def _worker_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT and SIGTERM to the main process (Ctrl-C, scancel and
    torchrun signal the whole process group): it may still need a batch to finish its step,
    then it shuts its workers down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)


def _worker_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in a DataLoader worker.

    From torch shutting the worker down (it sets the workers' ``done_event`` first) it ends
    the worker as usual. Otherwise it comes from outside, to the whole process group: the
    worker serves on, and quits quietly (exit 0) after ``_WORKER_GRACE_S`` if nobody has shut
    it down by then, so that no process waits on it for ever.
    """
    while frame is not None and frame.f_code.co_name != "_worker_loop":
        frame = frame.f_back
    done = frame.f_locals.get("done_event") if frame is not None else None
    if done is None or done.is_set():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    signal.signal(signal.SIGALRM, lambda signum, frame: os._exit(0))
    signal.alarm(_WORKER_GRACE_S)


def _shut_down(batches: Iterator[Batch]) -> None:
    """Stop a DataLoader iterator's worker processes now.

    An error's traceback keeps the iterator alive, and with it the workers, until the
    interpreter exits; torch then has no ``done_event`` set when it terminates them, which
    ``_worker_sigterm`` would take for a signal from outside.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's, idempotent
    if shutdown is not None:
        shutdown()


def _loader_options(options: TrainOptions, seed_offset: int) -> dict[str, Any]:
    """DataLoader arguments that keep the global torch RNG out of the data pipeline.

    A DataLoader draws its workers' base seed from the global RNG on every ``iter()``: that
    would shift the dropout stream by one draw at each epoch start, differently in a resumed
    run. A generator of its own keeps the resumed run's dropout masks equal to the
    uninterrupted run's.
    """
    generator = torch.Generator()
    generator.manual_seed((options.seed + 0x9E3779B97F4A7C15 * (seed_offset + 1)) % 2**64)
    return {"generator": generator, "worker_init_fn": _worker_signals}


def _size(num_bytes: float) -> str:
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
            f"not enough free space in {run}: {_size(free)} free, the checkpoints need about "
            f"{_size(needed)} more ({_size(checkpoint_bytes)} each, the newest {keep} kept "
            "and one more while writing)"
        )


def _last_good(run: Path, last_saved: int) -> str:
    if last_saved < 0:
        return "no checkpoint was written yet"
    return f"the last good checkpoint is {run / CHECKPOINTS / f'step-{last_saved:08d}'}"


def _warn_if_data_options_changed(run: Path, options: TrainOptions) -> None:
    """Resuming with another batch size, seed, ... does not continue the same data stream."""
    path = run / RUN_OPTIONS
    if not path.is_file():
        return
    try:
        before = TrainOptions.load(path)
    except ConfigError:
        return
    changed = [k for k in _DATA_ORDER_OPTIONS if getattr(before, k) != getattr(options, k)]
    if changed:
        log.warning(
            "--resume with other %s than the run had: the data order and position differ "
            "from the original run's",
            ", ".join(changed),
        )


def _gather_rng(ctx: Context) -> dict[str, torch.Tensor] | None:
    """Under DDP, every process's RNG states (for rank 0 to save); None otherwise."""
    if not ctx.distributed:
        return None
    own = [torch.get_rng_state()]
    if ctx.device.type == "cuda":
        own.append(torch.cuda.get_rng_state(ctx.device))
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, own)
    states: dict[str, torch.Tensor] = {}
    for rank, found in enumerate(gathered):
        states[f"rng.torch.rank{rank}"] = found[0]
        if len(found) > 1:
            states[f"rng.cuda.rank{rank}"] = found[1]
    return states


def train(options: TrainOptions) -> dict[str, Any]:
    """Train as ``options`` say; returns a summary (steps, examples/s, last evaluation,
    ``signal``: the number of the signal that stopped training early, else 0)."""
    ctx = setup(options.device)
    try:
        with _StopSignal() as stop:
            return _train(options, ctx, stop)
    finally:
        teardown()


def _train(options: TrainOptions, ctx: Context, stop: _StopSignal) -> dict[str, Any]:
    run = Path(options.out)
    if options.deterministic:
        if ctx.device.type == "cuda":  # cuBLAS needs this for deterministic matmuls
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(options.seed + ctx.rank)

    overrides = dict(options.model_overrides)
    config = get_config(options.preset, **overrides)
    train_set, eval_set, schema = _datasets(options, config)
    transform = _transform(options, config, schema, ctx).to(ctx.device)
    model = build_model(config).to(ctx.device)
    for module in model.modules():
        if isinstance(module, NeXtVLAD):
            module.folded = options.folded
            # Skipping padded frames gives tensors of data-dependent size, which a compiled
            # graph does not take; --bucket-by-length keeps the padding small instead.
            module.skip_padding = not options.compile
    regularized = model.regularized_parameters()  # type: ignore[operator]
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = adam(parameters, options.learning_rate, options.adam_epsilon)

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
            _warn_if_data_options_changed(run, options)
            log.info("resuming from %s (step %d)", checkpoint, trainer.step)
    elif list_checkpoints(run):
        raise TrainingError(f"{run} already holds checkpoints: pass --resume, or another --out")
    if ctx.is_main:
        options.save(run / RUN_OPTIONS)

    net: nn.Module = model
    if ctx.distributed:
        if options.sync_batchnorm:
            for module in model.modules():
                if isinstance(module, BatchNorm):
                    module.sync = True
        net = DistributedDataParallel(
            net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    if options.compile:
        net = torch.compile(net)  # type: ignore[assignment]

    temperature = options.temperature
    distill_weight = options.distill_weight
    if isinstance(config, MixtureConfig):
        temperature = temperature if temperature is not None else config.temperature
        distill_weight = distill_weight if distill_weight is not None else config.distill_weight
    autocast = torch.autocast(
        ctx.device.type, dtype=torch.bfloat16, enabled=options.precision == "bf16"
    )
    loader = train_set.loader(
        options.batch_size,
        num_workers=options.num_workers,
        pin_memory=ctx.device.type == "cuda",
        **_loader_options(options, 0),
    )
    events = EventWriter(run / "tensorboard") if ctx.is_main else None
    progress = Progress(options.max_steps, enabled=options.progress and ctx.is_main)
    last_eval: dict[str, float] | None = None
    last_saved = trainer.step if checkpoint is not None else -1
    saved_position = (trainer.step, trainer.epoch, trainer.batches_in_epoch)
    speed_examples, speed_time = 0, 0.0
    done = options.max_steps is not None and trainer.step >= options.max_steps
    start_step = trainer.step
    stopped_by = 0
    batches: Iterator[Batch] | None = None
    net.train()

    def save() -> None:
        nonlocal last_saved, saved_position
        finite = torch.stack([torch.isfinite(p).all() for p in parameters]).all()
        if not bool(finite):
            raise TrainingError(
                f"the weights are non-finite after step {trainer.step}; "
                f"{_last_good(run, last_saved)}; resume from it with --resume and a lower --lr"
            )
        rank_rng = _gather_rng(ctx)
        error: NextVLADError | None = None
        if ctx.is_main:
            try:
                save_training_checkpoint(
                    run,
                    model=model,
                    config=config,
                    transform=transform,
                    optimizer=optimizer,
                    trainer=trainer,
                    preset=options.preset,
                    keep=options.keep_checkpoints,
                    rank_rng=rank_rng,
                )
            except NextVLADError as err:
                error = err
        if not all_ranks_have(error is None, ctx):  # also the barrier after rank 0's write
            raise error or TrainingError("rank 0 could not write a checkpoint")
        last_saved = trainer.step
        saved_position = (trainer.step, trainer.epoch, trainer.batches_in_epoch)

    def run_eval() -> None:
        nonlocal last_eval
        if eval_set is None:
            return
        result = _evaluate_all_ranks(model, transform, eval_set, options, ctx, config.num_classes)
        if result is not None and events is not None:
            last_eval = result
            for key in ("gap", "map", "hit_at_one", "perr", "loss"):
                events.scalar(f"eval/{key}", result[key], trainer.step)
            events.flush()
            log.info("step %d eval: %s", trainer.step, _format(result))

    def next_batch(batches: Iterator[Batch]) -> Batch | None:
        """The next batch, None at the end of the epoch; data errors say where training is."""
        try:
            return next(batches, None)
        except DataError as err:
            hint = ""
            if isinstance(err, RecordError):
                hint = (
                    "; pass --skip-corrupt to skip and count such records (with --resume to "
                    "continue from the checkpoint)"
                )
            raise TrainingError(
                f"{error_message(err)} (epoch {trainer.epoch}, after step {trainer.step}); "
                f"{_last_good(run, last_saved)}{hint}"
            ) from None

    try:
        while not done and (options.epochs is None or trainer.epoch < options.epochs):
            train_set.set_epoch(trainer.epoch)
            batches = iter(loader)
            for _ in range(trainer.batches_in_epoch):  # resume mid-epoch: same order, skip
                next_batch(batches)
            while True:
                if stop.signum and not ctx.distributed:  # a signal during evaluation or saving
                    stopped_by = stop.signum
                    break
                tick = time.perf_counter()
                batch = next_batch(batches)
                if not all_ranks_have(batch is not None, ctx):
                    break
                assert batch is not None
                lr = learning_rate(options, trainer.examples_seen)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                buffers = (
                    [b.detach().clone() for b in model.buffers()]
                    if options.skip_nonfinite
                    else None
                )
                features, num_frames = model_inputs(batch, transform, ctx.device)
                labels = batch.labels.to(ctx.device, non_blocking=True)
                with autocast:
                    out = net(features, num_frames)
                branch_logits = None if out.branch_logits is None else out.branch_logits.float()
                terms = yt8m_loss(
                    out.logits.float(),
                    labels,
                    branch_logits=branch_logits,
                    temperature=temperature or 3.0,
                    distill_weight=distill_weight or 0.0,
                    l2_tensors=regularized,
                    l2_weight=options.l2_penalty,
                )
                loss = terms["total"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norms = gradient_norms(parameters)
                finite = torch.isfinite(loss.detach())
                if norms:
                    finite = finite & torch.isfinite(torch.stack(norms)).all()
                loss_value, loss_ok = torch.stack([loss.detach().float(), finite.float()]).tolist()
                global_batch, skipped, bad, signalled = sum_over_ranks(
                    [len(batch), batch.num_skipped, float(not loss_ok), float(stop.signum)], ctx
                )
                trainer.skipped_records += int(skipped)
                trainer.batches_in_epoch += 1
                if bad:
                    what = (
                        f"loss ({loss_value})"
                        if not math.isfinite(loss_value)
                        else ("gradient" if not loss_ok else "loss on another process")
                    )
                    if not options.skip_nonfinite:
                        raise TrainingError(
                            f"non-finite {what} at step {trainer.step + 1} (epoch "
                            f"{trainer.epoch}, batch {trainer.batches_in_epoch} of the epoch); "
                            f"training stopped; {_last_good(run, last_saved)}: resume from it "
                            "with --resume (e.g. with a lower --lr), or pass --skip-nonfinite "
                            "to skip such batches"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    if buffers is not None:  # the batch-norm statistics as they were
                        with torch.no_grad():
                            for buffer, before in zip(model.buffers(), buffers, strict=True):
                                buffer.copy_(before)
                    trainer.nonfinite_batches += 1
                    if ctx.is_main:
                        log.warning(
                            "non-finite %s at step %d: batch skipped (--skip-nonfinite; %d so far)",
                            what,
                            trainer.step + 1,
                            trainer.nonfinite_batches,
                        )
                    if events is not None:
                        events.scalar(
                            "train/nonfinite_batches", trainer.nonfinite_batches, trainer.step
                        )
                        events.flush()
                else:
                    clip_each_gradient(parameters, options.clip_norm, norms)
                    optimizer.step()
                    trainer.examples_seen += int(global_batch)
                    trainer.step += 1
                    elapsed = time.perf_counter() - tick
                    speed_examples += int(global_batch)
                    speed_time += elapsed
                    examples_per_s = speed_examples / max(speed_time, 1e-9)
                    progress.update(trainer.step, examples_per_s, loss=loss_value, lr=lr)
                    if events is not None and trainer.step % options.log_every == 0:
                        batch_metrics = YT8MMetrics(config.num_classes)
                        batch_metrics.update(
                            torch.sigmoid(out.logits.detach().float()).cpu(), batch.labels
                        )
                        events.scalar("train/loss", loss_value, trainer.step)
                        events.scalar(
                            "train/gap", float(batch_metrics.compute()["gap"]), trainer.step
                        )
                        events.scalar("train/learning_rate", lr, trainer.step)
                        events.scalar("train/examples_per_second", examples_per_s, trainer.step)
                        if trainer.skipped_records:
                            events.scalar(
                                "data/skipped_records", trainer.skipped_records, trainer.step
                            )
                        events.flush()
                        speed_examples, speed_time = 0, 0.0
                    if options.eval_every and trainer.step % options.eval_every == 0:
                        run_eval()
                    if trainer.step % options.checkpoint_every == 0:
                        save()
                if signalled:
                    stopped_by = stop.signum or signal.SIGTERM
                    break
                if options.max_steps is not None and trainer.step >= options.max_steps:
                    done = True
                    break
            if stopped_by:
                break
            if not done:
                trainer.epoch += 1
                trainer.batches_in_epoch = 0
        position = (trainer.step, trainer.epoch, trainer.batches_in_epoch)
        if trainer.step != last_saved or (stopped_by and position != saved_position):
            save()  # (a stop after skipped batches saves their position too)
        if stopped_by and ctx.is_main:
            log.warning(
                "interrupted by %s at step %d (checkpoint %s); resume with: %s",
                signal.Signals(stopped_by).name,
                trainer.step,
                run / CHECKPOINTS / f"step-{trainer.step:08d}",
                resume_command(options, distributed=ctx.distributed),
            )
        elif eval_set is not None and (not options.eval_every or trainer.step % options.eval_every):
            run_eval()
        if events is not None:  # the final counts, whatever step they last changed at
            if options.skip_corrupt:
                events.scalar("data/skipped_records", trainer.skipped_records, trainer.step)
            if options.skip_nonfinite:
                events.scalar("train/nonfinite_batches", trainer.nonfinite_batches, trainer.step)
    finally:
        progress.close()
        if events is not None:
            events.close()
        if batches is not None:  # even with an error on its way out (see _shut_down)
            _shut_down(batches)
    summary: dict[str, Any] = {
        "run": str(run),
        "steps": trainer.step,
        "steps_this_run": trainer.step - start_step,
        "epochs_completed": trainer.epoch,
        "examples_seen": trainer.examples_seen,
        "skipped_records": trainer.skipped_records,
        "nonfinite_batches": trainer.nonfinite_batches,
        "eval": last_eval,
        "signal": int(stopped_by),
    }
    if ctx.is_main and trainer.skipped_records:
        log.warning("skipped %d corrupt records (--skip-corrupt)", trainer.skipped_records)
    if ctx.is_main and trainer.nonfinite_batches:
        log.warning(
            "skipped %d batches with a non-finite loss (--skip-nonfinite)",
            trainer.nonfinite_batches,
        )
    return summary


def _format(result: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "num_videos")
