"""The frames of a video that Google's YouTube-8M extractor takes, decoded with PyAV.

Google's ``feature_extractor/extract_tfrecords_main.py`` reads a video through OpenCV's
``cv2.VideoCapture`` and keeps frames with this loop (``frame_iterator``)::

    last_ts = -99999
    while kept < max_frames:
        while POS_MSEC < every_ms + last_ts:    # skip
            read() (stop at the end)
        last_ts = POS_MSEC
        read() -> keep (stop at the end)

where ``POS_MSEC`` is, in OpenCV's FFmpeg backend, the presentation timestamp of the frame read
last, relative to the stream's ``start_time`` (0 before any read). The loop keeps frame 0; then
it decodes until a frame's timestamp reaches the previous mark + ``every_ms``, makes that
timestamp the new mark and keeps the frame *after* it: at 25 fps frames 0, 26, 51, 76, ...;
at 30000/1001 fps 0, 31, 61, .... :func:`choose` is that loop over any (timestamp, frame)
sequence; :func:`iter_video_frames` feeds it PyAV's decoded frames (threaded decoding) and
converts to RGB only the frames it keeps (PyAV's ``rgb24`` and OpenCV's BGR, reversed, are the
same pixels on H.264 yuv420p). A folder of images is one frame an image, in name order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from nextvlad.errors import NextVLADError

__all__ = [
    "IMAGE_SUFFIXES",
    "Frame",
    "VideoError",
    "choose",
    "folder_images",
    "iter_folder_frames",
    "iter_frames",
    "iter_video_frames",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_START_MARK = -99999.0  # frame_iterator's first last_ts
T = TypeVar("T")


class VideoError(NextVLADError):
    """A video (or image folder) that cannot be opened or decoded; the message names it."""


@dataclass(frozen=True)
class Frame:
    """A kept frame: ``rgb`` (H, W, 3) uint8, its index among the decoded frames and its
    timestamp in milliseconds from the stream's start (OpenCV's ``CAP_PROP_POS_MSEC``)."""

    rgb: np.ndarray
    index: int
    timestamp_ms: float


def choose(
    frames: Iterable[tuple[float, T]], every_ms: float, max_frames: int
) -> Iterator[tuple[int, float, T]]:
    """``frame_iterator``'s choice over ``(timestamp_ms, frame)`` pairs in decoding order:
    yields ``(index, timestamp_ms, frame)`` of the frames it keeps. Frames it skips are pulled
    from ``frames`` and dropped untouched."""
    it = iter(frames)
    pos = 0.0  # POS_MSEC before any read
    index = -1
    last = _START_MARK
    kept = 0
    while kept < max_frames:
        while pos < every_ms + last:
            step = next(it, None)
            if step is None:
                return
            pos, index = step[0], index + 1
        last = pos
        step = next(it, None)
        if step is None:
            return
        pos, index = step[0], index + 1
        yield index, pos, step[1]
        kept += 1


def _open(path: str | Path) -> Any:
    import av

    try:
        return av.open(str(path), "r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoError(f"{path}: cannot open ({_reason(err)})") from None


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split()) or type(err).__name__


def _timestamps(container: Any, stream: Any) -> Iterator[tuple[float, Any]]:
    """(POS_MSEC, frame) of each decoded frame: pts - stream start, as OpenCV computes it."""
    start = stream.start_time or 0
    for frame in container.decode(stream):
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            yield 0.0, frame
            continue
        base = frame.time_base or stream.time_base
        yield float(pts - start) * (base.numerator / base.denominator) * 1000.0, frame


def iter_video_frames(path: str | Path, fps: float = 1.0, max_frames: int = 300) -> Iterator[Frame]:
    """The frames of the video at ``path`` that Google's extractor keeps at ``fps`` (every
    ``1000 / fps`` ms), at most ``max_frames``, as RGB.

    Raises:
        VideoError: the file cannot be opened, has no video stream, or fails to decode.
    """
    import av

    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    container = _open(path)
    try:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        chosen = choose(_timestamps(container, stream), 1000.0 / fps, max_frames)
        try:
            for index, ts, frame in chosen:
                yield Frame(frame.to_ndarray(format="rgb24"), index, ts)
        except av.error.FFmpegError as err:
            raise VideoError(f"{path}: cannot decode ({_reason(err)})") from None
    finally:
        container.close()


def folder_images(folder: str | Path) -> list[Path]:
    """The PNG/JPEG files of ``folder``, in name order."""
    return sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def iter_folder_frames(folder: str | Path, max_frames: int = 300) -> Iterator[Frame]:
    """One frame an image of ``folder`` (PNG/JPEG, in name order), at most ``max_frames``;
    ``timestamp_ms`` is the image's position (no clock).

    Raises:
        VideoError: an image that cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    for index, image in enumerate(folder_images(folder)[:max_frames]):
        try:
            with Image.open(image) as img:
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise VideoError(f"{image}: cannot read the image ({_reason(err)})") from None
        yield Frame(rgb, index, float(index))


def iter_frames(source: str | Path, fps: float = 1.0, max_frames: int = 300) -> Iterator[Frame]:
    """:func:`iter_folder_frames` of a folder, :func:`iter_video_frames` of a file."""
    if Path(source).is_dir():
        return iter_folder_frames(source, max_frames)
    return iter_video_frames(source, fps, max_frames)
