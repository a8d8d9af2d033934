"""A synthetic YouTube-8M-like data set that rewards good frame aggregation.

The world (fixed by ``concept_seed`` and the number of classes): every class has
``prototypes_per_class`` rgb prototypes (random directions of norm 16 in the 1024-d space, i.e.
about 0.5 a dimension) and one audio prototype (128-d).

A video (fixed by ``seed`` and its index) lasts 60 to 300 frames (``--frames`` of `nextvlad
synth`, :func:`frame_options`, chooses other lengths) and shows 1 to 4 classes (its
labels; 40/30/20/10 %, classes drawn with a mild long tail). Each label appears in one or two
short runs of 4 to 12 frames, each run showing one of the class's prototypes (plus the class's
audio prototype in 70 % of runs). Every other frame is background: a dense random mixture of
*all* prototypes that drifts from one mixture to another over the video. A per-video offset and
per-frame noise are added everywhere. Features are then quantised to uint8 exactly as
YouTube-8M's are (``x = q * 4/255 + 4/512 - 2``, so values live in [-2, 2]).

Why this is hard for mean pooling and easy for clustering: in the mean of a video a label
contributes its prototype times the small fraction of frames its runs cover (about 5-15 %),
while the background mixtures contribute every class's prototypes with random weights of
comparable size, so the mean is dominated by background. Frame by frame, a concept frame is
close to one prototype and far from everything else, so an aggregator that assigns frames to
clusters (NetVLAD, NeXtVLAD) sees the concepts clearly.

Segment-rated records (``segment_ratings``) add, like the 2019 set, a few ratings of 5-frame
segments on the 5-frame grid for the video's own classes: 1.0 where the segment shows the
class's concept (at least 3 of its frames in the class's runs), 0.0 where it shows none of it
(background or another class's concept). They come from a separate random stream, so a video's
frames and labels do not depend on them.

Video-level records hold the mean of the dequantised frames (``mean_rgb``, ``mean_audio``) of
the same videos, so the frame-level and video-level sets of one seed describe the same videos.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from nextvlad._yt8m import AUDIO_DIM, DEQUANT_BIAS, DEQUANT_SCALE, RGB_DIM
from nextvlad.data.schema import (
    FRAME_LEVEL,
    SEGMENT_SIZE,
    VIDEO_LEVEL,
    Segments,
    Video,
    encode_video,
)
from nextvlad.data.tfrecord import TFRecordWriter
from nextvlad.errors import ConfigError

__all__ = [
    "SynthConfig",
    "dequantize",
    "frame_options",
    "quantize",
    "synthetic_videos",
    "write_synthetic",
]

# YouTube-8M's videos last 120 to 500 s and its frame-level features come one a second; the
# readers of frame-level models keep the first 300 frames (the original pads and cuts to 300).
YT8M_FRAMES = {"min_frames": 120, "max_frames": 500, "truncate_frames": 300}


def quantize(x: np.ndarray) -> np.ndarray:
    """Floats in [-2, 2] to uint8 the way YouTube-8M quantised its features."""
    q = np.rint((x - DEQUANT_BIAS) * (1.0 / DEQUANT_SCALE))
    return np.clip(q, 0, 255).astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    """uint8 to float32: ``q * 4/255 + 4/512 - 2``."""
    scale, bias = np.float32(DEQUANT_SCALE), np.float32(DEQUANT_BIAS)
    return (q.astype(np.float32) * scale + bias).astype(np.float32)


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the synthetic set (defaults: the documented benchmark set)."""

    num_classes: int = 25  # classes (labels in [0, num_classes))
    prototypes_per_class: int = 3  # rgb concept prototypes of each class
    min_frames: int = 60  # video length range (inclusive)
    max_frames: int = 300
    truncate_frames: int | None = None  # a longer video keeps its first this many; None: all
    min_run: int = 4  # length range (frames) of one concept run
    max_run: int = 12
    prototype_norm: float = 16.0  # norm of an rgb prototype (about 0.5 a dimension)
    background_weight: float = 0.12  # std of each prototype's weight in a background mixture
    offset_std: float = 0.15  # per-video offset, a dimension
    noise_std: float = 0.2  # per-frame noise, a dimension
    audio_probability: float = 0.7  # chance that a concept run also shows the class's audio
    concept_seed: int = 0  # fixes the prototypes; keep it equal for train and validation sets

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {self.num_classes}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ConfigError(f"bad frame range [{self.min_frames}, {self.max_frames}]")
        if self.truncate_frames is not None and self.truncate_frames < 1:
            raise ConfigError(f"truncate_frames must be at least 1, got {self.truncate_frames}")
        if not 1 <= self.min_run <= self.max_run:
            raise ConfigError(f"bad run range [{self.min_run}, {self.max_run}]")
        if self.prototypes_per_class < 1:
            raise ConfigError("prototypes_per_class must be at least 1")


