"""Layers: torch only, no data or model code. Batch norms use the reference's TF semantics."""

from nextvlad.nn.batchnorm import BN_EPSILON, BN_MOMENTUM, BatchNorm
from nextvlad.nn.classifiers import LogisticClassifier, MoEClassifier
from nextvlad.nn.gating import ContextGating, SEContextGating
from nextvlad.nn.netvlad import NetVLAD
from nextvlad.nn.nextvlad import NeXtVLAD
from nextvlad.nn.pooling import MeanPool, frame_mask, masked_mean

__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "BatchNorm",
    "ContextGating",
    "LogisticClassifier",
    "MeanPool",
    "MoEClassifier",
    "NeXtVLAD",
    "NetVLAD",
    "SEContextGating",
    "frame_mask",
    "masked_mean",
]
