"""nextvlad: NeXtVLAD and baselines for large-scale video classification, in PyTorch.

Layers (``nextvlad.nn``) depend on torch only; whole models and presets live in
``nextvlad.models``; losses in ``nextvlad.losses``; reading data in ``nextvlad.data``.
"""

from __future__ import annotations

__version__ = "0.1.0"
