"""YouTube-8M record schemas and the decoded video.

Frame-level records are ``SequenceExample``s: context ``id`` (``video_id`` in the 2017 release)
and ``labels`` (int64 list); feature lists ``rgb`` (1024 bytes a frame) and ``audio`` (128 bytes
a frame), quantised uint8. Video-level records are ``Example``s with ``id``/``video_id``,
``labels``, ``mean_rgb`` (float[1024]) and ``mean_audio`` (float[128]). The 2019 segment-rated
set adds context keys ``segment_start_times``, ``segment_end_times``, ``segment_labels`` (int64)
and ``segment_scores`` (float), exposed as :class:`Segments`. ``segment_end_times`` is optional:
Google's segment reader never reads it (a segment is :data:`SEGMENT_SIZE` frames from its start
time), so a record may carry the other three keys alone; its end times are then start + 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from nextvlad._yt8m import AUDIO_DIM, RGB_DIM, YT8M_NUM_CLASSES
from nextvlad.data import _wire
from nextvlad.data.errors import ClassRangeError, CorruptRecordError, SchemaError
from nextvlad.data.example import (
    FeatureLike,
    encode_example,
    encode_sequence_example,
    merged_features,
)
from nextvlad.errors import ConfigError

__all__ = [
    "FRAME_LEVEL",
    "SEGMENT_KEYS",
    "SEGMENT_SIZE",
    "VIDEO_LEVEL",
    "YT8M_NUM_CLASSES",
    "FeatureSpec",
    "Schema",
    "Segments",
    "Video",
    "decode_video",
    "encode_video",
    "infer_schema",
]

SEGMENT_KEYS = ("segment_start_times", "segment_end_times", "segment_labels", "segment_scores")
# Frames (seconds) of a rated segment of the 2019 set, as Google's reader assumes.
SEGMENT_SIZE = 5


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of a record: its key and its size."""

    name: str  # key in the record (feature list for frame-level data, context for video-level)
    dim: int  # bytes a frame (frame-level, uint8) or floats (video-level)


@dataclass(frozen=True)
class Schema:
    """What a record holds. Defaults: YouTube-8M frame-level (``rgb`` 1024 + ``audio`` 128)."""

    # Features in the order they are concatenated along the last axis of a batch.
    features: tuple[FeatureSpec, ...] = (
        FeatureSpec("rgb", RGB_DIM),
        FeatureSpec("audio", AUDIO_DIM),
    )
    # True: SequenceExample with one uint8 frame a step; False: Example with float vectors.
    frame_level: bool = True
    # Context keys tried in order for the video id (2017 records use "video_id").
    id_keys: tuple[str, ...] = ("id", "video_id")
    # Context key of the int64 labels (a record without it has no labels).
    labels_key: str = "labels"

    def __post_init__(self) -> None:
        if not self.features:
            raise ConfigError("a schema needs at least one feature")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ConfigError(f"feature names repeat: {names}")
        for spec in self.features:
            if spec.dim <= 0:
                raise ConfigError(f"feature {spec.name!r} has size {spec.dim}; must be positive")
        if not self.id_keys:
            raise ConfigError("a schema needs at least one id key")

    @property
    def dim(self) -> int:
        """Total size of the concatenated features (1152 for YouTube-8M)."""
        return sum(spec.dim for spec in self.features)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.features)

    @classmethod
    def from_specs(cls, specs: str | Sequence[FeatureSpec], *, frame_level: bool = True) -> Schema:
        """A schema from ``"rgb:1024,audio:128"`` or a list of :class:`FeatureSpec`."""
        if isinstance(specs, str):
            parsed = []
            for part in specs.split(","):
                name, _, dim = part.strip().rpartition(":")
                if not name or not dim.isdigit():
                    raise ConfigError(f"bad feature spec {part!r}; expected NAME:SIZE")
                parsed.append(FeatureSpec(name, int(dim)))
            specs = parsed
        return cls(features=tuple(specs), frame_level=frame_level)


FRAME_LEVEL = Schema()
VIDEO_LEVEL = Schema(
    features=(FeatureSpec("mean_rgb", RGB_DIM), FeatureSpec("mean_audio", AUDIO_DIM)),
    frame_level=False,
)


