"""`nextvlad eval`: the checkpoints it finds, and what it says when there is none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import EVAL_VIDEOS, TinyRun, one_line, run_cli


def _eval(checkpoint: str | Path, data: str, *extra: str) -> tuple[int, str, str]:
    return run_cli(
        ["eval", "--checkpoint", str(checkpoint), "--data", data, "--num-workers", "0", *extra]
    )


@pytest.mark.parametrize(
    "where",
    [
        "",
        "checkpoints",
        "checkpoints/latest",
        "checkpoints/step-00000002",
        "checkpoints/step-00000002/model.safetensors",
    ],
)
def test_eval_finds_the_checkpoint(tiny_run: TinyRun, where: str) -> None:
    code, out, err = _eval(tiny_run.run / where, tiny_run.frames, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["num_videos"] == EVAL_VIDEOS and isinstance(result["num_videos"], int)
    assert 0.0 <= result["gap"] <= 1.0


def test_eval_follows_latest_to_the_step_it_names(tiny_run: TinyRun, tmp_path: Path) -> None:
    # A copy of the run whose `latest` names an older step than the newest one.
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for step in (1, 2):
        folder = checkpoints / f"step-{step:08d}"
        folder.mkdir()
        for f in tiny_run.step.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
    (checkpoints / "step-00000001" / "model.safetensors").write_bytes(b"broken")
    (checkpoints / "latest").write_text("step-00000001")
    code, _, err = _eval(checkpoints / "latest", tiny_run.frames)
    assert code == 1 and str(checkpoints / "step-00000001" / "model.safetensors") in err
    assert _eval(checkpoints.parent, tiny_run.frames)[0] == 0  # the run: its newest


def test_eval_on_data_of_the_other_level_names_checkpoint_and_data(tiny_run: TinyRun) -> None:
    code, _, err = _eval(tiny_run.run, tiny_run.videos)
    assert code == 1
    message = one_line(err)
    assert f"the data ({tiny_run.videos}) is video-level data" in message
    assert f"the checkpoint {tiny_run.step} holds a frame-level model" in message
    assert "give it frame-level data, or give a model of video-level input" in message
    assert "preset" not in message  # eval takes no preset


def test_eval_without_a_checkpoint_says_what_it_takes(tmp_path: Path) -> None:
    code, _, err = _eval(tmp_path, "unused-*.tfrecord")
    assert code == 1 and "Traceback" not in err
    message = one_line(err)
    assert f"{tmp_path}: no nextvlad checkpoint there" in message
    for accepted in ("RUN/checkpoints/latest", "RUN/checkpoints/step-N", "model.safetensors"):
        assert accepted in message
    code, _, err = _eval(tmp_path / "missing", "unused-*.tfrecord")
    assert code == 2 and "no such checkpoint or run folder" in err and "RUN/checkpoints" in err


@pytest.mark.parametrize("name", ["model.onnx", "model.pt"])
def test_eval_refuses_an_exported_model_and_says_what_runs_one(tmp_path: Path, name: str) -> None:
    exported = tmp_path / name
    exported.write_bytes(b"not read")
    code, _, err = _eval(exported, "unused-*.tfrecord")
    assert code == 2
    message = one_line(err)
    assert f"--checkpoint {exported}: an exported" in message
    assert "nextvlad export --eval-data" in message and "nextvlad predict" in message
