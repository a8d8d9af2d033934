"""``--resume`` with other options: ``run.json`` keeps the options the run was started with,
each resume is recorded with what it changed (``resumes.jsonl``), and every resume that
changes the data order warns, not only the first."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.training._runs import train


def test_resume_with_another_batch_size_keeps_run_json_and_records_it(
    tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    glob, run = tiny_data / "*.tfrecord", tmp_path / "run"
    assert train(glob, run, "--max-steps", "1") == 0  # batch 4
    original = (run / "run.json").read_text()
    for steps in ("2", "3"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="nextvlad.train"):
            assert train(glob, run, "--max-steps", steps, "--resume", "--batch-size", "6") == 0
        assert "--resume with other batch_size than the run had" in caplog.text
    assert (run / "run.json").read_text() == original
    assert json.loads(original)["batch_size"] == 4
    history = [json.loads(x) for x in (run / "resumes.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2]
    assert history[0]["changed"] == {"max_steps": [1, 2], "batch_size": [4, 6]}
    assert history[1]["changed"] == {"max_steps": [1, 3], "batch_size": [4, 6]}
    assert all(isinstance(h["time"], str) for h in history)


def test_a_resume_with_the_same_options_is_recorded_with_no_change(
    tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    glob, run = tiny_data / "*.tfrecord", tmp_path / "run"
    assert train(glob, run, "--max-steps", "1") == 0
    with caplog.at_level(logging.INFO, logger="nextvlad.train"):
        assert train(glob, run, "--max-steps", "1", "--resume") == 0
    assert "--resume with other" not in caplog.text
    [record] = [json.loads(x) for x in (run / "resumes.jsonl").read_text().splitlines()]
    assert (record["step"], record["changed"]) == (1, {})
