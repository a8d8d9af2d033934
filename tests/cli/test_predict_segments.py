"""`nextvlad predict --segments` and `nextvlad eval --segments` on the tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nextvlad.data import (
    SegmentDataset,
    Video,
    encode_video,
    resolve_files,
    write_records,
    write_synthetic,
)
from nextvlad.data.synth import SynthConfig
from nextvlad.metrics import read_submission
from tests.cli.conftest import NUM_CLASSES, TinyRun, one_line, run_cli


@pytest.fixture(scope="module")
def rated(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("rated")
    config = SynthConfig(NUM_CLASSES, min_frames=8, max_frames=30, min_run=3, max_run=6)
    write_synthetic(root, videos=24, shards=2, seed=5, config=config, segment_ratings=3)
    return str(root / "*.tfrecord")


def _whitelist(tmp_path: Path, classes: list[int]) -> str:
    path = tmp_path / "segment_label_ids.csv"
    path.write_text("Index\n" + "".join(f"{c}\n" for c in classes))
    return str(path)


def _predict(tiny_run: TinyRun, data: str, out: Path, *extra: str) -> tuple[int, str, str]:
    argv = ["predict", "--segments", "--checkpoint", str(tiny_run.run), "--data", data]
    return run_cli([*argv, "--out", str(out), "--num-workers", "0", *extra])


def _dense(tiny_run: TinyRun, data: str) -> tuple[list[str], np.ndarray]:
    """Every window's id and probabilities (N, C), the slow way."""
    from nextvlad.checkpoint import load_for_inference, resolve_model_dir
    from nextvlad.training import iter_predictions

    model, transform, config, _ = load_for_inference(resolve_model_dir(str(tiny_run.run)))
    dataset = SegmentDataset(resolve_files([data]), windows=True, num_classes=config.num_classes)
    ids, rows = [], []
    device = torch.device("cpu")
    for batch, logits in iter_predictions(model, transform, dataset.loader(16), device):
        ids += batch.ids
        rows.append(torch.sigmoid(logits).numpy())
    return ids, np.concatenate(rows)


def test_predict_matches_a_dense_brute_force(tiny_run: TinyRun, rated: str, tmp_path: Path) -> None:
    out = tmp_path / "sub.csv"
    code, _, err = _predict(tiny_run, rated, out, "--top-k", "3", "--max-per-class", "7")
    assert code == 0, err
    ids, probs = _dense(tiny_run, rated)
    assert len(ids) >= 24 and all(":" in i for i in ids)
    assert f"of {len(ids)} windows" in err
    expected: dict[int, list[tuple[float, int]]] = {}
    for i, row in enumerate(probs):
        for c in np.argsort(-row, kind="stable")[:3].tolist():
            expected.setdefault(c, []).append((float(row[c]), i))
    lines = list(read_submission(out))
    assert out.read_text().startswith("Class,Segments\n")
    assert [line.class_id for line in lines] == sorted(expected)
    for line in lines:
        best = sorted(expected[line.class_id], key=lambda e: (-e[0], e[1]))[:7]
        assert line.segments == [ids[i] for _, i in best]
        assert len(line.segments) <= 7


def test_whitelist_and_stride(tiny_run: TinyRun, rated: str, tmp_path: Path) -> None:
    out = tmp_path / "sub.csv"
    whitelist = _whitelist(tmp_path, [2, 7, 11])
    code, _, err = _predict(tiny_run, rated, out, "--segment-classes", whitelist, "--top-k", "2")
    assert code == 0, err
    lines = list(read_submission(out))
    assert {line.class_id for line in lines} <= {2, 7, 11}
    assert len(lines) >= 2
    starts = {int(s.rsplit(":", 1)[1]) for line in lines for s in line.segments}
    assert starts and all(s % 5 == 0 for s in starts)
    code, _, err = _predict(tiny_run, rated, out, "--stride", "3", "--top-k", "25")
    assert code == 0, err
    starts = {int(s.rsplit(":", 1)[1]) for line in read_submission(out) for s in line.segments}
    assert starts == set(range(0, max(starts) + 1, 3))


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--top-n", "4", "--top-k", "2"],
        ["--top-n", "0", "--top-k", "25"],
        ["--segment-classes", "WHITELIST", "--top-k", "3"],
    ],
)
def test_eval_equals_predict_then_score(
    tiny_run: TinyRun, rated: str, tmp_path: Path, extra: list[str]
) -> None:
    extra = [_whitelist(tmp_path, [0, 3, 4, 9, 20]) if a == "WHITELIST" else a for a in extra]
    predict_extra = list(extra)
    score_extra: list[str] = []
    if "--top-n" in extra:  # a score-segments option, not predict's
        at = predict_extra.index("--top-n")
        score_extra = predict_extra[at : at + 2]
        del predict_extra[at : at + 2]
    out = tmp_path / "sub.csv"
    assert _predict(tiny_run, rated, out, *predict_extra)[0] == 0
    argv = ["score-segments", "--submission", str(out), "--data", rated, "--json"]
    code, scored, err = run_cli([*argv, *score_extra])
    assert code == 0, err
    argv = ["eval", "--segments", "--checkpoint", str(tiny_run.run), "--data", rated]
    code, evaluated, err = run_cli([*argv, "--num-workers", "0", "--json", *extra])
    assert code == 0, err
    a, b = json.loads(scored), json.loads(evaluated)
    assert b["num_windows"] >= 24
    for key in ("map", "num_classes", "num_rated_pairs", "num_positive_segments", "num_entries"):
        assert a[key] == b[key], key
    assert 0.0 <= a["map"] <= 1.0 and a["num_rated_entries"] == b["num_rated_entries"]


