"""The options of a run (``nextvlad.training.options``): the resume command that a stopped run
prints parses back to the same options."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from nextvlad.cli import build_parser
from nextvlad.cli.train import train_options
from nextvlad.training.options import TrainOptions, resume_command


@pytest.mark.parametrize("folded", [True, False, None])
def test_resume_command_round_trips_through_the_parser(tmp_path: Path, folded: bool | None) -> None:
    """--folded, --no-folded and neither (the layer's rule) survive a resume."""
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
        folded=folded,
        deterministic=True,
        progress=False,
    )
    command = shlex.split(resume_command(options))
    assert command[:2] == ["nextvlad", "train"] and command[-1] == "--resume"
    parsed = train_options(build_parser().parse_args(command[1:]))
    assert parsed == TrainOptions(**{**options.to_dict(), "resume": True})
    assert resume_command(options, distributed=True).startswith("torchrun ... -m nextvlad train")
    assert os.fspath(tmp_path) in resume_command(options)
