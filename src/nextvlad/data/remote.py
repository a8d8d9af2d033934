"""Shards where users keep them: ``gs://``, ``s3://``, ``https://`` (and ``file://``) through
fsspec, streamed in large sequential reads, retried, optionally cached.

A data path is *remote* when it is a URL of another scheme than ``file://``; everything else
(plain paths, ``file://`` URLs, which become plain paths) keeps the local code path and its
speed. A remote shard is read by :class:`RemoteShard`: ranges of ``block_size`` bytes
(16 MiB) fetched with ``fs.cat_file`` while the reader consumes the one before
(``readahead`` blocks ahead, 2), so that a shard streams at about the link's bandwidth
without a download first and without temporary files.

Faults: a transient error (connection reset or refused, a read timeout, HTTP 5xx, 408, 429,
a short read) is retried ``retries`` times (5) with exponential backoff from ``backoff``
seconds (0.5); then :class:`RemoteReadError` names the URL and the byte range (the TFRecord
reader adds the record). A missing object or an empty glob is a ``NoDataFilesError`` naming
it; a missing filesystem package an error naming the extra to install
(``[s3]``, ``[gcs]``, ``[http]``). Credentials are each filesystem's own (environment,
config files, instance metadata): nothing of ours reads or logs them. A URL with a user or
password is refused; a signed URL or a key or token in the query is read, but only
:func:`redact_url`'s form of it is ever written (errors, logs, run.json, the cache).

Settings come from the environment, so that DataLoader workers and torchrun ranks share them
(the CLI's ``--cache-dir`` sets ``NEXTVLAD_CACHE_DIR``; :func:`configure` sets them from
Python): ``NEXTVLAD_REMOTE_BLOCK_SIZE`` (bytes, suffixes K, M, G), ``NEXTVLAD_REMOTE_READAHEAD``,
``NEXTVLAD_REMOTE_RETRIES``, ``NEXTVLAD_REMOTE_BACKOFF`` (seconds), ``NEXTVLAD_CACHE_DIR``.

The cache folder (``--cache-dir``) is ``nextvlad.data.remote_cache``'s.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nextvlad.data._urls import check_url, is_remote, local_path, redact_text, redact_url
from nextvlad.data._urls import scheme as _scheme
from nextvlad.data.errors import DataError, NoDataFilesError
from nextvlad.errors import ConfigError

log = logging.getLogger("nextvlad.data")

__all__ = [
    "ObjectInfo",
    "RemoteReadError",
    "RemoteSettings",
    "RemoteShard",
    "cache_dir_applied",
    "configure",
    "expand_remote",
    "file_size",
    "is_remote",
    "local_path",
    "object_info",
    "read_range",
    "redact_url",
    "with_retries",
]

_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}
_PACKAGES = {"s3": "s3fs", "gcs": "gcsfs", "http": "aiohttp"}
_GLOB = re.compile(r"[*?\[]")
_ENV = {
    "block_size": "NEXTVLAD_REMOTE_BLOCK_SIZE",
    "readahead": "NEXTVLAD_REMOTE_READAHEAD",
    "retries": "NEXTVLAD_REMOTE_RETRIES",
    "backoff": "NEXTVLAD_REMOTE_BACKOFF",
    "cache_dir": "NEXTVLAD_CACHE_DIR",
}
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class RemoteReadError(DataError):
    """A remote read that failed for good (retries spent, or an error that is not transient)."""


@dataclass(frozen=True)
class RemoteSettings:
    """How remote shards are read (see the module docstring for the environment variables)."""

    block_size: int = 16 << 20
    readahead: int = 2
    retries: int = 5
    backoff: float = 0.5
    cache_dir: str | None = None

    @classmethod
    def from_env(cls) -> RemoteSettings:
        env = os.environ
        try:
            block = env.get(_ENV["block_size"], "16M").strip().upper().removesuffix("B")
            number, unit = (block[:-1], block[-1]) if block[-1:] in "KMG" else (block, "")
            settings = cls(
                block_size=int(float(number) * _SUFFIX[unit]),
                readahead=int(env.get(_ENV["readahead"], "2")),
                retries=int(env.get(_ENV["retries"], "5")),
                backoff=float(env.get(_ENV["backoff"], "0.5")),
                cache_dir=env.get(_ENV["cache_dir"]) or None,
            )
        except (ValueError, KeyError) as err:
            raise ConfigError(f"unreadable NEXTVLAD_REMOTE_* setting: {err}") from None
        if settings.block_size < 1 or settings.readahead < 0 or settings.retries < 0:
            raise ConfigError(f"remote settings out of range: {settings}")
        return settings


def configure(**settings: Any) -> None:
    """Set remote-read settings (``block_size``, ``readahead``, ``retries``, ``backoff``,
    ``cache_dir``; None removes one) for this process and the workers it starts."""
    for name, value in settings.items():
        if name not in _ENV:
            raise TypeError(f"unknown remote setting {name!r}")
        if value is None:
            os.environ.pop(_ENV[name], None)
        else:
            os.environ[_ENV[name]] = str(value)
    RemoteSettings.from_env()  # refuse bad values now


@contextlib.contextmanager
def cache_dir_applied(folder: str | None) -> Iterator[None]:
    """``--cache-dir``: ``NEXTVLAD_CACHE_DIR`` set to ``folder`` for the block (and the
    DataLoader workers and ranks started in it), then as it was. The one place the option is
    applied (the command line for every command, ``train()`` for its ``cache_dir``): nothing
    happens for None, or when the variable holds ``folder`` already (an outer block set it)."""
    before = os.environ.get(_ENV["cache_dir"])
    if not folder or before == folder:
        yield
        return
    configure(cache_dir=folder)
    try:
        yield
    finally:
        configure(cache_dir=before)


def _filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for ``url``, with a clear error for a missing
    package or a user or password in the URL."""
    check_url(url)
    scheme = _scheme(url)
    try:
        import fsspec

        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        extra = _EXTRAS.get(scheme)
        package = _PACKAGES.get(extra or "", "a filesystem package")
        hint = (
            f"pip install {package}, or nextvlad's [{extra}] extra: pip install -e '.[{extra}]' "
            "in its clone"
            if extra
            else "install its fsspec package"
        )
        raise ConfigError(
            f"{redact_url(url)}: reading {scheme}:// needs {package} ({hint}): {err}"
        ) from None
    except ValueError as err:
        raise ConfigError(f"{redact_url(url)}: {err}") from None


