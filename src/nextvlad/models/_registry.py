"""Registry of named model presets: ``register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from nextvlad.errors import ConfigError
from nextvlad.models.config import (
    FrameModelConfig,
    MixtureConfig,
    ModelConfig,
    VideoModelConfig,
)
from nextvlad.models.frame import FrameModel
from nextvlad.models.mixture import MixtureModel
from nextvlad.models.video import VideoModel

Builder = Callable[..., ModelConfig]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class Preset:
    """A named configuration builder and what the paper says of it."""

    name: str
    builder: Builder  # keyword arguments -> configuration; the keywords are the overrides
    description: str
    paper_params: int | None = None  # the paper's parameter count, where it gives one
    paper_label: str | None = None  # where the paper gives it (row of Table 1 or 2)


_PRESETS: dict[str, Preset] = {}


def register_model(
    name: str,
    *,
    description: str,
    paper_params: int | None = None,
    paper_label: str | None = None,
) -> Callable[[B], B]:
    """Decorator registering a configuration builder under an explicit name."""

    def decorate(builder: B) -> B:
        if name in _PRESETS:
            raise ValueError(f"model preset {name!r} is already registered")
        _PRESETS[name] = Preset(name, builder, description, paper_params, paper_label)
        return builder

    return decorate


def list_models() -> list[str]:
    """Names of the registered presets, in registration order."""
    return list(_PRESETS)


def get_preset(name: str) -> Preset:
    if name not in _PRESETS:
        close = difflib.get_close_matches(name, _PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"unknown model preset {name!r}{hint} (`nextvlad list-models` lists them)"
        )
    return _PRESETS[name]


def preset_options(name: str) -> dict[str, Any]:
    """The overridable options of a preset and their default values."""
    params = inspect.signature(get_preset(name).builder).parameters
    return {k: p.default for k, p in params.items()}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The configuration of preset ``name``; ``None`` overrides are ignored."""
    preset = get_preset(name)
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    accepted = preset_options(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"preset {name!r} does not take {', '.join(unknown)}; it takes: {', '.join(accepted)}"
        )
    return preset.builder(**kwargs)


def build_model(config: ModelConfig) -> nn.Module:
    """The model a configuration describes (random weights, the reference's initialisers)."""
    if isinstance(config, MixtureConfig):
        return MixtureModel(config)
    if isinstance(config, FrameModelConfig):
        return FrameModel(config)
    if isinstance(config, VideoModelConfig):
        return VideoModel(config)
    raise ConfigError(f"not a model configuration: {config!r}")


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build preset ``name`` with keyword overrides, e.g. ``num_classes=40``."""
    return build_model(get_config(name, **overrides))
