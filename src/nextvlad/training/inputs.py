"""What a run reads: its datasets, their input transform, and loaders that keep to themselves.

The data are checked against the model with ``nextvlad.checkpoint.check_data_fits``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from nextvlad.checkpoint import check_data_fits
from nextvlad.data import VideoDataset, detect_schema, resolve_files
from nextvlad.data.schema import Schema
from nextvlad.errors import ConfigError
from nextvlad.models import (
    FrameModelConfig,
    InputTransform,
    MixtureConfig,
    ModelConfig,
    load_eigenvalues,
)
from nextvlad.training.distributed import Context
from nextvlad.training.options import TrainOptions
from nextvlad.training.signals import worker_init

log = logging.getLogger("nextvlad.train")


def datasets(
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


def input_transform(
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


def loader_options(options: TrainOptions, seed_offset: int) -> dict[str, Any]:
    """DataLoader arguments that keep the global torch RNG out of the data pipeline.

    A DataLoader draws its workers' base seed from the global RNG on every ``iter()``: that
    would shift the dropout stream by one draw at each epoch start, differently in a resumed
    run. A generator of its own keeps the resumed run's dropout masks equal to the
    uninterrupted run's. The workers leave SIGINT and SIGTERM to the main process.
    """
    generator = torch.Generator()
    generator.manual_seed((options.seed + 0x9E3779B97F4A7C15 * (seed_offset + 1)) % 2**64)
    return {"generator": generator, "worker_init_fn": worker_init}
