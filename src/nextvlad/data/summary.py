"""What is in a set of TFRecord files (``nextvlad inspect``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nextvlad.data.errors import CorruptRecordError, RecordError
from nextvlad.data.reader import ReadStats, read_videos, resolve_files
from nextvlad.data.remote import redact_url
from nextvlad.data.schema import Schema, infer_schema
from nextvlad.data.tfrecord import iter_records
from nextvlad.errors import ConfigError

__all__ = ["Summary", "detect_schema", "files_schema", "summarize"]


def detect_schema(
    files: Sequence[str], *, skip_corrupt: bool = False, max_records: int = 1000
) -> Schema | None:
    """The schema of the first record (in the first ``max_records``) that shows one, or None.

    Raises:
        CorruptRecordError: a corrupt record met first, unless ``skip_corrupt``.
    """
    seen = 0
    for path in files:
        for item in iter_records(path):
            if isinstance(item, CorruptRecordError):
                if not skip_corrupt:
                    raise item
                continue
            assert item.data is not None
            try:
                schema = infer_schema(item.data)
            except RecordError as err:
                if not skip_corrupt:
                    raise err.located(redact_url(path), item.index, item.offset) from None
                continue
            if schema is not None:
                return schema
            seen += 1
            if seen >= max_records:
                return None
    return None


def files_schema(
    patterns: Sequence[str],
    *,
    skip_corrupt: bool = False,
    what: str = "the data",
    frame_level_for: str | None = None,
) -> tuple[list[str], Schema]:
    """The files of ``patterns`` (globs, resolved) and the schema their records show.
    ``what`` names them in errors ("the data", "--eval-data"); ``frame_level_for`` names the
    mode that needs frame-level records ("--segments").

    Raises:
        NoDataFilesError: a pattern that matches no file (a usage error).
        ConfigError: no record shows a known schema, or video-level records for
            ``frame_level_for``: the files' content, not the command line.
        CorruptRecordError: a corrupt record met first, unless ``skip_corrupt``.
    """
    data = f"{what} ({' '.join(patterns)})"
    files = resolve_files(patterns)
    schema = detect_schema(files, skip_corrupt=skip_corrupt)
    if schema is None:
        raise ConfigError(f"no record in {data} shows a known schema")
    if frame_level_for and not schema.frame_level:
        raise ConfigError(f"{frame_level_for} needs frame-level data; {data} is video-level")
    return files, schema


@dataclass
class Summary:
    """Counts over a set of files; see :meth:`to_json` for the keys."""

    num_files: int
    schema: Schema | None
    num_videos: int = 0
    frames: dict[str, float] | None = None  # min, mean, max frames a video (frame-level)
    num_label_occurrences: int = 0
    num_classes_seen: int = 0
    label_min: int | None = None
    label_max: int | None = None
    num_videos_with_segments: int = 0
    num_unique_ids: int = 0
    stats: ReadStats = field(default_factory=ReadStats)

    def to_json(self) -> dict[str, Any]:
        schema = self.schema
        return {
            "num_files": self.num_files,
            "level": None if schema is None else ("frame" if schema.frame_level else "video"),
            "features": {} if schema is None else {f.name: f.dim for f in schema.features},
            "num_videos": self.num_videos,
            "num_unique_ids": self.num_unique_ids,
            "frames": self.frames,
            "num_label_occurrences": self.num_label_occurrences,
            "num_classes_seen": self.num_classes_seen,
            "label_range": None if self.label_min is None else [self.label_min, self.label_max],
            "num_videos_with_segments": self.num_videos_with_segments,
            "num_corrupt": self.stats.num_corrupt,
            "corrupt": [
                {"file": e.path, "index": e.index, "offset": e.offset, "error": e.reason}
                for e in self.stats.corrupt
            ],
        }

    def format(self) -> str:
        """A human-readable report."""
        schema = self.schema
        lines = [f"files:                {self.num_files}"]
        if schema is None:
            lines.append("records:              none with features (empty files?)")
        else:
            kind = "frame-level SequenceExample" if schema.frame_level else "video-level Example"
            unit = "bytes a frame" if schema.frame_level else "floats"
            lines.append(f"records:              {kind}")
            feats = ", ".join(f"{f.name} ({f.dim} {unit})" for f in schema.features)
            lines.append(f"features:             {feats}")
        lines.append(f"videos:               {self.num_videos} ({self.num_unique_ids} unique ids)")
        if self.frames is not None:
            f = self.frames
            lines.append(
                f"frames per video:     min {f['min']:.0f}, mean {f['mean']:.1f}, max {f['max']:.0f}"
            )
        lines.append(f"label occurrences:    {self.num_label_occurrences}")
        span = "" if self.label_min is None else f" (classes {self.label_min}..{self.label_max})"
        lines.append(f"distinct classes:     {self.num_classes_seen}{span}")
        if self.num_videos_with_segments:
            lines.append(f"with segment labels:  {self.num_videos_with_segments} videos")
        lines.append(f"corrupt records:      {self.stats.num_corrupt}")
        for err in self.stats.corrupt[:20]:
            lines.append(f"  {err}")
        if self.stats.num_corrupt > 20:
            lines.append(f"  ... and {self.stats.num_corrupt - 20} more")
        return "\n".join(lines)


def summarize(
    files: Sequence[str],
    *,
    schema: Schema | None = None,
    skip_corrupt: bool = False,
    num_classes: int | None = None,
) -> Summary:
    """Reads every record of ``files`` (strictly, against ``schema`` or the one detected from
    the first record) and counts videos, frames, labels and corrupt records.

    Raises:
        RecordError: the first corrupt or off-schema record, unless ``skip_corrupt``.
    """
    if schema is None:
        schema = detect_schema(files, skip_corrupt=skip_corrupt)
    summary = Summary(num_files=len(files), schema=schema)
    if schema is None:
        return summary
    lengths: list[int] = []
    labels: list[np.ndarray] = []
    ids: set[str] = set()
    for video in read_videos(
        files, schema, num_classes=num_classes, skip_corrupt=skip_corrupt, stats=summary.stats
    ):
        summary.num_videos += 1
        ids.add(video.id)
        labels.append(video.labels)
        if video.num_frames is not None:
            lengths.append(video.num_frames)
        if video.segments is not None:
            summary.num_videos_with_segments += 1
    summary.num_unique_ids = len(ids)
    if schema.frame_level and lengths:
        array = np.asarray(lengths)
        summary.frames = {
            "min": int(array.min()),
            "mean": float(array.mean()),
            "max": int(array.max()),
        }
    if labels:
        flat = np.concatenate(labels)
        summary.num_label_occurrences = int(flat.size)
        if flat.size:
            summary.num_classes_seen = int(np.unique(flat).size)
            summary.label_min, summary.label_max = int(flat.min()), int(flat.max())
    return summary
