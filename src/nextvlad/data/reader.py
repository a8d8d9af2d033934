"""Reading videos from TFRecord files, with sharding and corrupt-record handling (no torch)."""

from __future__ import annotations

import glob
import logging
import os
import posixpath
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from nextvlad.data._urls import REDACTED
from nextvlad.data.errors import CorruptRecordError, NoDataFilesError, RecordError
from nextvlad.data.remote import expand_remote, is_remote, local_path, redact_url
from nextvlad.data.schema import FRAME_LEVEL, Schema, Video, decode_video
from nextvlad.data.tfrecord import iter_records

__all__ = ["ReadStats", "read_videos", "resolve_files"]

log = logging.getLogger("nextvlad.data")

_GLOB_CHARS = frozenset("*?[")
_DEFAULT_PORTS = {"http": 80, "https": 443}

PathsLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def resolve_files(files: PathsLike) -> list[str]:
    """Expands globs (sorted) and checks that every named file exists.

    ``files`` is one path, glob or URL (``gs://``, ``s3://``, ``https://``, ``file://``; see
    ``nextvlad.data.remote``), or a list of them. A file named twice, under any spelling (a
    glob and its path, ``./x``, an absolute path, a link; URLs compared normalised: see
    :func:`dedupe_key`), is kept once, where it first came, with a warning naming both.
    ``file://`` URLs become plain paths; remote URLs stay URLs.

    Raises:
        NoDataFilesError: a glob that matches nothing, a path that does not exist or is a
            directory, or an empty list.
    """
    items = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not items:
        raise NoDataFilesError("no data files given")
    out: list[str] = []
    for item in items:
        name = os.fspath(item)
        if is_remote(name):
            out.extend(expand_remote(name))
            continue
        name = local_path(name)
        if _GLOB_CHARS & set(name):
            matches = sorted(p for p in glob.glob(name) if os.path.isfile(p))
            if not matches:
                raise NoDataFilesError(f"no files match {name!r}")
            out.extend(matches)
        elif os.path.isdir(name):
            raise NoDataFilesError(
                f"{name} is a directory; give files or a glob such as {str(Path(name) / '*.tfrecord')!r}"
            )
        elif not os.path.isfile(name):
            raise NoDataFilesError(f"no such file: {name}")
        else:
            out.append(name)
    return _once(out)


def _once(files: list[str]) -> list[str]:
    """``files`` with each file kept where it first came; a warning for every repeat."""
    first: dict[str, str] = {}
    for name in files:
        key = dedupe_key(name)
        if key not in first:
            first[key] = name
            continue
        seen = first[key]
        also = "" if seen == name else f" is {redact_url(seen)}"
        log.warning("data file given twice: %s%s (read once)", redact_url(name), also)
    return list(first.values())


def dedupe_key(name: str) -> str:
    """What two spellings of one data file share: a local file's real path (links and
    ``..`` resolved); for a URL its scheme and host lower-cased, the scheme's default port
    dropped, dot segments of an http(s) path removed, and credentials in the query left out
    (two signed URLs of one object are one file)."""
    if not is_remote(name):
        return os.path.realpath(local_path(name))
    parts = urlsplit(redact_url(name))
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    path = parts.path
    if scheme in ("http", "https") and path:
        path = posixpath.normpath(path) + ("/" if path.endswith("/") else "")
    query = "" if parts.query == REDACTED else parts.query
    return urlunsplit((scheme, netloc, path, query, ""))


@dataclass
class ReadStats:
    """What a reader saw: records decoded and corrupt records skipped (first 100 kept)."""

    num_records: int = 0  # records read and decoded into videos
    num_corrupt: int = 0  # records skipped as corrupt (only with skip_corrupt=True)
    corrupt: list[RecordError] = field(default_factory=list)

    def add_corrupt(self, err: RecordError) -> None:
        self.num_corrupt += 1
        if len(self.corrupt) < 100:
            self.corrupt.append(err)