def frame_options(spec: str) -> dict[str, int]:
    """The :class:`SynthConfig` options of a frame-count distribution: ``N`` (every video N
    frames), ``LOW-HIGH`` (uniform, inclusive) or ``yt8m`` (min(U(120, 500), 300): YouTube-8M's
    120-500 s videos at one frame a second, as a reader that keeps 300 frames sees them; mean
    about 257, 53 % of the videos at 300)."""
    if spec == "yt8m":
        return dict(YT8M_FRAMES)
    low, dash, high = spec.partition("-")
    try:
        lo, hi = int(low), int(high if dash else low)
    except ValueError:
        raise ConfigError(f"{spec!r} is not N, LOW-HIGH or yt8m") from None
    if not 1 <= lo <= hi:
        raise ConfigError(f"{spec!r}: the frame counts must be at least 1, LOW at most HIGH")
    return {"min_frames": lo, "max_frames": hi}


@lru_cache(maxsize=8)
def _world(config: SynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb prototypes (C*P, 1024), audio prototypes (C, 128), class frequencies (C,))."""
    rng = np.random.default_rng([config.concept_seed, config.num_classes, 0x5EED])
    count = config.num_classes * config.prototypes_per_class
    rgb = rng.standard_normal((count, RGB_DIM)).astype(np.float32)
    rgb *= config.prototype_norm / np.linalg.norm(rgb, axis=1, keepdims=True)
    audio = rng.standard_normal((config.num_classes, AUDIO_DIM)).astype(np.float32)
    audio *= (0.5 * np.sqrt(AUDIO_DIM)) / np.linalg.norm(audio, axis=1, keepdims=True)
    freq = 1.0 / np.sqrt(np.arange(1, config.num_classes + 1))
    return rgb, audio, freq / freq.sum()


def _video(config: SynthConfig, seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (L,) int64, rgb (T, 1024) uint8, audio (T, 128) uint8) of video ``index``."""
    labels, rgb, audio, _ = _video_and_runs(config, seed, index)
    return labels, rgb, audio


