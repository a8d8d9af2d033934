"""What a run reads: its datasets, their input transform, and loaders that keep to themselves.

The data are checked against the model with ``nextvlad.checkpoint.check_data_fits``. With
``--task segments`` the training set is the rated segments of segment-rated records and the
evaluation the segment MAP of the windows of ``--eval-data`` (``SegmentEvaluation``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from nextvlad.checkpoint import check_data_fits
from nextvlad.data import SegmentDataset, VideoDataset
from nextvlad.data.schema import Schema
from nextvlad.data.segments import segment_classes_option
from nextvlad.data.summary import files_schema
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
from nextvlad.training.segments import SegmentEvaluation
from nextvlad.training.signals import worker_init

log = logging.getLogger("nextvlad.train")


TrainSet = VideoDataset | SegmentDataset
EvalSet = VideoDataset | SegmentEvaluation


def _schema(patterns: list[str], options: TrainOptions, what: str) -> tuple[list[str], Schema]:
    segments = "--task segments" if options.task == "segments" else None
    return files_schema(
        patterns, skip_corrupt=options.skip_corrupt, what=what, frame_level_for=segments
    )


def datasets(options: TrainOptions, config: ModelConfig) -> tuple[TrainSet, EvalSet | None, Schema]:
    """The training set, the evaluation (None without ``--eval-data``) and the training
    data's schema."""
    files, schema = _schema(options.train_data, options, "--train-data")
    check_data_fits(config, schema, "the training data")
    common: dict[str, Any] = {
        "schema": schema,
        "num_classes": config.num_classes,
        "max_frames": options.max_frames,
        "skip_corrupt": options.skip_corrupt,
    }
    if options.task == "segments":
        classes = segment_classes(options, config.num_classes)
        train: TrainSet = SegmentDataset(
            files, shuffle=True, shuffle_buffer=options.shuffle_buffer, seed=options.seed,
            classes=classes, **common,
        )  # fmt: skip
    else:
        frame_config = config.branch if isinstance(config, MixtureConfig) else config
        sample = frame_config.sample_frames if isinstance(frame_config, FrameModelConfig) else None
        train = VideoDataset(
            files,
            shuffle=True,
            shuffle_buffer=options.shuffle_buffer,
            seed=options.seed,
            sample_frames=sample,
            bucket_size=options.batch_size if options.bucket_by_length else None,
            **common,
        )
    evaluation: EvalSet | None = None
    if options.eval_data:
        eval_files, eval_schema = _schema(options.eval_data, options, "--eval-data")
        check_data_fits(config, eval_schema, "the evaluation data")
        if options.task == "segments":
            evaluation = segment_evaluation(options, config, eval_files, eval_schema)
        else:
            evaluation = VideoDataset(eval_files, **{**common, "schema": eval_schema})
    return train, evaluation, schema


def segment_classes(options: TrainOptions, num_classes: int) -> Any:
    """The whitelist of ``--segment-classes`` (None without it), within the model's classes."""
    return segment_classes_option(options.segment_classes, num_classes)


def segment_evaluation(
    options: TrainOptions, config: ModelConfig, files: list[str], schema: Schema
) -> SegmentEvaluation:
    """The segment MAP evaluation of ``--eval-data`` (its ratings read now: an error if it has
    none)."""
    evaluation = SegmentEvaluation(
        files,
        schema,
        num_classes=config.num_classes,
        max_frames=options.max_frames,
        skip_corrupt=options.skip_corrupt,
        classes=segment_classes(options, config.num_classes),
    )
    if evaluation.metric.num_rated_pairs == 0:
        raise ConfigError(
            f"--task segments: no rated segment in the {evaluation.num_videos} videos of "
            f"--eval-data {' '.join(options.eval_data)}; the segment evaluation needs "
            "segment-rated records (segment_start_times, segment_labels, segment_scores)"
        )
    return evaluation


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
