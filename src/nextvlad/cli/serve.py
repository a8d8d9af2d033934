"""`nextvlad serve`: an inference server on the Open Inference Protocol (KServe v2, REST).

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus-client): ``pip install -e
'.[serve]'`` in the clone. docs/serving.md describes the protocol surface, batching and metrics.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
import time
from pathlib import Path
from typing import Any

from nextvlad._args import DEVICE, NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT
from nextvlad.errors import UsageError

_EXTRA = "nextvlad serve needs the serve extra: pip install -e '.[serve]'"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (Open Inference Protocol / KServe v2)",
        description="Serve a checkpoint or an ONNX export on the Open Inference Protocol "
        "(KServe v2 REST, as Triton's and KServe's clients speak it), with dynamic batching, "
        "Prometheus metrics at /metrics and an optional bearer token (docs/serving.md).",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint", help="run folder, checkpoint folder or its model.safetensors"
    )
    source.add_argument(
        "--export", metavar="FILE", help="an .onnx file from `nextvlad export --format onnx`"
    )
    p.add_argument(
        "--backend",
        choices=("eager", "bf16", "int8", "onnx"),
        help="eager (float32), bf16 (autocast), int8 (dynamic quantisation, CPU), onnx (ONNX "
        "Runtime; a --checkpoint is exported at start-up); default eager, onnx with --export",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=POSITIVE_INT, default=8000, help="TCP port (8000)")
    p.add_argument("--name", help="the model's name in the routes (default: the run folder's)")
    p.add_argument(
        "--max-batch-size",
        type=POSITIVE_INT,
        default=64,
        help="videos one forward pass merges, and the most one request may hold (64)",
    )
    p.add_argument(
        "--max-delay-ms",
        type=NON_NEGATIVE_FLOAT,
        default=5.0,
        help="how long a batch waits for more requests after its first, while some are being "
        "read (5 ms)",
    )
    p.add_argument(
        "--max-queue",
        type=POSITIVE_INT,
        default=256,
        help="requests waiting for the model; more get 503 with Retry-After (256)",
    )
    p.add_argument(
        "--max-body-mb",
        type=POSITIVE_FLOAT,
        default=64.0,
        help="largest request body in MiB; larger ones get 413 (64)",
    )
    p.add_argument(
        "--max-frames", type=POSITIVE_INT, default=300, help="frames a video may have (300)"
    )
    p.add_argument("--branch", type=int, help="mixtures: serve branch M alone")
    p.add_argument("--device", type=DEVICE, default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch's intra-op threads")
    p.add_argument(
        "--vocabulary",
        help="vocabulary.csv (as predict reads it): top_k requests also get top_k_labels",
    )
    p.add_argument(
        "--token-file",
        help="a file holding a bearer token: every route but /v2/health/* then needs "
        "'Authorization: Bearer TOKEN' (401 without it)",
    )
    c = p.add_argument_group(
        "POST /v1/classify (uploaded videos; needs the extract extra, docs/extract.md)"
    )
    c.add_argument("--inception", metavar="PATH", help="Inception-v3 weights, as extract takes")
    c.add_argument("--pca", metavar="PATH", help="the PCA (yt8m_pca.tgz or its folder)")
    c.add_argument("--audio-model", metavar="PATH", help="VGGish weights: vggish_model.ckpt")
    c.add_argument("--audio-pca", metavar="PATH", help="vggish_pca_params.npz")
    c.add_argument(
        "--zero-audio", action="store_true", help="without --audio-model: audio bytes of 127"
    )
    c.add_argument(
        "--max-upload-mb",
        type=POSITIVE_FLOAT,
        default=256.0,
        help="largest uploaded video in MiB; larger ones get 413 (256)",
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="uvicorn's log level (info)",
    )
    p.set_defaults(func=_serve)


def default_name(source: Path) -> str:
    """The model's name: a run's folder name for its checkpoints, else the folder's or the
    file's stem, in the characters a URL path takes as they are."""
    if re.match(r"^step-\d{8}$", source.name) and source.parent.name == "checkpoints":
        name = source.parent.parent.name
    else:
        name = source.stem if source.is_file() else source.name
    return re.sub(r"[^A-Za-z0-9._-]", "-", name) or "model"


def _read_token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        token = Path(path).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--token-file {path}: {err}") from None
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"--token-file {path}: expected one token (no spaces), got none")
    return token


def _check_host(host: str, token: str | None) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and token is None:
        print(
            f"nextvlad serve: warning: listening on {host} without --token-file: anyone who "
            "reaches it can use the model",
            file=sys.stderr,
        )


def _extractor(args: argparse.Namespace, backend: Any) -> Any:
    """The extractor of --inception and --pca (None without them) for /v1/classify."""
    given = [a for a in ("inception", "pca", "audio_model", "audio_pca") if getattr(args, a)]
    if not given and not args.zero_audio:
        return None
    if args.inception is None or args.pca is None:
        raise UsageError("/v1/classify needs both --inception and --pca")
    from nextvlad.extract.pipeline import Extractor
    from nextvlad.serve.classify import check_extractor

    extractor = Extractor.from_files(
        args.inception,
        args.pca,
        audio_model=args.audio_model,
        audio_pca=args.audio_pca,
        zero_audio=args.zero_audio,
        max_frames=args.max_frames,
        device=str(args.device),
    )
    check_extractor(extractor, backend)
    return extractor


def _serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageError(_EXTRA) from None
    from nextvlad.serve.app import Settings, create_app
    from nextvlad.serve.backends import load_backend
    from nextvlad.serve.runner import run
    from nextvlad.training.distributed import resolve_device

    token = _read_token(args.token_file)
    names = None
    if args.vocabulary:
        from nextvlad.training import read_vocabulary

        names = read_vocabulary(args.vocabulary)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    kind = args.backend or ("onnx" if args.export else "eager")
    started = time.perf_counter()
    backend = load_backend(
        checkpoint=args.checkpoint,
        export_file=args.export,
        kind=kind,
        device=resolve_device(args.device),
        branch=args.branch,
    )
    extractor = _extractor(args, backend)
    settings = Settings(
        name=args.name or default_name(backend.source),
        max_batch_size=args.max_batch_size,
        max_delay_ms=args.max_delay_ms,
        max_queue=args.max_queue,
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        max_frames=args.max_frames,
        token=token,
        names=names,
        load_seconds=time.perf_counter() - started,
        extractor=extractor,
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
    )
    if args.name is not None and not re.match(r"^[A-Za-z0-9._-]+$", args.name):
        raise UsageError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-'")
    _check_host(args.host, token)
    app = create_app(backend, settings)
    print(
        f"nextvlad serve: model '{settings.name}' ({kind}, {backend.source}) on "
        f"http://{args.host}:{args.port}/v2/models/{settings.name}",
        file=sys.stderr,
    )
    return run(app, host=args.host, port=args.port, log_level=args.log_level)
