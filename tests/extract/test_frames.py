"""Frame choice and pixels against OpenCV running Google's ``frame_iterator`` itself."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from nextvlad.extract.frames import (
    VideoError,
    choose,
    iter_folder_frames,
    iter_frames,
    iter_video_frames,
)
from tests.extract.videos import frame_image, write_audio_only, write_images, write_video

cv2 = pytest.importorskip("cv2")


def google_frame_iterator(filename: str, every_ms: float = 1000, max_num_frames: int = 300):
    """extract_tfrecords_main.py's frame_iterator, with OpenCV, yielding (index, BGR frame)."""
    video_capture = cv2.VideoCapture()
    if not video_capture.open(filename):
        return
    last_ts = -99999
    num_retrieved = 0
    index = -1
    while num_retrieved < max_num_frames:
        while video_capture.get(cv2.CAP_PROP_POS_MSEC) < every_ms + last_ts:
            if not video_capture.read()[0]:
                return
            index += 1
        last_ts = video_capture.get(cv2.CAP_PROP_POS_MSEC)
        has_frames, frame = video_capture.read()
        if not has_frames:
            break
        index += 1
        yield index, frame
        num_retrieved += 1


def assert_same_as_opencv(path: Path, fps: float = 1.0, max_frames: int = 300) -> list[int]:
    ours = list(iter_video_frames(path, fps=fps, max_frames=max_frames))
    theirs = list(google_frame_iterator(str(path), 1000.0 / fps, max_frames))
    assert [f.index for f in ours] == [i for i, _ in theirs]
    for frame, (_, bgr) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(frame.rgb, bgr[:, :, ::-1])
    return [f.index for f in ours]


@pytest.mark.parametrize(
    ("rate", "frames", "expected"),
    [
        (25, 130, [0, 26, 51, 76, 101, 126]),
        (Fraction(30000, 1001), 100, [0, 31, 61, 91]),
        (24, 100, [0, 25, 49, 73, 97]),
        (60, 200, [0, 61, 121, 181]),
        (1, 6, None),
        (Fraction(1, 2), 5, None),
    ],
)
def test_frame_rates_choose_what_opencv_chooses(tmp_path, rate, frames, expected):
    path = write_video(tmp_path / "v.mp4", rate, frames)
    chosen = assert_same_as_opencv(path)
    if expected is not None:
        assert chosen == expected


def test_other_fps_and_max_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", 25, 80)
    assert_same_as_opencv(path, fps=4.0)
    assert_same_as_opencv(path, fps=0.5)
    assert assert_same_as_opencv(path, fps=4.0, max_frames=3) == [0, 8, 15]


def test_variable_frame_rate(tmp_path):
    gaps = np.random.default_rng(3).integers(10, 400, 59)
    pts = [int(p) for p in np.cumsum(np.r_[0, gaps])]
    path = write_video(tmp_path / "vfr.mkv", 1000, 60, pts=pts, time_base=Fraction(1, 1000))
    chosen = assert_same_as_opencv(path)
    assert len(chosen) >= 5
    # Not a constant step: the rule follows the timestamps.
    assert len(set(np.diff(chosen))) > 1


def test_first_timestamp_not_zero(tmp_path):
    path = write_video(tmp_path / "late.mp4", 25, 80, first_pts=40)
    with av.open(str(path)) as c:
        assert c.streams.video[0].start_time > 0
    assert assert_same_as_opencv(path) == [0, 26, 51, 76]
    assert next(iter_video_frames(path)).timestamp_ms == 0.0


def test_larger_frames_pixels_identical(tmp_path):
    path = write_video(tmp_path / "v.mp4", 25, 30, size=(160, 90))
    assert_same_as_opencv(path, fps=10.0)


def test_only_kept_frames_are_converted(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mp4", 25, 130)
    calls = []
    original = av.VideoFrame.to_ndarray

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("format"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", counting)
    kept = list(iter_video_frames(path))
    assert len(kept) == 6
    assert calls == ["rgb24"] * 6


def test_choose_is_lazy_and_bounded():
    pulled = []

    def stream():
        for i in range(1000):
            pulled.append(i)
            yield i * 40.0, i

    out = list(choose(stream(), 1000.0, 2))
    assert [i for i, _, _ in out] == [0, 26]
    assert len(pulled) == 27  # nothing decoded after the last kept frame


def test_folder_of_frames_in_name_order(tmp_path):
    folder = write_images(tmp_path / "frames", 5)
    (folder / "notes.txt").write_text("not a frame")
    frames = list(iter_folder_frames(folder))
    assert [f.index for f in frames] == list(range(5))
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(f.rgb, frame_image(i, 40, 30))
    assert len(list(iter_frames(folder, max_frames=3))) == 3


def test_bad_image_in_folder_is_named(tmp_path):
    folder = write_images(tmp_path / "frames", 2)
    (folder / "frame_009.png").write_bytes(b"not a png")
    with pytest.raises(VideoError, match=r"frame_009\.png"):
        list(iter_folder_frames(folder))


@pytest.mark.parametrize("kind", ["zero", "garbage", "truncated"])
def test_broken_files_are_video_errors(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        data = write_video(tmp_path / "whole.mp4", 25, 50).read_bytes()
        path.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match=str(path.name)):
        list(iter_video_frames(path))


def test_no_video_stream(tmp_path):
    path = write_audio_only(tmp_path / "sound.m4a")
    with pytest.raises(VideoError, match="no video stream"):
        list(iter_video_frames(path))


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="cannot open"):
        list(iter_video_frames(tmp_path / "nope.mp4"))
