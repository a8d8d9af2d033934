"""`nextvlad train`'s help and summary, the command list, `inspect --help`."""

from __future__ import annotations

import dataclasses

from nextvlad.training.options import TrainOptions
from tests.cli.conftest import EVAL_VIDEOS, TinyRun, one_line, run_cli


def test_train_prints_num_videos_as_an_integer(tiny_run: TinyRun) -> None:
    result = tiny_run.train_stdout
    assert isinstance(result["num_videos"], int) and result["num_videos"] == EVAL_VIDEOS
    assert 0.0 <= result["gap"] <= 1.0


def test_train_help_shows_the_defaults() -> None:
    code, out, _ = run_cli(["train", "--help"])
    assert code == 0
    text = one_line(out)
    for expected in (
        "passes over the training data (default: none, train until --max-steps)",
        "steps between evaluations (default 1000; 0: at the end only)",
        "steps between checkpoints (default 1000; one is also written at the end)",
        "seed of weights and data order (default 0)",
    ):
        assert expected in text
    for f in dataclasses.fields(TrainOptions):  # every flag is still there
        if f.metadata["flag"]:
            assert f.metadata["flag"] in text


def test_eval_and_predict_are_commands_of_their_own() -> None:
    code, out, _ = run_cli(["--help"])
    assert code == 0
    text = one_line(out)
    train = text.index("train train a model preset")
    assert train < text.index("eval evaluate a checkpoint") < text.index("predict write Kaggle")
    from nextvlad.cli import evaluate, predict

    assert evaluate._eval.__module__ == "nextvlad.cli.evaluate"
    assert predict._predict.__module__ == "nextvlad.cli.predict"


def test_inspect_help_has_a_description() -> None:
    code, out, _ = run_cli(["inspect", "--help"])
    assert code == 0
    assert "Read every record of the files and report what a run would see" in one_line(out)
