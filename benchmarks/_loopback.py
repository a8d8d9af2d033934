"""Loopback object stores for the remote-data tests (``tests/data/test_remote*.py``,
``tests/cli/test_remote*.py``) and for ``benchmarks/data_throughput.py --source s3|http``: an
S3 server (moto) and an HTTP server with range requests and injected faults, both on
127.0.0.1, both stopped on exit. The one module of both: the tests import it as
``benchmarks._loopback``, the benchmark (run as a script, ``benchmarks/`` on its path) as
``_loopback``; it imports nothing of the tests.

Usage::

    with s3_server() as endpoint:           # http://127.0.0.1:PORT
        upload(endpoint, "yt8m", files, prefix="train/")
        # point s3fs at it: AWS_ENDPOINT_URL=endpoint plus S3_ENV's dummy credentials

    with http_server(folder, fail_first=2) as server:
        server.url("train-0.tfrecord")     # http://127.0.0.1:PORT/train-0.tfrecord
        server.gets                         # GET requests answered so far

Nothing here changes the environment but :func:`s3_bucket` (the benchmark's: it sets the
variables meanwhile, for DataLoader workers); :func:`s3_environ` gives the variables to set.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.server
import os
import threading
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = [
    "S3_ENV",
    "HTTPServer",
    "Request",
    "http_files",
    "http_server",
    "s3_bucket",
    "s3_environ",
    "s3_server",
    "upload",
]

# Dummy credentials and region of the moto server (it accepts any).
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def s3_environ(endpoint: str) -> dict[str, str]:
    """The environment that points s3fs / botocore at ``endpoint`` (set it with
    ``monkeypatch.setenv``, then clear fsspec's cached filesystems)."""
    return {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free loopback port, empty; yields its endpoint URL.

    Moto keeps its buckets in this process's memory, shared by every server it starts: each
    server is reset on start and on exit so that no bucket outlives its ``with`` block
    (so two servers at once would share, and reset, one store)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line a request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        _reset_moto(endpoint)
        yield endpoint
    finally:
        try:
            _reset_moto(endpoint)
        finally:
            server.stop()


def _reset_moto(endpoint: str) -> None:
    """Forget every bucket moto holds (its ``/moto-api/reset`` endpoint)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", data=b"", method="POST")
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with direct.open(request, timeout=30) as response:
        response.read()


def upload(
    endpoint: str,
    bucket: str,
    files: Iterable[str | os.PathLike[str]],
    prefix: str = "",
    *,
    data: Mapping[str, bytes] | None = None,
) -> list[str]:
    """Uploads ``files`` (as ``prefix + basename``) and ``data`` (key -> bytes, keys under
    ``prefix``) to ``bucket`` (made if missing); returns their ``s3://`` URLs, sorted."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    keys = []
    for path in files:
        key = prefix + Path(path).name
        client.upload_file(os.fspath(path), bucket, key)
        keys.append(key)
    for name, body in (data or {}).items():
        client.put_object(Bucket=bucket, Key=prefix + name, Body=body)
        keys.append(prefix + name)
    return sorted(f"s3://{bucket}/{key}" for key in keys)


@dataclass(frozen=True)
class Request:
    """One request the HTTP server answered: method, path, Range header, status."""

    method: str
    path: str
    range: str | None
    status: int


@dataclass
class _State:
    root: Path
    fail_first: int
    fail_status: int
    close_mid: int
    status_of: dict[str, int]
    ranges: bool = True
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gets_seen: int = 0


class HTTPServer(http.server.ThreadingHTTPServer):
    """The server of :func:`http_server`: ``url(name)``, ``requests`` (every
    :class:`Request`), ``gets`` (GET requests so far); ``reset()`` forgets them."""

    daemon_threads = True
    state: _State

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name.lstrip('/')}"

    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def gets(self) -> int:
        return sum(r.method == "GET" for r in self.requests)

    def reset(self) -> None:
        with self.state.lock:
            self.state.requests.clear()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _record(self, status: int) -> None:
        state = self.server.state
        request = Request(self.command, self._path(), self.headers.get("Range"), status)
        with state.lock:
            state.requests.append(request)

    def _path(self) -> str:
        return unquote(urlsplit(self.path).path)

    def _fault(self) -> str | None:
        """'fail' or 'close' for the first GET requests, as the server was told; else None."""
        state = self.server.state
        with state.lock:
            n = state.gets_seen
            state.gets_seen += 1
        if n < state.fail_first:
            return "fail"
        if n < state.fail_first + state.close_mid:
            return "close"
        return None

    def _answer(self, *, body: bool) -> None:
        state = self.server.state
        path = self._path()
        fault = self._fault() if body else None
        status = state.status_of.get(path) if body else None
        if status is None and fault == "fail":
            status = state.fail_status
        target = (state.root / path.lstrip("/")).resolve()
        if status is None and (state.root not in target.parents or not target.is_file()):
            status = 404
        if status is not None:
            self._record(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = target.stat().st_size
        start, end, status = 0, size, 200
        wanted = self.headers.get("Range")
        if state.ranges and wanted and wanted.startswith("bytes="):
            first, _, last = wanted[len("bytes=") :].partition("-")
            if first:
                start, end = int(first), min(size, int(last) + 1 if last else size)
            else:  # the last N bytes
                start = max(0, size - int(last))
            status = 206
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if state.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        stat = target.stat()  # the validators real servers send, that fsspec reports
        self.send_header("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True))
        self.send_header("ETag", f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        if fault == "close":
            self.send_header("Connection", "close")
        self.end_headers()
        if not body or end <= start:
            return
        with open(target, "rb") as f:
            if fault == "close":  # half the body, then hang up
                f.seek(start)
                self.wfile.write(f.read((end - start) // 2))
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.flush()
            self.connection.sendfile(f, start, end - start)


@contextlib.contextmanager
def http_server(
    root: str | os.PathLike[str],
    *,
    fail_first: int = 0,
    fail_status: int = 500,
    close_mid: int = 0,
    status_of: Mapping[str, int] | None = None,
    ranges: bool = True,
) -> Iterator[HTTPServer]:
    """An HTTP server of the files under ``root`` on a free loopback port, in a daemon thread:
    HEAD (Content-Length) and GET with ``Range: bytes=a-b`` (206, Content-Range).

    Faults: the first ``fail_first`` GET requests answer ``fail_status``; the next
    ``close_mid`` send their headers and half their body, then close the connection;
    ``status_of`` maps paths (``/name``) to a status their GET requests always answer (e.g.
    403; HEAD answers as usual, so that the size is known). ``ranges=False`` ignores Range
    headers (200 and the whole file, as ``python -m http.server``)."""
    state = _State(
        Path(root).resolve(), fail_first, fail_status, close_mid, dict(status_of or {}), ranges
    )
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    server.state = state
    thread = threading.Thread(target=server.serve_forever, name="http-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# The benchmark's wrappers (benchmarks/data_throughput.py)


@contextlib.contextmanager
def s3_bucket(files: Iterable[str], bucket: str = "bench") -> Iterator[str]:
    """``files`` uploaded to ``bucket`` of a loopback S3 server; yields ``s3://bucket/``. The
    variables of :func:`s3_environ` are set meanwhile (DataLoader workers inherit them)."""
    with s3_server() as endpoint:
        env = s3_environ(endpoint)
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            upload(endpoint, bucket, files)
            yield f"s3://{bucket}/"
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextlib.contextmanager
def http_files(root: str | os.PathLike[str]) -> Iterator[str]:
    """The files under ``root`` on a loopback HTTP server; yields its base URL (ending in
    ``/``)."""
    with http_server(root) as server:
        yield server.base_url + "/"