@dataclass(frozen=True, eq=False)
class Segments:
    """Segment-level annotations of the 2019 set; all arrays have shape (S,)."""

    start_times: np.ndarray  # int64, first frame (second) of each rated segment
    end_times: np.ndarray  # int64 (start + SEGMENT_SIZE when the record has none)
    labels: np.ndarray  # int64, the class each segment was rated for
    scores: np.ndarray  # float32, 1.0 = the class is present in the segment, 0.0 = absent

    @classmethod
    def rated(
        cls,
        start_times: np.ndarray | Sequence[int],
        labels: np.ndarray | Sequence[int],
        scores: np.ndarray | Sequence[float],
        end_times: np.ndarray | Sequence[int] | None = None,
    ) -> Segments:
        """Segments from their ratings; end times default to start + :data:`SEGMENT_SIZE`."""
        starts = np.asarray(start_times, np.int64)
        ends = starts + SEGMENT_SIZE if end_times is None else np.asarray(end_times, np.int64)
        return cls(starts, ends, np.asarray(labels, np.int64), np.asarray(scores, np.float32))


@dataclass(frozen=True, eq=False)
class Video:
    """One decoded video.

    ``features[name]`` is, in schema order, a (T, D) uint8 array of quantised frames for
    frame-level data (a read-only view into the record's bytes; T = ``num_frames`` may be 0), or a
    (D,) float32 vector for video-level data (``num_frames`` is None).
    """

    id: str
    labels: np.ndarray  # (L,) int64 class indices
    features: dict[str, np.ndarray]
    num_frames: int | None
    segments: Segments | None = None
    # Corrupt records the reader skipped (skip_corrupt=True) since the previous video it yielded
    # (the last video of a stream also carries the skips after it).
    skipped: int = field(default=0, compare=False)

    @classmethod
    def placeholder(cls, skipped: int) -> Video:
        """A stand-in with no id, label or feature that only carries ``skipped``: what a shard
        whose every record was skipped yields, so that the count still reaches a batch."""
        return cls("", np.zeros(0, np.int64), {}, None, skipped=skipped)

    @property
    def is_placeholder(self) -> bool:
        """True for :meth:`placeholder` (a real video has at least one feature)."""
        return not self.features


Ranges: TypeAlias = dict[str, list[tuple[int, int]]]  # feature key -> byte ranges of its value


def _one(buf: _wire.Buffer, ctx: Ranges, key: str) -> tuple[str, object]:
    return _wire.decode_feature_ranges(buf, ctx[key])


def _int64s(buf: _wire.Buffer, ctx: Ranges, key: str) -> np.ndarray:
    kind, value = _one(buf, ctx, key)
    if kind == "int64":
        return value  # type: ignore[return-value]
    if kind == "":
        return np.zeros(0, np.int64)
    raise SchemaError(f"context {key!r} is a {kind} list, expected int64")


def _check_classes(labels: np.ndarray, what: str, num_classes: int | None) -> None:
    if labels.size == 0:
        return
    values = labels.tolist()  # Python min/max beat numpy reductions on a handful of labels
    low, high = min(values), max(values)
    if low < 0:
        raise SchemaError(f"{what} has negative class {low}")
    if num_classes is not None and high >= num_classes:
        raise ClassRangeError(
            f"{what} has class {high}, not below the number of classes {num_classes}"
        )


def decode_video(
    record: _wire.Buffer,
    schema: Schema = FRAME_LEVEL,
    *,
    max_frames: int | None = None,
    num_classes: int | None = None,
    owner: np.ndarray | None = None,
) -> Video:
    """Decodes one serialized record into a :class:`Video`, checking it against ``schema``.

    Frame-level frames are cut after ``max_frames``. Labels (and segment labels) must lie in
    ``[0, num_classes)`` when ``num_classes`` is given. ``owner``, a uint8 array over the same
    bytes as ``record``, is what the frame arrays are made from when given (so that they keep it,
    and not ``record``, alive: the readers recycle read buffers when their owner is freed).

    Raises:
        CorruptRecordError: bytes that are not a valid protocol buffer.
        SchemaError: a valid record that does not fit the schema (missing key, wrong kind or size,
            feature lists of different lengths, labels out of range). Neither names the file;
            readers add it with :meth:`RecordError.located`.
    """
    try:
        return _decode_video(record, schema, max_frames, num_classes, owner)
    except _wire.WireError as err:
        raise CorruptRecordError(f"malformed protocol buffer: {err}") from None


