"""Export for serving: ONNX Runtime and TorchScript against PyTorch, the CLI, predict on ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nextvlad.cli import main
from nextvlad.data import write_synthetic
from nextvlad.errors import UsageError
from nextvlad.export import (
    ExportError,
    ServingModel,
    export,
    load_exported,
    parity,
)
from nextvlad.training.evaluate import select_logits
from nextvlad.training.state import load_for_inference

pytest.importorskip("onnxruntime")

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=25"]
TINY += ["--set", "expansion=1"]  # as tests/training/test_end_to_end.py
TOLERANCE = 1e-4
# (B, T) none of which is the traced (2, 5): one frame, odd sizes, the paper's 300 frames.
SHAPES = ((1, 1), (3, 17), (2, 300), (6, 9))


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def frame_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(data, tmp_path_factory.mktemp("runs") / "frame", "nextvlad-8g-128k-2048h")


@pytest.fixture(scope="module")
def mixture_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(data, tmp_path_factory.mktemp("runs") / "mix", "mix3-nextvlad-8g-112k-2048h")


def _serving(run: Path, branch: int | None = None) -> ServingModel:
    model, transform, _, _ = load_for_inference(run)
    return ServingModel(transform, model, branch)


def _check_parity(serving: ServingModel, path: Path) -> None:
    exported = load_exported(path)
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


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_frame_model_matches_pytorch(frame_run: Path, tmp_path: Path, fmt: str) -> None:
    serving = _serving(frame_run)
    path = export(serving, tmp_path / f"model.{fmt}", format=fmt)
    _check_parity(serving, path)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_mixture_whole_and_one_branch_match_pytorch(
    mixture_run: Path, tmp_path: Path, fmt: str
) -> None:
    whole = _serving(mixture_run)
    _check_parity(whole, export(whole, tmp_path / f"whole.{fmt}", format=fmt))
    branch = _serving(mixture_run, branch=2)
    path = export(branch, tmp_path / f"branch.{fmt}", format=fmt)
    _check_parity(branch, path)
    assert load_exported(path).metadata["branch"] == 2
    # The branch alone computes what the mixture's branch 2 does inside the mixture.
    model, transform, _, _ = load_for_inference(mixture_run)
    frames, num_frames = whole.example_inputs(4, 30, seed=5)
    with torch.no_grad():
        inside = select_logits(model(transform(frames, num_frames), num_frames), 2).sigmoid()
    torch.testing.assert_close(branch.probabilities(frames, num_frames), inside)
    assert path.stat().st_size < (tmp_path / f"whole.{fmt}").stat().st_size / 2


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_video_level_model_matches_pytorch(tmp_path: Path, fmt: str) -> None:
    from nextvlad.models import InputTransform, create_model

    torch.manual_seed(0)
    serving = ServingModel(InputTransform(), create_model("video-moe", num_classes=25))
    _check_parity(serving, export(serving, tmp_path / f"video.{fmt}", format=fmt))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_smaller_files_run(frame_run: Path, tmp_path: Path, fmt: str) -> None:
    serving = _serving(frame_run)
    full = export(serving, tmp_path / f"fp32.{fmt}", format=fmt).stat().st_size
    half = export(serving, tmp_path / f"fp16.{fmt}", format=fmt, dtype="fp16")
    int8 = export(serving, tmp_path / f"int8.{fmt}", format=fmt, quantize="int8")
    assert half.stat().st_size < 0.6 * full
    # TorchScript keeps the VLAD layers' FCs in float32: in this tiny model (hidden size 16)
    # they hold nearly all the weights, in the paper's models a few percent.
    assert int8.stat().st_size < (0.4 if fmt == "onnx" else 1.0) * full
    assert parity(serving, load_exported(half)) < 1e-3
    assert parity(serving, load_exported(int8)) < 0.1
    assert load_exported(int8).metadata["quantize"] == "int8"
    with pytest.raises(UsageError, match="alternatives"):
        export(serving, tmp_path / "both", format=fmt, dtype="fp16", quantize="int8")


def _export_cli(run: Path, out: Path, *extra: str) -> int:
    return main(["export", "--checkpoint", str(run), "--out", str(out), *extra])


def test_export_cli_end_to_end(
    frame_run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    eval_data = str(data / "eval" / "*.tfrecord")
    assert _export_cli(frame_run, out, "--format", "onnx", "--json", "--eval-data", eval_data) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["size_bytes"] == out.stat().st_size
    assert result["budget_fraction"] == pytest.approx(out.stat().st_size / 1e9)
    assert result["parity_max_abs_diff"] < TOLERANCE
    assert result["eval"]["num_videos"] == 12
    assert abs(result["eval"]["gap_change"]) < 1e-4
    assert result["inputs"]["frames"] == {"dtype": "uint8", "shape": ["batch", "frames", 1152]}
    assert load_exported(out).metadata["preset"] == "nextvlad-8g-128k-2048h"

    ts = tmp_path / "model.pt"
    assert _export_cli(frame_run, ts, "--format", "torchscript", "--quantize", "int8") == 0
    text = capsys.readouterr().out
    assert "of the 2018 challenge's 1 GB budget" in text and "int8" in text
    assert "frames uint8 (batch, frames, 1152), num_frames int64 (batch,)" in text


def _rows(path: Path) -> dict[str, dict[int, float]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "VideoId,LabelConfidencePairs"
    rows = {}
    for line in lines[1:]:
        video, pairs = line.split(",")
        items = pairs.split()
        rows[video] = {int(c): float(s) for c, s in zip(items[::2], items[1::2], strict=True)}
    return rows


def test_predict_with_onnx_gives_the_checkpoints_rows(
    mixture_run: Path, data: Path, tmp_path: Path
) -> None:
    model = tmp_path / "branch.onnx"
    assert _export_cli(mixture_run, model, "--format", "onnx", "--branch", "1") == 0
    common = ["--data", str(data / "eval" / "*.tfrecord"), "--num-workers", "0", "--top-k", "5"]
    assert main(["predict", "--checkpoint", str(mixture_run), "--branch", "1", *common,
                 "--out", str(tmp_path / "ckpt.csv")]) == 0  # fmt: skip
    assert main(["predict", "--checkpoint", str(model), *common,
                 "--out", str(tmp_path / "onnx.csv")]) == 0  # fmt: skip
    ours, theirs = _rows(tmp_path / "ckpt.csv"), _rows(tmp_path / "onnx.csv")
    assert list(ours) == list(theirs) and len(ours) == 12
    for video, scores in ours.items():
        other = theirs[video]
        for c in scores.keys() & other.keys():
            assert abs(scores[c] - other[c]) <= 2e-6
        # Classes may swap places only where their scores tie to within the tolerance.
        for c in scores.keys() ^ other.keys():
            score = scores.get(c, other.get(c))
            assert score is not None
            assert abs(score - min(min(scores.values()), min(other.values()))) <= TOLERANCE


def test_usage_errors_exit_2(
    frame_run: Path, mixture_run: Path, data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "m.onnx"
    cases = [
        ([str(frame_run), "--format", "tflite"], "invalid choice: 'tflite'"),
        ([str(tmp_path / "missing"), "--format", "onnx"], "no such file or folder"),
        ([str(frame_run), "--format", "onnx", "--branch", "0"], "not a mixture"),
        ([str(mixture_run), "--format", "onnx", "--branch", "3"], "branches 0..2"),
        ([str(frame_run), "--format", "onnx", "--dtype", "fp16", "--quantize", "int8"],
         "alternatives"),
    ]  # fmt: skip
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["export", "--checkpoint", *args, "--out", str(out)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not out.exists()

    predict = ["predict", "--data", str(data / "eval" / "*.tfrecord"), "--out", str(tmp_path / "p")]
    with pytest.raises(SystemExit) as exit_info:
        main([*predict, "--checkpoint", str(tmp_path / "missing.onnx")])
    assert exit_info.value.code == 2 and "no such file" in capsys.readouterr().err
    assert _export_cli(frame_run, out, "--format", "onnx") == 0
    with pytest.raises(SystemExit) as exit_info:
        main([*predict, "--checkpoint", str(out), "--branch", "0"])
    assert exit_info.value.code == 2 and "export the branch" in capsys.readouterr().err


def test_foreign_or_broken_files_are_clear_errors(
    frame_run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="not a readable ONNX model"):
        load_exported(broken)
    predict = ["predict", "--data", str(data / "eval" / "*.tfrecord"), "--out", str(tmp_path / "p")]
    assert main([*predict, "--checkpoint", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "not a readable ONNX model" in err and "Traceback" not in err
    # Video-level data given to a frame-level export.
    model = tmp_path / "m.onnx"
    assert _export_cli(frame_run, model, "--format", "onnx") == 0
    veval = str(data / "veval" / "*.tfrecord")
    assert main([*predict[:1], "--data", veval, "--out", str(tmp_path / "p"),
                 "--checkpoint", str(model)]) == 1  # fmt: skip
    assert "video-level data but the model takes frame-level input" in capsys.readouterr().err
    # The same mistake in `export --eval-data` is found before anything is exported.
    other = tmp_path / "other.onnx"
    assert _export_cli(frame_run, other, "--format", "onnx", "--eval-data", veval) == 1
    assert "video-level data" in capsys.readouterr().err and not other.exists()
