"""In-process end to end: train a few steps on generated data, evaluate, predict, resume;
the speed options (bf16, --folded, --compile) train a model that learns."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nextvlad.cli import main
from nextvlad.data import SynthConfig, write_synthetic
from nextvlad.nn import NeXtVLAD

TINY = [
    "--set",
    "num_clusters=4",
    "--set",
    "hidden_size=16",
    "--set",
    "num_classes=25",
    "--set",
    "expansion=1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root / "train", videos=48, shards=2, num_classes=25, seed=1)
    write_synthetic(root / "eval", videos=16, shards=1, num_classes=25, seed=2)
    write_synthetic(root / "vtrain", videos=64, shards=2, num_classes=25, seed=1, frame_level=False)
    # Every video 32 frames: one shape for --compile (one compilation, not one a bucket).
    fixed = SynthConfig(num_classes=25, min_frames=32, max_frames=32)
    write_synthetic(root / "fixed", videos=48, shards=2, seed=3, config=fixed)
    return root


def _train(data: Path, out: Path, *extra: str, preset: str = "nextvlad-8g-128k-2048h") -> int:
    return main(
        [
            "train",
            "--preset",
            preset,
            "--train-data",
            str(data / "train" / "*.tfrecord"),
            "--eval-data",
            str(data / "eval" / "*.tfrecord"),
            "--out",
            str(out),
            "--batch-size",
            "8",
            "--num-workers",
            "0",
            "--no-progress",
            "--checkpoint-every",
            "2",
            *extra,
        ]
    )


def _events(run: Path) -> EventAccumulator:
    """The run's TensorBoard events, read with tensorboard itself."""
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return events


# Enough steps (two epochs of the 48 videos) at a rate high enough for a tiny model to learn
# visibly, the loss logged at every step.
LEARN = ["--max-steps", "12", "--lr", "2e-2", "--log-every", "1", "--eval-every", "0"]


def _assert_learned(run: Path) -> None:
    """The training loss of the last steps is clearly below that of the first ones."""
    losses = [e.value for e in _events(run).Scalars("train/loss")]
    assert len(losses) == 12
    early, late = statistics.mean(losses[:3]), statistics.mean(losses[-3:])
    assert late < 0.85 * early, losses  # about 0.73 on this set; no learning: about 1