def _decode_video(
    buf: _wire.Buffer,
    schema: Schema,
    max_frames: int | None,
    num_classes: int | None,
    owner: np.ndarray | None,
) -> Video:
    context_ranges, list_ranges = _wire.decode_top(buf)
    ctx = merged_features(buf, context_ranges)
    video_id = _video_id(buf, ctx, schema.id_keys)
    has_labels = schema.labels_key in ctx
    labels = _int64s(buf, ctx, schema.labels_key) if has_labels else np.zeros(0, np.int64)
    _check_classes(labels, "labels", num_classes)
    segments = _segments(buf, ctx, num_classes)
    if schema.frame_level:
        features, num_frames = _frames(buf, list_ranges, schema, max_frames, owner)
        return Video(video_id, labels, features, num_frames, segments)
    return Video(video_id, labels, _vectors(buf, ctx, list_ranges, schema), None, segments)


def _video_id(buf: _wire.Buffer, ctx: Ranges, id_keys: tuple[str, ...]) -> str:
    """The id under the first of ``id_keys`` the context has."""
    for key in id_keys:
        if key in ctx:
            kind, value = _one(buf, ctx, key)
            if kind != "bytes" or len(value) != 1:  # type: ignore[arg-type]
                raise SchemaError(f"context {key!r} is not a single bytes value")
            try:
                return value[0].decode("utf-8")  # type: ignore[index]
            except UnicodeDecodeError:
                raise SchemaError(f"context {key!r} is not UTF-8") from None
    found = ", ".join(repr(k) for k in list(ctx)[:8]) or "none"
    raise SchemaError(f"no id: none of the context keys {list(id_keys)} (keys found: {found})")


def _segments(buf: _wire.Buffer, ctx: Ranges, num_classes: int | None) -> Segments | None:
    """The 2019 segment annotations, None for a record without them (all four keys, the three
    without ``segment_end_times``, or none; missing end times are start + SEGMENT_SIZE)."""
    present = [k for k in SEGMENT_KEYS if k in ctx]
    if not present:
        return None
    missing = [k for k in SEGMENT_KEYS if k not in ctx and k != SEGMENT_KEYS[1]]
    if missing:
        raise SchemaError(f"segment annotations incomplete: missing {missing}")
    starts = _int64s(buf, ctx, SEGMENT_KEYS[0])
    has_ends = SEGMENT_KEYS[1] in ctx
    ends = _int64s(buf, ctx, SEGMENT_KEYS[1]) if has_ends else starts + SEGMENT_SIZE
    seg_labels = _int64s(buf, ctx, SEGMENT_KEYS[2])
    kind, scores = _one(buf, ctx, SEGMENT_KEYS[3])
    if kind == "":
        scores = np.zeros(0, np.float32)
    elif kind != "float":
        raise SchemaError(f"context 'segment_scores' is a {kind} list, expected float")
    sizes = {len(starts), len(ends), len(seg_labels), len(scores)}  # type: ignore[arg-type]
    if len(sizes) != 1:
        raise SchemaError(
            f"segment annotations of different lengths: {len(starts)} starts, {len(ends)} "
            f"ends, {len(seg_labels)} labels, {len(scores)} scores"  # type: ignore[arg-type]
        )
    _check_classes(seg_labels, "segment_labels", num_classes)
    return Segments(starts, ends, seg_labels, scores)  # type: ignore[arg-type]


def _frames(
    buf: _wire.Buffer,
    list_ranges: list[tuple[int, int]],
    schema: Schema,
    max_frames: int | None,
    owner: np.ndarray | None,
) -> tuple[dict[str, np.ndarray], int]:
    """The (T, D) uint8 frames of each feature of a frame-level schema, and T (after the cut)."""
    lists = merged_features(buf, list_ranges)
    if not lists:
        raise SchemaError(
            "no feature lists: not a frame-level SequenceExample (video-level data? "
            "use the video-level schema)"
        )
    features: dict[str, np.ndarray] = {}
    num_frames = -1
    for spec in schema.features:
        if spec.name not in lists:
            raise SchemaError(
                f"no feature list {spec.name!r} (found: {', '.join(map(repr, lists))})"
            )
        try:
            frames = _wire.decode_frames(buf, lists[spec.name], spec.dim, spec.name, owner)
        except _wire.FrameSizeError as err:
            raise SchemaError(str(err)) from None
        if num_frames < 0:
            num_frames = len(frames)
        elif len(frames) != num_frames:
            first = schema.features[0].name
            raise SchemaError(
                f"feature lists differ in length: {first!r} has {num_frames} frames, "
                f"{spec.name!r} has {len(frames)}"
            )
        features[spec.name] = frames
    if max_frames is not None and num_frames > max_frames:
        features = {name: frames[:max_frames] for name, frames in features.items()}
        num_frames = max_frames
    return features, num_frames


