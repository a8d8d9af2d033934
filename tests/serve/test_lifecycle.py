"""The server under overload (only 200s with exact results and 503s), SIGTERM (the requests
in flight finish, exit 0) and the bearer token, each a real `nextvlad serve` process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from tests.serve.conftest import (
    REQUEST_TIMEOUT,
    Runs,
    frames,
    infer_binary,
    offline,
    probabilities_of,
    serving,
)

INFER = "/v2/models/tiny-frame/infer"


def test_overload_gives_only_exact_200s_and_503s(runs: Runs) -> None:
    inputs = [frames(20 + i, 4, 300) for i in range(4)]
    counts = [[300, 200, 50, 1]] * 4
    bodies = [infer_binary(rgb, audio, c) for (rgb, audio), c in zip(inputs, counts, strict=True)]
    want = [offline(runs.frame, *x, c) for x, c in zip(inputs, counts, strict=True)]
    total = 32

    async def flood(url: str) -> list[tuple[int, httpx.Response]]:
        limits = httpx.Limits(max_connections=total)
        async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT) as client:

            async def one(i: int) -> tuple[int, httpx.Response]:
                body, headers = bodies[i % 4]
                return i % 4, await client.post(url + INFER, content=body, headers=headers)

            return await asyncio.gather(*(one(i) for i in range(total)))

    args = ["--checkpoint", runs.frame, "--max-queue", "1", "--max-batch-size", "4"]
    with serving(*args, "--max-delay-ms", "0") as server:
        answers = asyncio.run(flood(server.url))
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    statuses = [r.status_code for _, r in answers]
    assert len(answers) == total and set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    for which, response in answers:
        if response.status_code == 200:
            np.testing.assert_allclose(probabilities_of(response), want[which], atol=1e-6, rtol=0)
        else:
            assert response.headers["Retry-After"] == "1"
            assert "queue is full" in response.json()["error"]


def test_sigterm_drains_the_queue_and_exits_0_and_the_token(runs: Runs, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    auth = {"Authorization": "Bearer s3cret-token"}
    args = ["--checkpoint", runs.frame, "--token-file", token, "--max-delay-ms", "200"]
    inputs = [frames(40 + i, 1, 5 + i) for i in range(6)]
    with serving(*args) as server:
        # the token: every route but health needs it
        for path in ("/v2", "/metrics", "/v2/models/tiny-frame"):
            refused = httpx.get(server.url + path)
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
            assert "token" in refused.json()["error"]
            wrong = httpx.get(server.url + path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert httpx.get(server.url + path, headers=auth).status_code == 200
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert httpx.get(server.url + path).status_code == 200
        body, headers = infer_binary(*inputs[0], [5])
        assert httpx.post(server.url + INFER, content=body, headers=headers).status_code == 401

        # SIGTERM while six requests are in flight: their bodies arrive over 2 s
        done: list[float] = []

        def request(i: int) -> np.ndarray:
            body, headers = infer_binary(*inputs[i], [5 + i])

            def slowly() -> Iterator[bytes]:
                yield body[:100]
                time.sleep(2.0)
                yield body[100:]

            response = httpx.post(
                server.url + INFER,
                content=slowly(),
                headers={**headers, **auth},
                timeout=REQUEST_TIMEOUT,
            )
            done.append(time.monotonic())
            return probabilities_of(response)

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(request, i) for i in range(6)]
            time.sleep(0.8)
            signalled = time.monotonic()
            code: list[int] = []
            stopper = threading.Thread(target=lambda: code.append(server.terminate()))
            stopper.start()
            results = [f.result(timeout=REQUEST_TIMEOUT) for f in futures]
            stopper.join(REQUEST_TIMEOUT)
    assert code == [0], server.output()
    assert min(done) > signalled  # they were in flight when the signal came
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, offline(runs.frame, *inputs[i], [5 + i]), atol=1e-6)
