"""Native checkpoints: round trip, refusal of what does not fit, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nextvlad.checkpoint import load_model, read_config, save_model
from nextvlad.errors import CheckpointError
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