def _vectors(
    buf: _wire.Buffer, ctx: Ranges, list_ranges: list[tuple[int, int]], schema: Schema
) -> dict[str, np.ndarray]:
    """The (D,) float32 vector of each feature of a video-level schema."""
    if list_ranges and any(b > a for a, b in list_ranges):
        raise SchemaError(
            "record has feature lists: frame-level data read with a video-level schema"
        )
    features: dict[str, np.ndarray] = {}
    for spec in schema.features:
        if spec.name not in ctx:
            raise SchemaError(f"no feature {spec.name!r}")
        kind, value = _one(buf, ctx, spec.name)
        if kind != "float":
            raise SchemaError(f"feature {spec.name!r} is a {kind or 'empty'} list, expected float")
        if len(value) != spec.dim:  # type: ignore[arg-type]
            raise SchemaError(
                f"feature {spec.name!r} has {len(value)} values, expected {spec.dim}"  # type: ignore[arg-type]
            )
        features[spec.name] = value  # type: ignore[assignment]
    return features


def encode_video(video: Video, schema: Schema = FRAME_LEVEL, *, id_key: str = "id") -> bytes:
    """Serializes a video in the 2018 YouTube-8M layout of ``schema`` (context ``id``,
    ``labels``, then segments if any; features in schema order)."""
    context: dict[str, FeatureLike] = {
        id_key: video.id.encode("utf-8"),
        schema.labels_key: np.asarray(video.labels, np.int64),
    }
    if video.segments is not None:
        seg = video.segments
        context.update(
            {
                SEGMENT_KEYS[0]: np.asarray(seg.start_times, np.int64),
                SEGMENT_KEYS[1]: np.asarray(seg.end_times, np.int64),
                SEGMENT_KEYS[2]: np.asarray(seg.labels, np.int64),
                SEGMENT_KEYS[3]: np.asarray(seg.scores, np.float32),
            }
        )
    if schema.frame_level:
        lists = {
            spec.name: np.asarray(video.features[spec.name], np.uint8) for spec in schema.features
        }
        return encode_sequence_example(context, lists)
    for spec in schema.features:
        context[spec.name] = np.asarray(video.features[spec.name], np.float32)
    return encode_example(context)


def infer_schema(record: _wire.Buffer) -> Schema | None:
    """The schema a record appears to follow, or None if it cannot tell (e.g. zero frames).

    Frame-level when the record has feature lists (each with the size of its first frame),
    video-level otherwise (every float context feature except ``segment_scores``).

    Raises:
        CorruptRecordError: bytes that are not a valid protocol buffer.
    """
    try:
        context_ranges, list_ranges = _wire.decode_top(record)
        lists = merged_features(record, list_ranges)
        if lists:
            return _frame_level_schema(record, lists)
        return _video_level_schema(record, merged_features(record, context_ranges))
    except _wire.WireError as err:
        raise CorruptRecordError(f"malformed protocol buffer: {err}") from None


def _frame_level_schema(record: _wire.Buffer, lists: Ranges) -> Schema | None:
    specs = []
    for name, ranges in lists.items():
        dim = _first_frame_size(record, ranges)
        if not dim:
            return None
        specs.append(FeatureSpec(name, dim))
    return _known(Schema(features=tuple(specs), frame_level=True))


def _first_frame_size(record: _wire.Buffer, ranges: list[tuple[int, int]]) -> int | None:
    """Bytes of a feature list's first frame; None when no piece of the list starts with a
    single bytes value."""
    for a, b in ranges:
        for number, wire, fa, fb in _wire.iter_fields(record, a, b):
            if number == 1 and wire == _wire.LEN:
                kind, value = _wire.decode_feature(record, fa, fb)
                if kind == "bytes" and len(value) == 1:
                    return len(value[0])
                break
    return None


def _video_level_schema(record: _wire.Buffer, ctx: Ranges) -> Schema | None:
    specs = []
    for name in ctx:
        if name in SEGMENT_KEYS:
            continue
        kind, value = _wire.decode_feature_ranges(record, ctx[name])
        if kind == "float" and len(value) > 0:
            specs.append(FeatureSpec(name, len(value)))
    return _known(Schema(features=tuple(specs), frame_level=False)) if specs else None


def _known(schema: Schema) -> Schema:
    """The YouTube-8M schema (in its canonical feature order) when ``schema`` has its features."""
    for known in (FRAME_LEVEL, VIDEO_LEVEL):
        if known.frame_level == schema.frame_level and set(known.features) == set(schema.features):
            return known
    return schema
