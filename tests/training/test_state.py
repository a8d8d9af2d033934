"""Training checkpoints (``nextvlad.training.state``): what they hold comes back; a full disk
keeps the previous one; hostile files (pickles, JSON of the wrong types) are refused without
unpickling anything; and SIGKILL at any moment, mid-step or mid-write, leaves only complete
checkpoints, from which ``--resume`` ends with the weights of an uninterrupted run."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError

import nextvlad.training.state as state
from nextvlad.checkpoint import latest_checkpoint, load_for_inference, load_model
from nextvlad.cli import main
from nextvlad.errors import CheckpointError
from nextvlad.models import InputTransform, build_model, get_config
from nextvlad.training.optim import adam
from nextvlad.training.state import (
    TrainerState,
    TrainingParts,
    restore_training_state,
    save_training_checkpoint,
)
from tests.training._runs import (
    FINAL,
    assert_checkpoints_sound,
    assert_same_state,
    newest_step,
    process_env,
    train,
    train_command,
    wait_for,
)

# Checkpoint round trip.


def _tiny_model() -> tuple[Any, torch.nn.Module, torch.optim.Optimizer]:
    config = get_config("video-logistic", num_classes=5)
    model = build_model(config)
    return config, model, adam(list(model.parameters()), 1e-3, 1e-8)


def test_a_checkpoint_gives_back_weights_adam_rng_and_position(tmp_path: Path) -> None:
    config, model, optimizer = _tiny_model()
    for _ in range(2):  # Adam's moments and step count are not zero any more
        loss = model(torch.randn(3, config.feature_dim)).logits.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trainer = TrainerState(step=7, epoch=1, batches_in_epoch=2, examples_seen=21)
    transform = InputTransform(config.stream_dims, dequantize=False)
    torch.manual_seed(3)
    parts = TrainingParts(model, config, transform, optimizer, trainer, "video-logistic")
    saved = save_training_checkpoint(tmp_path, parts)
    expected_draw = torch.rand(4)
    assert saved == tmp_path / "checkpoints" / "step-00000007"
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step-00000007"

    _, fresh, fresh_optimizer = _tiny_model()
    torch.manual_seed(99)
    assert restore_training_state(saved, fresh, fresh_optimizer) == trainer
    assert torch.equal(torch.rand(4), expected_draw)  # the RNG continues where it was
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    ours, theirs = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert ours.keys() == theirs.keys() and ours
    for index in ours:
        for name, value in ours[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(theirs[index][name]))


def test_old_checkpoints_are_pruned_to_keep(tmp_path: Path) -> None:
    config, model, optimizer = _tiny_model()
    transform = InputTransform(config.stream_dims, dequantize=False)
    for step in (1, 2, 3, 4):
        parts = TrainingParts(
            model, config, transform, optimizer, TrainerState(step=step), "video-logistic"
        )
        save_training_checkpoint(tmp_path, parts, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "latest",
        "step-00000003",
        "step-00000004",
    ]


def test_trainer_state_defaults_the_counters_added_later_and_checks_the_rest() -> None:
    where = Path("trainer.json")
    old = {"step": 5, "epoch": 1, "batches_in_epoch": 2, "examples_seen": 20}
    assert TrainerState.from_json(old, where) == TrainerState(5, 1, 2, 20, 0, 0)
    with pytest.raises(CheckpointError, match=r"trainer\.step must be a non-negative integer"):
        TrainerState.from_json({**old, "step": -1}, where)
    with pytest.raises(CheckpointError, match=r"trainer\.epoch must be"):
        TrainerState.from_json({"step": 5}, where)


# A full disk.

FULL_DISK = "No space left on device"
# safetensors reports a full disk as a SafetensorError of its own, Python as an OSError.
FULL_DISK_ERRORS = [
    lambda path: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)),
    lambda path: SafetensorError(f"Error while serializing: I/O error: {FULL_DISK} (os error 28)"),
]


@pytest.mark.parametrize("error", FULL_DISK_ERRORS, ids=["oserror", "safetensorerror"])
def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Any,
) -> None:
    real = state.save_tensors
    calls = 0

    def full_disk(tensors: dict[str, torch.Tensor], path: Path, **metadata: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:  # the second checkpoint's optimizer state: half written, then ENOSPC
            path.write_bytes(b"\x00" * 100)
            raise error(path)
        real(tensors, path, **metadata)

    monkeypatch.setattr(state, "save_tensors", full_disk)
    run = tmp_path / "run"
    train_glob = tiny_data / "*.tfrecord"
    assert train(train_glob, run, "--max-steps", "6", "--checkpoint-every", "2") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    previous = run / "checkpoints" / "step-00000002"
    [line] = [x for x in err.splitlines() if x.startswith("nextvlad train: error: ")]
    assert line.startswith(
        f"nextvlad train: error: could not write checkpoint {run / 'checkpoints' / 'step-00000004'}"
    )
    assert FULL_DISK in line and line.endswith(
        f"; the last complete checkpoint, {previous}, is untouched"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000002"]
    load_model(previous)
    monkeypatch.setattr(state, "save_tensors", real)  # space again: resume and finish
    assert train(train_glob, run, "--max-steps", "6", "--resume") == 0
    assert latest_checkpoint(run) == run / "checkpoints" / "step-00000006"


# Hostile files.


def test_eval_refuses_weights_that_do_not_fit_their_config(
    tiny_data: Path, one_step_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(one_step_run / "checkpoints" / "step-00000001", copy)
    document = json.loads((copy / "config.json").read_text())
    document["model"]["hidden_size"] = 4096  # allocated on the meta device only: refused first
    (copy / "config.json").write_text(json.dumps(document))
    code = main(["eval", "--checkpoint", str(copy), "--data", str(tiny_data / "*.tfrecord")])
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
    one_step_run: Path, tmp_path: Path, no_unpickling: None, name: str, document: Any
) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(one_step_run / "checkpoints" / "step-00000001", copy)
    (copy / name).write_text(json.dumps(document))
    with pytest.raises(CheckpointError):
        _load_everything(copy)


@pytest.mark.parametrize(
    "name", ["model.safetensors", "optimizer.safetensors", "input_transform.safetensors"]
)
def test_a_pickle_in_place_of_a_safetensors_file_is_refused_unopened(
    one_step_run: Path, tmp_path: Path, no_unpickling: None, name: str
) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(one_step_run / "checkpoints" / "step-00000001", copy)
    marker = tmp_path / "pwned"
    (copy / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="unreadable"):
        _load_everything(copy)
    assert not marker.exists()


def test_the_cli_refuses_a_pickled_checkpoint_in_one_line(
    tiny_data: Path,
    one_step_run: Path,
    tmp_path: Path,
    no_unpickling: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(one_step_run, copy)
    marker = tmp_path / "pwned"
    weights = copy / "checkpoints" / "step-00000001" / "model.safetensors"
    weights.write_bytes(pickle.dumps(_Payload(marker)))
    data = str(tiny_data / "*.tfrecord")
    assert main(["eval", "--checkpoint", str(copy), "--data", data]) == 1
    assert train(data, copy, "--resume", "--max-steps", "2") == 1
    err = capsys.readouterr().err
    assert err.count(f"error: {weights}: unreadable weights") == 2 and "Traceback" not in err
    assert not marker.exists()


def _load_everything(folder: Path) -> None:
    """What `eval` and `train --resume` read from a checkpoint folder."""
    _, _, config, _ = load_for_inference(folder)
    fresh = build_model(config)
    restore_training_state(folder, fresh, adam(list(fresh.parameters()), 1e-3, 1e-8))


# SIGKILL at any moment.


@pytest.mark.slow  # several training processes
def test_sigkill_anywhere_then_resume_ends_with_the_uninterrupted_weights(
    tiny_data: Path, uninterrupted: tuple[Path, float], tmp_path: Path
) -> None:
    """Kills at seeded random moments after a checkpoint, and while the writer (slowed down
    from the test's side) has its temporary folder: after every kill each checkpoint folder
    is complete and loadable, and the resumed run ends as the uninterrupted one (CPU,
    --deterministic)."""
    reference_run, interval = uninterrupted
    rng = random.Random(20261125)
    run = tmp_path / "run"
    final_step = int(FINAL.split("-")[1])
    outcomes = []
    for mode in ("step", "checkpoint", "step", "checkpoint", "step"):
        if newest_step(run) == final_step:
            break
        start_step = newest_step(run)
        proc = subprocess.Popen(
            train_command(tiny_data, run, "--resume", pause=0.4 if mode == "checkpoint" else None),
            env=process_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if mode == "checkpoint":  # while the temporary folder is being written
                landed = wait_for(lambda: any(run.glob("checkpoints/.step-*.tmp")), proc, 180)
            else:  # after the next checkpoint, at a random moment before the one after it
                progressed = wait_for(lambda: newest_step(run) > start_step, proc, 180)  # noqa: B023
                time.sleep(rng.uniform(0.0, 0.9) * interval)
                landed = progressed and proc.poll() is None
            before = sorted(p.name for p in run.glob("checkpoints/*"))
            proc.kill()
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr = proc.stderr.read() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
        assert "Traceback" not in stderr, stderr
        after = assert_checkpoints_sound(run)
        outcomes.append((mode, landed, before, after))
        if mode == "checkpoint" and landed:
            assert any(name.endswith(".tmp") for name in before)  # killed mid-write
    print(f"\n{interval:.2f} s between checkpoints; kills:")
    for mode, landed, before, after in outcomes:
        print(f"  {mode:<10} landed {landed!s:<5} before {before} after {after}")
    assert sum(landed for mode, landed, _, _ in outcomes if mode == "checkpoint") >= 1
    assert sum(landed for mode, landed, _, _ in outcomes if mode == "step") >= 2
    finish = subprocess.run(
        train_command(tiny_data, run, "--resume"),
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finish.returncode == 0, finish.stderr
    assert not list(run.glob("checkpoints/.*"))  # the killed writes' leftovers are gone
    assert_checkpoints_sound(run)
    assert_same_state(run / "checkpoints" / FINAL, reference_run / "checkpoints" / FINAL)
