"""POST /v1/classify: an uploaded video (made with PyAV) through issue 20's extractor with
random Inception-v3 and PCA weights (tests/extract/factories.py) and the served model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from tests.serve.conftest import Runs

from nextvlad.serve.app import Settings, create_app
from nextvlad.serve.backends import load_backend

pytest.importorskip("av")

from tests.extract.factories import write_inception_graphdef, write_pca
from tests.extract.videos import write_video

from nextvlad.classify import VideoClassifier
from nextvlad.extract.pipeline import Extractor

LIMIT = 200_000  # --max-upload-mb, in bytes


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("classify")
    inception = write_inception_graphdef(root / "classify_image_graph_def.pb")
    pca = write_pca(root / "pca")
    video = write_video(root / "clip.mp4", 25, 40)  # 1.6 s: 2 frames at Google's 1 a second
    return inception, pca, video


@pytest.fixture(scope="module")
def extractor(weights: tuple[Path, Path, Path]) -> Extractor:
    inception, pca, _ = weights
    return Extractor.from_files(inception, pca, zero_audio=True)


@pytest.fixture(scope="module")
def client(runs: Runs, extractor: Extractor) -> Iterator[TestClient]:
    backend = load_backend(
        checkpoint=str(runs.frame), export_file=None, kind="eager", device=torch.device("cpu")
    )
    names = {i: f"class {i}" for i in range(25)}
    settings = Settings(name="m", extractor=extractor, max_upload_bytes=LIMIT, names=names)
    with TestClient(create_app(backend, settings)) as client:
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield client


def test_classify_an_uploaded_video_as_classify_does(
    client: TestClient, runs: Runs, weights: tuple[Path, Path, Path], extractor: Extractor
) -> None:
    video = weights[2]
    response = client.post(
        "/v1/classify?top_k=5", files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")}
    )
    assert response.status_code == 200, response.text
    got = response.json()
    reference = VideoClassifier(
        runs.frame,
        extractor,
        vocabulary={i: f"class {i}" for i in range(25)},
    ).classify(video, top_k=5)
    want = reference.as_dict()
    assert got["id"] == "clip" and got["num_frames"] == want["num_frames"] == 2
    assert [x["index"] for x in got["labels"]] == [x["index"] for x in want["labels"]]
    assert [x["name"] for x in got["labels"]] == [f"class {x['index']}" for x in want["labels"]]
    for a, b in zip(got["labels"], want["labels"], strict=True):
        assert abs(a["score"] - b["score"]) <= 1e-6


def test_classify_refusals(client: TestClient, runs: Runs) -> None:
    big = client.post("/v1/classify", files={"file": ("big.mp4", b"\0" * (LIMIT + 1))})
    assert big.status_code == 413 and "limit" in big.json()["error"]
    broken = client.post("/v1/classify", files={"file": ("notes.mp4", b"not a video at all")})
    assert broken.status_code == 400 and "'notes.mp4'" in broken.json()["error"]
    no_file = client.post("/v1/classify", data={"other": "x"})
    assert no_file.status_code == 400 and "'file'" in no_file.json()["error"]
    not_a_form = client.post("/v1/classify", content=b"{}", headers={"content-type": "text/plain"})
    assert not_a_form.status_code == 400
    top_k = client.post("/v1/classify?top_k=0", files={"file": ("a.mp4", b"x")})
    assert top_k.status_code == 400 and "top_k" in top_k.json()["error"]
    backend = load_backend(
        checkpoint=str(runs.frame), export_file=None, kind="eager", device=torch.device("cpu")
    )
    with TestClient(create_app(backend, Settings(name="m"))) as plain:
        missing = plain.post("/v1/classify", files={"file": ("a.mp4", b"x")})
    assert missing.status_code == 404 and "--inception" in missing.json()["error"]
