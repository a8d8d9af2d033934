"""int8 exports keep the GAP of a trained model: within 0.002 of float32 on held-out videos.

A small NeXtVLAD is trained in-process (``nextvlad.training.train``) on the learnable synthetic
set (short videos, 10 classes, so that it learns in a few steps), exported in float32 and int8,
and both files are scored with ``compare_gap`` on other synthetic videos. A deliberately broken
int8 export (its weight scales doubled) fails the bound, so the bound can fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nextvlad.data import Batch, VideoDataset, detect_schema, resolve_files, write_synthetic
from nextvlad.data.synth import SynthConfig
from nextvlad.export import ServingModel, compare_gap, export, load_exported
from nextvlad.training import TrainOptions, train
from tests.export.conftest import serving_of

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # trains a model (about 15 s of CPU)

GAP_BOUND = 0.002  # |GAP(int8) - GAP(fp32)|
NUM_CLASSES = 10
EVAL_VIDEOS = 300
STEPS = 20
SYNTH = SynthConfig(num_classes=NUM_CLASSES, min_frames=20, max_frames=40, min_run=3, max_run=6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ServingModel, list[Batch]]:
    """The trained serving model and the held-out batches."""
    root = tmp_path_factory.mktemp("int8")
    for name, videos, seed in (("train", 320, 1), ("eval", EVAL_VIDEOS, 2)):
        write_synthetic(root / name, videos=videos, shards=1, num_classes=NUM_CLASSES,
                        seed=seed, config=SYNTH)  # fmt: skip
    train(
        TrainOptions(
            preset="nextvlad-8g-16k-256h",
            train_data=[str(root / "train" / "*.tfrecord")],
            out=str(root / "run"),
            model_overrides={"num_classes": NUM_CLASSES, "num_clusters": 8, "hidden_size": 64},
            eigenvals="none",  # the synthetic features are not PCA-whitened
            batch_size=32,
            learning_rate=5e-3,
            max_steps=STEPS,
            eval_every=0,
            checkpoint_every=STEPS,
            num_workers=0,
            seed=0,
            device="cpu",
            progress=False,
        )
    )
    pattern = str(root / "eval" / "*.tfrecord")
    schema = detect_schema(resolve_files([pattern]))
    assert schema is not None
    dataset = VideoDataset(pattern, schema, num_classes=NUM_CLASSES, rank=0, world_size=1)
    return serving_of(root / "run"), list(dataset.loader(100))


def _gaps(serving: ServingModel, batches: list[Batch], path: Path) -> tuple[float, float]:
    """GAP of PyTorch and of the exported file on the held-out videos."""
    comparison = compare_gap(serving, load_exported(path), batches)
    assert comparison.num_videos == EVAL_VIDEOS
    return comparison.pytorch, comparison.exported


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_int8_gap_within_bound_of_fp32(
    trained: tuple[ServingModel, list[Batch]], tmp_path: Path, fmt: str
) -> None:
    serving, batches = trained
    pytorch, fp32 = _gaps(serving, batches, export(serving, tmp_path / f"fp32.{fmt}", format=fmt))
    assert abs(fp32 - pytorch) < 1e-5
    assert fp32 > 0.6  # chance is about 0.2: the model learned, so int8 has something to lose
    int8_path = export(serving, tmp_path / f"int8.{fmt}", format=fmt, quantize="int8")
    _, int8 = _gaps(serving, batches, int8_path)
    assert abs(int8 - fp32) <= GAP_BOUND, (fp32, int8)


def _doubled_weight_scales(quantize_onnx: Any) -> Any:
    """quantize_onnx, then every weight scale doubled: a broken int8 export."""
    from onnx import numpy_helper

    def broken(model_proto: Any) -> Any:
        model = quantize_onnx(model_proto)
        for init in model.graph.initializer:
            if init.name.endswith("_scale"):  # the weights' (the activations' are computed)
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2, init.name))
        return model

    return broken


def test_a_broken_int8_export_fails_the_bound(
    trained: tuple[ServingModel, list[Batch]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nextvlad.export.onnx as onnx_export

    serving, batches = trained
    broken = _doubled_weight_scales(onnx_export.quantize_onnx)
    monkeypatch.setattr(onnx_export, "quantize_onnx", broken)
    fp32, int8 = _gaps(serving, batches, export(serving, tmp_path / "int8.onnx", quantize="int8"))
    assert abs(int8 - fp32) > GAP_BOUND, (fp32, int8)
