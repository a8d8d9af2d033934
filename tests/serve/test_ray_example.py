"""examples/ray_serve.py: `nextvlad serve`'s app as a Ray Serve deployment of two replicas on
a private local Ray cluster, reached through Ray's HTTP proxy on a loopback port. Its answers
are `nextvlad predict`'s forward, as the plain server's are (tests/serve/test_server.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.serve.conftest import (
    REQUEST_TIMEOUT,
    Runs,
    frames,
    free_port,
    infer_binary,
    infer_json,
    offline,
    probabilities_of,
)

pytest.importorskip("ray.serve", reason="Ray is not installed: pip install -e '.[serve,ray]'")
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray_serve.py"
INFER = "/v2/models/tiny-frame/infer"
START_TIMEOUT = 240.0  # a local Ray cluster, Serve and two replicas, on a loaded machine
KILL_AFTER = 420  # seconds: `timeout` kills the example if the test never stops it


def _wait_ready(process: subprocess.Popen[bytes], log: Path, url: str) -> str:
    """The example's ready line, once it printed it and the proxy answers ready."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the example exited {process.returncode}: {log.read_text()}")
        lines = [line for line in log.read_text().splitlines() if "ready on" in line]
        if lines:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v2/health/ready", timeout=5).status_code == 200:
                    return lines[0]
        time.sleep(0.5)
    raise AssertionError(f"the example was not ready in {START_TIMEOUT:.0f} s: {log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the example's process group (the driver, and Ray's agents, which a killed driver
    leaves behind) if it is still there."""
    if process.poll() is None:
        process.kill()
        process.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def test_ray_replicas_answer_as_predict(runs: Runs, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "ray_serve.log"
    argv = [sys.executable, str(EXAMPLE), "--checkpoint", str(runs.frame), "--port", str(port)]
    argv += ["--replicas", "2", "--num-cpus", "0.5", "--max-delay-ms", "20"]
    # In a session of its own, so that _stop can kill all that is left; `timeout` in the
    # foreground, so that it passes a SIGTERM on to the driver alone (sent to the whole group,
    # it would stop Ray's own processes under Serve's graceful shutdown).
    timeout = ["timeout", "--foreground", "-s", "KILL", str(KILL_AFTER)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*timeout, *argv], stdout=out, stderr=out, start_new_session=True
        )
    try:
        ready = _wait_ready(process, log, url)
        assert "{'RUNNING': 2}" in ready, ready
        rgb, audio = frames(3, 3, 9)
        counts = [9, 4, 1]
        expected = offline(runs.frame, rgb, audio, counts)
        as_json = httpx.post(
            url + INFER, json=infer_json(rgb, audio, counts), timeout=REQUEST_TIMEOUT
        )
        np.testing.assert_allclose(probabilities_of(as_json), expected, rtol=0, atol=1e-6)
        body, headers = infer_binary(rgb, audio, counts)
        binary = httpx.post(url + INFER, content=body, headers=headers, timeout=REQUEST_TIMEOUT)
        np.testing.assert_allclose(probabilities_of(binary), expected, rtol=0, atol=1e-6)

        def one(i: int) -> np.ndarray:  # one video of 1 + i frames
            v_rgb, v_audio = rgb[i % 3 : i % 3 + 1, : 1 + i], audio[i % 3 : i % 3 + 1, : 1 + i]
            body = infer_json(v_rgb, v_audio, [1 + i])
            return probabilities_of(httpx.post(url + INFER, json=body, timeout=REQUEST_TIMEOUT))

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(8)))
        for i, answer in enumerate(answers):
            want = offline(runs.frame, rgb[i % 3 : i % 3 + 1], audio[i % 3 : i % 3 + 1], [1 + i])
            np.testing.assert_allclose(answer, want, rtol=0, atol=1e-6)
        unknown = httpx.post(url + "/v2/models/other/infer", json=infer_json(rgb, audio, counts))
        assert unknown.status_code == 404 and "'other'" in unknown.json()["error"]
        process.send_signal(signal.SIGTERM)  # `timeout` passes it on: Serve and Ray shut down
        assert process.wait(90) == 0, log.read_text()
    finally:
        _stop(process)
