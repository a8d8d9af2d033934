"""Reading videos from TFRecord files, with sharding and corrupt-record handling (no torch)."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from nextvlad.data.errors import CorruptRecordError, NoDataFilesError, RecordError
from nextvlad.data.schema import FRAME_LEVEL, Schema, Video, decode_video
from nextvlad.data.tfrecord import iter_records

__all__ = ["ReadStats", "read_videos", "resolve_files"]

log = logging.getLogger("nextvlad.data")

_GLOB_CHARS = frozenset("*?[")

PathsLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def resolve_files(files: PathsLike) -> list[str]:
    """Expands globs (sorted) and checks that every named file exists.

    ``files`` is one path or glob, or a list of them. Repeated files are kept once.

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
    return list(dict.fromkeys(out))


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
) -> Iterator[Video]:
    """Decoded videos of ``files`` (in the order given) that belong to ``shard`` of
    ``num_shards``.

    Sharding is by file when there are at least as many files as shards (shard ``s`` reads
    files ``s, s + num_shards, ...``), and by record otherwise (every shard walks all files and
    takes the records whose running index ``i`` over all files has ``i % num_shards == s``). Either
    way the shards together read every record exactly once.

    With ``skip_corrupt`` corrupt and off-schema records are logged, counted in ``stats`` and in
    the ``skipped`` field of the next video yielded; otherwise the first one raises.

    Raises:
        RecordError: (``CorruptRecordError`` or ``SchemaError``) naming file, record and offset.
        NoDataFilesError: a file that disappeared.
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} not in [0, {num_shards})")
    stats = stats if stats is not None else ReadStats()
    pending = 0
    by_file = len(files) >= num_shards
    mine = files[shard::num_shards] if by_file else files
    base = 0  # running record index over all files (record sharding)
    for path in mine:
        want = None if by_file else (lambda i, b=base: (b + i) % num_shards == shard)
        count = 0
        for item in iter_records(path, verify=verify, want=want, recycle=True):
            if isinstance(item, CorruptRecordError):
                if not skip_corrupt:
                    raise item
                log.warning("skipping corrupt record: %s", item)
                stats.add_corrupt(item)
                pending += 1
                assert item.index is not None
                # A record that ends the file was never complete: it does not count.
                count = item.index if getattr(item, "ends_file", False) else item.index + 1
                continue
            count = item.index + 1
            if item.data is None:
                continue
            try:
                video = decode_video(
                    item.data,
                    schema,
                    max_frames=max_frames,
                    num_classes=num_classes,
                    owner=item.owner,
                )
            except RecordError as err:
                located = err.located(path, item.index, item.offset)
                if not skip_corrupt:
                    raise located from None
                log.warning("skipping corrupt record: %s", located)
                stats.add_corrupt(located)
                pending += 1
                continue
            stats.num_records += 1
            if pending:
                video = replace(video, skipped=pending)
                pending = 0
            yield video
        base += count
