"""`nextvlad predict`: where it writes, the vocabulary, and what it says of exported files."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from tests.cli.conftest import EVAL_VIDEOS, NUM_CLASSES, TinyRun, one_line, run_cli


def _predict(checkpoint: str | Path, data: str, out: Path, *extra: str) -> tuple[int, str, str]:
    argv = ["predict", "--checkpoint", str(checkpoint), "--data", data, "--out", str(out)]
    return run_cli([*argv, "--num-workers", "0", *extra])


def test_predict_makes_missing_folders_of_out(tiny_run: TinyRun, tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "submission.csv"
    code, _, err = _predict(tiny_run.run / "checkpoints" / "latest", tiny_run.frames, out)
    assert code == 0, err
    lines = out.read_text().splitlines()
    assert lines[0] == "VideoId,LabelConfidencePairs" and len(lines) == EVAL_VIDEOS + 1
    assert [p.name for p in out.parent.iterdir()] == ["submission.csv"]  # no temporary left


def test_predict_out_under_a_file_is_a_usage_error(tiny_run: TinyRun, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    code, _, err = _predict(tiny_run.run, tiny_run.frames, tmp_path / "a-file" / "p.csv")
    assert code == 2 and f"{tmp_path / 'a-file'} is a file, not a folder" in err
    code, _, err = _predict(tiny_run.run, tiny_run.frames, tmp_path)
    assert code == 2 and "is a folder; give a file name" in err


def test_predict_output_follows_the_umask(tiny_run: TinyRun, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        assert _predict(tiny_run.step, tiny_run.frames, tmp_path / "p.csv")[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p.csv").stat().st_mode) == 0o640


def _vocabulary(path: Path, classes: range) -> Path:
    rows = [f"{c},1,/m/{c},class {c}" for c in classes]
    path.write_text("\n".join(["Index,TrainVideoCount,KnowledgeGraphId,Name", *rows]) + "\n")
    return path


def test_predict_warns_of_classes_without_a_name(tiny_run: TinyRun, tmp_path: Path) -> None:
    vocabulary = _vocabulary(tmp_path / "vocabulary.csv", range(NUM_CLASSES - 7))
    out = tmp_path / "sub.csv"
    code, _, err = _predict(tiny_run.run, tiny_run.frames, out, "--vocabulary", str(vocabulary))
    assert code == 0, err
    message = one_line(err)
    assert f"--vocabulary {vocabulary} has no name for 7 of the model's {NUM_CLASSES}" in message
    assert "(18, 19, 20, 21, 22, ...)" in message
    named = (tmp_path / "sub.names.csv").read_text().splitlines()
    assert named[0] == "VideoId,Label,Name,Score" and len(named) == 1 + EVAL_VIDEOS * 20
    # A complete vocabulary: no warning.
    _vocabulary(vocabulary, range(NUM_CLASSES))
    code, _, err = _predict(tiny_run.run, tiny_run.frames, out, "--vocabulary", str(vocabulary))
    assert code == 0 and "warning" not in err


def test_predict_help_names_the_names_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["predict", "--help"])
    assert code == 0
    assert "to OUT with .names.csv for its suffix (sub.csv -> sub.names.csv)" in one_line(out)


def test_predict_on_data_of_the_other_level_names_the_checkpoint(
    tiny_run: TinyRun, tmp_path: Path
) -> None:
    code, _, err = _predict(tiny_run.run, tiny_run.videos, tmp_path / "p.csv")
    assert code == 1 and not (tmp_path / "p.csv").exists()
    message = one_line(err)
    assert f"the data ({tiny_run.videos}) is video-level data" in message
    assert f"the checkpoint {tiny_run.step} holds a frame-level model" in message


@pytest.mark.parametrize("name", ["model.pt", "model.bin"])
def test_predict_says_how_to_run_a_torchscript_export(tmp_path: Path, name: str) -> None:
    archive = tmp_path / name
    with zipfile.ZipFile(archive, "w") as f:  # what torch.jit.save writes: a zip archive
        f.writestr("model/data.pkl", b"")
    code, _, err = _predict(archive, "unused-*.tfrecord", tmp_path / "p.csv")
    assert code == 2
    message = one_line(err)
    assert f"--checkpoint {archive}: a TorchScript export" in message
    assert "which predict does not run" in message
    assert "an .onnx file from `nextvlad export --format onnx`" in message
    assert "nextvlad.export.load_exported" in message


def test_predict_without_a_checkpoint_mentions_onnx(tmp_path: Path) -> None:
    code, _, err = _predict(tmp_path, "unused-*.tfrecord", tmp_path / "p.csv")
    assert code == 1
    message = one_line(err)
    assert f"{tmp_path}: no nextvlad checkpoint there" in message
    assert "RUN/checkpoints/latest" in message and "an .onnx file from `nextvlad export" in message