def expand_remote(pattern: str) -> list[str]:
    """The URLs of a remote path or glob (sorted), each checked to exist: an empty glob or a
    missing object is a ``NoDataFilesError`` naming it. HTTP(S) URLs are never globs (HTTP
    has no listing). Listing and stat are retried as reads are."""
    fs, path = _filesystem(pattern)
    protocol = _scheme(pattern)
    shown = redact_url(pattern)
    if protocol not in ("http", "https") and _GLOB.search(path):
        listed = with_retries(lambda: fs.glob(path, detail=True), f"{shown}: listing")
        found = sorted(p for p, info in listed.items() if _is_file(info))
        if not found:
            raise NoDataFilesError(f"no files match {shown!r}")
        return [_unstrip(fs, p, protocol) for p in found]
    info = _stat(fs, path, pattern)
    if not _is_file(info):
        raise NoDataFilesError(
            f"{shown} is a directory; give files or a glob such as {shown.rstrip('/')}/*.tfrecord"
        )
    return [pattern]


def _is_file(info: dict[str, Any]) -> bool:
    return info.get("type", "file") == "file"


def _unstrip(fs: Any, path: str, protocol: str) -> str:
    full = fs.unstrip_protocol(path)
    return full if _scheme(full) == protocol else f"{protocol}://{path}"


@dataclass(frozen=True)
class ObjectInfo:
    """What a stat of a remote object gives: its size and its version (ETag, GCS generation,
    modification time: whatever its filesystem reports; None if nothing)."""

    size: int
    version: str | None


# The fields of fsspec's info() that change when an object is replaced: GCS (generation,
# etag, updated), S3 (ETag, LastModified), HTTP (ETag, Last-Modified), memory and local
# (created, mtime). Only fields that a listing and a stat of the object both give (S3's
# VersionId is in a stat only), so that a process that listed a glob and a worker that
# stat'ed the object see one version.
_VERSION_FIELDS = ("generation", "ETag", "etag", "LastModified", "Last-Modified", "updated",
                   "mtime", "created")  # fmt: skip


