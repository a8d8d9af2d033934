"""The run folder (``nextvlad.training.run_folder``): its layout, the leftovers of interrupted
saves, pruning, and the checks before the first step (writable, room for the checkpoints)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import nextvlad.training.run_folder as run_folder
from nextvlad.checkpoint import latest_checkpoint, list_checkpoints
from nextvlad.training.run_folder import (
    checkpoint_dir,
    last_good,
    prune_checkpoints,
    remove_partial_checkpoints,
    size_text,
)
from tests.training._runs import train


def _checkpoint(run: Path, step: int, *, complete: bool = True) -> Path:
    folder = checkpoint_dir(run, step)
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer.json").write_text("{}")
    return folder


def test_only_complete_step_folders_are_checkpoints(tmp_path: Path) -> None:
    assert list_checkpoints(tmp_path) == [] and latest_checkpoint(tmp_path) is None
    first, second = _checkpoint(tmp_path, 2), _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 12, complete=False)  # no trainer.json: not (yet) a checkpoint
    (tmp_path / "checkpoints" / ".step-00000014.tmp").mkdir()
    assert list_checkpoints(tmp_path) == [first, second]
    assert latest_checkpoint(tmp_path) == second  # whatever `latest` says
    assert second == tmp_path / "checkpoints" / "step-00000010"


def test_the_leftovers_of_interrupted_saves_are_removed_and_nothing_else(tmp_path: Path) -> None:
    kept = _checkpoint(tmp_path, 1)
    root = tmp_path / "checkpoints"
    (root / "latest").write_text(kept.name)
    (root / ".step-00000002.tmp").mkdir()
    (root / ".step-00000002.tmp" / "model.safetensors").write_bytes(b"half")
    (root / ".step-00000000.trash").mkdir()
    (root / ".latest.abc123.tmp").write_text("step-00000002")
    (root / "notes.txt").write_text("mine")
    remove_partial_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "notes.txt", "step-00000001"]


def test_pruning_keeps_the_newest(tmp_path: Path) -> None:
    for step in (3, 1, 4, 2):
        _checkpoint(tmp_path, step)
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    assert not list((tmp_path / "checkpoints").glob(".*"))  # the trash is gone too


def test_messages_name_the_last_good_checkpoint_or_say_there_is_none(tmp_path: Path) -> None:
    assert last_good(tmp_path, -1) == "no checkpoint was written yet"
    assert last_good(tmp_path, 20) == (
        f"the last good checkpoint is {tmp_path / 'checkpoints' / 'step-00000020'}"
    )
    assert [size_text(n) for n in (512, 4096, 1.5 * 2**30, 3 * 2**40)] == [
        "512 B",
        "4.0 KiB",
        "1.5 GiB",
        "3.0 TiB",
    ]


def test_too_little_free_space_is_refused_before_training(
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    usage = type("usage", (), {"total": 10**9, "used": 10**9 - 4096, "free": 4096})
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: usage)
    run = tmp_path / "run"
    assert train(tiny_data / "*.tfrecord", run, "--max-steps", "2") == 1
    err = capsys.readouterr().err
    assert f"nextvlad train: error: not enough free space in {run}: 4.0 KiB free" in err
    assert "the newest 3 kept and one more while writing" in err
    assert not (run / "run.json").exists() and not list_checkpoints(run)


def test_an_unwritable_run_folder_is_refused_before_training(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run folder below a file is a usage error (exit 2, as the same --out in every command),
    said before any step."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        train(tiny_data / "*.tfrecord", blocker / "run", "--max-steps", "2")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"nextvlad train: error: --out {blocker / 'run'}: {blocker} is a file" in err
    assert "Traceback" not in err and "step" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_run_folder_is_refused_before_training(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o500)
    try:
        assert train(tiny_data / "*.tfrecord", run, "--max-steps", "2") == 1
    finally:
        run.chmod(0o700)
    assert "cannot write to the run folder" in capsys.readouterr().err


def _complete_copy(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "trainer.json"):
        (target / name).write_text(f"{name} of {source.name}")


def test_a_crash_between_the_renames_of_a_resave_keeps_the_new_checkpoint(tmp_path: Path) -> None:
    """Re-saving step N renames the old ``step-N`` to ``.step-N.trash``, then the complete
    ``.step-N.tmp`` to ``step-N``: killed between the two, the next start finds the new one."""
    _checkpoint(tmp_path, 1)
    root = tmp_path / "checkpoints"
    os.rename(root / "step-00000001", root / ".step-00000001.trash")
    _complete_copy(root / ".step-00000001.tmp", root / ".step-00000001.tmp")
    remove_partial_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001"]
    assert (root / "step-00000001" / "trainer.json").read_text() == (
        "trainer.json of .step-00000001.tmp"
    )


def test_a_resave_killed_after_both_renames_keeps_the_new_checkpoint(tmp_path: Path) -> None:
    new = _checkpoint(tmp_path, 1)
    (tmp_path / "checkpoints" / ".step-00000001.trash").mkdir()  # the old one, not yet deleted
    remove_partial_checkpoints(tmp_path)
    assert list_checkpoints(tmp_path) == [new]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000001"]


def test_resume_after_a_crash_between_the_renames_of_a_resave(
    one_step_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`train --resume` in that state resumes from step 1 (it used to delete both folders and
    start from scratch)."""
    import logging
    import shutil

    run = tmp_path / "run"
    shutil.copytree(one_step_run, run)
    root = run / "checkpoints"
    shutil.copytree(root / "step-00000001", root / ".step-00000001.tmp")
    os.rename(root / "step-00000001", root / ".step-00000001.trash")
    data = json.loads((run / "run.json").read_text())["train_data"][0]
    with caplog.at_level(logging.INFO):
        assert train(data, run, "--max-steps", "2", "--resume") == 0
    assert "resuming from" in caplog.text and "(step 1)" in caplog.text
    assert [p.name for p in list_checkpoints(run)] == ["step-00000001", "step-00000002"]
