"""`nextvlad serve`'s app as a Ray Serve deployment: N replicas behind Ray's HTTP proxy.

Each replica runs the very app `nextvlad serve` runs (``nextvlad.serve.app.create_app``
around ``load_backend``), so the routes, the v2 protocol, batching and metrics are the same;
Ray's proxy spreads the requests over the replicas. Needs the ``ray`` and ``serve`` extras:
``pip install -e '.[serve,ray]'``. docs/serving.md (Scale-out) says what was run here.

    python examples/ray_serve.py --checkpoint runs/nextvlad --replicas 2 --port 8000

serves until Ctrl-C or SIGTERM, then shuts Serve and the local Ray cluster down. By default
it starts a private local cluster (``--address local``) and listens on 127.0.0.1. On a
cluster started with ``ray start``, give ``--address auto`` (and ``--host 0.0.0.0`` behind a
firewall or a token-checking balancer): the checkpoint's path must then exist on every node,
since each replica loads the model itself (nothing is pickled from this driver but the path
and the settings).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

WARMUP_TIMEOUT = 300.0  # seconds a replica may take to load and run its warm-up batch


def build_app(options: dict[str, Any]) -> Any:
    """The app of `nextvlad serve --checkpoint ...`, built where it is called (in a replica),
    whose lifespan startup returns only once the model is warm."""
    import torch

    from nextvlad.cli.serve import default_name
    from nextvlad.serve.app import Settings, create_app
    from nextvlad.serve.backends import load_backend

    torch.set_num_threads(options["threads"])
    started = time.perf_counter()
    backend = load_backend(
        checkpoint=options["checkpoint"],
        export_file=None,
        kind=options["backend"],
        device=torch.device("cpu"),
    )
    settings = Settings(
        name=options["name"] or default_name(backend.source),
        max_batch_size=options["max_batch_size"],
        max_delay_ms=options["max_delay_ms"],
        max_queue=options["max_queue"],
        load_seconds=time.perf_counter() - started,
    )
    app = create_app(backend, settings)
    _start_warm(app)
    return app


def _start_warm(app: Any) -> None:
    """Make the app's lifespan startup (which Ray Serve runs in each replica, as uvicorn
    would) wait for the warm-up batch: the app starts its batcher and warm-up as a task and
    says "ready" on /v2/health/ready only after it, but Ray routes to a replica as soon as its
    startup returns, so without this the first requests could get 503 "not ready yet"."""
    inner = app.router.lifespan_context
    server = app.state.server

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        async with inner(asgi_app) as state:
            deadline = time.monotonic() + WARMUP_TIMEOUT
            while not server.ready:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the model was not warm after {WARMUP_TIMEOUT:.0f} s")
                await asyncio.sleep(0.02)
            yield state

    app.router.lifespan_context = lifespan


def deployment(options: dict[str, Any], replicas: int, num_cpus: float) -> Any:
    """The Serve application: ``replicas`` copies of the app, each building its own."""
    from ray import serve

    @serve.deployment(
        name="nextvlad",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus},
        max_ongoing_requests=options["max_queue"],
    )
    @serve.ingress(lambda: build_app(options))  # a builder: run in each replica
    class NextVLAD:
        pass

    return NextVLAD.bind()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    p.add_argument(
        "--backend", choices=("eager", "bf16", "int8"), default="eager", help="as serve's (eager)"
    )
    p.add_argument("--name", help="the model's name in the routes (default: the run folder's)")
    p.add_argument("--replicas", type=int, default=2, help="copies of the model (2)")
    p.add_argument("--num-cpus", type=float, default=0.5, help="Ray CPUs per replica (0.5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per replica (1)")
    p.add_argument("--max-batch-size", type=int, default=64, help="as nextvlad serve's (64)")
    p.add_argument("--max-delay-ms", type=float, default=5.0, help="as nextvlad serve's (5)")
    p.add_argument(
        "--max-queue",
        type=int,
        default=256,
        help="requests a replica holds (Ray's max_ongoing_requests; its queue) (256)",
    )
    p.add_argument("--host", default="127.0.0.1", help="Ray's HTTP proxy address (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="Ray's HTTP proxy port (8000)")
    p.add_argument(
        "--address",
        default="local",
        help="'local' starts a private Ray cluster here (default); 'auto' or HOST:PORT joins one",
    )
    p.add_argument("--cpus", type=float, default=2, help="CPUs a local cluster offers (2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import ray
    except ImportError:
        print("examples/ray_serve.py needs Ray: pip install -e '.[serve,ray]'", file=sys.stderr)
        return 2
    local = args.address == "local"
    if local and not Path(args.checkpoint).exists():
        print(f"ray_serve: --checkpoint {args.checkpoint}: no such file or folder", file=sys.stderr)
        return 2
    extra: dict[str, Any] = {}
    if local:  # a cluster of its own: its files under a fresh folder, a small object store
        extra = {"num_cpus": args.cpus, "object_store_memory": 100 << 20}
        extra["_temp_dir"] = tempfile.mkdtemp(prefix="ray-")
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False, **extra)
    stop: list[int] = []  # after ray.init, whose own SIGTERM handler aborts the driver
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    code = 1
    try:
        code = _serve(args, stop, extra.get("_temp_dir", "Ray's session folder"))
    except KeyboardInterrupt:
        code = 130
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        if local and code != 1:  # a failed deployment leaves its replicas' logs there
            shutil.rmtree(extra["_temp_dir"], ignore_errors=True)
    return code


def _serve(args: argparse.Namespace, stop: list[int], logs: str) -> int:
    """Deploy, say so, serve until a signal; 1 when a replica fails to start."""
    from ray import serve

    options = {
        "checkpoint": args.checkpoint,
        "backend": args.backend,
        "name": args.name,
        "threads": args.threads,
        "max_batch_size": args.max_batch_size,
        "max_delay_ms": args.max_delay_ms,
        "max_queue": args.max_queue,
    }
    serve.start(http_options={"host": args.host, "port": args.port})
    try:
        serve.run(deployment(options, args.replicas, args.num_cpus), route_prefix="/")
    except RuntimeError as err:  # Serve's "Deploying application default failed: ..."
        print(f"ray_serve: {err} (the replicas' logs say why: {logs})", file=sys.stderr)
        return 1
    states = serve.status().applications["default"].deployments["nextvlad"].replica_states
    print(
        f"ray_serve: replicas {dict(states)} ready on http://{args.host}:{args.port}/v2",
        file=sys.stderr,
        flush=True,
    )
    while not stop:
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
