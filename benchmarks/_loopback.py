"""Loopback servers for ``benchmarks/data_throughput.py --source s3|http``: an S3 bucket
(moto's server) and a Range-capable HTTP file server, both bound to 127.0.0.1 and stopped on
exit. (tests/remote_servers.py serves the tests the same way; the two may become one.)"""

from __future__ import annotations

import http.server
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@contextmanager
def s3_bucket(files: Sequence[str], bucket: str = "bench") -> Iterator[str]:
    """``files`` uploaded to a bucket of a loopback moto server; yields ``s3://bucket/``. The
    AWS_* variables that point s3fs at it (dummy keys) are set meanwhile, so that DataLoader
    workers inherit them."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line a request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        client.create_bucket(Bucket=bucket)
        for path in files:
            client.upload_file(path, bucket, Path(path).name)
        yield f"s3://{bucket}/"
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of the files under ``root``, with single ``Range: bytes=a-b`` requests
    answered 206 (what fsspec's HTTP filesystem sends for a block)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a real server
    root = Path(".")

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        name = unquote(urlsplit(self.path).path).lstrip("/")
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents or not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = path.stat().st_size
        start, end = 0, size
        match = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if match:
            start = int(match.group(1))
            end = min(size, int(match.group(2)) + 1) if match.group(2) else size
            if start >= size or start >= end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body and end > start:
            with open(path, "rb") as f:
                self.connection.sendfile(f, start, end - start)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def http_files(root: str) -> Iterator[str]:
    """The files under ``root`` served on 127.0.0.1; yields the base URL (ending in ``/``)."""
    handler = type("Handler", (_RangeHandler,), {"root": Path(root)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
