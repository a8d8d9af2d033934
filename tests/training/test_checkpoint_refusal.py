"""Checkpoints that must be refused: another preset or shape (the message says what differs),
hostile files (pickles, JSON of the wrong types). Loading never unpickles anything and never
runs code from the checkpoint: a pickle whose loading would create a file is refused, and the
file never appears."""

from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from nextvlad.cli import build_parser, main
from nextvlad.cli.train import train_options
from nextvlad.data import write_synthetic
from nextvlad.data.synth import SynthConfig
from nextvlad.errors import CheckpointError
from nextvlad.models import build_model
from nextvlad.training.optim import adam
from nextvlad.training.options import TrainOptions, resume_command
from nextvlad.training.state import load_for_inference, restore_training_state

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=25"]
TINY += ["--set", "expansion=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("refusal")
    config = SynthConfig(num_classes=25, min_frames=8, max_frames=16, min_run=1, max_run=3)
    write_synthetic(root, videos=8, shards=1, num_classes=25, seed=1, config=config)
    return root


def _train(data: Path, run: Path, *extra: str, preset: str = "nextvlad-8g-128k-2048h") -> int:
    return main(
        [
            "train",
            "--preset",
            preset,
            "--train-data",
            str(data / "*.tfrecord"),
            "--out",
            str(run),
            "--batch-size",
            "4",
            "--max-steps",
            "1",
            "--num-workers",
            "0",
            "--eigenvals",
            "none",
            "--no-progress",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    assert _train(data, run, *TINY) == 0
    return run


def test_resume_with_another_shape_says_what_differs(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    other = [*TINY[:1], "num_clusters=8", *TINY[2:]]
    assert _train(data, copy, *other, "--resume", "--max-steps", "2") == 1
    err = capsys.readouterr().err
    checkpoint = copy / "checkpoints" / "step-00000001"
    assert (
        f"nextvlad train: error: {checkpoint} does not fit this run: the checkpoint is "
        "nextvlad-8g-128k-2048h (streams[0].num_clusters 4, streams[1].num_clusters 2), this "
        "run asks for nextvlad-8g-128k-2048h (streams[0].num_clusters 8, streams[1]."
        "num_clusters 4); resume with the --preset and --set options" in err
    )
    # The refused resume left the run as it was: run.json still has the original options.
    assert json.loads((copy / "run.json").read_text())["model_overrides"]["num_clusters"] == 4


def test_resume_with_another_preset_names_both(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    code = _train(
        data,
        copy,
        "--set",
        "num_classes=25",
        "--resume",
        "--max-steps",
        "2",
        preset="meanpool-256h",
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "does not fit this run: the checkpoint is nextvlad-8g-128k-2048h (" in err
    assert "this run asks for meanpool-256h (" in err and "aggregator mean" in err


def test_eval_refuses_weights_that_do_not_fit_their_config(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(run / "checkpoints" / "step-00000001", copy)
    document = json.loads((copy / "config.json").read_text())
    document["model"]["hidden_size"] = 4096  # allocated on the meta device only: refused first
    (copy / "config.json").write_text(json.dumps(document))
    code = main(["eval", "--checkpoint", str(copy), "--data", str(data / "*.tfrecord")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{copy / 'model.safetensors'} does not fit the model: " in err
    assert "gating.bn.running_mean: (2,) vs model (512,)" in err and "Traceback" not in err


class _Payload:
    """Unpickling this creates a file: proof, if the file appears, that something unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "unpickled!"))


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("something tried to unpickle")

    for module, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (torch, "load"),
    ]:
        monkeypatch.setattr(module, name, refuse)


HOSTILE_JSON: list[tuple[str, Any]] = [
    ("config.json", {"format": "nextvlad-model", "model": "__import__('os').system('x')"}),
    ("config.json", {"format": "nextvlad-model", "model": [1, 2]}),
    ("config.json", {"format": "nextvlad-model", "model": {"family": "frame", "streams": 7}}),
    ("config.json", {"format": "nextvlad-model", "model": {"family": "mixture", "branch": 3}}),
    ("config.json", {"format": "nextvlad-model", "model": {"family": "video", "num_classes": "9"}}),
    ("config.json", ["not", "an", "object"]),
    ("trainer.json", {"trainer": {"step": "5"}, "optimizer": {}}),
    ("trainer.json", {"trainer": [], "optimizer": {}}),
    ("trainer.json", {"trainer": {"step": 1, "epoch": 0, "batches_in_epoch": 1}, "optimizer": 3}),
    ("trainer.json", "just a string"),
]


@pytest.mark.parametrize(("name", "document"), HOSTILE_JSON)
def test_json_of_the_wrong_types_is_refused(
    run: Path, tmp_path: Path, no_unpickling: None, name: str, document: Any
) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(run / "checkpoints" / "step-00000001", copy)
    (copy / name).write_text(json.dumps(document))
    with pytest.raises(CheckpointError):
        _load_everything(copy)


@pytest.mark.parametrize(
    "name", ["model.safetensors", "optimizer.safetensors", "input_transform.safetensors"]
)
def test_a_pickle_in_place_of_a_safetensors_file_is_refused_unopened(
    run: Path, tmp_path: Path, no_unpickling: None, name: str
) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(run / "checkpoints" / "step-00000001", copy)
    marker = tmp_path / "pwned"
    (copy / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="unreadable"):
        _load_everything(copy)
    assert not marker.exists()


def test_the_cli_refuses_a_pickled_checkpoint_in_one_line(
    data: Path, run: Path, tmp_path: Path, no_unpickling: None, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    marker = tmp_path / "pwned"
    weights = copy / "checkpoints" / "step-00000001" / "model.safetensors"
    weights.write_bytes(pickle.dumps(_Payload(marker)))
    assert main(["eval", "--checkpoint", str(copy), "--data", str(data / "*.tfrecord")]) == 1
    assert _train(data, copy, *TINY, "--resume", "--max-steps", "2") == 1
    err = capsys.readouterr().err
    assert err.count(f"error: {weights}: unreadable weights") == 2 and "Traceback" not in err
    assert not marker.exists()


def _load_everything(folder: Path) -> None:
    """What `eval` and `train --resume` read from a checkpoint folder."""
    _, _, config, _ = load_for_inference(folder)
    fresh = build_model(config)
    restore_training_state(folder, fresh, adam(list(fresh.parameters()), 1e-3, 1e-8))


def test_resume_command_round_trips_through_the_parser(tmp_path: Path) -> None:
    options = TrainOptions(
        preset="mix3-nextvlad-8g-112k-2048h",
        train_data=["data/train*.tfrecord", "data/with space/*.tfrecord"],
        eval_data=["val.tfrecord"],
        out=str(tmp_path / "run"),
        model_overrides={"num_clusters": 8, "dropout": 0.25},
        eigenvals="none",
        batch_size=7,
        learning_rate=3e-4,
        lr_decay=0.9,
        clip_norm=0.0,
        skip_nonfinite=True,
        temperature=2.5,
        epochs=2,
        max_steps=100,
        eval_every=0,
        num_workers=0,
        shuffle_buffer=16,
        skip_corrupt=True,
        seed=11,
        device="cpu",
        precision="bf16",
        folded=True,
        deterministic=True,
        progress=False,
    )
    command = shlex.split(resume_command(options))
    assert command[:2] == ["nextvlad", "train"] and command[-1] == "--resume"
    parsed = train_options(build_parser().parse_args(command[1:]))
    assert parsed == TrainOptions(**{**options.to_dict(), "resume": True})
    assert resume_command(options, distributed=True).startswith("torchrun ... -m nextvlad train")
    assert os.fspath(tmp_path) in resume_command(options)
