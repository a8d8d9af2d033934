"""`nextvlad classify` and VideoClassifier: own videos -> extract -> train -> classify."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from nextvlad.cli import main
from tests.extract.factories import write_inception_graphdef, write_pca
from tests.extract.stand_ins import patch_network
from tests.extract.videos import write_video

TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", "num_classes=25"]
TRAIN = ["--max-steps", "2", "--eval-every", "0", "--batch-size", "4", "--num-workers", "0"]
TRAIN += ["--no-progress", "--eigenvals", "none"]


@dataclass
class Runs:
    inception: Path
    pca: Path
    videos: list[Path]
    frames: Path  # frame-level records of the videos (zero audio)
    frame_run: Path
    video_run: Path


def quiet(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    """8 videos extracted (cheap network), a tiny frame-level and a video-level model trained
    on them for 2 steps."""
    root = tmp_path_factory.mktemp("classify")
    inception = root / "inception.pth"
    inception.write_bytes(b"stand-in")
    pca = write_pca(root / "pca")
    videos = [write_video(root / f"clip{i}.mp4", 25, 30 + 5 * i) for i in range(8)]
    weights = ["--inception", str(inception), "--pca", str(pca), "--zero-audio"]
    with pytest.MonkeyPatch.context() as mp:
        patch_network(mp)
        for level, extra in (("frames", []), ("means", ["--video-level"])):
            for i, video in enumerate(videos):
                args = ["extract", str(video), "--out", str(root / level), *weights, *extra]
                assert quiet([*args, "--labels", f"{i % 3};{3 + i % 2}"])[0] == 0
        for name, preset, data in (
            ("frame-run", "nextvlad-8g-16k-256h", "frames"),
            ("video-run", "video-logistic", "means"),
        ):
            sets = TINY if data == "frames" else ["--set", "num_classes=25"]
            argv = ["train", "--preset", preset, *sets, "--out", str(root / name)]
            argv += ["--train-data", str(root / data / "*.tfrecord"), *TRAIN]
            code, _, err = quiet(argv)
            assert code == 0, err
    return Runs(inception, pca, videos, root / "frames", root / "frame-run", root / "video-run")


@pytest.fixture(autouse=True)
def cheap_network(monkeypatch):
    patch_network(monkeypatch)


def classify(runs: Runs, run: Path, *args: str) -> tuple[int, str, str]:
    weights = ["--inception", str(runs.inception), "--pca", str(runs.pca)]
    return quiet(["classify", *args, "--checkpoint", str(run), *weights])


def test_scores_are_those_of_predict_on_the_extracted_records(runs, tmp_path):
    """The model sees a classified video as training and `predict` see its record."""
    out = tmp_path / "pred.csv"
    data = str(runs.frames / "*.tfrecord")
    argv = ["predict", "--checkpoint", str(runs.frame_run), "--data", data, "--out", str(out)]
    assert quiet([*argv, "--num-workers", "0", "--top-k", "5"])[0] == 0
    with open(out, newline="") as f:
        predicted = {
            row["VideoId"]: row["LabelConfidencePairs"].split() for row in csv.DictReader(f)
        }
    code, stdout, err = classify(
        runs, runs.frame_run, *map(str, runs.videos[:3]), "--zero-audio", "--json", "--top-k", "5"
    )
    assert code == 0, err
    objects = [json.loads(line) for line in stdout.splitlines()]
    assert [o["id"] for o in objects] == ["clip0", "clip1", "clip2"]
    for o in objects:
        pairs = predicted[o["id"]]
        assert [label["index"] for label in o["labels"]] == [int(c) for c in pairs[0::2]]
        for label, score in zip(o["labels"], pairs[1::2], strict=True):
            assert abs(label["score"] - float(score)) < 1e-5
        assert o["num_frames"] == 2


def test_names_from_the_vocabulary(runs, tmp_path):
    vocabulary = tmp_path / "vocabulary.csv"
    rows = [f"{i},10,/m/{i},Class {i}" for i in range(25)]
    vocabulary.write_text("Index,TrainVideoCount,KnowledgeGraphId,Name\n" + "\n".join(rows) + "\n")
    code, stdout, err = classify(
        runs,
        runs.frame_run,
        str(runs.videos[0]),
        "--zero-audio",
        "--top-k",
        "3",
        "--vocabulary",
        str(vocabulary),
    )
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0] == "clip0 (2 frames)"
    assert len(lines) == 4 and all("Class " in line for line in lines[1:])
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)


def test_video_level_model_takes_the_means(runs):
    code, stdout, err = classify(
        runs, runs.video_run, str(runs.videos[1]), "--zero-audio", "--json"
    )
    assert code == 0, err
    (o,) = [json.loads(line) for line in stdout.splitlines()]
    assert o["id"] == "clip1" and len(o["labels"]) == 20


def test_a_model_with_audio_needs_audio(runs):
    code, _, err = classify(runs, runs.frame_run, str(runs.videos[0]))
    assert code == 2
    assert "--zero-audio" in err and "--audio-model" in err


def test_a_broken_video_fails_alone(runs, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    code, stdout, err = classify(
        runs, runs.frame_run, str(bad), str(runs.videos[0]), "--zero-audio", "--json"
    )
    assert code == 1
    assert "bad.mp4" in err and "cannot open" in err
    assert [json.loads(line)["id"] for line in stdout.splitlines()] == ["clip0"]


@pytest.mark.slow
def test_whole_way_with_inception(tmp_path, monkeypatch):
    """Generated videos -> extract with the (random-weight) Inception GraphDef -> train ->
    classify, no stand-in."""
    monkeypatch.undo()  # the real network
    inception = write_inception_graphdef(tmp_path / "classify_image_graph_def.pb")
    pca = write_pca(tmp_path / "pca")
    videos = [write_video(tmp_path / f"v{i}.mp4", 25, 20, size=(48, 32)) for i in range(4)]
    weights = ["--inception", str(inception), "--pca", str(pca), "--zero-audio"]
    listing = tmp_path / "videos.csv"
    listing.write_text("".join(f"{v},{i % 2};{2 + i % 3}\n" for i, v in enumerate(videos)))
    out = tmp_path / "features"
    code, _, err = quiet(
        ["extract", str(listing), "--out", str(out), *weights, "--batch-size", "4"]
    )
    assert code == 0, err
    argv = ["train", "--preset", "nextvlad-8g-16k-256h", *TINY, "--out", str(tmp_path / "run")]
    code, _, err = quiet([*argv, "--train-data", str(out / "*.tfrecord"), *TRAIN])
    assert code == 0, err
    code, stdout, err = quiet(
        ["classify", str(videos[0]), "--checkpoint", str(tmp_path / "run"), *weights, "--json"]
    )
    assert code == 0, err
    (o,) = [json.loads(line) for line in stdout.splitlines()]
    assert o["id"] == "v0" and o["num_frames"] == 1 and len(o["labels"]) == 20
