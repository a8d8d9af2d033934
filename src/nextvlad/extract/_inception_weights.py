"""Inception-v3 weights from Google's GraphDef or the FID port's state dict, checked and mapped to
:class:`~nextvlad.extract.inception.InceptionV3`'s state-dict names.

In the graph each convolution scope ``S`` (``conv``, ``mixed_3/tower/conv_1``, ...) holds the
Const nodes ``S/conv2d_params`` (HWIO) and ``S/batchnorm/{beta,gamma,moving_mean,
moving_variance}``, used by the ``BatchNormWithGlobalNormalization`` node ``S/batchnorm``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from nextvlad.extract import _graphdef
from nextvlad.extract.inception import BN_EPSILON, InceptionV3, InceptionWeightsError

_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
# Branch names inside each kind of block: graph scope (below the block) -> module name.
_BRANCHES = {
    "A": {
        "conv": "branch1x1",
        "tower/conv": "branch5x5_1",
        "tower/conv_1": "branch5x5_2",
        "tower_1/conv": "branch3x3dbl_1",
        "tower_1/conv_1": "branch3x3dbl_2",
        "tower_1/conv_2": "branch3x3dbl_3",
        "tower_2/conv": "branch_pool",
    },
    "B": {
        "conv": "branch3x3",
        "tower/conv": "branch3x3dbl_1",
        "tower/conv_1": "branch3x3dbl_2",
        "tower/conv_2": "branch3x3dbl_3",
    },
    "C": {
        "conv": "branch1x1",
        "tower/conv": "branch7x7_1",
        "tower/conv_1": "branch7x7_2",
        "tower/conv_2": "branch7x7_3",
        **{
            f"tower_1/conv{s}": f"branch7x7dbl_{i + 1}"
            for i, s in enumerate(["", "_1", "_2", "_3", "_4"])
        },
        "tower_2/conv": "branch_pool",
    },
    "D": {
        "tower/conv": "branch3x3_1",
        "tower/conv_1": "branch3x3_2",
        **{
            f"tower_1/conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3"])
        },
    },
    "E": {
        "conv": "branch1x1",
        "tower/conv": "branch3x3_1",
        "tower/mixed/conv": "branch3x3_2a",
        "tower/mixed/conv_1": "branch3x3_2b",
        "tower_1/conv": "branch3x3dbl_1",
        "tower_1/conv_1": "branch3x3dbl_2",
        "tower_1/mixed/conv": "branch3x3dbl_3a",
        "tower_1/mixed/conv_1": "branch3x3dbl_3b",
        "tower_2/conv": "branch_pool",
    },
}
_BLOCKS = [
    ("mixed", "Mixed_5b", "A"),
    ("mixed_1", "Mixed_5c", "A"),
    ("mixed_2", "Mixed_5d", "A"),
    ("mixed_3", "Mixed_6a", "B"),
    ("mixed_4", "Mixed_6b", "C"),
    ("mixed_5", "Mixed_6c", "C"),
    ("mixed_6", "Mixed_6d", "C"),
    ("mixed_7", "Mixed_6e", "C"),
    ("mixed_8", "Mixed_7a", "D"),
    ("mixed_9", "Mixed_7b", "E"),
    ("mixed_10", "Mixed_7c", "E"),
]
# Pools whose kind tells this graph from its relatives (mixed_10's is a max pool).
POOLS = {
    "pool": "MaxPool",
    "pool_1": "MaxPool",
    **{f"mixed{s}/tower_2/pool": "AvgPool" for s in ["", "_1", "_2", "_4", "_5", "_6", "_7", "_9"]},
    "mixed_3/pool": "MaxPool",
    "mixed_8/pool": "MaxPool",
    "mixed_10/tower_2/pool": "MaxPool",
    "pool_3": "AvgPool",
}
_BN_PARTS = {
    "beta": "bias",
    "gamma": "weight",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def conv_scopes() -> dict[str, str]:
    """Graph scope of every convolution -> its module prefix (``mixed_9/tower/mixed/conv`` ->
    ``Mixed_7b.branch3x3_2a``), in the graph's order."""
    scopes = dict(_STEM)
    for block, prefix, kind in _BLOCKS:
        for sub, name in _BRANCHES[kind].items():
            scopes[f"{block}/{sub}"] = f"{prefix}.{name}"
    return scopes


