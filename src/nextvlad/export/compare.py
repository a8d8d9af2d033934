"""An exported file against PyTorch: probabilities on generated batches, GAP on real ones."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nextvlad.data import Batch
from nextvlad.errors import UsageError
from nextvlad.export.runtime import ExportedModel
from nextvlad.export.serving import ServingModel
from nextvlad.metrics import YT8MMetrics

PARITY_SHAPES = ((1, 1), (3, 17), (2, 300), (5, 64))  # (B, T) of the parity check's batches
PARITY_TOLERANCE = 1e-4  # max abs difference in probabilities allowed for fp32 exports


def parity(
    serving: ServingModel,
    exported: ExportedModel,
    shapes: Sequence[tuple[int, int]] = PARITY_SHAPES,
    *,
    seed: int = 0,
) -> float:
    """Max abs difference between the exported model's and PyTorch's probabilities on
    generated batches of the given (B, T) (padded frames included)."""
    worst = 0.0
    for i, (batch_size, num_frames) in enumerate(shapes):
        inputs = serving.example_inputs(batch_size, num_frames, seed=seed + i)
        expected = serving.probabilities(*inputs)
        got = exported(*inputs)
        worst = max(worst, float((got - expected).abs().max()))
    return worst


def _inputs(batch: Batch) -> tuple[Tensor, ...]:
    if batch.frames is not None:
        assert batch.num_frames is not None
        return batch.frames, batch.num_frames
    assert batch.features is not None
    return (batch.features,)


def iter_exported_predictions(
    exported: ExportedModel | ServingModel, batches: Iterable[Batch]
) -> Iterator[tuple[Batch, Tensor]]:
    """(batch, probabilities (B, C) float32) for each batch."""
    for batch in batches:
        with torch.no_grad():
            yield batch, exported(*_inputs(batch))


@dataclass
class GapComparison:
    """GAP@20 of PyTorch and of the exported model on the same videos."""

    pytorch: float
    exported: float
    num_videos: int
    max_abs_diff: float  # largest difference in any probability

    @property
    def change(self) -> float:
        return self.exported - self.pytorch


def compare_gap(
    serving: ServingModel,
    exported: ExportedModel,
    batches: Iterable[Batch],
    *,
    top_k: int = 20,
) -> GapComparison:
    """Run both models on each batch once and compare their GAP@top_k (and probabilities)."""
    num_classes = serving.config.num_classes
    ours, theirs = YT8MMetrics(num_classes, top_k), YT8MMetrics(num_classes, top_k)
    worst = 0.0
    for batch, got in iter_exported_predictions(exported, batches):
        expected = serving.probabilities(*_inputs(batch))
        ours.update(expected, batch.labels)
        theirs.update(got, batch.labels)
        worst = max(worst, float((got - expected).abs().max()))
    if ours.num_videos == 0:
        raise UsageError("no videos in the evaluation data")
    return GapComparison(
        pytorch=float(ours.compute()["gap"]),
        exported=float(theirs.compute()["gap"]),
        num_videos=ours.num_videos,
        max_abs_diff=worst,
    )
