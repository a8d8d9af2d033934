"""Writing a file atomically: a temporary file in the same folder, fsync, rename (the one way
this project writes a file). Standard library only, so every layer may use it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes"]


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """``with atomic_write(path) as tmp:`` write ``tmp``; on success it is synced to disk and
    renamed to ``path``, so readers see the old file or the whole new one; on an error it is
    removed. ``tmp`` is ``.NAME.*.tmp`` in ``path``'s folder (created if missing); the file
    gets the permissions the umask allows (0644 under the usual 022), as ``open()`` gives."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            # mkstemp makes the file private (0600); the final file gets the mode a plain
            # open() would give it, so that checkpoints can be shared like any other file.
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_write``)."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
