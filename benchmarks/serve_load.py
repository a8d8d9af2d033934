"""Load on `nextvlad serve`: throughput and latency at concurrency 1, 4, 16, 64, beside the
offline throughput of the same model on the same inputs, in one run.

The server runs as a subprocess on loopback (``python -m nextvlad serve``); an async client
(httpx) sends binary-extension infer requests (one video each, random quantised frames) with
a bounded number of requests at each concurrency and reports throughput, p50/p95/p99
latency, the mean batch size (from the server's /metrics), the answers by status and the
server's RSS over time. Offline: ``nextvlad predict``'s forward (``iter_predictions``) on
the same videos, batched by ``--max-batch-size``, in this process before the server starts
and again after it stops (the better of the two counts), and one forward of one request
alone (the floor of the latency at concurrency 1). Then an
overload: 4 x ``--max-queue`` concurrent clients, where the only answers may be 200 and 503
and the RSS should stay flat.

    python benchmarks/serve_load.py --json               # a model of random weights
    python benchmarks/serve_load.py --quick              # CI: small and short
    python benchmarks/serve_load.py --checkpoint RUN     # a trained run

Goals (issue 21): at saturation >= 80% of the offline throughput; at concurrency 1 a p50
within 1.5x one forward pass; under overload only 200 and 503, RSS flat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

HEADER = "Inference-Header-Content-Length"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="a run or checkpoint folder (default: random weights)")
    p.add_argument("--preset", default="nextvlad-8g-16k-256h", help="without --checkpoint")
    p.add_argument("--num-classes", type=int, default=3862, help="without --checkpoint (3862)")
    p.add_argument("--frames", type=int, default=150, help="frames a video (150)")
    p.add_argument("--requests", type=int, default=400, help="requests at each concurrency")
    p.add_argument("--concurrency", default="1,4,16,64", help="levels (1,4,16,64)")
    p.add_argument("--backend", default="eager", help="eager, bf16, int8 (eager)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--threads", type=int, help="torch threads, offline and in the server")
    p.add_argument("--quick", action="store_true", help="CI: tiny model, few requests")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    return p


def _model(args: argparse.Namespace, folder: Path) -> str:
    """The checkpoint to serve: --checkpoint, or a preset of random weights saved to
    ``folder`` (seed 0)."""
    if args.checkpoint:
        return str(args.checkpoint)
    from nextvlad.checkpoint import save_model
    from nextvlad.models import create_model

    torch.manual_seed(0)
    overrides: dict[str, Any] = {"num_classes": args.num_classes}
    if args.quick:
        overrides.update(num_clusters=4, hidden_size=16)
    model = create_model(args.preset, **overrides)
    save_model(folder / "model", model, model.config)  # type: ignore[arg-type]
    return str(folder / "model")


def _videos(count: int, length: int) -> list[np.ndarray]:
    """(1, T, 1152) uint8 random quantised frames, rgb then audio."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (1, length, 1152), dtype=np.uint8) for _ in range(count)]


def _request(video: np.ndarray) -> tuple[bytes, dict[str, str]]:
    rgb, audio = video[..., :1024].copy(), video[..., 1024:].copy()
    counts = np.array([video.shape[1]], dtype=np.int32)
    tensors = [("rgb", rgb, "UINT8"), ("audio", audio, "UINT8"), ("num_frames", counts, "INT32")]
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": n,
                    "datatype": d,
                    "shape": list(a.shape),
                    "parameters": {"binary_data_size": a.nbytes},
                }
                for n, a, d in tensors
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return head + b"".join(a.tobytes() for _, a, _ in tensors), {HEADER: str(len(head))}


