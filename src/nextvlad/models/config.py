"""Model configurations: one frozen dataclass per family, serialisable to JSON.

Families: ``FrameModelConfig`` (two-stream frame-level models: NeXtVLAD, NetVLAD, mean pool),
``MixtureConfig`` (the paper's mixture of branches with a gate, Fig. 5) and
``VideoModelConfig`` (classifiers over video-level mean features).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nextvlad._yt8m import AUDIO_DIM, RGB_DIM
from nextvlad._yt8m import YT8M_NUM_CLASSES as YT8M_NUM_CLASSES  # re-exported for the presets
from nextvlad.errors import ConfigError

AGGREGATORS = ("nextvlad", "netvlad", "mean")
GATINGS = ("se", "context", "none")
CLASSIFIERS = ("logistic", "moe")
INPUT_NORMS = ("l2", "none")


@dataclass(frozen=True)
class StreamConfig:
    """One input stream of frame features (e.g. YouTube-8M's rgb or audio)."""

    name: str  # feature name in the records, e.g. "rgb"
    dim: int  # N: size of one frame's feature
    num_clusters: int = 128  # K (NeXtVLAD, NetVLAD)
    groups: int = 8  # G (NeXtVLAD)
    expansion: int = 2  # λ (NeXtVLAD)
    reduce_dim: int | None = None  # linear reduction of frames before aggregation (NetVLAD_small)


def youtube8m_streams(
    num_clusters: int, groups: int = 8, expansion: int = 2, *, reduce: int | None = None
) -> tuple[StreamConfig, StreamConfig]:
    """rgb (1024-d, K clusters, G groups) and audio (128-d, K/2 clusters, G/2 groups).

    ``reduce`` divides the frame size before aggregation (NetVLAD_small uses 4).
    """
    return (
        StreamConfig(
            "rgb", RGB_DIM, num_clusters, groups, expansion, RGB_DIM // reduce if reduce else None
        ),
        StreamConfig(
            "audio",
            AUDIO_DIM,
            num_clusters // 2,
            groups // 2,
            expansion,
            AUDIO_DIM // reduce if reduce else None,
        ),
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive(name: str, value: Any) -> None:
    _require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive integer, got {value!r}",
    )


@dataclass(frozen=True)
class FrameModelConfig:
    """A two-stream frame-level model (Fig. 3): per-stream aggregation, concatenation,
    dropout, FC to H (no bias) + batch norm, gating, classifier."""

    family: ClassVar[str] = "frame"
    input_level: ClassVar[str] = "frame"

    streams: tuple[StreamConfig, ...] = field(default_factory=lambda: youtube8m_streams(128, 8))
    aggregator: str = "nextvlad"  # "nextvlad" | "netvlad" | "mean"
    hidden_size: int = 2048  # H
    dropout: float = 0.5  # dropout after the concatenation of the streams
    gating: str = "se"  # "se" (Fig. 4) | "context" (Miech et al.) | "none"
    gating_reduction: int = 8  # r of SE context gating
    classifier: str = "logistic"  # "logistic" | "moe"
    moe_mixtures: int = 2  # experts per class when classifier == "moe"
    num_classes: int = YT8M_NUM_CLASSES  # C
    sample_frames: int | None = None  # train on this many random frames a video (NetVLAD_random)
    reference_compat: bool = False  # batch-norm statistics over padded frames, as the reference

    def __post_init__(self) -> None:
        _require(len(self.streams) > 0, "a frame model needs at least one stream")
        names = [s.name for s in self.streams]
        _require(len(set(names)) == len(names), f"stream names must be unique, got {names}")
        _require(self.aggregator in AGGREGATORS, f"aggregator must be one of {AGGREGATORS}")
        _require(self.gating in GATINGS, f"gating must be one of {GATINGS}")
        _require(self.classifier in CLASSIFIERS, f"classifier must be one of {CLASSIFIERS}")
        for s in self.streams:
            _positive(f"stream {s.name!r}: dim", s.dim)
            dim = s.dim
            if s.reduce_dim is not None:
                _positive(f"stream {s.name!r}: reduce_dim", s.reduce_dim)
                dim = s.reduce_dim
            if self.aggregator in ("nextvlad", "netvlad"):
                _positive(f"stream {s.name!r}: num_clusters", s.num_clusters)
            if self.aggregator == "nextvlad":
                _positive(f"stream {s.name!r}: groups", s.groups)
                _positive(f"stream {s.name!r}: expansion", s.expansion)
                _require(
                    (s.expansion * dim) % s.groups == 0,
                    f"stream {s.name!r}: groups ({s.groups}) must divide expansion * dim "
                    f"({s.expansion} * {dim} = {s.expansion * dim})",
                )
        _positive("hidden_size", self.hidden_size)
        _positive("num_classes", self.num_classes)
        _positive("moe_mixtures", self.moe_mixtures)
        _require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        if self.gating == "se":
            _positive("gating_reduction", self.gating_reduction)
            _require(
                self.hidden_size // self.gating_reduction > 0,
                f"gating_reduction {self.gating_reduction} leaves no units of {self.hidden_size}",
            )
        if self.sample_frames is not None:
            _positive("sample_frames", self.sample_frames)

    @property
    def feature_dim(self) -> int:
        """D: size of the concatenated frame features the model takes."""
        return sum(s.dim for s in self.streams)

    @property
    def stream_dims(self) -> tuple[int, ...]:
        """Sizes of the input streams, in order (rgb, audio)."""
        return tuple(s.dim for s in self.streams)


@dataclass(frozen=True)
class MixtureConfig:
    """M branches of one frame model, mixed by a gate on the frame-mean features (Fig. 5),
    trained with on-the-fly distillation at temperature T with weight λ (Eq. (16))."""

    family: ClassVar[str] = "mixture"
    input_level: ClassVar[str] = "frame"

    branch: FrameModelConfig = field(default_factory=FrameModelConfig)
    num_branches: int = 3  # M
    temperature: float = 3.0  # T of Eq. (15)
    distill_weight: float = 9.0  # λ: weight of the summed KL terms (T² in Eq. (16))

    def __post_init__(self) -> None:
        _positive("num_branches", self.num_branches)
        _require(self.temperature > 0, f"temperature must be positive, got {self.temperature}")
        _require(self.distill_weight >= 0, "distill_weight must be >= 0")

    @property
    def feature_dim(self) -> int:
        return self.branch.feature_dim

    @property
    def stream_dims(self) -> tuple[int, ...]:
        return self.branch.stream_dims

    @property
    def num_classes(self) -> int:
        return self.branch.num_classes

    @property
    def reference_compat(self) -> bool:
        return self.branch.reference_compat


@dataclass(frozen=True)
class VideoModelConfig:
    """A classifier over video-level features (YouTube-8M's mean_rgb ++ mean_audio)."""

    family: ClassVar[str] = "video"
    input_level: ClassVar[str] = "video"

    feature_names: tuple[str, ...] = ("mean_rgb", "mean_audio")  # features in the records
    feature_dims: tuple[int, ...] = (RGB_DIM, AUDIO_DIM)  # their sizes
    classifier: str = "logistic"  # "logistic" | "moe"
    moe_mixtures: int = 2  # experts per class when classifier == "moe"
    input_norm: str = "l2"  # "l2": L2-normalise the concatenated input, as the starter code
    num_classes: int = YT8M_NUM_CLASSES  # C

    def __post_init__(self) -> None:
        _require(
            len(self.feature_names) == len(self.feature_dims) > 0,
            "feature_names and feature_dims must be non-empty and of equal length",
        )
        for d in self.feature_dims:
            _positive("feature dim", d)
        _require(self.classifier in CLASSIFIERS, f"classifier must be one of {CLASSIFIERS}")
        _require(self.input_norm in INPUT_NORMS, f"input_norm must be one of {INPUT_NORMS}")
        _positive("num_classes", self.num_classes)
        _positive("moe_mixtures", self.moe_mixtures)

    @property
    def feature_dim(self) -> int:
        return sum(self.feature_dims)

    @property
    def stream_dims(self) -> tuple[int, ...]:
        return self.feature_dims


ModelConfig = FrameModelConfig | MixtureConfig | VideoModelConfig
_FAMILIES: dict[str, type[Any]] = {
    c.family: c for c in (FrameModelConfig, MixtureConfig, VideoModelConfig)
}


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """A JSON-ready dict with a ``family`` key; ``config_from_dict`` inverts it."""
    return {"family": config.family, **dataclasses.asdict(config)}


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a configuration saved by ``config_to_dict`` (lists become tuples)."""
    data = dict(data)
    family = data.pop("family", None)
    if family not in _FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; expected one of {sorted(_FAMILIES)}")
    try:
        if family == "mixture":
            data["branch"] = config_from_dict({"family": "frame", **data["branch"]})
            return MixtureConfig(**data)
        if family == "frame":
            data["streams"] = tuple(StreamConfig(**s) for s in data.get("streams", ()))
            return FrameModelConfig(**data)
        for key in ("feature_names", "feature_dims"):
            if key in data:
                data[key] = tuple(data[key])
        return VideoModelConfig(**data)
    except TypeError as err:
        raise ConfigError(f"invalid {family} model configuration: {err}") from None
