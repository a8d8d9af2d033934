"""The serving model: what it computes, and the packing it records while being exported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nextvlad.checkpoint import load_for_inference
from nextvlad.errors import UsageError
from nextvlad.export import ServingModel, metadata
from nextvlad.export.serving import graph_packing, traced_inputs
from nextvlad.models import InputTransform, create_model
from nextvlad.nn.packing import pack_frames
from nextvlad.training.evaluate import select_logits
from tests.export.conftest import serving_of


def test_graph_packing_is_the_hosts_packing() -> None:
    num_frames = torch.tensor([5, 0, 2, 9, 5])  # 9 > T: clamped, as pack_frames does
    graph, host = graph_packing(num_frames, 5), pack_frames(num_frames, 5)
    torch.testing.assert_close(graph.frame_mask, host.frame_mask, rtol=0, atol=0)
    torch.testing.assert_close(graph.counts, host.counts, rtol=0, atol=0)
    torch.testing.assert_close(graph.has_frames, host.has_frames, rtol=0, atol=0)
    assert (graph.batch_size, graph.length) == (5, 5)
    assert graph_packing(torch.tensor([0, 0]), 3).has_frames.item() == 0.0


def _tiny(name: str, **overrides: object) -> ServingModel:
    torch.manual_seed(0)
    return ServingModel(InputTransform(), create_model(name, num_classes=7, **overrides))


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("nextvlad-8g-128k-2048h", {"num_clusters": 4, "hidden_size": 16}),
        ("mix3-nextvlad-8g-112k-2048h", {"num_clusters": 4, "hidden_size": 16}),
        ("netvlad-small-128k-2048h", {"num_clusters": 4, "hidden_size": 16}),
        ("meanpool-2048h", {"hidden_size": 16}),
    ],
)
def test_the_exported_layout_computes_the_eager_one(
    name: str, overrides: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While exporting, the layers run every frame with the padding masked, from the graph
    packing; eagerly NeXtVLAD gathers the real frames. Both give the same probabilities."""
    serving = _tiny(name, **overrides)
    inputs = serving.example_inputs(4, 23, seed=1)
    eager = serving.probabilities(*inputs)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    torch.testing.assert_close(serving.probabilities(*inputs), eager, rtol=0, atol=1e-6)


def test_branch_is_the_mixtures_branch(mixture_run: Path) -> None:
    branch = serving_of(mixture_run, branch=2)
    model, transform, _, _ = load_for_inference(mixture_run)
    frames, num_frames = branch.example_inputs(4, 30, seed=5)
    with torch.no_grad():
        inside = select_logits(model(transform(frames, num_frames), num_frames), 2).sigmoid()
    torch.testing.assert_close(branch.probabilities(frames, num_frames), inside)
    assert branch.branch == 2 and branch.config.input_level == "frame"


def test_branch_of_a_model_that_is_no_mixture_is_refused() -> None:
    model = create_model("nextvlad-8g-16k-256h", num_classes=5)
    with pytest.raises(UsageError, match="not a mixture"):
        ServingModel(InputTransform(), model, branch=0)
    mixture = create_model("mix3-nextvlad-8g-112k-2048h", num_classes=5, num_clusters=4,
                           hidden_size=16)  # fmt: skip
    with pytest.raises(UsageError, match=r"branches 0\.\.2"):
        ServingModel(InputTransform(), mixture, branch=3)


def test_inputs_and_metadata() -> None:
    frame = _tiny("meanpool-2048h", hidden_size=16)
    frames, counts = frame.example_inputs(6, 8, seed=2)
    assert frames.dtype == torch.uint8 and frames.shape == (6, 8, 1152)
    assert counts[0] == 8 and bool(((counts >= 0) & (counts <= 8)).all())
    assert traced_inputs(frame)[1].tolist() == [5, 2]  # the traced batch has padding
    document = metadata(frame, dtype="fp32", quantize="none", preset="meanpool-2048h")
    assert document["inputs"] == {
        "frames": {"dtype": "uint8", "shape": ["batch", "frames", 1152]},
        "num_frames": {"dtype": "int64", "shape": ["batch"]},
    }
    assert document["outputs"]["probabilities"]["shape"] == ["batch", 7]
    assert document["preset"] == "meanpool-2048h" and document["branch"] is None
    video = _tiny("video-moe")
    (features,) = video.example_inputs(3, 0)
    assert features.shape == (3, 1152) and video.input_names == ("features",)
    assert metadata(video, dtype="fp16", quantize="none")["inputs"] == {
        "features": {"dtype": "float32", "shape": ["batch", 1152]}
    }
