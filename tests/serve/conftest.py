"""What the server tests share: a tiny trained run, `nextvlad serve` as a real process on a free
loopback port (stopped by the test, or killed after its timeout), and request builders."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from nextvlad.cli import main
from nextvlad.data import write_synthetic
from nextvlad.data.synth import SynthConfig

NUM_CLASSES = 25
TINY = ["--set", "num_clusters=4", "--set", "hidden_size=16", "--set", f"num_classes={NUM_CLASSES}"]
START_TIMEOUT = 90.0  # seconds for a server to load and warm up on a loaded machine
REQUEST_TIMEOUT = 60.0


def _train(root: Path, name: str, preset: str, data: str, *extra: str) -> Path:
    argv = ["train", "--preset", preset, "--out", str(root / name), "--train-data", data]
    argv += ["--max-steps", "2", "--eval-every", "0", "--batch-size", "8"]
    argv += ["--num-workers", "0", "--no-progress", *extra]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    return root / name


@dataclass(frozen=True)
class Runs:
    frame: Path  # nextvlad-8g-16k-256h (tiny), reverse whitening, 25 classes
    video: Path  # video-logistic on mean_rgb/mean_audio
    vocabulary: Path  # vocabulary.csv naming classes 0..24


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("serve-runs")
    short = SynthConfig(NUM_CLASSES, min_frames=8, max_frames=16, min_run=1, max_run=3)
    write_synthetic(root / "frames", videos=16, shards=1, seed=1, config=short)
    write_synthetic(
        root / "videos", videos=16, shards=1, seed=2, frame_level=False, num_classes=NUM_CLASSES
    )
    eigenvalues = np.random.default_rng(0).uniform(0.1, 4.0, (2048, 1)).astype(np.float32)
    np.save(root / "eigenvals.npy", eigenvalues)
    frame = _train(
        root,
        "tiny-frame",
        "nextvlad-8g-16k-256h",
        str(root / "frames" / "*.tfrecord"),
        *TINY,
        "--eigenvals",
        str(root / "eigenvals.npy"),
    )
    video = _train(
        root,
        "tiny-video",
        "video-logistic",
        str(root / "videos" / "*.tfrecord"),
        "--set",
        f"num_classes={NUM_CLASSES}",
        "--eigenvals",
        "none",
    )
    vocabulary = root / "vocabulary.csv"
    rows = ["Index,TrainVideoCount,KnowledgeGraphId,Name"]
    rows += [f"{i},1,/m/{i},class {i}" for i in range(NUM_CLASSES)]
    vocabulary.write_text("\n".join(rows) + "\n")
    return Runs(frame, video, vocabulary)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m nextvlad serve ARGS` on a free loopback port, ready when started."""

    def __init__(self, *args: str | Path, timeout: float = 600.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "nextvlad", "serve", "--port", str(self.port)]
        argv += ["--log-level", "warning", *map(str, args)]
        # Every server stops by itself: `timeout` kills it if the test never does. In a
        # session of its own, so that kill() reaches the server too, not only `timeout`.
        self.process = subprocess.Popen(
            ["timeout", "-s", "KILL", str(timeout), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError("the server did not become ready")

    def output(self) -> str:
        if self.process.poll() is None:
            return ""
        assert self.process.stdout is not None
        return self.process.stdout.read().decode(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM to the server (the `timeout` wrapper passes it on), its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL to `timeout` and the server under it (a SIGKILL to `timeout` alone would
        leave the server running without its timer)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@contextlib.contextmanager
def serving(*args: str | Path) -> Iterator[Server]:
    server = Server(*args)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


def frames(seed: int, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Random quantised (rgb (B, T, 1024), audio (B, T, 128)) uint8."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (batch, length, 1024), dtype=np.uint8)
    return rgb, rng.integers(0, 256, (batch, length, 128), dtype=np.uint8)


def infer_json(
    rgb: np.ndarray, audio: np.ndarray, num_frames: list[int] | None = None, **extra: Any
) -> dict[str, Any]:
    """A JSON infer request of UINT8 (or FP32 for float arrays) frames."""
    datatype = "UINT8" if rgb.dtype == np.uint8 else "FP32"
    inputs = [
        {"name": "rgb", "datatype": datatype, "shape": list(rgb.shape), "data": rgb.tolist()},
        {"name": "audio", "datatype": datatype, "shape": list(audio.shape), "data": audio.tolist()},
    ]
    if num_frames is not None:
        inputs.append(
            {
                "name": "num_frames",
                "datatype": "INT32",
                "shape": [len(num_frames)],
                "data": num_frames,
            }
        )
    return {"inputs": inputs, **extra}


def infer_binary(
    rgb: np.ndarray, audio: np.ndarray, num_frames: list[int], *, binary_output: bool = True
) -> tuple[bytes, dict[str, str]]:
    """The same request with every tensor in binary, as tritonclient sends it."""
    counts = np.asarray(num_frames, dtype=np.int32)
    tensors = [("rgb", rgb, "UINT8"), ("audio", audio, "UINT8"), ("num_frames", counts, "INT32")]
    header = {
        "inputs": [
            {
                "name": n,
                "datatype": d,
                "shape": list(a.shape),
                "parameters": {"binary_data_size": a.nbytes},
            }
            for n, a, d in tensors
        ],
        "parameters": {"binary_data_output": binary_output},
    }
    head = json.dumps(header).encode()
    body = head + b"".join(a.tobytes() for _, a, _ in tensors)
    return body, {"Inference-Header-Content-Length": str(len(head))}


def probabilities_of(response: httpx.Response) -> np.ndarray:
    """The probabilities of a JSON or binary infer response."""
    assert response.status_code == 200, response.text
    length = response.headers.get("Inference-Header-Content-Length")
    if length is None:
        document = response.json()
        (out,) = [o for o in document["outputs"] if o["name"] == "probabilities"]
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    head = json.loads(response.content[: int(length)])
    (out,) = head["outputs"]
    raw = response.content[int(length) :]
    assert len(raw) == out["parameters"]["binary_data_size"]
    return np.frombuffer(raw, dtype="<f4").reshape(out["shape"])


def offline(run: Path, rgb: np.ndarray, audio: np.ndarray, num_frames: list[int]) -> np.ndarray:
    """The probabilities `nextvlad predict` computes for these videos (its forward,
    ``iter_predictions``, on one batch of the records' uint8 frames)."""
    import torch

    from nextvlad.checkpoint import load_for_inference
    from nextvlad.data import Batch
    from nextvlad.training import iter_predictions

    model, transform, _, _ = load_for_inference(run)
    x = torch.from_numpy(np.concatenate([rgb, audio], axis=-1))
    counts = torch.tensor(num_frames, dtype=torch.int64)
    batch = Batch(ids=[""] * len(x), labels=torch.zeros(len(x), 0), frames=x, num_frames=counts)
    ((_, logits),) = iter_predictions(model, transform, [batch], torch.device("cpu"))
    return torch.sigmoid(logits).numpy()
