"""Loading exported files: the predictors, and clear errors for files that are not ours."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nextvlad.errors import UsageError
from nextvlad.export import (
    ExportError,
    OnnxPredictor,
    TorchScriptPredictor,
    export,
    load_exported,
)
from tests.export.conftest import serving_of

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_predictors(frame_run: Path, tmp_path: Path, fmt: str) -> None:
    serving = serving_of(frame_run)
    path = export(serving, tmp_path / f"model.{fmt}", format=fmt)
    exported = load_exported(path)
    assert isinstance(exported, OnnxPredictor if fmt == "onnx" else TorchScriptPredictor)
    assert exported.config == serving.config and exported.metadata["dtype"] == "fp32"
    frames, _ = serving.example_inputs(2, 6, seed=1)
    full = torch.full((2,), 6, dtype=torch.int64)
    # Without frame counts every frame is real.
    torch.testing.assert_close(exported(frames), serving.probabilities(frames, full), atol=1e-5,
                               rtol=0)  # fmt: skip
    with pytest.raises(ExportError, match=r"takes inputs of shape \(batch, frames, 1152\)"):
        exported(frames[:, :, :100])


def test_foreign_or_broken_files_are_clear_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="not a readable ONNX model"):
        load_exported(broken)
    archive = tmp_path / "broken.pt"
    archive.write_bytes(b"not an archive")
    with pytest.raises(ExportError, match="not a readable TorchScript archive"):
        load_exported(archive)
    with pytest.raises(UsageError, match="no such file"):
        load_exported(tmp_path / "missing.onnx")
    # A valid ONNX model that nextvlad did not write.
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save_model(helper.make_model(graph), str(foreign))
    with pytest.raises(ExportError, match="not a nextvlad export"):
        load_exported(foreign)


def test_cuda_without_the_provider_is_a_usage_error(frame_run: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    path = export(serving_of(frame_run), tmp_path / "model.onnx")
    with pytest.raises(UsageError, match="no CUDA provider"):
        OnnxPredictor(path, device="cuda")
    assert OnnxPredictor(path, device="auto").frame_level  # falls back to the CPU
