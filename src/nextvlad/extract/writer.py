"""YouTube-8M records of extracted videos, in TFRecord shards written atomically, resumable.

Layout (Google's ``extract_tfrecords_main.py`` and the YouTube-8M release): a frame-level
``SequenceExample`` has context ``id`` (bytes), ``labels`` (int64), ``mean_rgb`` (float[1024])
and, with audio, ``mean_audio`` (float[128]); feature lists ``rgb`` and ``audio`` of one
1024- / 128-byte string a frame. A video-level ``Example`` has ``id``, ``labels``,
``mean_rgb`` (and ``mean_audio``).

:class:`ShardWriter` writes ``DIR/features[-rR]-NNNNN.tfrecord`` shards of ``shard_size``
records: each shard is written to a temporary file and renamed whole once complete, then the
manifest (``DIR/manifest[-rR].json``: each shard's ids) is replaced atomically. A rerun reads
every manifest of DIR (and the ids of any shard that a kill left out of its manifest), so it
skips what DIR holds; a kill -9 loses only the shard being written (its temporary file is
removed by the next run of the same rank).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from nextvlad._atomic import atomic_write, atomic_write_bytes
from nextvlad.data.example import encode_example, encode_sequence_example, parse_example
from nextvlad.data.tfrecord import TFRecordWriter, iter_records
from nextvlad.errors import NextVLADError
from nextvlad.extract.pipeline import ExtractedVideo

__all__ = ["ShardWriter", "encode_extracted", "written_ids"]

PREFIX = "features"
MANIFEST_FORMAT = "nextvlad-extract-manifest"
_SHARD = re.compile(rf"^{PREFIX}(?:-r(\d+))?-(\d{{5}})\.tfrecord$")
_MANIFEST = re.compile(r"^manifest(?:-r\d+)?\.json$")
_TEMPORARY = re.compile(r"^\.(.+\.(?:tfrecord|json))\.[^.]+\.tmp$")


def encode_extracted(video: ExtractedVideo, *, video_level: bool = False) -> bytes:
    """The serialized record of ``video`` in YouTube-8M's layout."""
    context: dict[str, Any] = {
        "id": video.id.encode("utf-8"),
        "labels": np.asarray(video.labels, np.int64),
        "mean_rgb": np.asarray(video.mean_rgb, np.float32),
    }
    if video.mean_audio is not None:
        context["mean_audio"] = np.asarray(video.mean_audio, np.float32)
    if video_level:
        return encode_example(context)
    lists = {"rgb": np.ascontiguousarray(video.rgb, np.uint8)}
    if video.audio is not None:
        lists["audio"] = np.ascontiguousarray(video.audio, np.uint8)
    return encode_sequence_example(context, lists)


def shard_name(rank: int | None, index: int) -> str:
    """``features-00003.tfrecord`` (one process) or ``features-r1-00003.tfrecord`` (rank 1)."""
    return (
        f"{PREFIX}-{index:05d}.tfrecord"
        if rank is None
        else f"{PREFIX}-r{rank}-{index:05d}.tfrecord"
    )


def _record_id(data: bytes) -> str | None:
    """The ``id`` of a record (Example or SequenceExample: the context is field 1 of both)."""
    value = parse_example(data).get("id")
    return value[0].decode("utf-8", "replace") if isinstance(value, list) and value else None


def _shard_ids(path: Path) -> list[str]:
    ids = []
    for record in iter_records(path):
        if isinstance(record, NextVLADError) or record.data is None:
            break
        found = _record_id(bytes(record.data))
        if found is not None:
            ids.append(found)
    return ids


def written_ids(out: Path) -> dict[str, list[str]]:
    """``{shard file name: ids}`` of the shards in ``out``: from the manifests, and read from a
    shard that no manifest lists (a kill between its rename and the manifest's)."""
    listed: dict[str, list[str]] = {}
    if not out.is_dir():
        return listed
    for manifest in sorted(out.iterdir()):
        if _MANIFEST.match(manifest.name):
            try:
                document = json.loads(manifest.read_text("utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise NextVLADError(f"{manifest}: unreadable manifest ({err})") from None
            listed.update(document.get("shards", {}))
    found = {p.name for p in out.iterdir() if _SHARD.match(p.name)}
    shards = {name: ids for name, ids in listed.items() if name in found}
    for name in sorted(found - set(shards)):
        shards[name] = _shard_ids(out / name)
    return shards


class ShardWriter:
    """Records into shards of ``shard_size`` in ``out``, each shard atomic; ``rank`` None for
    one process, else the torchrun rank (in the names of its shards and manifest)."""

    def __init__(self, out: str | Path, *, shard_size: int = 100, rank: int | None = None) -> None:
        if shard_size < 1:
            raise ValueError("shard_size must be at least 1")
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.rank = rank
        self._manifest = self.out / ("manifest.json" if rank is None else f"manifest-r{rank}.json")
        self._remove_stale_temporaries()
        self.shards = written_ids(self.out)
        self.done = {vid for ids in self.shards.values() for vid in ids}
        self._mine = {n: ids for n, ids in self.shards.items() if self._index(n) is not None}
        self._next = max((self._index(n) or 0 for n in self._mine), default=-1) + 1
        self._open: Any = None
        self._writer: TFRecordWriter | None = None
        self._ids: list[str] = []
        self.records = 0

    def _index(self, name: str) -> int | None:
        match = _SHARD.match(name)
        if match is None:
            return None
        rank = None if match.group(1) is None else int(match.group(1))
        return int(match.group(2)) if rank == self.rank else None

    def _remove_stale_temporaries(self) -> None:
        """Temporary files a killed run of this rank left (``atomic_write``'s ``.NAME.*.tmp``)."""
        for tmp in self.out.glob(".*.tmp"):
            match = _TEMPORARY.match(tmp.name)
            if match and (
                self._index(match.group(1)) is not None or match.group(1) == self._manifest.name
            ):
                tmp.unlink(missing_ok=True)

    def write(self, video_id: str, record: bytes) -> None:
        """Append one record (of ``video_id``); a full shard is closed and renamed."""
        if self._writer is None:
            name = shard_name(self.rank, self._next)
            self._open = atomic_write(self.out / name)
            self._writer = TFRecordWriter(self._open.__enter__())
        self._writer.write(record)
        self._ids.append(video_id)
        self.done.add(video_id)
        self.records += 1
        if len(self._ids) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Close the shard being written (if any): rename it, then update the manifest."""
        if self._writer is None:
            return
        name = shard_name(self.rank, self._next)
        self._writer.close()
        self._open.__exit__(None, None, None)
        self._writer = self._open = None
        self._mine[name] = self._ids
        self.shards[name] = self._ids
        self._ids = []
        self._next += 1
        document = {"format": MANIFEST_FORMAT, "version": 1, "shards": self._mine}
        atomic_write_bytes(self._manifest, (json.dumps(document, indent=1) + "\n").encode())

    def abort(self) -> None:
        """Drop the shard being written (its records are not in DIR)."""
        if self._writer is None:
            return
        self._writer.close()
        err = RuntimeError("aborted")
        try:
            self._open.__exit__(type(err), err, None)
        finally:
            self.done.difference_update(self._ids)
            self._writer = self._open = None
            self._ids = []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Records are written whole, so the shard is kept after an interruption (Ctrl-C); an
        # error in writing drops it.
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.flush()
        else:
            self.abort()


def shard_paths(out: Path) -> Iterable[Path]:
    """The shards of ``out``, in name order."""
    return sorted(p for p in out.iterdir() if _SHARD.match(p.name))
