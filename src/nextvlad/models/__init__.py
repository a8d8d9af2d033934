"""Whole models, their configurations and the registry of the paper's presets."""

from nextvlad.models import presets as _presets  # noqa: F401  (registers the presets)
from nextvlad.models._registry import (
    Preset,
    build_model,
    create_model,
    get_config,
    get_preset,
    list_models,
    preset_options,
    register_model,
)
from nextvlad.models.config import (
    FrameModelConfig,
    MixtureConfig,
    ModelConfig,
    StreamConfig,
    VideoModelConfig,
    config_from_dict,
    config_to_dict,
    youtube8m_streams,
)
from nextvlad.models.frame import FrameModel
from nextvlad.models.mixture import MixtureModel
from nextvlad.models.output import ModelOutput
from nextvlad.models.params import count_config_parameters, count_parameters, parameter_report
from nextvlad.models.transform import InputTransform, load_eigenvalues
from nextvlad.models.video import VideoModel

__all__ = [
    "FrameModel",
    "FrameModelConfig",
    "InputTransform",
    "MixtureConfig",
    "MixtureModel",
    "ModelConfig",
    "ModelOutput",
    "Preset",
    "StreamConfig",
    "VideoModel",
    "VideoModelConfig",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "count_config_parameters",
    "count_parameters",
    "create_model",
    "get_config",
    "get_preset",
    "list_models",
    "load_eigenvalues",
    "parameter_report",
    "preset_options",
    "register_model",
    "youtube8m_streams",
]
