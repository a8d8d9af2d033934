"""Small synthetic data sets shared by the data tests (written once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nextvlad.data import write_synthetic

FRAME_VIDEOS = 48
VIDEO_VIDEOS = 40


@pytest.fixture(scope="session")
def frame_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """48 frame-level synthetic videos (25 classes, seed 3) in 4 files."""
    out = tmp_path_factory.mktemp("synth-frame")
    return [str(p) for p in write_synthetic(out, videos=FRAME_VIDEOS, shards=4, seed=3)]


@pytest.fixture(scope="session")
def video_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """40 video-level synthetic videos (seed 3) in 3 files."""
    out = tmp_path_factory.mktemp("synth-video")
    paths = write_synthetic(out, videos=VIDEO_VIDEOS, shards=3, seed=3, frame_level=False)
    return [str(p) for p in paths]


def copy_bytes(src: str | Path, dst: Path, data: bytes | None = None) -> str:
    """Writes ``data`` (or the bytes of ``src``) to ``dst``; returns its path."""
    dst.write_bytes(Path(src).read_bytes() if data is None else data)
    return str(dst)
