"""`nextvlad synth` and `nextvlad inspect`, called in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nextvlad.cli import main
from tests.conftest import shared_path


def _inspect_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["inspect", *args, "--json"]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def test_synth_then_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--videos", "12", "--shards", "3", "--classes", "7", "--seed", "2"]) == 0  # fmt: skip
    assert "wrote 12 frame-level videos" in capsys.readouterr().out
    assert len(list(out.glob("*.tfrecord"))) == 3
    report = _inspect_json(capsys, str(out / "*.tfrecord"))
    assert report["num_videos"] == 12 and report["num_unique_ids"] == 12
    assert report["level"] == "frame" and report["features"] == {"rgb": 1024, "audio": 128}
    frames = report["frames"]
    assert (
        isinstance(frames, dict) and 60 <= frames["min"] <= frames["mean"] <= frames["max"] <= 300
    )
    assert 12 <= report["num_label_occurrences"] <= 48
    assert 1 <= report["num_classes_seen"] <= 7
    assert report["num_corrupt"] == 0

    assert main(["inspect", str(out / "*.tfrecord")]) == 0
    text = capsys.readouterr().out
    assert "videos:               12" in text and "frames per video:" in text

    vout = tmp_path / "video"
    assert (
        main(["synth", "--out", str(vout), "--videos", "5", "--shards", "1", "--video-level"]) == 0
    )
    report = _inspect_json(capsys, str(vout / "synth-00000-of-00001.tfrecord"))
    assert report["level"] == "video" and report["frames"] is None and report["num_videos"] == 5


def test_synth_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--frames N | LOW-HIGH | yt8m chooses the frame counts; a bad value is a usage error and
    writes nothing."""
    for spec, low, high in (("300", 300, 300), ("20-40", 20, 40), ("yt8m", 120, 300)):
        out = tmp_path / spec
        assert main(["synth", "--out", str(out), "--videos", "6", "--shards", "1", "--frames", spec]) == 0  # fmt: skip
        frames = _inspect_json(capsys, str(out / "*.tfrecord"))["frames"]
        assert low <= frames["min"] <= frames["max"] <= high, spec
    for bad, message in (("5-2", "LOW at most HIGH"), ("many", "is not N, LOW-HIGH or yt8m")):
        with pytest.raises(SystemExit) as exit_info:
            main(["synth", "--out", str(tmp_path / "bad"), "--frames", bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"nextvlad synth: error: --frames '{bad}'" in err and message in err
    assert not (tmp_path / "bad").exists()


def test_inspect_real_video_level_shards(capsys: pytest.CaptureFixture[str]) -> None:
    folder = shared_path("data/yt8m-2018-video-level")
    report = _inspect_json(capsys, str(folder / "*.tfrecord"), "--classes", "3862")
    assert report["num_videos"] == 17_499
    assert report["num_unique_ids"] == 17_499
    assert report["frames"] is None
    assert report["features"] == {"mean_rgb": 1024, "mean_audio": 128}
    assert report["num_corrupt"] == 0
    low, high = report["label_range"]
    assert low >= 0 and high < 3862


def test_inspect_real_frame_sample(capsys: pytest.CaptureFixture[str]) -> None:
    report = _inspect_json(capsys, str(shared_path("data/yt8m-2018-frame-sample/SjJ3.tfrecord")))
    assert report["num_videos"] == 1
    assert report["frames"] == {"min": 170, "mean": 170.0, "max": 170}
    assert report["num_label_occurrences"] == 1 and report["label_range"] == [11, 11]


def test_missing_input_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path / "*.tfrecord")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no files match" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path / "missing.tfrecord")])
    assert exit_info.value.code == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path), "--shards", "0"])
    assert exit_info.value.code == 2


def test_corrupt_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), "--videos", "4", "--shards", "1"]) == 0
    path = out / "synth-00000-of-00001.tfrecord"
    raw = bytearray(path.read_bytes())
    raw[2000] ^= 0x10  # inside record 0's frames
    path.write_bytes(bytes(raw[:-10]))  # and the last record cut short
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert str(path) in err and "record 0" in err and "CRC mismatch" in err
    report = _inspect_json(capsys, str(path), "--skip-corrupt")
    assert report["num_videos"] == 2 and report["num_corrupt"] == 2
    corrupt = report["corrupt"]
    assert isinstance(corrupt, list) and [c["index"] for c in corrupt] == [0, 3]
    assert main(["inspect", str(path), "--skip-corrupt"]) == 0
    assert "corrupt records:      2" in capsys.readouterr().out


def test_synth_segment_rated_then_inspect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nextvlad.data import count_segments, read_videos

    out = tmp_path / "rated"
    assert main(["synth", "--out", str(out), "--videos", "10", "--shards", "2", "--segment-rated"]) == 0  # fmt: skip
    assert "wrote 10 segment-rated frame-level videos" in capsys.readouterr().out
    files = sorted(str(p) for p in out.glob("*.tfrecord"))
    videos = list(read_videos(files))
    ratings = sum(v.segments.labels.size for v in videos if v.segments is not None)
    positives = sum(int((v.segments.scores > 0).sum()) for v in videos if v.segments is not None)
    segments = sum(np.unique(v.segments.start_times).size for v in videos if v.segments)
    classes = {c for v in videos if v.segments for c in v.segments.labels.tolist()}
    report = _inspect_json(capsys, str(out / "*.tfrecord"))
    assert report["num_videos_with_segments"] == 10 and report["num_videos_rated"] == 10
    assert report["num_segment_ratings"] == ratings and 10 <= ratings <= 50
    assert report["num_positive_ratings"] == positives and 0 < positives < ratings
    assert report["num_rated_segments"] == segments
    assert report["num_segment_classes"] == len(classes)
    assert report == {**report, **count_segments(videos)}
    assert main(["inspect", str(out / "*.tfrecord")]) == 0
    text = capsys.readouterr().out
    assert f"rated segments:       {segments} ({ratings} ratings, {positives} positive" in text
    assert f"classes with segments: {len(classes)}" in text
    # Unrated data reports no segment counts.
    plain = tmp_path / "plain"
    assert main(["synth", "--out", str(plain), "--videos", "2", "--shards", "1"]) == 0
    assert "num_rated_segments" not in _inspect_json(capsys, str(plain / "*.tfrecord"))
    for bad in (["--video-level", "--segment-rated"], ["--segment-ratings", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["synth", "--out", str(tmp_path / "x"), *bad])
        assert exit_info.value.code == 2
