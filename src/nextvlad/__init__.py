"""nextvlad: NeXtVLAD and baselines for large-scale video classification, in PyTorch.

Layers (``nextvlad.nn``) depend on torch only; whole models and presets live in
``nextvlad.models``; losses in ``nextvlad.losses``; reading data in ``nextvlad.data``; the
official metrics in ``nextvlad.metrics``; training, evaluation and prediction in
``nextvlad.training``. The names below are re-exported lazily, so that ``import nextvlad``
(and the command line's start) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "NeXtVLAD": "nextvlad.nn",
    "NetVLAD": "nextvlad.nn",
    "SEContextGating": "nextvlad.nn",
    "ContextGating": "nextvlad.nn",
    "frame_mask": "nextvlad.nn",
    "create_model": "nextvlad.models",
    "list_models": "nextvlad.models",
    "get_config": "nextvlad.models",
    "build_model": "nextvlad.models",
    "InputTransform": "nextvlad.models",
    "load_eigenvalues": "nextvlad.models",
    "yt8m_loss": "nextvlad.losses",
    "VideoDataset": "nextvlad.data",
    "write_synthetic": "nextvlad.data",
    "YT8MMetrics": "nextvlad.metrics",
    "TrainOptions": "nextvlad.training",
    "train": "nextvlad.training",
    "load_for_inference": "nextvlad.checkpoint",
    "from_tf": "nextvlad.convert",
    "load_model": "nextvlad.checkpoint",
    "save_model": "nextvlad.checkpoint",
}
__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nextvlad' has no attribute {name!r}")
