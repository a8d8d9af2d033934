"""Layers: torch only, no data or model code. Batch norms use the reference's TF semantics."""

from nextvlad.nn.batchnorm import BN_EPSILON, BN_MOMENTUM, BatchNorm
from nextvlad.nn.classifiers import LogisticClassifier, MoEClassifier
from nextvlad.nn.gating import ContextGating, SEContextGating
from nextvlad.nn.linear import Linear, linear
from nextvlad.nn.netvlad import NetVLAD
from nextvlad.nn.nextvlad import NeXtVLAD
from nextvlad.nn.packing import FramePacking, as_packing, pack_frames, pack_mask
from nextvlad.nn.pooling import MeanPool, frame_mask, masked_mean

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "BatchNorm",
    "ContextGating",
    "FramePacking",
    "Linear",
    "LogisticClassifier",
    "MeanPool",
    "MoEClassifier",
    "NeXtVLAD",
    "NetVLAD",
    "SEContextGating",
    "as_packing",
    "frame_mask",
    "linear",
    "masked_mean",
    "pack_frames",
    "pack_mask",
]
