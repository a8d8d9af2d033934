"""Short videos and image folders the extraction tests make with PyAV (no media is committed)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_image(i: int, width: int, height: int) -> np.ndarray:
    """Frame ``i``: a gradient that moves with ``i`` and a block whose colour says ``i``."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // max(1, width - 1) + 5 * i) % 256
    img[..., 1] = (y * 255 // max(1, height - 1)) % 256
    img[..., 2] = (37 * i) % 256
    img[: height // 4, : width // 4] = ((i * 53) % 256, (i * 97) % 256, (i * 11) % 256)
    return img


def write_video(
    path: Path,
    rate: Fraction | int | float = 25,
    frames: int = 50,
    *,
    size: tuple[int, int] = (64, 48),
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    first_pts: int = 0,
    audio_seconds: float | None = None,
    codec: str = "libx264",
) -> Path:
    """An H.264 yuv420p video of ``frames`` frames at ``rate`` (``pts`` in ``time_base`` for
    a variable frame rate; ``first_pts`` frames of offset for a start that is not 0), with an
    AAC sine of ``audio_seconds`` when given."""
    rate = Fraction(rate).limit_denominator(1001)
    width, height = size
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if time_base is not None:
        stream.codec_context.time_base = time_base
    sound = container.add_stream("aac", rate=16000) if audio_seconds is not None else None
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
        if pts is not None:
            frame.pts, frame.time_base = pts[i], time_base
        elif first_pts:
            frame.pts = first_pts + i
        container.mux(stream.encode(frame))
    container.mux(stream.encode())
    if sound is not None and audio_seconds is not None:
        _write_sine(container, sound, audio_seconds)
    container.close()
    return path


def _write_sine(
    container: av.container.OutputContainer, sound: av.AudioStream, seconds: float
) -> None:
    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    chunk = 1024
    for start in range(0, len(wave), chunk):
        piece = wave[start : start + chunk][None, :]
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(piece), format="fltp", layout="mono"
        )
        frame.sample_rate = rate
        frame.pts = start
        container.mux(sound.encode(frame))
    container.mux(sound.encode())


def write_audio_only(path: Path, seconds: float = 2.0) -> Path:
    """A file with an audio stream and no video stream."""
    container = av.open(str(path), "w")
    sound = container.add_stream("aac", rate=16000)
    _write_sine(container, sound, seconds)
    container.close()
    return path


def write_images(
    folder: Path, count: int, *, size: tuple[int, int] = (40, 30), suffix: str = ".png"
) -> Path:
    """``count`` images named so that name order is frame order (frame_000.png, ...)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(frame_image(i, *size)).save(folder / f"frame_{i:03d}{suffix}")
    return folder
