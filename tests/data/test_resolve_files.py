"""``resolve_files``: one file given under several spellings is read once, and said so."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from nextvlad.data import read_videos, resolve_files


def test_one_file_under_three_spellings_is_read_once(
    frame_files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    folder = Path(frame_files[0]).parent
    monkeypatch.chdir(folder)
    name = Path(frame_files[0]).name
    link = tmp_path / "link.tfrecord"
    link.symlink_to(frame_files[1])
    given = ["*.tfrecord", f"./{name}", str(folder / name), f"{folder}//{name}", str(link)]
    with caplog.at_level(logging.WARNING, logger="nextvlad.data"):
        files = resolve_files(given)
    assert [os.path.realpath(f) for f in files] == [os.path.realpath(f) for f in frame_files]
    assert len(list(read_videos(files))) == len(list(read_videos(frame_files)))
    warned = [r.getMessage() for r in caplog.records if "given twice" in r.getMessage()]
    assert len(warned) == 4
    assert f"./{name}" in warned[0] and str(link) in warned[3]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("HTTPS://Host.example:443/a/x.tfrecord", "https://host.example/a/x.tfrecord"),
        ("http://host.example:80/a/./b/../x.tfrecord", "http://host.example/a/x.tfrecord"),
        ("S3://bucket/k/x.tfrecord", "s3://bucket/k/x.tfrecord"),
        ("https://h.example/x.tfrecord?X-Amz-Signature=1", "https://h.example/x.tfrecord?X-Amz-Signature=2"),
    ],
)  # fmt: skip
def test_urls_are_compared_normalised(a: str, b: str) -> None:
    from nextvlad.data.reader import dedupe_key

    assert dedupe_key(a) == dedupe_key(b)
    assert dedupe_key("s3://bucket/k/x.tfrecord") != dedupe_key("s3://bucket/K/x.tfrecord")
