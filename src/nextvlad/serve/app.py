"""The FastAPI application: the Open Inference Protocol's REST routes, metrics, auth.

``create_app(backend, settings)`` builds an app around a loaded backend. The routes answer
the protocol's ``{"error": "..."}`` bodies for every refusal; nothing a client sends gives a
500 with a stack trace (a 500 means the model itself failed, and says only that).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nextvlad.serve.backends import Backend
from nextvlad.serve.batching import Batcher, QueueFullError
from nextvlad.serve.metrics import ServerMetrics
from nextvlad.serve.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    encode_response,
    parse_infer_request,
)
from nextvlad.serve.signature import Signature

log = logging.getLogger("nextvlad.serve")
RETRY_AFTER = "1"  # seconds a refused client should wait (503)


@dataclass
class Settings:
    name: str  # the model's name in the routes
    max_batch_size: int = 64
    max_delay_ms: float = 5.0
    max_queue: int = 256
    max_body_bytes: int = 64 << 20
    max_frames: int = 300
    token: str | None = None  # --token-file: every route but health needs it
    names: dict[int, str] | None = None  # --vocabulary
    load_seconds: float = 0.0
    extractor: Any = None  # --inception/--pca: nextvlad.extract's Extractor for /v1/classify
    max_upload_bytes: int = 256 << 20  # --max-upload-mb


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware: the bearer token (all routes but /v2/health/*) and the request
    metrics (by route template and status)."""

    def __init__(self, app: Any, token: str | None, metrics: ServerMetrics) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.metrics = metrics

    def _authorized(self, scope: dict[str, Any]) -> bool:
        if self.token is None or scope["path"].startswith("/v2/health/"):
            return True
        for key, value in scope.get("headers", []):
            if key == b"authorization" and value[:7].lower() == b"bearer ":
                return hmac.compare_digest(value[7:].strip(), self.token)
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self._authorized(scope):
                await self.app(scope, receive, sending)
            else:
                refusal = error(
                    401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
                )
                await refusal(scope, receive, sending)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "other")
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` bytes (by its Content-Length
    before reading it, else while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(f"the body ({declared} bytes) is over the limit of {limit}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"the body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


class ModelServer:
    """The state of one served model: its signature, batcher, readiness and metrics."""

    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        self.signature = Signature(
            backend, settings.max_frames, settings.max_batch_size, settings.names
        )
        self.metrics = ServerMetrics()
        self.metrics.load_seconds.set(settings.load_seconds)
        self.batcher: Batcher | None = None
        self.ready = False
        self.classifier = None
        if settings.extractor is not None:
            from nextvlad.serve.classify import Classifier

            self.classifier = Classifier(settings.extractor, settings.max_upload_bytes)

    def warmup_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Two videos (5 and 2 frames), or one when --max-batch-size is 1."""
        size = min(2, self.settings.max_batch_size)
        dim = self.backend.config.feature_dim
        if not self.backend.frame_level:
            return torch.zeros(size, dim), None
        frames = torch.zeros(size, 5, dim, dtype=self.backend.frames_dtype)
        return frames, torch.tensor([5, 2][:size], dtype=torch.int64)

    async def start(self) -> None:
        s = self.settings
        self.batcher = Batcher(
            self.backend.run,
            max_batch_size=s.max_batch_size,
            max_delay_ms=s.max_delay_ms,
            max_queue=s.max_queue,
            metrics=self.metrics,
            convert=self.backend.convert,
        )
        self.batcher.start()
        started = time.perf_counter()
        await self.batcher.submit(*self.warmup_inputs())
        self.metrics.warmup_seconds.set(time.perf_counter() - started)
        self.ready = True
        log.info("model %s ready", s.name)

    def check_name(self, name: str, version: str | None = None) -> None:
        if name != self.settings.name or version not in (None, "1"):
            what = f"'{name}'" + (f" version {version}" if version is not None else "")
            raise ProtocolError(
                f"unknown model {what}; this server serves '{self.settings.name}' (version 1)",
                404,
            )

    async def infer(self, request: Request, name: str, version: str | None) -> Response:
        self.check_name(name, version)
        if not self.ready or self.batcher is None:
            raise ProtocolError("the model is not ready yet", 503)
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise ProtocolError(f"Content-Encoding {encoding} is not supported; send identity")
        with self.batcher.arriving():
            body = await read_body(request, self.settings.max_body_bytes)
            parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
            x, num_frames = self.signature.inputs(parsed)
            self.signature.check_outputs(parsed)
            try:
                future = self.batcher.enqueue(x, num_frames)
            except QueueFullError:
                raise ProtocolError(
                    f"the queue is full ({self.settings.max_queue} requests); retry", 503
                ) from None
        probabilities = await future
        return self._response(parsed, probabilities)

    def _response(self, parsed: Any, probabilities: torch.Tensor) -> Response:
        content, header_length = encode_response(
            self.settings.name, parsed.id, self.signature.outputs(parsed, probabilities)
        )
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(header_length)},
        )

    async def classify(self, request: Request, top_k: int) -> JSONResponse:
        """/v1/classify: the uploaded video's top labels."""
        from starlette.datastructures import UploadFile

        from nextvlad.serve.classify import FIELD, answer, model_inputs

        if self.classifier is None:
            raise ProtocolError(
                "/v1/classify needs a server started with --inception and --pca", 404
            )
        if not self.ready or self.batcher is None:
            raise ProtocolError("the model is not ready yet", 503)
        if not 1 <= top_k <= self.signature.num_classes:
            raise ProtocolError(f"top_k {top_k}: an integer in 1..{self.signature.num_classes}")
        request._body = await read_body(request, self.classifier.max_upload_bytes)
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as err:  # starlette's MultiPartException and the parser's own
            raise ProtocolError(f"not a multipart/form-data upload ({err})") from None
        upload = form.get(FIELD)
        if not isinstance(upload, UploadFile):
            raise ProtocolError(f"no file in the form field '{FIELD}'")
        data = await upload.read()
        await form.close()
        video = await self.classifier.features(upload.filename or "upload", data)
        x, num_frames = model_inputs(video, self.backend)
        try:
            probabilities = await self.batcher.submit(x, num_frames)
        except QueueFullError:
            raise ProtocolError("the queue is full; retry", 503) from None
        return JSONResponse(answer(video, probabilities, top_k, self.settings.names))


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ProtocolError)
    async def protocol_error(request: Request, err: ProtocolError) -> JSONResponse:
        headers = {"Retry-After": RETRY_AFTER} if err.status == 503 else None
        return error(err.status, str(err), headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error(400, f"malformed request: {where} {first.get('msg', '')}".rstrip())

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.error("inference failed: %s: %s", type(err).__name__, err)
        return error(500, "internal error: the model failed on this request")


def create_app(backend: Backend, settings: Settings) -> FastAPI:
    """The app serving ``backend``; it loads nothing (the backend is loaded already), and is
    ready once its warm-up batch has run."""
    from nextvlad import __version__

    server = ModelServer(backend, settings)
    warmup: list[asyncio.Task[None]] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warmup.append(asyncio.get_running_loop().create_task(server.start()))
        yield
        await warmup[0]
        if server.batcher is not None:
            await server.batcher.stop()
        if server.classifier is not None:
            server.classifier.close()

    app = FastAPI(
        title="nextvlad",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.server = server
    _handlers(app)
    _routes(app, server, __version__)
    app.add_middleware(_Guard, token=settings.token, metrics=server.metrics)
    return app


def _routes(app: FastAPI, server: ModelServer, version: str) -> None:
    get: Callable[[str], Callable[[Callable[..., Awaitable[Any]]], Any]] = app.get
    post = app.post

    @get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @get("/v2/health/ready")
    async def ready() -> Response:
        return JSONResponse({"ready": server.ready}, status_code=200 if server.ready else 503)

    @get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "nextvlad", "version": version, "extensions": ["binary_tensor_data"]}

    @get("/v2/models/{name}")
    @get("/v2/models/{name}/versions/{model_version}")
    async def model_metadata(name: str, model_version: str | None = None) -> dict[str, Any]:
        server.check_name(name, model_version)
        return server.signature.metadata(server.settings.name)

    @get("/v2/models/{name}/ready")
    @get("/v2/models/{name}/versions/{model_version}/ready")
    async def model_ready(name: str, model_version: str | None = None) -> Response:
        server.check_name(name, model_version)
        body = {"name": server.settings.name, "ready": server.ready}
        return JSONResponse(body, status_code=200 if server.ready else 503)

    @post("/v2/models/{name}/infer")
    @post("/v2/models/{name}/versions/{model_version}/infer")
    async def infer(request: Request, name: str, model_version: str | None = None) -> Response:
        return await server.infer(request, name, model_version)

    @post("/v1/classify")
    async def classify(request: Request, top_k: int = 20) -> Response:
        return await server.classify(request, top_k)

    @get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4")
