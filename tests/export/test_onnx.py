"""ONNX export: the current exporter (dynamo=True) for every model family, the fallback, sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nextvlad.errors import UsageError
from nextvlad.export import ExportError, ServingModel, export, load_exported, parity
from nextvlad.models import InputTransform, create_model
from tests.export.conftest import check_parity, serving_of

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY_VLAD = {"num_clusters": 4, "hidden_size": 16}
# One tiny model of every preset family: NeXtVLAD, the mixture, NetVLAD (plain, on reduced
# frames, with frame sampling in training), mean pooling and both video-level classifiers.
FAMILIES = {
    "nextvlad-8g-128k-2048h": {**TINY_VLAD, "expansion": 1},
    "mix3-nextvlad-8g-112k-2048h": {**TINY_VLAD, "num_branches": 2},
    "netvlad-128k-2048h": TINY_VLAD,
    "netvlad-small-128k-2048h": TINY_VLAD,
    "netvlad-random-256k-1024h": TINY_VLAD,
    "meanpool-2048h": {"hidden_size": 16},
    "video-logistic": {},
    "video-moe": {},
}


def _graph(path: Path) -> tuple[set[str], dict[str, list[str | int]]]:
    """The op types of an ONNX file and the dims (names or sizes) of its inputs/outputs."""
    model = onnx.load_model(str(path))
    dims = {
        value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in [*model.graph.input, *model.graph.output]
    }
    return {node.op_type for node in model.graph.node}, dims


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_exports_with_dynamic_axes(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=11, **FAMILIES[name])
    serving = ServingModel(InputTransform(), model)
    path = export(serving, tmp_path / "model.onnx")
    check_parity(serving, path)
    ops, dims = _graph(path)
    assert load_exported(path).metadata["onnx_exporter"] == "dynamo"
    assert b"stack_trace" not in path.read_bytes()  # the exporter's notes are dropped
    assert dims["probabilities"] == ["batch", 11]
    if serving.frame_level:
        assert dims["frames"] == ["batch", "frames", 1152] and dims["num_frames"] == ["batch"]
        # The packing is not in the graph: nothing whose size depends on the data.
        assert "NonZero" not in ops
    else:
        assert dims["features"] == ["batch", 1152]


def test_trained_models_match_pytorch(frame_run: Path, mixture_run: Path, tmp_path: Path) -> None:
    frame = serving_of(frame_run)  # with reverse whitening
    check_parity(frame, export(frame, tmp_path / "frame.onnx"))
    whole = serving_of(mixture_run)
    check_parity(whole, export(whole, tmp_path / "whole.onnx"))
    branch = serving_of(mixture_run, branch=2)
    path = export(branch, tmp_path / "branch.onnx")
    check_parity(branch, path)
    assert load_exported(path).metadata["branch"] == 2
    assert path.stat().st_size < (tmp_path / "whole.onnx").stat().st_size / 2


def test_the_torchscript_based_exporter_is_the_fallback(frame_run: Path, tmp_path: Path) -> None:
    serving = serving_of(frame_run)
    path = export(serving, tmp_path / "legacy.onnx", dynamo=False)
    check_parity(serving, path)
    assert load_exported(path).metadata["onnx_exporter"] == "torchscript"
    ops, dims = _graph(path)
    assert dims["frames"] == ["batch", "frames", 1152] and "NonZero" not in ops
    with pytest.raises(UsageError, match="onnx only"):
        export(serving, tmp_path / "x.pt", format="torchscript", dynamo=False)


def test_smaller_files_run(frame_run: Path, tmp_path: Path) -> None:
    serving = serving_of(frame_run)
    full = export(serving, tmp_path / "fp32.onnx").stat().st_size
    half = export(serving, tmp_path / "fp16.onnx", dtype="fp16")
    int8 = export(serving, tmp_path / "int8.onnx", quantize="int8")
    assert half.stat().st_size < 0.6 * full and int8.stat().st_size < 0.4 * full
    assert parity(serving, load_exported(half)) < 1e-3
    assert parity(serving, load_exported(int8)) < 0.1  # the GAP bound: test_quantize.py
    assert load_exported(int8).metadata["quantize"] == "int8"
    # Every weight matrix but NeXtVLAD's anchors (in no product) is int8, its stacked
    # assignment and attention weights too: the exporter's default folding would leave those
    # a Concat at run time, which int8 quantisation skips.
    model = onnx.load_model(str(int8))
    float_matrices = [i.name for i in model.graph.initializer
                      if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) >= 2]  # fmt: skip
    assert float_matrices and all(name.endswith(".anchors") for name in float_matrices)
    assert "MatMulInteger" in _graph(int8)[0]
    with pytest.raises(UsageError, match="alternatives"):
        export(serving, tmp_path / "both.onnx", dtype="fp16", quantize="int8")


def test_a_failed_export_leaves_the_old_file(
    frame_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nextvlad.export.onnx as onnx_export

    def fail(serving: ServingModel) -> None:
        raise RuntimeError("exporter broke")

    out = tmp_path / "model.onnx"
    out.write_bytes(b"old")
    monkeypatch.setattr(onnx_export, "_dynamo_proto", fail)
    with pytest.raises(ExportError, match=r"exporter broke.*--legacy-onnx"):
        export(serving_of(frame_run), out)
    assert out.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [out]
