"""`nextvlad export` end to end, and `nextvlad predict` on an exported ONNX file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nextvlad.cli import main
from nextvlad.export import load_exported
from tests.export.conftest import TOLERANCE, export_cli

pytest.importorskip("onnxruntime")


def test_export_cli_end_to_end(
    frame_run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    eval_data = str(data / "eval" / "*.tfrecord")
    assert export_cli(frame_run, out, "--format", "onnx", "--json", "--eval-data", eval_data) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["size_bytes"] == out.stat().st_size
    assert result["budget_fraction"] == pytest.approx(out.stat().st_size / 1e9)
    assert result["parity_max_abs_diff"] < TOLERANCE
    assert result["onnx_exporter"] == "dynamo"
    assert result["eval"]["num_videos"] == 12
    assert abs(result["eval"]["gap_change"]) < 1e-4
    assert result["inputs"]["frames"] == {"dtype": "uint8", "shape": ["batch", "frames", 1152]}
    assert load_exported(out).metadata["preset"] == "nextvlad-8g-128k-2048h"

    legacy = tmp_path / "legacy.onnx"
    assert export_cli(frame_run, legacy, "--format", "onnx", "--legacy-onnx") == 0
    text = capsys.readouterr().out
    assert "(onnx, TorchScript-based exporter, float32 weights)" in text
    assert load_exported(legacy).metadata["onnx_exporter"] == "torchscript"

    ts = tmp_path / "model.pt"
    assert export_cli(frame_run, ts, "--format", "torchscript", "--quantize", "int8") == 0
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
    assert export_cli(mixture_run, model, "--format", "onnx", "--branch", "1") == 0
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
        ([str(frame_run), "--format", "torchscript", "--legacy-onnx"], "--format onnx only"),
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
    assert export_cli(frame_run, out, "--format", "onnx") == 0
    with pytest.raises(SystemExit) as exit_info:
        main([*predict, "--checkpoint", str(out), "--branch", "0"])
    assert exit_info.value.code == 2 and "export the branch" in capsys.readouterr().err


def test_broken_files_and_wrong_data_are_clear_errors(
    frame_run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    predict = ["predict", "--data", str(data / "eval" / "*.tfrecord"), "--out", str(tmp_path / "p")]
    assert main([*predict, "--checkpoint", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "not a readable ONNX model" in err and "Traceback" not in err
    # Video-level data given to a frame-level export.
    model = tmp_path / "m.onnx"
    assert export_cli(frame_run, model, "--format", "onnx") == 0
    veval = str(data / "veval" / "*.tfrecord")
    assert main([*predict[:1], "--data", veval, "--out", str(tmp_path / "p"),
                 "--checkpoint", str(model)]) == 1  # fmt: skip
    assert "video-level data but the model takes frame-level input" in capsys.readouterr().err
    # The same mistake in `export --eval-data` is found before anything is exported.
    other = tmp_path / "other.onnx"
    assert export_cli(frame_run, other, "--format", "onnx", "--eval-data", veval) == 1
    assert "video-level data" in capsys.readouterr().err and not other.exists()
