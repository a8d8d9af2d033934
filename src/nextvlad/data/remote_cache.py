"""The cache of remote shards (``--cache-dir``, ``NEXTVLAD_CACHE_DIR``) and the opening of a
remote shard for reading.

With a cache folder a remote shard is copied there as it is first read whole and in order
(the copy's CRC32C computed on the way), published by an atomic rename with a ``.json`` note
of its URL, size, CRC and modification time; later reads use the copy when its size matches
the object's and either its modification time is the note's (the copy is as it was written;
every record's own CRC is still checked as it is read, as for local files) or its CRC is the
note's (read whole to check it, once a process). Several workers or ranks may fill the same cache: each
writes a temporary file of its own and the renames publish identical bytes. A read that seeks
(records shared between workers) or stops early leaves no copy.
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

import crc32c

from nextvlad.data.remote import RemoteSettings, RemoteShard, file_size

__all__ = ["CachedCopy", "cached_path", "open_remote", "read_remote_instead"]

log = logging.getLogger("nextvlad.data")

# (copy, size, modification time) of the copies whose CRC this process has checked
_VERIFIED: set[tuple[str, int, int]] = set()


def open_remote(url: str, settings: RemoteSettings | None = None) -> io.RawIOBase:
    """A remote shard for reading: its cached copy when there is a valid one, else a
    :class:`RemoteShard` (that fills the cache when there is one and the read is whole)."""
    settings = settings or RemoteSettings.from_env()
    size = file_size(url)
    if settings.cache_dir is None:
        return RemoteShard(url, settings, size=size)
    copy = cached_path(settings.cache_dir, url)
    if _valid_copy(copy, url, size):
        return CachedCopy(copy, url, settings)
    return _CachingShard(url, settings, size, copy)


class CachedCopy(io.FileIO):
    """The cached copy of ``url``, read as a local file (``name`` is the copy's path)."""

    def __init__(self, copy: str, url: str, settings: RemoteSettings) -> None:
        super().__init__(copy, "rb")
        self.url, self.settings = url, settings


def read_remote_instead(copy: CachedCopy, offset: int, reason: str) -> RemoteShard:
    """A cached copy that turned out corrupt (a record's CRC, though its size and time were
    right: the disk changed it): removed, and the object streamed from ``offset`` on."""
    log.warning(
        "cached copy %s of %s is corrupt at offset %d (%s): removed; reading %s instead",
        copy.name, copy.url, offset, reason, copy.url,
    )  # fmt: skip
    copy.close()
    for path in (str(copy.name), f"{copy.name}.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    shard = RemoteShard(copy.url, copy.settings)
    shard.seek(offset)
    return shard


def cached_path(cache_dir: str, url: str) -> str:
    """Where the copy of ``url`` goes in ``cache_dir``."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[-80:]
    return os.path.join(cache_dir, f"{digest}-{name}")


def _valid_copy(copy: str, url: str, size: int) -> bool:
    """The copy exists with the object's size, and either is untouched since it was written
    (its modification time is the note's) or has the note's CRC (checked once a process)."""
    try:
        stat = os.stat(copy)
        with open(copy + ".json") as f:
            note = json.load(f)
    except (OSError, ValueError):
        return False
    if note.get("url") != url or note.get("size") != size or stat.st_size != size:
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

    def __init__(self, url: str, settings: RemoteSettings, size: int, copy: str) -> None:
        os.makedirs(settings.cache_dir or ".", exist_ok=True)
        self._copy = copy
        fd, self._tmp = tempfile.mkstemp(dir=os.path.dirname(copy), prefix=".part-")
        self._out = os.fdopen(fd, "wb")
        self._crc = 0
        self._written = 0
        super().__init__(url, settings, size=size, sink=self._write)

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
                "url": self.url,
                "size": self.size,
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