def offline(checkpoint: str, videos: list[np.ndarray], batch_size: int, kind: str) -> dict:
    """predict's forward on the same videos: videos/s batched, and one video alone (ms)."""
    from nextvlad.checkpoint import load_for_inference
    from nextvlad.data import Batch
    from nextvlad.training import iter_predictions

    model, transform, _, _ = load_for_inference(checkpoint)
    if kind == "int8":
        from nextvlad.models.quantize import quantize_int8

        model = quantize_int8(model)
    precision = "bf16" if kind == "bf16" else "fp32"
    cpu = torch.device("cpu")

    def batch_of(group: list[np.ndarray]) -> Batch:
        x = torch.from_numpy(np.concatenate(group))
        counts = torch.full((len(group),), x.shape[1], dtype=torch.int64)
        return Batch(
            ids=[""] * len(group), labels=torch.zeros(len(group), 0), frames=x, num_frames=counts
        )

    batches = [batch_of(videos[i : i + batch_size]) for i in range(0, len(videos), batch_size)]
    for _ in iter_predictions(model, transform, batches[:1], cpu, precision=precision):
        pass  # warm-up
    started = time.perf_counter()
    for _ in iter_predictions(model, transform, batches, cpu, precision=precision):
        pass
    seconds = time.perf_counter() - started
    one = [batch_of(videos[:1])]
    times = []
    for _ in range(20):
        t = time.perf_counter()
        for _ in iter_predictions(model, transform, one, cpu, precision=precision):
            pass
        times.append(time.perf_counter() - t)
    return {
        "videos": len(videos),
        "batch_size": batch_size,
        "videos_per_s": len(videos) / seconds,
        "one_video_forward_ms": 1000 * float(np.median(times)),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(checkpoint: str, args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    port = _free_port()
    argv = [sys.executable, "-m", "nextvlad", "serve", "--checkpoint", checkpoint]
    argv += ["--port", str(port), "--log-level", "warning", "--backend", args.backend]
    argv += ["--max-batch-size", str(args.max_batch_size), "--max-delay-ms", str(args.max_delay_ms)]
    argv += ["--max-queue", str(args.max_queue)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    process = subprocess.Popen(["timeout", "-s", "KILL", "3600", *argv])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve_load: the server did not start")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        yield url, int(children[0]) if children else process.pid  # the server under `timeout`
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(60)


class _Rss:
    """The server's resident memory, sampled every 0.1 s from /proc (MiB)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples = pid, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError):
                self.samples.append(self._read())

    def __enter__(self) -> _Rss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        s = self.samples or [float("nan")]
        third = max(1, len(s) // 3)
        return {
            "start_mib": s[0],
            "max_mib": max(s),
            "end_mib": s[-1],
            "first_third_mean_mib": float(np.mean(s[:third])),
            "last_third_mean_mib": float(np.mean(s[-third:])),
        }


def _batches(url: str) -> tuple[float, float]:
    """(sum, count) of the server's nextvlad_batch_size histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    found = {"_sum": 0.0, "_count": 0.0}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            for suffix in found:
                if sample.name == "nextvlad_batch_size" + suffix:
                    found[suffix] = sample.value
    return found["_sum"], found["_count"]


async def _drive(url: str, bodies: list, concurrency: int, total: int) -> tuple[list, float]:
    """``total`` requests from ``concurrency`` clients (aiohttp); (status or the error's
    name, seconds) each, and the wall time."""
    import aiohttp

    answers: list[tuple[int | str, float]] = []
    sent = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            for i in sent:
                body, headers = bodies[i % len(bodies)]
                t = time.perf_counter()
                status: int | str
                try:
                    async with client.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as err:
                    status = type(err).__name__
                answers.append((status, time.perf_counter() - t))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers, time.perf_counter() - started


def level(url: str, infer: str, bodies: list, concurrency: int, total: int) -> dict:
    before = _batches(url)
    answers, seconds = asyncio.run(_drive(url + infer, bodies, concurrency, total))
    after = _batches(url)
    ok = [s for code, s in answers if code == 200]
    statuses: dict[str, int] = {}
    for code, _ in answers:
        statuses[str(code)] = statuses.get(str(code), 0) + 1
    batches = after[1] - before[1]

    def ms(q: float) -> float:
        return 1000 * float(np.percentile(ok, q)) if ok else float("nan")

    return {
        "concurrency": concurrency,
        "requests": total,
        "statuses": statuses,
        "errors": total - statuses.get("200", 0) - statuses.get("503", 0),
        "videos_per_s": len(ok) / seconds,
        "p50_ms": ms(50),
        "p95_ms": ms(95),
        "p99_ms": ms(99),
        "mean_batch_size": (after[0] - before[0]) / batches if batches else float("nan"),
    }


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    if args.quick:
        args.requests, args.frames, args.concurrency = 40, 20, "1,4,16"
        args.max_queue = min(args.max_queue, 8)
    if args.threads:
        torch.set_num_threads(args.threads)
    levels = [int(c) for c in args.concurrency.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        checkpoint = _model(args, Path(tmp))
        videos = _videos(max(64, args.max_batch_size * 4), args.frames)
        bodies = [_request(v) for v in videos]
        before = offline(checkpoint, videos, args.max_batch_size, args.backend)
        results: dict[str, Any] = {}
        with server(checkpoint, args) as (url, pid):
            from nextvlad.cli.serve import default_name

            infer = f"/v2/models/{default_name(Path(checkpoint))}/infer"
            with _Rss(pid) as rss:
                results["levels"] = [level(url, infer, bodies, c, args.requests) for c in levels]
            results["rss_levels"] = rss.summary()
            flood = 4 * args.max_queue
            with _Rss(pid) as rss:
                overload = level(url, infer, bodies, flood, max(args.requests, 3 * flood))
            overload["rss"] = rss.summary()
            results["overload"] = overload
        # Offline again after the server, and the faster of the two kept: on a shared machine
        # the load moves, and the goals are judged against the better offline figure.
        after = offline(checkpoint, videos, args.max_batch_size, args.backend)
        results["offline"] = {
            **before,
            "videos_per_s": max(before["videos_per_s"], after["videos_per_s"]),
            "one_video_forward_ms": min(
                before["one_video_forward_ms"], after["one_video_forward_ms"]
            ),
            "runs": [before, after],
        }
    best = max(r["videos_per_s"] for r in results["levels"])
    first = results["levels"][0]
    results["goals"] = {
        "saturation_vs_offline": best / results["offline"]["videos_per_s"],
        "p50_at_1_vs_one_forward": first["p50_ms"] / results["offline"]["one_video_forward_ms"],
        "overload_only_200_and_503": results["overload"]["errors"] == 0,
        "overload_rss_growth_mib": results["overload"]["rss"]["last_third_mean_mib"]
        - results["overload"]["rss"]["first_third_mean_mib"],
    }
    results["settings"] = {
        k: getattr(args, k)
        for k in (
            "checkpoint",
            "preset",
            "num_classes",
            "frames",
            "requests",
            "backend",
            "max_batch_size",
            "max_delay_ms",
            "max_queue",
            "threads",
            "quick",
        )
    }
    results["machine"] = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print(results)
    return results


def _print(results: dict) -> None:
    off = results["offline"]
    print(
        f"offline: {off['videos_per_s']:.1f} videos/s (batch {off['batch_size']}), one video "
        f"{off['one_video_forward_ms']:.2f} ms"
    )
    print("conc  videos/s   p50 ms   p95 ms   p99 ms  batch  statuses")
    for r in [*results["levels"], results["overload"]]:
        print(
            f"{r['concurrency']:>4} {r['videos_per_s']:>9.1f} {r['p50_ms']:>8.2f} "
            f"{r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['mean_batch_size']:>6.2f}  "
            f"{r['statuses']}"
        )
    print("goals:", json.dumps(results["goals"]))


if __name__ == "__main__":
    main()