@lru_cache(maxsize=1)
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of every tensor the model needs (not ``num_batches_tracked``)."""
    with torch.device("meta"):
        model = InceptionV3()
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if "num_batches" not in k}


def from_state_dict(state: dict, path: Path) -> dict[str, torch.Tensor]:
    """Checks the FID port's keys and shapes (extra keys such as ``fc.*`` are ignored)."""
    shapes = expected_shapes()
    missing = [k for k in shapes if k not in state]
    if len(missing) == len(shapes):
        raise InceptionWeightsError(
            f"{path}: not an Inception-v3 (inception-2015-12-05) state dict: no {missing[0]}"
        )
    _refuse_missing(path, missing, "key")
    out = {}
    for key, shape in shapes.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise InceptionWeightsError(f"{path}: {key} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != shape:
            raise InceptionWeightsError(
                f"{path}: {key} has shape {tuple(value.shape)}, expected {shape}"
            )
        out[key] = value.detach().to(torch.float32)
    return out


def from_graphdef(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """Reads the Const nodes of Google's graph into the model's state dict."""
    try:
        graph = _graphdef.read_graph(data)
    except _graphdef.GraphDefError as err:
        raise InceptionWeightsError(f"{path}: {err}") from None
    scopes = conv_scopes()
    needed = [f"{s}/conv2d_params" for s in scopes]
    needed += [f"{s}/batchnorm/{part}" for s in scopes for part in _BN_PARTS]
    missing = [n for n in needed if n not in graph.nodes]
    if len(missing) == len(needed):
        raise InceptionWeightsError(
            f"{path}: not Google's Inception-v3 (inception-2015-12-05) graph: no node {missing[0]}"
        )
    _refuse_missing(path, missing, "tensor")
    _check_pools(graph, path)
    shapes = expected_shapes()
    state: dict[str, torch.Tensor] = {}
    for scope, prefix in scopes.items():
        kernel = _const(graph, f"{scope}/conv2d_params", path)
        want = shapes[f"{prefix}.conv.weight"]  # OIHW
        if kernel.shape != (want[2], want[3], want[1], want[0]):
            raise InceptionWeightsError(
                f"{path}: {scope}/conv2d_params has shape {kernel.shape}, expected "
                f"{(want[2], want[3], want[1], want[0])} (HWIO)"
            )
        state[f"{prefix}.conv.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        scale = _batchnorm_attrs(graph, f"{scope}/batchnorm", path)
        for part, key in _BN_PARTS.items():
            value = _const(graph, f"{scope}/batchnorm/{part}", path)
            if value.shape != (want[0],):
                raise InceptionWeightsError(
                    f"{path}: {scope}/batchnorm/{part} has shape {value.shape}, expected ({want[0]},)"
                )
            if part == "gamma" and not scale:
                value = np.ones_like(value)  # scale_after_normalization=false: gamma unused
            state[f"{prefix}.bn.{key}"] = torch.from_numpy(value)
    return state


def _const(graph: _graphdef.Graph, name: str, path: Path) -> np.ndarray:
    try:
        value = graph.const(name)
    except _graphdef.GraphDefError as err:
        raise InceptionWeightsError(f"{path}: {err}") from None
    if value.dtype != np.float32:
        raise InceptionWeightsError(f"{path}: {name} holds {value.dtype}, not float32")
    return value


def _batchnorm_attrs(graph: _graphdef.Graph, node: str, path: Path) -> bool:
    """``scale_after_normalization`` of the batch-norm node (True when the node is absent);
    refuses an epsilon other than the network's 1e-3."""
    if node not in graph.nodes:
        return True
    eps = graph.attr_float(node, "variance_epsilon", BN_EPSILON)
    if not np.isclose(eps, BN_EPSILON, rtol=1e-6, atol=0):
        raise InceptionWeightsError(
            f"{path}: {node} has variance_epsilon {eps:g}; inception-2015-12-05 uses {BN_EPSILON:g}"
        )
    return graph.attr_bool(node, "scale_after_normalization", True)


def _check_pools(graph: _graphdef.Graph, path: Path) -> None:
    """Refuses a pool node of another kind than this network's (an average pool in mixed_10's
    pool branch: a relative of inception-2015-12-05, not it). An absent pool node is not
    refused: the weights are what identify the network."""
    for name, op in POOLS.items():
        node = graph.nodes.get(name)
        if node is not None and node.op != op:
            raise InceptionWeightsError(
                f"{path}: {name} is a {node.op}; inception-2015-12-05 has a {op} there"
            )


def _refuse_missing(path: Path, missing: list[str], what: str) -> None:
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InceptionWeightsError(
            f"{path}: not a complete Inception-v3 (inception-2015-12-05): missing {what} "
            f"{missing[0]}{more}"
        )
