"""Refusing a checkpoint of another model (``nextvlad.training.config_diff``): the message
says what differs, and the refused run folder is left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nextvlad.models import get_config
from nextvlad.training.config_diff import differences, flatten
from tests.training._runs import TINY, train


def test_flatten_names_nested_fields_by_path() -> None:
    nested = {"a": 1, "streams": [{"k": 4}, {"k": 2, "g": [8]}], "b": {"c": None}}
    assert flatten(nested) == {
        "a": 1,
        "streams[0].k": 4,
        "streams[1].k": 2,
        "streams[1].g[0]": 8,
        "b.c": None,
    }


def test_differences_lists_the_fields_that_differ_in_order() -> None:
    a = get_config("nextvlad-8g-128k-2048h", num_clusters=4, num_classes=25)
    b = get_config("nextvlad-8g-128k-2048h", num_clusters=8, num_classes=25)
    assert differences(a, b) == ["streams[0].num_clusters", "streams[1].num_clusters"]
    assert differences(a, a) == []
    other = differences(a, get_config("meanpool-256h", num_classes=25))
    assert "aggregator" in " ".join(other)


def test_resume_with_another_shape_says_what_differs(
    tiny_data: Path, one_step_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(one_step_run, copy)
    other = [*TINY[:1], "num_clusters=8", *TINY[2:]]
    glob = tiny_data / "*.tfrecord"
    assert train(glob, copy, *other, "--resume", "--max-steps", "2", tiny=False) == 1
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
    tiny_data: Path, one_step_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(one_step_run, copy)
    code = train(
        tiny_data / "*.tfrecord",
        copy,
        "--set",
        "num_classes=25",
        "--resume",
        "--max-steps",
        "2",
        preset="meanpool-256h",
        tiny=False,
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "does not fit this run: the checkpoint is nextvlad-8g-128k-2048h (" in err
    assert "this run asks for meanpool-256h (" in err and "aggregator mean" in err