def object_info(url: str) -> ObjectInfo:
    """The size and version of a remote object (one stat, retried)."""
    fs, path = _filesystem(url)
    info = _stat(fs, path, url)
    size = info.get("size")
    if size is None:
        raise RemoteReadError(f"{redact_url(url)}: the server gives no size (Content-Length)")
    parts = [f"{key}={info[key]}" for key in _VERSION_FIELDS if info.get(key) is not None]
    return ObjectInfo(int(size), ";".join(parts) or None)


def file_size(name: str) -> int:
    """The size of a local file or a remote object, in bytes."""
    if not is_remote(name):
        return os.path.getsize(local_path(name))
    return object_info(name).size


def read_range(url: str, start: int, end: int) -> bytes:
    """Bytes ``start``-``end`` of a remote object (one request, retried)."""
    fs, path = _filesystem(url)
    what = f"{redact_url(url)}: reading bytes {start}-{end}"
    return bytes(with_retries(lambda: fs.cat_file(path, start=start, end=end), what))


def _stat(fs: Any, path: str, url: str) -> dict[str, Any]:
    """``fs.info(path)``, retried; a missing object is a ``NoDataFilesError``. fsspec's HTTP
    filesystem turns every failure of its HEAD and GET into ``FileNotFoundError``: only a 404
    or 410 is taken as such, the rest (a refused connection, TLS against a plain-HTTP port,
    403) as the error it was."""

    http = _scheme(url) in ("http", "https")

    def call() -> dict[str, Any]:
        try:
            return dict(fs.info(path))
        except FileNotFoundError as err:
            cause = err.__cause__
            if not http or cause is None or isinstance(cause, FileNotFoundError):
                raise
            if getattr(cause, "status", None) in (404, 410):
                raise FileNotFoundError(str(err)) from None
            raise cause from None

    shown = redact_url(url)
    try:
        return with_retries(call, f"{shown}: stat")
    except FileNotFoundError:
        hint = ""
        if http and _GLOB.search(urlsplit(url).path):
            hint = " (HTTP has no listing, so globs are not expanded over http(s): give the URLs)"
        raise NoDataFilesError(f"no such file: {shown}{hint}") from None


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [TimeoutError, ConnectionError, EOFError]
    try:
        import aiohttp

        types += [aiohttp.ClientError]
    except ImportError:
        pass
    return tuple(types)


def _is_transient(err: BaseException) -> bool:
    """Worth another try: connection trouble, timeouts, 5xx / 408 / 429, short reads."""
    if isinstance(err, FileNotFoundError | PermissionError | IsADirectoryError | ssl.SSLError):
        return False
    status = getattr(err, "status", None) or getattr(err, "code", None)
    if isinstance(status, int) and 400 <= status < 500:
        return status in (408, 429)
    return isinstance(err, (OSError, _ShortRead, *_transient_types()))


class _ShortRead(Exception):
    pass


