"""`nextvlad train`: the paper's recipe, on CPU, one GPU or many (torchrun, DDP).

Adam (lr 2e-4, epsilon 1e-8), learning rate x0.8 every 2M examples (staircase), each gradient
tensor clipped to norm 1.0 separately, L2 1e-5 on the classifier, batch 80 per process; the
mixture presets train with the distillation objective of Eq. (16). See
``nextvlad.training.distributed`` for the launch recipe.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nextvlad.data import VideoDataset, detect_schema, resolve_files
from nextvlad.data.schema import Schema
from nextvlad.errors import ConfigError, NextVLADError
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
from nextvlad.training.options import TrainOptions
from nextvlad.training.progress import Progress
from nextvlad.training.state import (
    TrainerState,
    latest_checkpoint,
    restore_training_state,
    save_training_checkpoint,
)

log = logging.getLogger("nextvlad.train")
RUN_OPTIONS = "run.json"


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


def adam(parameters: list[nn.Parameter], lr: float, eps: float) -> torch.optim.Adam:
    """The paper's Adam, as the fused single-pass kernel where this torch has one (CPU and
    CUDA since torch 2.4: several times faster than the per-tensor loop on 89M parameters)."""
    try:
        return torch.optim.Adam(parameters, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):  # no fused kernel for this device or torch version
        return torch.optim.Adam(parameters, lr=lr, eps=eps)


@torch.no_grad()
def clip_each_gradient(parameters: list[nn.Parameter], max_norm: float) -> None:
    """TF's clip_by_norm on every gradient tensor separately: g * c / max(||g||, c)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads or max_norm <= 0:
        return
    norms = torch._foreach_norm(grads)
    factors = [max_norm / torch.clamp(n, min=max_norm) for n in norms]
    torch._foreach_mul_(grads, factors)


def _check_writable(run: Path) -> None:
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"cannot write to the run folder {run}: {err}") from None


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
    loader = dataset.loader(options.batch_size, num_workers=min(options.num_workers, 2))
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


def train(options: TrainOptions) -> dict[str, Any]:
    """Train as ``options`` say; returns a summary (steps, examples/s, last evaluation)."""
    ctx = setup(options.device)
    try:
        return _train(options, ctx)
    finally:
        teardown()


def _train(options: TrainOptions, ctx: Context) -> dict[str, Any]:
    run = Path(options.out)
    if ctx.is_main:
        _check_writable(run)
    if options.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(options.seed + ctx.rank)

    overrides = dict(options.model_overrides)
    config = get_config(options.preset, **overrides)
    train_set, eval_set, schema = _datasets(options, config)
    transform = _transform(options, config, schema, ctx).to(ctx.device)
    model = build_model(config).to(ctx.device)
    if options.folded:
        for module in model.modules():
            if isinstance(module, NeXtVLAD):
                module.folded = True
    regularized = model.regularized_parameters()  # type: ignore[operator]
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = adam(parameters, options.learning_rate, options.adam_epsilon)

    trainer = TrainerState()
    checkpoint = latest_checkpoint(run) if options.resume else None
    if options.resume and checkpoint is None and ctx.is_main:
        log.warning("--resume: no checkpoint in %s yet, starting from scratch", run)
    if checkpoint is not None:
        trainer = restore_training_state(checkpoint, model, optimizer)
        if ctx.is_main:
            log.info("resuming from %s (step %d)", checkpoint, trainer.step)
    elif (
        (run / "checkpoints").is_dir()
        and any((run / "checkpoints").iterdir())
        and not options.resume
    ):
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
    )
    events = EventWriter(run / "tensorboard") if ctx.is_main else None
    progress = Progress(options.max_steps, enabled=options.progress and ctx.is_main)
    last_eval: dict[str, float] | None = None
    last_saved = trainer.step if checkpoint is not None else -1
    speed_examples, speed_time = 0, 0.0
    done = options.max_steps is not None and trainer.step >= options.max_steps
    start_step = trainer.step
    net.train()

    def save() -> None:
        nonlocal last_saved
        if ctx.is_main:
            save_training_checkpoint(
                run,
                model=model,
                config=config,
                transform=transform,
                optimizer=optimizer,
                trainer=trainer,
                preset=options.preset,
                keep=options.keep_checkpoints,
            )
        if ctx.distributed:
            dist.barrier()
        last_saved = trainer.step

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

    try:
        while not done and (options.epochs is None or trainer.epoch < options.epochs):
            train_set.set_epoch(trainer.epoch)
            batches = iter(loader)
            for _ in range(trainer.batches_in_epoch):  # resume mid-epoch: same order, skip
                next(batches, None)
            while True:
                tick = time.perf_counter()
                batch = next(batches, None)
                if not all_ranks_have(batch is not None, ctx):
                    break
                assert batch is not None
                lr = learning_rate(options, trainer.examples_seen)
                for group in optimizer.param_groups:
                    group["lr"] = lr
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
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    where = (
                        f"; the last good checkpoint is step {last_saved}"
                        if last_saved >= 0
                        else ""
                    )
                    raise TrainingError(
                        f"the loss is {loss_value} at step {trainer.step + 1}{where}"
                    )
                clip_each_gradient(parameters, options.clip_norm)
                optimizer.step()
                global_batch, skipped = sum_over_ranks([len(batch), batch.num_skipped], ctx)
                trainer.examples_seen += int(global_batch)
                trainer.skipped_records += int(skipped)
                trainer.step += 1
                trainer.batches_in_epoch += 1
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
                    events.scalar("train/gap", float(batch_metrics.compute()["gap"]), trainer.step)
                    events.scalar("train/learning_rate", lr, trainer.step)
                    events.scalar("train/examples_per_second", examples_per_s, trainer.step)
                    if trainer.skipped_records:
                        events.scalar("data/skipped_records", trainer.skipped_records, trainer.step)
                    events.flush()
                    speed_examples, speed_time = 0, 0.0
                if options.eval_every and trainer.step % options.eval_every == 0:
                    run_eval()
                if trainer.step % options.checkpoint_every == 0:
                    save()
                if options.max_steps is not None and trainer.step >= options.max_steps:
                    done = True
                    break
            if not done:
                trainer.epoch += 1
                trainer.batches_in_epoch = 0
        if trainer.step != last_saved:
            save()
        if eval_set is not None and (not options.eval_every or trainer.step % options.eval_every):
            run_eval()
    finally:
        progress.close()
        if events is not None:
            events.close()
    summary: dict[str, Any] = {
        "run": str(run),
        "steps": trainer.step,
        "steps_this_run": trainer.step - start_step,
        "epochs_completed": trainer.epoch,
        "examples_seen": trainer.examples_seen,
        "skipped_records": trainer.skipped_records,
        "eval": last_eval,
    }
    if trainer.skipped_records and ctx.is_main:
        log.warning("skipped %d corrupt records (--skip-corrupt)", trainer.skipped_records)
    return summary


def _format(result: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "num_videos")
