"""The inputs of `nextvlad extract`: files, image folders, globs, fsspec URLs, CSV lists.

A CSV (``*.csv``) is Google's ``--input_videos_csv``: ``path,labels`` lines, the labels
integers joined by ``;`` (an optional ``path,labels`` header line; blank lines skipped). A URL
of a remote filesystem (``s3://``, ``gs://``, ``https://``) is copied to a temporary file
before it is decoded (:func:`local_copy`), through :mod:`nextvlad.data.remote`.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nextvlad.data import remote
from nextvlad.data.errors import NoDataFilesError
from nextvlad.errors import UsageError

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Item:
    """One input: its path or URL as given and its labels."""

    source: str
    labels: tuple[int, ...] = field(default=())


def parse_labels(text: str, where: str) -> tuple[int, ...]:
    """``"17;3"`` (or ``"17,3"``) -> (3, 17), sorted as Google's tool writes them; empty -> ()."""
    parts = [p.strip() for p in text.replace(",", ";").split(";") if p.strip()]
    try:
        labels = tuple(sorted(int(p) for p in parts))
    except ValueError:
        raise UsageError(f"{where}: labels must be integers joined by ';', not {text!r}") from None
    if any(label < 0 for label in labels):
        raise UsageError(f"{where}: labels must not be negative ({text!r})")
    return labels


def read_csv(path: str) -> list[Item]:
    """The ``path,labels`` lines of Google's ``--input_videos_csv``."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"{path}: {err}") from None
    items = []
    for line, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if line == 1 and [c.strip().lower() for c in row[:2]] == ["path", "labels"]:
            continue
        if len(row) > 2:
            raise UsageError(f"{path}, line {line}: expected 'path,labels', got {len(row)} fields")
        labels = parse_labels(row[1], f"{path}, line {line}") if len(row) == 2 else ()
        items.append(Item(row[0].strip(), labels))
    return items


def expand_inputs(inputs: Sequence[str], labels: Sequence[int] = ()) -> list[Item]:
    """Every input in order (globs sorted); ``labels`` go to those not from a CSV.

    Raises:
        UsageError: a path that does not exist, a glob that matches nothing, a bad CSV.
    """
    items: list[Item] = []
    for given in inputs:
        if remote.is_remote(given):
            try:
                urls = remote.expand_remote(given)
            except NoDataFilesError as err:
                raise UsageError(str(err)) from None
            items += [Item(url, tuple(labels)) for url in urls]
            continue
        name = remote.local_path(given)
        if any(c in name for c in _GLOB_CHARS) and not os.path.exists(name):
            found = sorted(glob.glob(name))
            if not found:
                raise UsageError(f"no files match {given!r}")
            items += _local(found, labels)
        elif not os.path.exists(name):
            raise UsageError(f"{given}: no such file or folder")
        else:
            items += _local([name], labels)
    return items


def _local(paths: list[str], labels: Sequence[int]) -> list[Item]:
    items: list[Item] = []
    for path in paths:
        if path.lower().endswith(".csv") and os.path.isfile(path):
            items += read_csv(path)
        else:
            items.append(Item(path, tuple(labels)))
    return items


@contextlib.contextmanager
def local_copy(source: str | Path) -> Iterator[str]:
    """A local path of ``source``: itself, or a temporary copy of a remote object (removed
    after the block)."""
    name = str(source)
    if not remote.is_remote(name):
        yield remote.local_path(name)
        return
    suffix = Path(name.split("?", 1)[0]).suffix
    fd, tmp = tempfile.mkstemp(prefix="nextvlad-extract-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, remote.RemoteShard(name) as shard:
            shutil.copyfileobj(shard, out, 1 << 20)
        yield tmp
    finally:
        os.unlink(tmp)