class RemoteShard(io.RawIOBase):
    """A remote object as a read-only, seekable raw file: blocks of ``block_size`` bytes
    fetched ahead of the reader, each fetch retried on transient errors.

    Args:
        url: the object's URL (named in errors).
        settings: block size, read-ahead, retries, backoff.
        fetch: ``fetch(start, end) -> bytes`` (default: fsspec's ``cat_file``); tests may
            give their own.
        size: the object's size, if known.
    """

    def __init__(
        self,
        url: str,
        settings: RemoteSettings | None = None,
        *,
        fetch: Callable[[int, int], bytes] | None = None,
        size: int | None = None,
        sink: Callable[[bytes], None] | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.settings = settings or RemoteSettings.from_env()
        if fetch is None:
            fs, path = _filesystem(url)
            fetch = lambda start, end: fs.cat_file(path, start=start, end=end)  # noqa: E731
            if size is None:
                size = file_size(url)
        assert size is not None
        self.size = size
        self._fetch = fetch
        self._sink = sink  # called with each block in order, while reading is sequential
        self._sequential = True
        self._pos = 0
        self._block_index = -1
        self._block = memoryview(b"")  # slices of a memoryview copy nothing
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, self.settings.readahead))
        self._ahead: dict[int, concurrent.futures.Future[bytes]] = {}
        self.bytes_fetched = 0
        self.retried = 0
        self._whole: bytes | None = None  # the object, from a server that ignores Range

    # io.RawIOBase

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        target = max(0, base + offset)
        if target != self._pos:
            self._sequential = False  # a copy must hold every byte in order
        self._pos = target
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self.size:
            index, within = divmod(self._pos, self.settings.block_size)
            block = self._get_block(index)
            take = min(len(view) - done, len(block) - within)
            view[done : done + take] = block[within : within + take]
            done += take
            self._pos += take
        return done

    def close(self) -> None:
        if not self.closed:
            for future in self._ahead.values():
                future.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()

    # Blocks

    def _get_block(self, index: int) -> memoryview:
        if index != self._block_index:
            future = self._ahead.pop(index, None) or self._submit(index)
            for stale in [i for i in self._ahead if i < index]:
                self._ahead.pop(stale).cancel()
            block = future.result()
            if self._sink is not None and self._sequential:
                if index == self._block_index + 1:
                    self._sink(block)
                else:
                    self._sequential = False
            self._block_index, self._block = index, memoryview(block)
            last = (self.size - 1) // self.settings.block_size
            for ahead in range(index + 1, min(index + self.settings.readahead, last) + 1):
                if ahead not in self._ahead:
                    self._ahead[ahead] = self._submit(ahead)
        return self._block

    def _submit(self, index: int) -> concurrent.futures.Future[bytes]:
        start = index * self.settings.block_size
        end = min(start + self.settings.block_size, self.size)
        if self._whole is not None:
            done: concurrent.futures.Future[bytes] = concurrent.futures.Future()
            done.set_result(self._whole[start:end])
            return done
        return self._pool.submit(self._fetch_with_retries, start, end)

    def _whole_object(self, data: bytes) -> None:
        """The server answered a range with the whole object (it ignores Range, as
        ``python -m http.server``): keep it and read on from it."""
        if self._whole is None:
            self._whole = data
            log.warning(
                "%s: the server ignores Range requests (it sent the whole object, %d bytes, "
                "for one block): read whole into memory instead of in blocks; serve the "
                "shards with one that answers Range (206) to stream them",
                redact_url(self.url), len(data),
            )  # fmt: skip

    def _fetch_with_retries(self, start: int, end: int) -> bytes:
        def fetch() -> bytes:
            data = self._fetch(start, end)
            if not isinstance(data, bytes):  # fsspec gives bytes: no copy then
                data = bytes(data)
            if len(data) == self.size != end - start:
                self._whole_object(data)
                return data[start:end]
            if len(data) != end - start:
                raise _ShortRead(f"short read: {len(data)} of {end - start} bytes")
            return data

        def retried() -> None:
            self.retried += 1

        try:
            data = with_retries(fetch, f"{redact_url(self.url)}: reading bytes {start}-{end}", self.settings,
                                on_retry=retried)  # fmt: skip
        except FileNotFoundError:
            raise RemoteReadError(
                f"{redact_url(self.url)}: the object is gone (reading bytes {start}-{end})"
            ) from None
        self.bytes_fetched += len(data)
        return data


def with_retries(
    call: Callable[[], Any],
    what: str,
    settings: RemoteSettings | None = None,
    *,
    on_retry: Callable[[], None] | None = None,
) -> Any:
    """``call()``, tried again after a transient error (``settings.retries`` times, waiting
    ``backoff`` x 1, 2, 4, ... seconds); then :class:`RemoteReadError` starting with ``what``.
    ``FileNotFoundError`` and our own errors pass through untouched."""
    settings = settings or RemoteSettings.from_env()
    attempts = settings.retries + 1
    for attempt in range(attempts):
        try:
            return call()
        except (FileNotFoundError, DataError, ConfigError):
            raise
        except Exception as err:
            reason = redact_text(f"{type(err).__name__}: {err}")
            if isinstance(err, ssl.SSLError):
                reason += " (an https:// URL for a server that speaks plain HTTP? try http://)"
            if not _is_transient(err):
                raise RemoteReadError(f"{what}: {reason}") from None
            if attempt + 1 == attempts:
                raise RemoteReadError(f"{what} failed {attempts} times (last: {reason})") from None
            if on_retry is not None:
                on_retry()
            time.sleep(settings.backoff * 2**attempt)
    raise AssertionError("unreachable")