def test_eval_text_output(tiny_run: TinyRun, rated: str) -> None:
    argv = ["eval", "--segments", "--checkpoint", str(tiny_run.run), "--data", rated]
    code, out, err = run_cli([*argv, "--num-workers", "0"])
    assert code == 0, err
    assert out.startswith("MAP@100000 ") and "windows" in out


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_segments_show_the_windows_done(
    tiny_run: TinyRun, rated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Off a terminal, plain progress lines over the windows (here one a batch: the interval
    set to 0), with no total (the records do not tell the windows' number)."""
    import nextvlad.training.progress as progress_module

    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL", 0.0)
    argv = [command, "--segments", "--checkpoint", str(tiny_run.run), "--data", rated]
    argv += ["--num-workers", "0", "--batch-size", "8"]
    if command == "predict":
        argv += ["--out", str(tmp_path / "segments.csv")]
    code, _, err = run_cli(argv)
    assert code == 0, err
    lines = [x for x in err.splitlines() if x.startswith(f"{command} --segments: ")]
    assert len(lines) >= 2 and all(" windows" in x for x in lines), err
    counts = [int(x.split(": ")[1].split(" ")[0].replace(",", "")) for x in lines]
    assert counts == sorted(counts) and counts[0] == 8


def test_errors(tiny_run: TinyRun, rated: str, tmp_path: Path) -> None:
    out = tmp_path / "sub.csv"
    code, _, err = _predict(tiny_run, tiny_run.videos, out)
    assert code == 1 and "--segments needs frame-level data" in one_line(err)
    code, _, err = _predict(
        tiny_run, rated, out, "--segment-classes", _whitelist(tmp_path, [3, 25])
    )
    assert code == 2 and f"class 25 is not one of the model's {NUM_CLASSES} classes" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("Index\nx\n")
    code, _, err = _predict(tiny_run, rated, out, "--segment-classes", str(bad))
    assert code == 2 and "is not a non-negative integer" in err
    short = tmp_path / "short.tfrecord"
    frames = {"rgb": np.zeros((4, 1024), np.uint8), "audio": np.zeros((4, 128), np.uint8)}
    video = Video("tiny", np.array([1], np.int64), frames, 4)
    write_records(short, [encode_video(video)])  # 4 frames: no 5-frame window
    code, _, err = _predict(tiny_run, str(short), out)
    assert code == 1 and "no window in --data" in err
    assert not out.exists()
    code, _, err = run_cli(["eval", "--segments", "--checkpoint", str(tiny_run.run), "--data", tiny_run.frames, "--num-workers", "0"])  # fmt: skip
    assert code == 1 and "no rated segment" in err
    argv = ["predict", "--checkpoint", str(tiny_run.run), "--data", rated, "--out", str(out)]
    code, _, err = run_cli([*argv, "--max-per-class", "3"])
    assert code == 2 and "--max-per-class applies with --segments only" in err
    code, _, err = run_cli(["eval", "--checkpoint", str(tiny_run.run), "--data", rated, "--top-n", "3"])  # fmt: skip
    assert code == 2 and "--top-n applies with --segments only" in err
    code, _, err = _predict(tiny_run, rated, out, "--vocabulary", str(bad))
    assert code == 2 and "--vocabulary does not apply with --segments" in err


def test_video_level_model_is_refused(tiny_run: TinyRun, rated: str, tmp_path: Path) -> None:
    run = tmp_path / "vrun"
    argv = ["train", "--preset", "video-logistic", "--set", f"num_classes={NUM_CLASSES}"]
    argv += ["--out", str(run), "--train-data", tiny_run.videos, "--max-steps", "1"]
    argv += ["--eval-every", "0", "--batch-size", "4", "--num-workers", "0", "--no-progress"]
    assert run_cli([*argv, "--eigenvals", "none"])[0] == 0
    code, _, err = _predict(tiny_run, rated, tmp_path / "s.csv", "--checkpoint", str(run))
    assert code == 1 and "needs a model of frame-level input" in one_line(err), err
