"""Shared by the export tests: tiny trained runs (written once per session) and the parity check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nextvlad.checkpoint import load_for_inference
from nextvlad.cli import main
from nextvlad.data import write_synthetic
from nextvlad.export import ExportedModel, ServingModel, load_exported

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=25"]
TINY += ["--set", "expansion=1"]  # as tests/training/test_end_to_end.py
TOLERANCE = 1e-4
# (B, T) none of which is the traced (2, 5): one frame, odd sizes, the paper's 300 frames.
SHAPES = ((1, 1), (3, 17), (2, 300), (6, 9))


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root / "train", videos=16, shards=1, num_classes=25, seed=1)
    write_synthetic(root / "eval", videos=12, shards=1, num_classes=25, seed=2)
    write_synthetic(root / "veval", videos=12, shards=1, num_classes=25, seed=2, frame_level=False)
    eigenvalues = np.random.default_rng(0).uniform(0.1, 4.0, (2048, 1)).astype(np.float32)
    np.save(root / "eigenvals.npy", eigenvalues)
    return root


def _train(data: Path, out: Path, preset: str) -> Path:
    args = ["train", "--preset", preset, "--train-data", str(data / "train" / "*.tfrecord")]
    args += ["--out", str(out), "--eigenvals", str(data / "eigenvals.npy"), "--max-steps", "2"]
    args += ["--batch-size", "8", "--num-workers", "0", "--no-progress", "--eval-every", "0"]
    assert main([*args, *TINY]) == 0
    return out


@pytest.fixture(scope="session")
def frame_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nextvlad-8g-128k-2048h (tiny) trained 2 steps, with reverse whitening."""
    return _train(data, tmp_path_factory.mktemp("runs") / "frame", "nextvlad-8g-128k-2048h")


@pytest.fixture(scope="session")
def mixture_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mix3-nextvlad-8g-112k-2048h (tiny) trained 2 steps."""
    return _train(data, tmp_path_factory.mktemp("runs") / "mix", "mix3-nextvlad-8g-112k-2048h")


def serving_of(run: Path, branch: int | None = None) -> ServingModel:
    model, transform, _, _ = load_for_inference(run)
    return ServingModel(transform, model, branch)


def export_cli(run: Path, out: Path, *extra: str) -> int:
    return main(["export", "--checkpoint", str(run), "--out", str(out), *extra])


def check_parity(serving: ServingModel, path: Path | ExportedModel) -> None:
    """The exported file computes PyTorch's probabilities (to 1e-4) at batch sizes and frame
    counts other than the traced ones, with padding, without, and for videos without frames."""
    exported = load_exported(path) if isinstance(path, Path) else path
    for i, (b, t) in enumerate(SHAPES):
        inputs = serving.example_inputs(b, t, seed=10 + i)
        expected = serving.probabilities(*inputs)
        got = exported(*inputs)
        assert got.shape == (b, serving.config.num_classes) and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=0, atol=TOLERANCE)
    if serving.frame_level:  # no padding at all, and videos without frames
        frames, _ = serving.example_inputs(3, 11, seed=3)
        for counts in ([11, 11, 11], [0, 0, 0], [0, 11, 4]):
            num_frames = torch.tensor(counts)
            expected = serving.probabilities(frames, num_frames)
            torch.testing.assert_close(
                exported(frames, num_frames), expected, rtol=0, atol=TOLERANCE
            )