@pytest.fixture
def folded_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry (whether gradients were on) each time a NeXtVLAD layer runs its folded
    forward pass."""
    calls: list[bool] = []
    original = NeXtVLAD._forward_folded

    def counting(self: NeXtVLAD, *args: object) -> torch.Tensor:
        calls.append(torch.is_grad_enabled())
        return original(self, *args)

    monkeypatch.setattr(NeXtVLAD, "_forward_folded", counting)
    return calls


def _predict(data: Path, run: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "predict",
            "--checkpoint",
            str(run),
            "--data",
            str(data / "eval" / "*.tfrecord"),
            "--out",
            str(out),
            "--num-workers",
            "0",
            *extra,
        ]
    )


def test_train_eval_predict_resume(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert _train(data, run, "--max-steps", "3", "--eval-every", "0", *TINY) == 0
    options = json.loads((run / "run.json").read_text())
    assert options["learning_rate"] == 2e-4 and options["batch_size"] == 8
    assert (run / "checkpoints" / "latest").read_text() == "step-00000003"
    tags = set(_events(run).Tags()["scalars"])
    assert {"eval/gap", "eval/loss"} <= tags
    capsys.readouterr()

    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(run),
                "--data",
                str(data / "eval" / "*.tfrecord"),
                "--json",
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["num_videos"] == 16
    assert 0.0 <= result["gap"] <= 1.0 and result["loss"] > 0

    csv = tmp_path / "submission.csv"
    assert _predict(data, run, csv) == 0
    lines = csv.read_text().splitlines()
    assert lines[0] == "VideoId,LabelConfidencePairs" and len(lines) == 17
    pairs = lines[1].split(",")[1].split()
    scores = [float(s) for s in pairs[1::2]]
    assert len(pairs) == 40 and scores == sorted(scores, reverse=True)

    # Without --resume an existing run is refused; with it training continues.
    assert _train(data, run, "--max-steps", "5", *TINY) == 1
    assert _train(data, run, "--max-steps", "5", "--resume", *TINY) == 0
    assert (run / "checkpoints" / "latest").read_text() == "step-00000005"


def test_mixture_trains_and_one_branch_predicts(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "mix"
    assert (
        _train(
            data,
            run,
            "--max-steps",
            "2",
            "--eval-every",
            "0",
            *TINY,
            preset="mix3-nextvlad-8g-112k-2048h",
        )
        == 0
    )
    csv = tmp_path / "branch.csv"
    assert _predict(data, run, csv, "--branch", "1", "--top-k", "3") == 0
    assert len(csv.read_text().splitlines()[1].split(",")[1].split()) == 6


def test_level_mismatch_is_a_clear_error(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "train",
            "--preset",
            "video-logistic",
            "--train-data",
            str(data / "train" / "*.tfrecord"),
            "--out",
            str(tmp_path / "r"),
            "--max-steps",
            "1",
        ]
    )
    assert code == 1
    assert "frame-level data but the model takes video-level input" in capsys.readouterr().err


def test_video_level_training(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "video"
    assert (
        main(
            [
                "train",
                "--preset",
                "video-moe",
                "--set",
                "num_classes=25",
                "--train-data",
                str(data / "vtrain" / "*.tfrecord"),
                "--out",
                str(run),
                "--epochs",
                "2",
                "--batch-size",
                "16",
                "--num-workers",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (run / "checkpoints" / "latest").read_text() == "step-00000008"


def test_bf16_autocast_learns(data: Path, tmp_path: Path, folded_calls: list[bool]) -> None:
    run = tmp_path / "bf16"
    assert _train(data, run, *LEARN, "--precision", "bf16", "--no-folded", *TINY) == 0
    assert json.loads((run / "run.json").read_text())["precision"] == "bf16"
    _assert_learned(run)
    # --no-folded never folds, though some of this set's batches reach the default rule's
    # 200 frames a video (without the flag, 4 of the 24 forward passes run folded).
    assert folded_calls == []


def test_folded_path_with_length_buckets_learns(
    data: Path, tmp_path: Path, folded_calls: list[bool]
) -> None:
    run = tmp_path / "folded"
    assert _train(data, run, *LEARN, "--folded", "--bucket-by-length", *TINY) == 0
    options = json.loads((run / "run.json").read_text())
    assert options["folded"] and options["bucket_by_length"]
    # Each training step ran the folded forward pass of both streams' NeXtVLAD layers.
    assert sum(folded_calls) == 2 * 12
    _assert_learned(run)


@pytest.mark.slow
def test_compiled_model_learns(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "compiled"
    args = ["train", "--preset", "nextvlad-8g-128k-2048h", "--train-data"]
    args += [str(data / "fixed" / "*.tfrecord"), "--out", str(run), "--batch-size", "8"]
    args += ["--num-workers", "0", "--no-progress", "--compile", *LEARN, *TINY]
    assert main(args) == 0
    assert json.loads((run / "run.json").read_text())["compile"] is True
    _assert_learned(run)


def test_predict_with_vocabulary(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _train(data, run, "--max-steps", "1", "--eval-every", "0", *TINY) == 0
    vocabulary = tmp_path / "vocabulary.csv"
    rows = "\n".join(f"{i},{100 - i},/m/{i},Class {i},x" for i in range(25))
    vocabulary.write_text("Index,TrainVideoCount,KnowledgeGraphId,Name,Extra\n" + rows + "\n")
    out = tmp_path / "sub.csv"
    assert _predict(data, run, out, "--top-k", "2", "--vocabulary", str(vocabulary)) == 0
    named = (tmp_path / "sub.names.csv").read_text().splitlines()
    assert named[0] == "VideoId,Label,Name,Score" and len(named) == 1 + 16 * 2
    video, label, name, _ = named[1].split(",")
    assert name == f"Class {label}" and video.startswith("syn")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit) as exit_info:
        _predict(data, run, out, "--vocabulary", str(bad))
    assert exit_info.value.code == 2