def _video_and_runs(
    config: SynthConfig, seed: int, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """:func:`_video` and its concept runs as (class, first frame, length)."""
    protos, audio_protos, freq = _world(config)
    rng = np.random.default_rng([seed, index, 0x71DE0])
    classes, per_class = config.num_classes, config.prototypes_per_class
    length = int(rng.integers(config.min_frames, config.max_frames + 1))
    if config.truncate_frames is not None:
        length = min(length, config.truncate_frames)
    num_labels = min(int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1])) + 1, classes)
    labels = np.sort(rng.choice(classes, size=num_labels, replace=False, p=freq))

    # Background: a drift between two dense mixtures of all prototypes, plus an offset.
    weights = rng.standard_normal((2, len(protos)), dtype=np.float32) * config.background_weight
    scenes = weights @ protos  # (2, 1024)
    audio_weights = rng.standard_normal((2, classes), dtype=np.float32) * config.background_weight
    audio_scenes = audio_weights @ audio_protos  # (2, 128)
    alpha = np.linspace(0.0, 1.0, length, dtype=np.float32)[:, None]  # (T, 1)
    rgb = scenes[0] + alpha * (scenes[1] - scenes[0])  # (T, 1024)
    audio = audio_scenes[0] + alpha * (audio_scenes[1] - audio_scenes[0])  # (T, 128)

    # Concept runs, placed without overlap among the background frames.
    runs = []  # (class, run length)
    for label in labels:
        for _ in range(int(rng.integers(1, 3))):
            runs.append((int(label), int(rng.integers(config.min_run, config.max_run + 1))))
    order = rng.permutation(len(runs))
    runs = [runs[i] for i in order]
    total = sum(n for _, n in runs)
    if total > length // 2:  # keep runs short relative to the video
        scale = (length // 2) / total
        runs = [(c, max(1, int(n * scale))) for c, n in runs]
        total = sum(n for _, n in runs)
    gaps = rng.multinomial(length - total, np.full(len(runs) + 1, 1.0 / (len(runs) + 1)))
    start = 0
    placed = []  # (class, first frame, length)
    for (label, run), gap in zip(runs, gaps, strict=False):
        start += int(gap)
        placed.append((label, start, run))
        proto = protos[label * per_class + int(rng.integers(per_class))]
        rgb[start : start + run] = proto
        if rng.random() < config.audio_probability:
            audio[start : start + run] = audio_protos[label]
        start += run

    offset = rng.standard_normal(RGB_DIM + AUDIO_DIM, dtype=np.float32) * config.offset_std
    noise = rng.standard_normal((length, RGB_DIM + AUDIO_DIM), dtype=np.float32)
    noise *= config.noise_std
    noise += offset
    rgb += noise[:, :RGB_DIM]
    audio += noise[:, RGB_DIM:]
    return labels.astype(np.int64), quantize(rgb), quantize(audio), placed


def _ratings(
    labels: np.ndarray,
    runs: list[tuple[int, int, int]],
    length: int,
    rng: np.random.Generator,
    count: int,
) -> Segments:
    """Up to ``count`` ratings of ``SEGMENT_SIZE``-frame segments on the 5-frame grid, for the
    video's own classes: a segment holding at least 3 frames of a class's runs is a positive
    (1.0) for it, a segment with none of them a negative (0.0); half positives where possible.
    Sorted by start time, then class."""
    size = SEGMENT_SIZE
    starts = np.arange(0, length - size + 1, size)  # (S,)
    cover = np.zeros((len(labels), length), bool)  # (L, T) frames of each class's runs
    row = {int(c): i for i, c in enumerate(labels.tolist())}
    for label, first, run in runs:
        cover[row[label], first : first + run] = True
    span = len(starts) * size
    inside = cover[:, :span].reshape(len(labels), len(starts), size).sum(-1)  # (L, S)
    pos = np.argwhere(inside >= (size + 1) // 2)  # (n, 2) (class row, segment)
    neg = np.argwhere(inside == 0)
    n_pos = min(len(pos), (count + 1) // 2)
    n_neg = min(len(neg), count - n_pos)
    chosen = [(r, s, 1.0) for r, s in pos[rng.permutation(len(pos))[:n_pos]].tolist()]
    chosen += [(r, s, 0.0) for r, s in neg[rng.permutation(len(neg))[:n_neg]].tolist()]
    chosen.sort(key=lambda t: (t[1], labels[t[0]]))
    return Segments.rated(
        [int(starts[s]) for _, s, _ in chosen],
        [int(labels[r]) for r, _, _ in chosen],
        [score for _, _, score in chosen],
    )


def synthetic_videos(
    videos: int,
    *,
    num_classes: int = 25,
    seed: int = 0,
    start: int = 0,
    frame_level: bool = True,
    config: SynthConfig | None = None,
    segment_ratings: int = 0,
) -> Iterator[Video]:
    """Synthetic videos ``start .. start + videos - 1`` (ids ``syn<seed>-<index>``).

    Frame-level videos carry ``rgb`` (T, 1024) and ``audio`` (T, 128) uint8; video-level ones
    ``mean_rgb`` (1024,) and ``mean_audio`` (128,) float32, the mean of the dequantised frames.
    With ``segment_ratings`` > 0 (frame-level only) each video also carries up to that many
    segment ratings (``Video.segments``, see :func:`_ratings`); its frames and labels are the
    same as without.
    """
    config = config or SynthConfig(num_classes=num_classes)
    if config.num_classes != num_classes and num_classes != 25:
        raise ConfigError("give num_classes either directly or in config, not both")
    if segment_ratings < 0:
        raise ConfigError(f"segment_ratings must be non-negative, got {segment_ratings}")
    if segment_ratings and not frame_level:
        raise ConfigError("segment ratings need frame-level videos")
    for index in range(start, start + videos):
        labels, rgb, audio, runs = _video_and_runs(config, seed, index)
        vid = f"syn{seed}-{index:06d}"
        if frame_level:
            segments = None
            if segment_ratings:
                rng = np.random.default_rng([seed, index, 0x5E65])
                segments = _ratings(labels, runs, len(rgb), rng, segment_ratings)
            yield Video(vid, labels, {"rgb": rgb, "audio": audio}, len(rgb), segments)
        else:
            features = {
                "mean_rgb": dequantize(rgb).mean(0),
                "mean_audio": dequantize(audio).mean(0),
            }
            yield Video(vid, labels, features, None)


def write_synthetic(
    out_dir: str | os.PathLike[str],
    *,
    videos: int = 1000,
    shards: int = 4,
    frame_level: bool = True,
    num_classes: int = 25,
    seed: int = 0,
    prefix: str = "synth",
    config: SynthConfig | None = None,
    segment_ratings: int = 0,
) -> list[Path]:
    """Writes ``videos`` synthetic videos as ``shards`` TFRecord files in the 2018 YouTube-8M
    format, ``<prefix>-<s>-of-<shards>.tfrecord`` (contiguous blocks of videos), plus
    ``<prefix>.json`` describing the set. Deterministic given the arguments.

    Use the same ``config.concept_seed`` (default) and different ``seed`` for train and
    validation sets. ``segment_ratings`` > 0: segment-rated records (see
    :func:`synthetic_videos`). Returns the shard paths.
    """
    if videos < 1:
        raise ConfigError(f"videos must be at least 1, got {videos}")
    if shards < 1:
        raise ConfigError(f"shards must be at least 1, got {shards}")
    config = config or SynthConfig(num_classes=num_classes)
    if config.num_classes != num_classes and num_classes != 25:
        raise ConfigError("give num_classes either directly or in config, not both")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    schema = FRAME_LEVEL if frame_level else VIDEO_LEVEL
    bounds = np.linspace(0, videos, shards + 1).round().astype(int)
    paths = []
    for shard in range(shards):
        path = out / f"{prefix}-{shard:05d}-of-{shards:05d}.tfrecord"
        lo, hi = int(bounds[shard]), int(bounds[shard + 1])
        with TFRecordWriter(path) as writer:
            for video in synthetic_videos(
                hi - lo,
                num_classes=config.num_classes,
                seed=seed,
                start=lo,
                frame_level=frame_level,
                config=config,
                segment_ratings=segment_ratings,
            ):
                writer.write(encode_video(video, schema))
        paths.append(path)
    described = asdict(config)
    if config.truncate_frames is None:  # described as sets written before the option were
        del described["truncate_frames"]
    meta = {
        "format": "youtube-8m-2018",
        "level": "frame" if frame_level else "video",
        "videos": videos,
        "shards": shards,
        "seed": seed,
        "features": {spec.name: spec.dim for spec in schema.features},
        "config": described,
    }
    if segment_ratings:
        meta["segment_ratings"] = segment_ratings
    (out / f"{prefix}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return paths
