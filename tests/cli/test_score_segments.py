"""`nextvlad score-segments` on records written by our writer, against hand-computed MAP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nextvlad.data import Segments, Video, encode_video, write_records
from tests.cli.conftest import run_cli


def _video(video_id: str, starts: list[int], labels: list[int], scores: list[float]) -> Video:
    frames = {"rgb": np.zeros((3, 1024), np.uint8), "audio": np.zeros((3, 128), np.uint8)}
    segments = Segments(
        np.array(starts, np.int64),
        np.array(starts, np.int64) + 5,
        np.array(labels, np.int64),
        np.array(scores, np.float32),
    )
    return Video(video_id, np.array([labels[0]], np.int64), frames, 3, segments)


@pytest.fixture
def rated(tmp_path: Path) -> str:
    videos = [
        _video("aaaa", [0, 5, 10], [1, 1, 2], [1.0, 0.0, 1.0]),
        _video("bbbb", [0, 20], [1, 3], [1.0, 0.0]),
    ]
    plain = Video("cccc", np.array([4], np.int64), _video("x", [0], [0], [0]).features, 3)
    write_records(tmp_path / "rated-0.tfrecord", [encode_video(v) for v in videos])
    write_records(tmp_path / "rated-1.tfrecord", [encode_video(plain)])
    return str(tmp_path / "rated-*.tfrecord")


def _submission(tmp_path: Path, text: str) -> str:
    path = tmp_path / "submission.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_json_matches_hand_computed_map(tmp_path: Path, rated: str) -> None:
    # class 1: aaaa:5 (neg), zzzz:0 (unrated, dropped), bbbb:0 (pos) -> 1/2 over 2 positives
    # class 2: aaaa:10 (pos) -> 1; class 3: no positive rating -> 0
    sub = _submission(tmp_path, "Class,Segments\n1,aaaa:5 zzzz:0 bbbb:0\n2,aaaa:10\n3,bbbb:20\n")
    code, out, err = run_cli(["score-segments", "--submission", sub, "--data", rated, "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["map"] == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert result["num_classes"] == 3
    assert result["num_rated_segments"] == 5
    assert result["num_rated_pairs"] == 5
    assert result["num_positive_segments"] == 3
    assert result["num_classes_without_positives"] == 1
    assert result["num_videos"] == 3 and result["num_rated_videos"] == 2


def test_top_n_cuts_before_dropping(tmp_path: Path, rated: str) -> None:
    sub = _submission(tmp_path, "1,zzzz:0 aaaa:0\n")
    argv = ["score-segments", "--submission", sub, "--data", rated, "--json"]
    assert json.loads(run_cli([*argv, "--top-n", "1"])[1])["map"] == 0.0
    assert json.loads(run_cli([*argv, "--top-n", "0"])[1])["map"] == pytest.approx(0.5)


def test_text_report(tmp_path: Path, rated: str) -> None:
    sub = _submission(tmp_path, "2,aaaa:10\n3,\n")
    code, out, err = run_cli(["score-segments", "--submission", sub, "--data", rated])
    assert code == 0
    assert out.splitlines()[0].split() == ["MAP@100000", "0.500000"]
    assert "1 class of the submission has no positive rated segment" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Class,Segments\n1;aaaa:0\n", "line 2: expected CLASS,SEGMENTS"),
        ("one,aaaa:0\n", "line 1: class 'one' is not a non-negative integer"),
        ("1,aaaa\n", "line 1: entry 'aaaa' is not of the form vid:start"),
        ("1,aaaa:0\n1,bbbb:0\n", "line 2: class 1 is listed twice"),
        ("Class,Segments\n", "no class line"),
    ],
)
def test_bad_submissions_are_usage_errors(
    tmp_path: Path, rated: str, text: str, message: str
) -> None:
    sub = _submission(tmp_path, text)
    code, out, err = run_cli(["score-segments", "--submission", sub, "--data", rated])
    assert code == 2 and out == ""
    assert f"nextvlad score-segments: error: --submission {sub}" in err
    assert message in err
    assert "Traceback" not in err


def test_missing_files(tmp_path: Path, rated: str) -> None:
    code, _, err = run_cli(
        ["score-segments", "--submission", str(tmp_path / "nope.csv"), "--data", rated]
    )
    assert code == 2 and "no such file" in err
    sub = _submission(tmp_path, "1,aaaa:0\n")
    code, _, err = run_cli(
        ["score-segments", "--submission", sub, "--data", str(tmp_path / "none-*.tfrecord")]
    )
    assert code == 2 and "no files match" in err


def test_records_without_ratings(tmp_path: Path, rated: str) -> None:
    only_plain = rated.replace("rated-*", "rated-1")
    sub = _submission(tmp_path, "1,aaaa:0\n")
    code, _, err = run_cli(["score-segments", "--submission", sub, "--data", only_plain])
    assert code == 1 and "no rated segment in the 1 videos" in err


def test_junk_records_fail_with_exit_1(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tfrecord"
    junk.write_bytes(b"not a tfrecord at all")
    sub = _submission(tmp_path, "1,aaaa:0\n")
    code, out, err = run_cli(["score-segments", "--submission", sub, "--data", str(junk)])
    assert code == 1 and out == "" and err.startswith("nextvlad score-segments: error: ")
    assert "Traceback" not in err


_PIECES = ["Class,Segments", "1", "2", ",", "aaaa:0", "bbbb:0", "aaaa:5", " ", "\n", ":", "x"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        st.binary(max_size=120),
        st.lists(st.sampled_from(_PIECES), max_size=25).map(lambda p: "".join(p).encode()),
    )
)
def test_fuzzed_submissions_exit_0_or_2(tmp_path: Path, rated: str, data: bytes) -> None:
    sub = tmp_path / "fuzz.csv"
    sub.write_bytes(data)
    code, out, err = run_cli(["score-segments", "--submission", str(sub), "--data", rated])
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith(f"nextvlad score-segments: error: --submission {sub}")
    else:
        assert out.startswith("MAP@100000 ")
