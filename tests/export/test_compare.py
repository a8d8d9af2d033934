"""parity and compare_gap: what they report, and that they see a difference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from nextvlad.data import VideoDataset, detect_schema, resolve_files
from nextvlad.errors import UsageError
from nextvlad.export import ServingModel, compare_gap, iter_exported_predictions, parity
from tests.export.conftest import serving_of


class _Shifted:
    """A stand-in for an exported model: the serving model's probabilities, changed."""

    def __init__(self, serving: ServingModel, change: float, *, scramble: bool = False) -> None:
        self.serving, self.change, self.scramble = serving, change, scramble
        self.path, self.metadata, self.config = Path("x"), {}, serving.config

    def __call__(self, x: Tensor, num_frames: Tensor | None = None) -> Tensor:
        inputs = (x,) if num_frames is None else (x, num_frames)
        p = self.serving.probabilities(*inputs)
        if self.scramble:  # reverse each video's ranking of the classes
            p = p.flip(1)
        return (p + self.change).clamp(0, 1)


def _batches(data: Path) -> list:
    pattern = str(data / "eval" / "*.tfrecord")
    schema = detect_schema(resolve_files([pattern]))
    assert schema is not None
    dataset = VideoDataset(pattern, schema, num_classes=25, rank=0, world_size=1)
    return list(dataset.loader(5))


def test_parity_is_the_largest_difference(frame_run: Path) -> None:
    serving = serving_of(frame_run)
    assert parity(serving, _Shifted(serving, 0.0)) == 0.0
    worst = parity(serving, _Shifted(serving, -0.25), shapes=((2, 3), (1, 40)))
    assert 0.0 < worst <= 0.25 + 1e-6


def test_compare_gap(frame_run: Path, data: Path) -> None:
    serving = serving_of(frame_run)
    batches = _batches(data)
    same = compare_gap(serving, _Shifted(serving, 0.0), batches)
    assert same.num_videos == 12 and same.change == 0.0 and same.max_abs_diff == 0.0
    assert 0.0 < same.pytorch <= 1.0
    scrambled = compare_gap(serving, _Shifted(serving, 0.0, scramble=True), batches)
    assert scrambled.pytorch == same.pytorch and scrambled.change != 0.0
    assert scrambled.max_abs_diff > 0.0
    got = [p for _, p in iter_exported_predictions(serving, batches)]
    assert sum(p.shape[0] for p in got) == 12
    with pytest.raises(UsageError, match="no videos"):
        compare_gap(serving, serving, [])  # type: ignore[arg-type]


def test_probabilities_in_iter_are_the_serving_models(frame_run: Path, data: Path) -> None:
    serving = serving_of(frame_run)
    for batch, probabilities in iter_exported_predictions(serving, _batches(data)[:1]):
        assert batch.frames is not None and batch.num_frames is not None
        torch.testing.assert_close(
            probabilities, serving.probabilities(batch.frames, batch.num_frames)
        )
