"""A model imported from the original TensorFlow code, trained one step through `nextvlad
train`, computes what the original's step computed (fixture B of ../shared): the loader's
batch padded to the original's 300 frames, the batch-norm statistics and the gate over them,
the loss, each gradient clipped to norm 1 and TF1's Adam step."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nextvlad.checkpoint import read_config, save_model
from nextvlad.cli import main
from nextvlad.convert import from_tf, normalize_tf_name, tf_name_map
from nextvlad.data.schema import FRAME_LEVEL, Video, encode_video
from nextvlad.data.tfrecord import TFRecordWriter
from nextvlad.models import InputTransform, build_model, load_eigenvalues
from nextvlad.nn import BatchNorm
from tests.conftest import shared_path
from tests.training._events import tensorboard_scalars

MIXTURE_SETTINGS = [
    "--preset", "mix3-nextvlad-8g-112k-2048h",
    "--set", "num_clusters=8", "--set", "hidden_size=32", "--set", "gating_reduction=8",
    "--set", "dropout=0", "--set", "num_classes=30", "--set", "reference_compat=true",
]  # fmt: skip


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    with np.load(shared_path("fixtures/tf_reference/mix_nextvlad_train.npz")) as data:
        return {k: data[k] for k in data.files}


def _write_inputs(fixture: dict[str, Any], path: Path) -> None:
    """The fixture's six videos as a frame-level TFRecord (each with its own frame count)."""
    labels = fixture["labels"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with TFRecordWriter(path) as writer:
        for i, n in enumerate(fixture["num_frames"].tolist()):
            frames = fixture["quantized"][i, :n]
            video = Video(
                id=f"v{i}",
                labels=np.flatnonzero(labels[i]).astype(np.int64),
                features={"rgb": frames[:, :1024], "audio": frames[:, 1024:]},
                num_frames=n,
            )
            writer.write(encode_video(video, FRAME_LEVEL))


def _tf1_adam_step(theta: np.ndarray, grad: np.ndarray, lr: float = 2e-4) -> np.ndarray:
    """The original's update of one variable: clip_by_norm(g, 1), then TF1 Adam's first step."""
    g = grad.astype(np.float64)
    g = g * 1.0 / max(float(np.linalg.norm(g)), 1.0)
    m, v = 0.1 * g, 0.001 * g * g
    lr_t = lr * math.sqrt(1 - 0.999) / (1 - 0.9)
    return theta.astype(np.float64) - lr_t * m / (np.sqrt(v) + 1e-8)


def test_one_cli_training_step_matches_the_original(
    fixture: dict[str, Any], tmp_path: Path
) -> None:
    variables = {k: v for k, v in fixture.items() if k.startswith("tower/")}
    np.savez(tmp_path / "variables.npz", **variables)
    (tmp_path / "config.json").write_text(str(fixture["config"]))
    imported = tmp_path / "imported"
    assert main(["import-tf", str(tmp_path / "variables.npz"), "--config",
                 str(tmp_path / "config.json"), "--out", str(imported)]) == 0  # fmt: skip
    _write_inputs(fixture, tmp_path / "data" / "six.tfrecord")
    run = tmp_path / "run"
    code = main([
        "train", *MIXTURE_SETTINGS, "--init-from", str(imported),
        "--train-data", str(tmp_path / "data" / "six.tfrecord"), "--out", str(run),
        "--eigenvals", str(shared_path("data/yt8m_pca/eigenvals.npy")),
        "--batch-size", "6", "--max-steps", "1", "--eval-every", "0", "--log-every", "1",
        "--num-workers", "0", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    checkpoint = run / "checkpoints" / "step-00000001"
    state = load_file(str(checkpoint / "model.safetensors"))
    config, _ = read_config(checkpoint)
    assert config.reference_compat  # type: ignore[union-attr]
    names = tf_name_map(build_model(config))

    # The loss of the step (the loader shuffles the six videos; the batch is the same set).
    [(step, loss)] = tensorboard_scalars(run / "tensorboard")["train/loss"]
    assert step == 1
    assert abs(loss - float(fixture["loss/total"])) / float(fixture["loss/total"]) < 1e-5

    # The batch-norm statistics after the step: over 300 frames a video, padding included.
    keys = [k for k in fixture if k.startswith("bn_after_step/")]
    assert len(keys) == 38
    for key in keys:
        value = state[names[normalize_tf_name(key.removeprefix("bn_after_step/"))]].double()
        expected = torch.from_numpy(fixture[key]).double()
        assert float((value - expected).abs().max() / expected.abs().max()) < 1e-5, key

    # Every trainable variable moved as the original's clipped Adam step moves it with the
    # original's gradients: by lr * g / (|g| + 3.2e-7) for clipped gradient elements g, so
    # exactly (to float32) where |g| is far above 3.2e-7, and within the differences of the
    # two codes' gradients (<= 6.5e-5 of a tensor's largest) where g is near zero.
    worst, counted, compared = 0.0, 0, 0
    for tf_name in json.loads(str(fixture["config"]))["trainable_variable_order"]:
        key = names[normalize_tf_name(tf_name)]
        theta, grad = variables[tf_name], fixture[f"grad/{tf_name}"]
        expected = _tf1_adam_step(theta, grad)
        actual = state[key].double().numpy()
        if actual.ndim == 2 and expected.ndim == 2 and actual.shape != expected.shape:
            actual = actual.T
        actual = actual.reshape(expected.shape)
        moved = np.abs(actual - theta)
        assert np.all(moved <= 2e-4 * (1 + 1e-4) + 1e-6), tf_name  # Adam's first step: <= lr
        g = grad.astype(np.float64) / max(float(np.linalg.norm(grad)), 1.0)
        clear = np.abs(g) > 1e-4 * np.abs(g).max() + 3e-5  # far from zero: the same update
        np.testing.assert_allclose(actual[clear], expected[clear], rtol=0, atol=1e-7)
        counted += clear.size
        compared += int(clear.sum())
        worst = max(worst, float(np.abs(actual - expected).max()))
    assert compared > 0.9 * counted  # nearly every weight compared to float32 rounding
    assert worst < 2e-4  # near-zero gradients: at most a sign apart


def test_cli_pads_reference_models_to_300_frames(fixture: dict[str, Any], tmp_path: Path) -> None:
    """Without its 300-frame video the batch's longest has 120 frames: the CLI still pads it
    to 300, as the original does, and the statistics show it (they differ at 120)."""
    keep = [1, 2, 3, 4, 5]  # frames 1, 2, 77, 120, 33
    small = {**fixture, "quantized": fixture["quantized"][keep], "labels": fixture["labels"][keep]}
    small["num_frames"] = fixture["num_frames"][keep]
    variables = {k: v for k, v in fixture.items() if k.startswith("tower/")}
    config = json.loads(str(fixture["config"]))
    imported = tmp_path / "imported"
    model = from_tf(variables, config)
    save_model(imported, model, model.config)
    _write_inputs(small, tmp_path / "data" / "five.tfrecord")
    eigenvalues = shared_path("data/yt8m_pca/eigenvals.npy")
    run = tmp_path / "run"
    assert main([
        "train", *MIXTURE_SETTINGS, "--init-from", str(imported),
        "--train-data", str(tmp_path / "data" / "five.tfrecord"), "--out", str(run),
        "--eigenvals", str(eigenvalues), "--batch-size", "5", "--max-steps", "1",
        "--eval-every", "0", "--num-workers", "0", "--no-progress",
    ]) == 0  # fmt: skip
    saved = load_file(str(run / "checkpoints" / "step-00000001" / "model.safetensors"))
    transform = InputTransform((1024, 128), load_eigenvalues(eigenvalues))

    def statistics(length: int) -> dict[str, torch.Tensor]:
        fresh = from_tf(variables, config).train()
        frames = torch.from_numpy(small["quantized"][:, :length].copy())
        counts = torch.from_numpy(small["num_frames"]).long()
        with torch.no_grad():
            fresh(transform(frames, counts), counts)
        return {
            f"{name}.{key}": value
            for name, m in fresh.named_modules()
            if isinstance(m, BatchNorm)
            for key, value in m.named_buffers()
            if key.startswith("running")
        }

    padded, unpadded = statistics(300), statistics(120)
    gap = max(float((padded[k] - unpadded[k]).abs().max()) for k in padded)
    assert gap > 1e-4  # the comparison can tell 120 from 300
    for key, value in padded.items():
        torch.testing.assert_close(saved[key], value, rtol=1e-5, atol=1e-6)
