"""Each backend equals eager float32 within its tolerance (the app in process: the backend is
the difference, not the process); video-level models; the command line's refusals; the core
without the serve extra."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from tests.serve.conftest import Runs, frames, infer_json, offline, probabilities_of

from nextvlad.cli import main
from nextvlad.serve.app import Settings, create_app
from nextvlad.serve.backends import TOLERANCE, load_backend

CPU = torch.device("cpu")


@contextlib.contextmanager
def client_of(backend: object, name: str = "m") -> Iterator[TestClient]:
    with TestClient(create_app(backend, Settings(name=name))) as client:  # type: ignore[arg-type]
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.05)
        yield client


VIDEOS = frames(60, 4, 12)
COUNTS = [12, 7, 1, 0]


@pytest.mark.parametrize("kind", ["eager", "bf16", "int8"])
def test_checkpoint_backends_equal_eager_within_tolerance(runs: Runs, kind: str) -> None:
    backend = load_backend(checkpoint=str(runs.frame), export_file=None, kind=kind, device=CPU)
    with client_of(backend) as client:
        got = probabilities_of(client.post("/v2/models/m/infer", json=infer_json(*VIDEOS, COUNTS)))
        assert client.get("/v2/models/m").json()["platform"] == f"nextvlad_{kind}"
    want = offline(runs.frame, *VIDEOS, COUNTS)
    difference = float(np.abs(got - want).max())
    assert difference <= TOLERANCE[kind], difference
    if kind != "eager":
        assert difference > 0  # it is another computation


@pytest.fixture(scope="module")
def onnx_file(runs: Runs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert (
            main(["export", "--checkpoint", str(runs.frame), "--out", str(out), "--format", "onnx"])
            == 0
        )
    return out


def test_onnx_export_equals_eager_within_tolerance(runs: Runs, onnx_file: Path) -> None:
    backend = load_backend(checkpoint=None, export_file=str(onnx_file), kind="onnx", device=CPU)
    with client_of(backend) as client:
        got = probabilities_of(client.post("/v2/models/m/infer", json=infer_json(*VIDEOS, COUNTS)))
        rgb, audio = (x.astype(np.float32) for x in VIDEOS)
        refused = client.post("/v2/models/m/infer", json=infer_json(rgb, audio, COUNTS))
    want = offline(runs.frame, *VIDEOS, COUNTS)
    assert float(np.abs(got - want).max()) <= TOLERANCE["onnx"]
    assert refused.status_code == 400
    assert refused.json()["error"] == "input 'rgb': datatype FP32; the model takes UINT8"


def test_video_level_model(runs: Runs) -> None:
    from nextvlad.checkpoint import load_for_inference

    backend = load_backend(checkpoint=str(runs.video), export_file=None, kind="eager", device=CPU)
    rng = np.random.default_rng(0)
    mean_rgb = rng.uniform(-1, 1, (3, 1024)).astype(np.float32)
    mean_audio = rng.uniform(-1, 1, (3, 128)).astype(np.float32)
    body = {
        "inputs": [
            {"name": "mean_rgb", "datatype": "FP32", "shape": [3, 1024], "data": mean_rgb.tolist()},
            {
                "name": "mean_audio",
                "datatype": "FP32",
                "shape": [3, 128],
                "data": mean_audio.ravel().tolist(),
            },
        ]
    }
    with client_of(backend) as client:
        meta = client.get("/v2/models/m").json()
        got = probabilities_of(client.post("/v2/models/m/infer", json=body))
        frames_sent = client.post("/v2/models/m/infer", json=infer_json(*VIDEOS))
    assert [i["name"] for i in meta["inputs"]] == ["mean_rgb", "mean_audio"]
    assert meta["inputs"][0] == {"name": "mean_rgb", "datatype": "FP32", "shape": [-1, 1024]}
    model, _, _, _ = load_for_inference(runs.video)
    with torch.no_grad():
        x = torch.from_numpy(np.concatenate([mean_rgb, mean_audio], axis=1))
        want = torch.sigmoid(model(x, None).logits).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert frames_sent.status_code == 400
    assert "unknown input 'rgb'" in frames_sent.json()["error"]


def _cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["serve", *argv])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, err.getvalue()


def test_command_line_refusals(runs: Runs, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"PK")
    code, err = _cli("--export", str(tmp_path / "model.pt"))
    assert code == 2 and "TorchScript" in err
    (tmp_path / "empty").write_text("\n")
    code, err = _cli("--checkpoint", str(runs.frame), "--token-file", str(tmp_path / "empty"))
    assert code == 2 and "--token-file" in err
    code, err = _cli("--checkpoint", str(tmp_path / "missing"))
    assert code == 2 and "no such checkpoint" in err
    code, err = _cli("--checkpoint", str(runs.frame), "--name", "a/b")
    assert code == 2 and "--name" in err
    code, err = _cli("--checkpoint", str(runs.frame), "--inception", str(tmp_path / "empty"))
    assert code == 2 and "--inception and --pca" in err


def test_without_the_serve_extra(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    code, err = _cli("--checkpoint", str(runs.frame))
    assert code == 2 and "pip install -e '.[serve]'" in err
    blocked = "import sys\nfor m in ('fastapi', 'uvicorn', 'prometheus_client', 'starlette'):\n"
    blocked += "    sys.modules[m] = None\n"
    blocked += "import nextvlad, nextvlad.cli, nextvlad.serve, nextvlad.serve.backends\n"
    blocked += "nextvlad.cli.build_parser()\n"
    subprocess.run([sys.executable, "-c", blocked], check=True, timeout=120)
