"""The learning-rate staircase: TF's ``exponential_decay(lr, examples, decay_examples, decay,
staircase=True)`` over the global examples count, as the original's
``global_step * batch_size * num_towers``.

lr = base * decay ** floor(examples / decay_examples), where ``examples`` counts every example
trained on before the step, over all processes. Checked at the exact counts where it steps
(one example before, at), through the step that sets the optimizer's rate, through the loop
that counts the examples, and under torchrun, where each process sees a part of each global
batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nextvlad.cli import main
from nextvlad.data import Batch, write_synthetic
from nextvlad.models import InputTransform, create_model
from nextvlad.training.optim import adam
from nextvlad.training.step import Recipe, TrainStep

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=5"]
TINY += ["--set", "expansion=1"]
BASE, DECAY, EVERY = 2e-4, 0.5, 16  # the run's schedule: halve every 16 examples


def _staircase(
    examples: int, base: float = BASE, decay: float = DECAY, every: int = EVERY
) -> float:
    return float(base * decay ** (examples // every))


@pytest.mark.parametrize(
    ("base", "decay", "every"),
    [(2e-4, 0.8, 2_000_000), (2e-4, 0.9, 2_500_000), (1e-3, 0.5, 80)],
    ids=["paper", "final-submission", "small"],
)
def test_the_rate_steps_exactly_at_each_multiple_of_the_decay_examples(
    base: float, decay: float, every: int
) -> None:
    recipe = Recipe(learning_rate=base, lr_decay=decay, lr_decay_examples=every)
    assert recipe.learning_rate_at(0) == base
    for k in range(1, 6):
        before, at = recipe.learning_rate_at(k * every - 1), recipe.learning_rate_at(k * every)
        assert before == pytest.approx(base * decay ** (k - 1), rel=1e-12)
        assert at == pytest.approx(base * decay**k, rel=1e-12)
        assert recipe.learning_rate_at(k * every + every - 1) == at  # flat until the next step
    # The paper's numbers: 1.6e-4 from the 2,000,000th example on (not one example earlier).
    if every == 2_000_000:
        assert recipe.learning_rate_at(1_999_999) == 2e-4
        assert recipe.learning_rate_at(2_000_000) == pytest.approx(1.6e-4, rel=1e-12)


def test_the_step_gives_the_optimizer_the_rate_of_the_examples_before_it() -> None:
    torch.manual_seed(0)
    model = create_model("video-logistic", num_classes=3)
    optimizer = adam([p for p in model.parameters() if p.requires_grad], BASE, 1e-8)
    recipe = Recipe(learning_rate=BASE, lr_decay=DECAY, lr_decay_examples=EVERY)
    step = TrainStep(model, InputTransform(), optimizer, recipe, device=torch.device("cpu"))
    batch = Batch(
        ids=["a", "b"],
        labels=torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),
        features=torch.randn(2, 1152),  # video level: no frames, no input transform
    )
    prepared = step.prepare(batch)
    for examples in (0, 15, 16, 17, 31, 32, 47, 48, 1000):
        step(prepared, examples_seen=examples)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(_staircase(examples), rel=1e-12)
    assert all(r.finite for r in step.read())


def _scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a TensorBoard scalar of a run, read with tensorboard itself."""
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def _examples_seen(run: Path) -> int:
    latest = (run / "checkpoints" / "latest").read_text().strip()
    document = json.loads((run / "checkpoints" / latest / "trainer.json").read_text())
    return int(document["trainer"]["examples_seen"])


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root, videos=48, shards=4, num_classes=5, seed=0)  # 6 batches of 8
    return root


def _train_args(data: Path, run: Path, batch_size: int) -> list[str]:
    args = ["train", "--preset", "nextvlad-8g-128k-2048h", *TINY]
    args += ["--train-data", str(data / "*.tfrecord"), "--out", str(run)]
    args += ["--batch-size", str(batch_size), "--max-steps", "6", "--log-every", "1"]
    args += ["--lr", str(BASE), "--lr-decay", str(DECAY), "--lr-decay-examples", str(EVERY)]
    args += ["--eval-every", "0", "--num-workers", "0", "--no-progress", "--device", "cpu"]
    return args


# After step s (batches of 8): 8 s examples; the logged rate is the next step's.
LOGGED = [(s, _staircase(8 * s)) for s in range(1, 7)]


def _assert_logged(run: Path) -> None:
    logged = _scalars(run, "train/learning_rate")
    assert [s for s, _ in logged] == [s for s, _ in LOGGED]
    for (_, value), (_, expected) in zip(logged, LOGGED, strict=True):
        assert value == pytest.approx(expected, rel=1e-6)  # stored as float32


def test_the_loop_counts_examples_and_steps_the_rate_at_the_boundaries(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process `nextvlad train`, batches of 8, rate halved every 16 examples: each step
    trains at the rate of the examples before it (0, 8 | 16, 24 | 32, 40 | ...)."""
    seen: list[tuple[int, float]] = []
    original = TrainStep.__call__

    def recording(self: TrainStep, batch: Any, examples_seen: int) -> torch.Tensor:
        logits = original(self, batch, examples_seen)
        seen.append((examples_seen, float(self.optimizer.param_groups[0]["lr"])))
        return logits

    monkeypatch.setattr(TrainStep, "__call__", recording)
    run = tmp_path / "run"
    assert main(_train_args(data, run, batch_size=8)) == 0
    assert [e for e, _ in seen] == [0, 8, 16, 24, 32, 40]
    expected = [BASE, BASE, BASE / 2, BASE / 2, BASE / 4, BASE / 4]
    assert [lr for _, lr in seen] == pytest.approx(expected, rel=1e-12)
    assert _examples_seen(run) == 48
    _assert_logged(run)


@pytest.mark.slow
def test_under_torchrun_the_examples_are_global(data: Path, tmp_path: Path) -> None:
    """2 gloo processes of 4 videos a step step the rate as one process of 8 does: the count
    is of global examples (counting one process's would halve every 32 examples here)."""
    one = tmp_path / "one"
    assert main(_train_args(data, one, batch_size=8)) == 0
    two = tmp_path / "two"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch += ["--nproc_per_node", "2", "-m", "nextvlad"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*launch, *_train_args(data, two, batch_size=4)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _examples_seen(two) == _examples_seen(one) == 48
    _assert_logged(two)
    assert _scalars(two, "train/learning_rate") == _scalars(one, "train/learning_rate")
