"""The 2019 segment task end to end, in-process and small: `synth --segment-rated`, training on
video labels, `train --task segments --init-from` (a single model and the mixture with its
distillation loss), `predict --segments`, `score-segments`, and what fine-tuning refuses."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from nextvlad.checkpoint import load_for_inference, resolve_model_dir
from tests.cli.conftest import NUM_CLASSES, run_cli

SINGLE = [
    "--preset", "nextvlad-8g-16k-256h", "--set", "num_clusters=4", "--set", "hidden_size=16",
    "--set", f"num_classes={NUM_CLASSES}",
]  # fmt: skip
MIXTURE = [
    "--preset", "mix3-nextvlad-8g-112k-2048h", "--set", "num_clusters=4",
    "--set", "hidden_size=16", "--set", "gating_reduction=8", "--set", f"num_classes={NUM_CLASSES}",
]  # fmt: skip
QUIET = ["--num-workers", "0", "--no-progress", "--eigenvals", "none", "--batch-size", "16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("segment-task")
    sets = {"train": ("30", "1"), "val": ("16", "2")}
    for name, (videos, seed) in sets.items():
        argv = ["synth", "--out", str(root / name), "--videos", videos, "--shards", "1"]
        code, _, err = run_cli([*argv, "--seed", seed, "--segment-rated"])
        assert code == 0, err
    code, _, err = run_cli(["synth", "--out", str(root / "plain"), "--videos", "8", "--seed", "3"])
    assert code == 0, err
    code, _, err = run_cli(["synth", "--out", str(root / "vl"), "--videos", "8", "--video-level"])
    assert code == 0, err
    return {name: str(root / name / "*.tfrecord") for name in ("train", "val", "plain", "vl")} | {
        "root": str(root)
    }


def _train(argv: list[str]) -> dict:
    """What `nextvlad train` printed: its final evaluation ({} without --eval-data)."""
    code, out, err = run_cli(["train", *argv, *QUIET])
    assert code == 0, err
    return json.loads(out) if out.strip() else {}


def _pretrain(data: dict[str, str], model: list[str], name: str) -> Path:
    run = Path(data["root"]) / name
    if not run.exists():
        _train([*model, "--train-data", data["train"], "--out", str(run), "--max-steps", "3"])
    return run


def _classifier(run: Path) -> torch.Tensor:
    model = load_for_inference(resolve_model_dir(str(run)))[0]
    return model.regularized_parameters()[0].detach().clone()  # (C, H) logistic weights


def test_fine_tune_predict_and_score_agree(data: dict[str, str], tmp_path: Path) -> None:
    video = _pretrain(data, SINGLE, "video-single")
    run = tmp_path / "fine"
    argv = [*SINGLE, "--task", "segments", "--init-from", str(video), "--out", str(run)]
    evaluation = _train([
        *argv, "--train-data", data["train"], "--eval-data", data["val"], "--max-steps", "4",
        "--eval-every", "0",
    ])  # fmt: skip
    assert evaluation["num_rated_pairs"] > 0 and evaluation["num_windows"] > 16
    record = json.loads((run / "init-from.json").read_text())
    assert record["init_from"] == str(video)
    assert Path(record["model_folder"]) == resolve_model_dir(str(video)).resolve()
    assert json.loads((run / "run.json").read_text())["task"] == "segments"
    assert not torch.equal(_classifier(run), _classifier(video))  # it trained
    # The evaluation during training is `eval --segments` and predict + score-segments.
    code, out, err = run_cli(["eval", "--segments", "--checkpoint", str(run), "--data",
                              data["val"], "--json", "--num-workers", "0"])  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["map"] == pytest.approx(evaluation["segment_map"], abs=1e-12)
    submission = tmp_path / "submission.csv"
    code, _, err = run_cli(["predict", "--segments", "--checkpoint", str(run), "--data",
                            data["val"], "--out", str(submission), "--num-workers", "0"])  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(["score-segments", "--submission", str(submission), "--data",
                              data["val"], "--json"])  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["map"] == pytest.approx(evaluation["segment_map"], abs=1e-12)


def test_only_the_whitelist_learns(data: dict[str, str], tmp_path: Path) -> None:
    """With --segment-classes and no L2 penalty, the logistic rows of the other classes get
    no gradient: they stay exactly as the video-trained model had them."""
    video = _pretrain(data, SINGLE, "video-single")
    whitelist = tmp_path / "segment_label_ids.csv"
    allowed = list(range(0, NUM_CLASSES, 2))
    whitelist.write_text("Index\n" + "".join(f"{c}\n" for c in allowed))
    run = tmp_path / "fine"
    _train([*SINGLE, "--task", "segments", "--init-from", str(video), "--out", str(run),
            "--train-data", data["train"], "--max-steps", "3", "--l2", "0",
            "--segment-classes", str(whitelist)])  # fmt: skip
    before, after = _classifier(video), _classifier(run)
    others = [c for c in range(NUM_CLASSES) if c not in allowed]
    assert torch.equal(before[others], after[others])
    assert not torch.equal(before[allowed], after[allowed])


def test_mixture_fine_tunes_with_distillation(data: dict[str, str], tmp_path: Path) -> None:
    video = _pretrain(data, MIXTURE, "video-mixture")
    run = tmp_path / "fine"
    evaluation = _train([*MIXTURE, "--task", "segments", "--init-from", str(video),
                      "--out", str(run), "--train-data", data["train"], "--eval-data",
                      data["val"], "--max-steps", "3", "--temperature", "20",
                      "--distill-weight", "400"])  # fmt: skip
    assert 0.0 <= evaluation["segment_map"] <= 1.0
    assert (run / "checkpoints" / "step-00000003").is_dir()


def test_refusals(data: dict[str, str], tmp_path: Path) -> None:
    video = _pretrain(data, SINGLE, "video-single")
    base = [*QUIET, "--max-steps", "2"]
    cases = {
        "no rated segment in --train-data": ["--train-data", data["plain"]],
        "is video-level": ["--train-data", data["vl"]],
        "no rated segment in the 8 videos of --eval-data": [
            "--train-data", data["train"], "--eval-data", data["plain"],
        ],
    }  # fmt: skip
    for i, (message, extra) in enumerate(cases.items()):
        argv = ["train", *SINGLE, "--task", "segments", "--out", str(tmp_path / f"r{i}")]
        code, _, err = run_cli([*argv, *extra, *base])
        assert code != 0 and message in err, (message, err)
    other = ["--preset", "nextvlad-8g-16k-256h", "--set", "num_clusters=8", "--set",
             "hidden_size=16", "--set", f"num_classes={NUM_CLASSES}"]  # fmt: skip
    code, _, err = run_cli(["train", *other, "--task", "segments", "--init-from", str(video),
                            "--out", str(tmp_path / "shape"), "--train-data", data["train"],
                            *base])  # fmt: skip
    assert code != 0 and "num_clusters" in err
    code, _, err = run_cli(["train", *SINGLE, "--segment-classes", "x.csv", "--out",
                            str(tmp_path / "v"), "--train-data", data["train"], *base])  # fmt: skip
    assert code != 0 and "--segment-classes applies with --task segments only" in err


def test_init_from_may_change_what_shapes_no_weight(
    data: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fine-tuning with another dropout (the 2019 recipe's 0.75) loads the same weights."""
    video = _pretrain(data, SINGLE, "video-single")
    run = tmp_path / "fine"
    with caplog.at_level(logging.INFO, logger="nextvlad.train"):
        code, _, err = run_cli(["train", *SINGLE, "--set", "dropout=0.75", "--task", "segments",
                                "--init-from", str(video), "--out", str(run), "--train-data",
                                data["train"], "--max-steps", "1", *QUIET])  # fmt: skip
    assert code == 0, err
    assert "--init-from: changed from the checkpoint: dropout" in caplog.text
    assert json.loads((run / "run.json").read_text())["model_overrides"]["dropout"] == 0.75