def read_videos(
    files: Sequence[str],
    schema: Schema = FRAME_LEVEL,
    *,
    max_frames: int | None = None,
    num_classes: int | None = None,
    skip_corrupt: bool = False,
    verify: bool = True,
    shard: int = 0,
    num_shards: int = 1,
    stats: ReadStats | None = None,
    placeholder: bool = False,
) -> Iterator[Video]:
    """Decoded videos of ``files`` (in the order given) that belong to ``shard`` of
    ``num_shards``.

    Sharding is by file when there are at least as many files as shards (shard ``s`` reads
    files ``s, s + num_shards, ...``), and by record otherwise (every shard walks all files and
    takes the records whose running index ``i`` over all files has ``i % num_shards == s``). Either
    way the shards together read every record exactly once.

    With ``skip_corrupt`` corrupt and off-schema records are logged, counted in ``stats`` and in
    the ``skipped`` field of the next video yielded (of the last one for skips after it: the
    ``skipped`` fields add up to every skip); otherwise the first one raises. A shard that yields
    no video at all has nothing to carry its skips: with ``placeholder`` it then ends with
    :meth:`Video.placeholder` carrying them (for pipelines that count ``skipped``, such as
    :class:`~nextvlad.data.VideoDataset`), without it they are only in ``stats``.

    Raises:
        RecordError: (``CorruptRecordError`` or ``SchemaError``) naming file, record and offset.
        NoDataFilesError: a file that disappeared.
    """
    reading = _Reading(schema, max_frames, num_classes, skip_corrupt, verify, stats)
    videos = reading.videos(files, shard, num_shards)
    return _carry_trailing_skips(videos, reading, placeholder) if skip_corrupt else videos


class _Reading:
    """One :func:`read_videos` stream: its settings, its stats, and the skips that no video has
    carried yet."""

    def __init__(
        self,
        schema: Schema,
        max_frames: int | None,
        num_classes: int | None,
        skip_corrupt: bool,
        verify: bool,
        stats: ReadStats | None,
    ) -> None:
        self.schema = schema
        self.max_frames = max_frames
        self.num_classes = num_classes
        self.skip_corrupt = skip_corrupt
        self.verify = verify
        self.stats = stats if stats is not None else ReadStats()
        self.pending = 0  # records skipped since the last video yielded

    def videos(self, files: Sequence[str], shard: int, num_shards: int) -> Iterator[Video]:
        """The shard's videos, each carrying the skips since the one before."""
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard {shard} not in [0, {num_shards})")
        by_file = len(files) >= num_shards
        mine = files[shard::num_shards] if by_file else files
        base = 0  # running record index over all files (record sharding)
        for path in mine:
            want = None if by_file else (lambda i, b=base: (b + i) % num_shards == shard)
            base += yield from self._file_videos(path, want)

    def _file_videos(
        self, path: str, want: Callable[[int], bool] | None
    ) -> Generator[Video, None, int]:
        """The videos of one file; returns the number of records it framed."""
        count = 0
        for item in iter_records(path, verify=self.verify, want=want, recycle=True):
            if isinstance(item, CorruptRecordError):
                self._skip(item)
                assert item.index is not None
                # A record that ends the file was never complete: it does not count.
                count = item.index if item.ends_file else item.index + 1
                continue
            count = item.index + 1
            if item.data is None:
                continue
            try:
                video = decode_video(
                    item.data,
                    self.schema,
                    max_frames=self.max_frames,
                    num_classes=self.num_classes,
                    owner=item.owner,
                )
            except RecordError as err:
                self._skip(err.located(redact_url(path), item.index, item.offset))
                continue
            self.stats.num_records += 1
            if self.pending:
                video = replace(video, skipped=self.pending)
                self.pending = 0
            yield video
        return count

    def _skip(self, err: RecordError) -> None:
        """Counts a corrupt record, or raises it without ``skip_corrupt``."""
        if not self.skip_corrupt:
            raise err from None
        log.warning("skipping corrupt record: %s", err)
        self.stats.add_corrupt(err)
        self.pending += 1


def _carry_trailing_skips(
    videos: Iterator[Video], reading: _Reading, placeholder: bool
) -> Iterator[Video]:
    """``videos`` one behind, so that the last also carries the skips after it."""
    held: Video | None = None
    for video in videos:
        if held is not None:
            yield held
        held = video
    if held is not None:
        if reading.pending:
            held = replace(held, skipped=held.skipped + reading.pending)
            reading.pending = 0
        yield held
    elif placeholder and reading.pending:
        yield Video.placeholder(reading.pending)
        reading.pending = 0
