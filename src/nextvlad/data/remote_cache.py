"""The cache of remote shards (``--cache-dir``, ``NEXTVLAD_CACHE_DIR``) and the opening of a
remote shard for reading.

With a cache folder a remote shard is copied there as it is first read whole and in order
(the copy's CRC32C computed on the way), published by an atomic rename with a ``.json`` note
of its URL, size, version (ETag, generation, modification time: what its filesystem reports),
CRC and the copy's modification time; later reads use the copy when the object's size and
version are the note's and either the copy's modification time is the note's (the copy is as
it was written; every record's own CRC is still checked as it is read, as for local files) or
its CRC is the note's (read whole to check it, once a process). A replaced object has another
version: it is fetched again. Several workers or ranks may fill the same cache: each
writes a temporary file of its own and the renames publish identical bytes. A read that seeks
(records shared between workers) or stops early leaves no copy.

A record of the copy that fails its CRC is re-read from the object (that record's bytes
only): the same bytes mean that the object itself is corrupt (the copy is kept and the record
reported as for a local file); other bytes, that the disk changed the copy (it is removed and
the object streamed from there on). URLs are written (file names, notes) as
:func:`~nextvlad.data.remote.redact_url` gives them: no signature or token.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from urllib.parse import urlsplit

import crc32c

from nextvlad.data.remote import (
    ObjectInfo,
    RemoteSettings,
    RemoteShard,
    object_info,
    read_range,
    redact_url,
)

__all__ = ["CachedCopy", "cached_path", "check_copy", "open_remote"]

log = logging.getLogger("nextvlad.data")

# (copy, size, modification time) of the copies whose CRC this process has checked
_VERIFIED: set[tuple[str, int, int]] = set()


def open_remote(url: str, settings: RemoteSettings | None = None) -> io.RawIOBase:
    """A remote shard for reading: its cached copy when there is a valid one, else a
    :class:`RemoteShard` (that fills the cache when there is one and the read is whole)."""
    settings = settings or RemoteSettings.from_env()
    info = object_info(url)
    if settings.cache_dir is None:
        return RemoteShard(url, settings, size=info.size)
    copy = cached_path(settings.cache_dir, url)
    if _valid_copy(copy, url, info):
        return CachedCopy(copy, url, settings, info.size)
    return _CachingShard(url, settings, info, copy)


class CachedCopy(io.FileIO):
    """The cached copy of ``url``, read as a local file (``name`` is the copy's path)."""

    def __init__(self, copy: str, url: str, settings: RemoteSettings, size: int) -> None:
        super().__init__(copy, "rb")
        self.url, self.settings, self.size = url, settings, size


def check_copy(copy: CachedCopy, start: int, end: int, reason: str) -> CachedCopy | RemoteShard:
    """A record of a cached copy at bytes ``start``-``end`` failed (``reason``): re-read those
    bytes from the object. The same bytes: the object itself is corrupt there, and the copy
    (returned, at the same position) is faithful. Other bytes: the disk changed the copy; it
    is removed and a stream of the object from ``start`` on returned."""
    end = min(end, copy.size)
    here = copy.tell()
    if os.pread(copy.fileno(), end - start, start) == read_range(copy.url, start, end):
        log.info(
            "%s: the object itself is corrupt at offset %d (%s; its cached copy %s holds the "
            "same bytes and is kept)", redact_url(copy.url), start, reason, copy.name,
        )  # fmt: skip
        copy.seek(here)
        return copy
    shown = redact_url(copy.url)
    log.warning(
        "cached copy %s of %s is corrupt at offset %d (%s; the object's bytes differ): "
        "removed; reading %s instead", copy.name, shown, start, reason, shown,
    )  # fmt: skip
    copy.close()
    for path in (str(copy.name), f"{copy.name}.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    shard = RemoteShard(copy.url, copy.settings, size=copy.size)
    shard.seek(start)
    return shard


def cached_path(cache_dir: str, url: str) -> str:
    """Where the copy of ``url`` goes in ``cache_dir`` (named after the URL without its
    credentials, so that every signed URL of an object shares one copy)."""
    key = redact_url(url)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    base = urlsplit(key).path.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", base)[-80:]
    return os.path.join(cache_dir, f"{digest}-{name}")


def _valid_copy(copy: str, url: str, info: ObjectInfo) -> bool:
    """The copy exists with the object's size, its note has the object's version, and either
    it is untouched since it was written (its modification time is the note's) or has the
    note's CRC (checked once a process)."""
    try:
        stat = os.stat(copy)
        with open(copy + ".json") as f:
            note = json.load(f)
    except (OSError, ValueError):
        return False
    size = info.size
    if note.get("url") != redact_url(url) or note.get("size") != size or stat.st_size != size:
        return False
    if note.get("version") != info.version:  # the object was replaced
        return False
    seen = (copy, stat.st_size, stat.st_mtime_ns)
    if seen in _VERIFIED or note.get("mtime_ns") == stat.st_mtime_ns:
        return True
    value = 0
    with open(copy, "rb") as f:
        while chunk := f.read(16 << 20):
            value = crc32c.crc32c(chunk, value)
    if value != note.get("crc32c"):
        return False
    _VERIFIED.add(seen)
    return True


class _CachingShard(RemoteShard):
    """A :class:`RemoteShard` that writes what it reads to a temporary file in the cache and
    publishes it (atomic rename, then its note) when the whole object was read in order."""

    def __init__(self, url: str, settings: RemoteSettings, info: ObjectInfo, copy: str) -> None:
        os.makedirs(settings.cache_dir or ".", exist_ok=True)
        self._copy = copy
        self._version = info.version
        fd, self._tmp = tempfile.mkstemp(dir=os.path.dirname(copy), prefix=".part-")
        self._out = os.fdopen(fd, "wb")
        self._crc = 0
        self._written = 0
        super().__init__(url, settings, size=info.size, sink=self._write)

    def _write(self, block: bytes) -> None:
        self._out.write(block)
        self._crc = crc32c.crc32c(block, self._crc)
        self._written += len(block)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._out.close()
        if self._sequential and self._written == self.size:
            os.replace(self._tmp, self._copy)
            note = {
                "url": redact_url(self.url),
                "size": self.size,
                "version": self._version,
                "crc32c": self._crc,
                "mtime_ns": os.stat(self._copy).st_mtime_ns,
            }
            with tempfile.NamedTemporaryFile(
                "w", dir=os.path.dirname(self._copy), prefix=".note-", delete=False
            ) as f:
                json.dump(note, f)
            os.replace(f.name, self._copy + ".json")
        else:
            os.unlink(self._tmp)
