"""Native checkpoints: round trip, refusal of what does not fit, no pickle."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from nextvlad.checkpoint import (
    ACCEPTED,
    CHECKPOINTS,
    CONFIG,
    LATEST,
    WEIGHTS,
    atomic_write_bytes,
    check_data_fits,
    load_model,
    read_config,
    resolve_model_dir,
    save_model,
)
from nextvlad.data.schema import VIDEO_LEVEL, Schema
from nextvlad.errors import CheckpointError, ConfigError, UsageError
from nextvlad.models import create_model, get_config


def test_round_trip(tmp_path: Path) -> None:
    config = get_config(
        "mix3-nextvlad-8g-112k-2048h", num_clusters=8, hidden_size=32, num_classes=5
    )
    model = create_model(
        "mix3-nextvlad-8g-112k-2048h", num_clusters=8, hidden_size=32, num_classes=5
    )
    model.train()
    model(torch.randn(3, 4, 1152), torch.tensor([4, 2, 1]))  # move the batch-norm statistics
    model.eval()
    save_model(tmp_path / "ckpt", model, config)
    loaded = load_model(tmp_path / "ckpt")
    x, n = torch.randn(2, 5, 1152), torch.tensor([5, 3])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, n).logits, model(x, n).logits)
    assert read_config(tmp_path / "ckpt")[0] == config
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_refuses_weights_of_another_shape(tmp_path: Path) -> None:
    small = get_config("nextvlad-8g-128k-2048h", num_clusters=8, hidden_size=32, num_classes=5)
    save_model(
        tmp_path / "a",
        create_model("nextvlad-8g-128k-2048h", num_clusters=8, hidden_size=32, num_classes=5),
        small,
    )
    other = get_config("nextvlad-8g-128k-2048h", num_clusters=8, hidden_size=32, num_classes=6)
    document = json.loads((tmp_path / "a" / "config.json").read_text())
    document["model"]["num_classes"] = other.num_classes
    (tmp_path / "a" / "config.json").write_text(json.dumps(document))
    with pytest.raises(
        CheckpointError, match=r"classifier.fc.weight: \(5, 32\) vs model \(6, 32\)"
    ):
        load_model(tmp_path / "a")


def test_refuses_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"format": "nextvlad-model", "model": {"family": "x"}})
    )
    with pytest.raises(CheckpointError, match="unknown model family"):
        load_model(tmp_path)
    config = get_config("video-logistic", num_classes=3)
    save_model(tmp_path / "v", create_model("video-logistic", num_classes=3), config)
    (tmp_path / "v" / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_model(tmp_path / "v")


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path: Path, mask: int) -> None:
    config = get_config("video-logistic", num_classes=3)
    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "file", b"x")
        save_model(tmp_path / "ckpt", create_model("video-logistic", num_classes=3), config)
    finally:
        os.umask(old)
    for path in (tmp_path / "file", tmp_path / "ckpt" / WEIGHTS, tmp_path / "ckpt" / CONFIG):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def _run_folder(root: Path, steps: tuple[int, ...]) -> Path:
    """RUN/checkpoints/step-N for each step: a model folder with a trainer.json."""
    config = get_config("video-logistic", num_classes=3)
    for step in steps:
        folder = root / CHECKPOINTS / f"step-{step:08d}"
        save_model(folder, create_model("video-logistic", num_classes=3), config)
        (folder / "trainer.json").write_text("{}")
    return root


def test_resolve_model_dir_takes_what_users_give(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run", (1, 2))
    checkpoints = run / CHECKPOINTS
    step1, step2 = checkpoints / "step-00000001", checkpoints / "step-00000002"
    assert resolve_model_dir(run) == step2
    assert resolve_model_dir(checkpoints) == step2
    assert resolve_model_dir(step1) == step1
    assert resolve_model_dir(step1 / WEIGHTS) == step1
    assert resolve_model_dir(step1 / CONFIG) == step1
    (checkpoints / LATEST).write_text("step-00000001")  # what training writes
    assert resolve_model_dir(checkpoints / LATEST) == step1
    (checkpoints / LATEST).write_text("step-00000009")  # gone: the newest complete one
    assert resolve_model_dir(checkpoints / LATEST) == step2
    (checkpoints / LATEST).unlink()
    (checkpoints / LATEST).symlink_to("step-00000001")  # a link works too
    assert resolve_model_dir(checkpoints / LATEST).resolve() == step1.resolve()


def test_resolve_model_dir_says_what_it_takes(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such checkpoint or run folder") as info:
        resolve_model_dir(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value) and ACCEPTED in str(info.value)
    (tmp_path / "model.pt").write_bytes(b"")
    for path in (tmp_path, tmp_path / "model.pt"):
        with pytest.raises(CheckpointError, match="no nextvlad checkpoint there") as info:
            resolve_model_dir(path, also="an .onnx file")
        message = str(info.value)
        assert message.startswith(f"{path}: ") and message.endswith(f"{ACCEPTED}, or an .onnx file")
    assert "RUN/checkpoints/latest" in ACCEPTED and WEIGHTS in ACCEPTED


def test_check_data_fits_names_the_checkpoint_or_asks_for_a_preset() -> None:
    frame = get_config("nextvlad-8g-16k-256h")
    with pytest.raises(ConfigError) as info:
        check_data_fits(frame, VIDEO_LEVEL, "the data (v/*.tfrecord)", model="the checkpoint C")
    message = str(info.value)
    assert message.startswith("the data (v/*.tfrecord) is video-level data but the model takes")
    assert "the checkpoint C holds a frame-level model" in message and "preset" not in message
    with pytest.raises(ConfigError, match="choose a video-level preset"):
        check_data_fits(frame, VIDEO_LEVEL, "the training data")
    with pytest.raises(ConfigError, match=r"the checkpoint C expects sizes \(1024, 128\)"):
        check_data_fits(
            frame, Schema.from_specs("rgb:512,audio:128"), "the data", model="the checkpoint C"
        )
