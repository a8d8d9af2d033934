"""VGGish (Hershey et al., ICASSP 2017) as ``vggish_slim.py`` defines it, in PyTorch, with the
weights of Google's ``vggish_model.ckpt`` read without TensorFlow.

(B, 96, 64) log-mel examples -> 3x3 convolutions (stride 1, SAME padding, ReLU) and 2x2 max
pools (stride 2): conv1 64, pool1, conv2 128, pool2, conv3_1/conv3_2 256, pool3, conv4_1/conv4_2
512, pool4 -> (B, 6, 4, 512) flattened in TF's NHWC order -> fc1_1, fc1_2 4096 (ReLU) -> fc2 128,
the embedding, with no ReLU after it (``activation_fn=None`` in ``vggish_slim``; torchvggish
applies one, a known bug).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from nextvlad.errors import UsageError
from nextvlad.extract._tf_checkpoint import CheckpointFormatError, TFCheckpoint
from nextvlad.extract.mel import EXAMPLE_FRAMES, NUM_MEL_BINS

__all__ = ["VGGISH_SHAPES", "VGGish", "VGGishWeightsError", "load_vggish"]

EMBEDDING_SIZE = 128

# The convolutions (TF scope, input channels, output channels) and fully connected layers.
_CONVS = [
    ("conv1", 1, 64),
    ("conv2", 64, 128),
    ("conv3/conv3_1", 128, 256),
    ("conv3/conv3_2", 256, 256),
    ("conv4/conv4_1", 256, 512),
    ("conv4/conv4_2", 512, 512),
]
_POOL_AFTER = {"conv1", "conv2", "conv3/conv3_2", "conv4/conv4_2"}
_FLAT = (EXAMPLE_FRAMES // 16) * (NUM_MEL_BINS // 16) * 512  # 6 * 4 * 512 = 12288
_FCS = [("fc1/fc1_1", _FLAT, 4096), ("fc1/fc1_2", 4096, 4096), ("fc2", 4096, EMBEDDING_SIZE)]

# Checkpoint name -> shape, in TF's layout (HWIO kernels, (in, out) matrices).
VGGISH_SHAPES: dict[str, tuple[int, ...]] = {}
for _scope, _cin, _cout in _CONVS:
    VGGISH_SHAPES[f"vggish/{_scope}/weights"] = (3, 3, _cin, _cout)
    VGGISH_SHAPES[f"vggish/{_scope}/biases"] = (_cout,)
for _scope, _cin, _cout in _FCS:
    VGGISH_SHAPES[f"vggish/{_scope}/weights"] = (_cin, _cout)
    VGGISH_SHAPES[f"vggish/{_scope}/biases"] = (_cout,)


class VGGishWeightsError(UsageError):
    """A VGGish checkpoint (or PCA file) that cannot be read or is not VGGish's."""


class VGGish(nn.Module):
    """The VGGish network up to its 128-d embedding (``fc2``, pre-activation)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for _, i, o in _CONVS)
        self.fcs = nn.ModuleList(nn.Linear(i, o) for _, i, o in _FCS)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 96, 64) float32 log-mel examples -> (B, 128) embeddings."""
        x = x.reshape(-1, 1, EXAMPLE_FRAMES, NUM_MEL_BINS)  # (B, 1, 96, 64)
        for (scope, _, _), conv in zip(_CONVS, self.convs, strict=True):
            x = torch.relu(conv(x))
            if scope in _POOL_AFTER:  # even sizes: TF's SAME pooling pads nothing
                x = nn.functional.max_pool2d(x, 2, 2)
        x = x.permute(0, 2, 3, 1).flatten(1)  # (B, 6*4*512) in NHWC order, as slim.flatten
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = torch.relu(x)  # fc2 has none
        return x

    def load_tf_weights(self, tensors: dict[str, np.ndarray]) -> None:
        """Takes TF-layout tensors (names and shapes of :data:`VGGISH_SHAPES`) as parameters:
        kernels HWIO -> OIHW (copied), matrices (in, out) used transposed (not copied)."""
        layers = [*zip(_CONVS, self.convs, strict=True), *zip(_FCS, self.fcs, strict=True)]
        for (scope, _, _), layer in layers:
            weights = torch.from_numpy(tensors[f"vggish/{scope}/weights"])
            # HWIO -> (O, I, H, W), copied; (in, out) -> (out, in), a view
            weights = weights.permute(3, 2, 0, 1).contiguous() if weights.ndim == 4 else weights.T
            bias = torch.from_numpy(tensors[f"vggish/{scope}/biases"])
            layer.weight = nn.Parameter(weights, requires_grad=False)
            layer.bias = nn.Parameter(bias, requires_grad=False)


def read_vggish_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """VGGish's tensors from a TF checkpoint (V1 file, as Google's is, or V2 prefix), checked.

    Raises:
        VGGishWeightsError: not a readable checkpoint, a tensor missing or of the wrong shape.
    """
    try:
        ckpt = TFCheckpoint.open(path)
    except (CheckpointFormatError, OSError) as err:
        raise VGGishWeightsError(f"{path}: {err}") from None
    tensors = {}
    for name, shape in VGGISH_SHAPES.items():
        if name not in ckpt.shapes:
            raise VGGishWeightsError(f"{path}: not a VGGish checkpoint: tensor {name} missing")
        if ckpt.shapes[name] != shape:
            raise VGGishWeightsError(
                f"{path}: tensor {name} has shape {list(ckpt.shapes[name])}, VGGish's is "
                f"{list(shape)}"
            )
        try:
            tensor = ckpt.get(name)
        except CheckpointFormatError as err:
            raise VGGishWeightsError(f"{path}: {err}") from None
        if tensor.dtype != np.float32:
            raise VGGishWeightsError(f"{path}: tensor {name} is {tensor.dtype}, not float32")
        if not (tensor.flags.aligned and tensor.flags.writeable):
            tensor = tensor.copy()  # torch takes aligned, writable memory uncopied
        tensors[name] = tensor
    return tensors


def load_vggish(path: str | Path) -> VGGish:
    """VGGish (eval mode, float32) with the weights of the checkpoint at ``path``.

    Raises:
        VGGishWeightsError: see :func:`read_vggish_tensors`.
    """
    tensors = read_vggish_tensors(path)
    with torch.device("meta"):  # no random initialisation of 72M parameters to overwrite
        model = VGGish()
    model.load_tf_weights(tensors)
    return model.eval()
