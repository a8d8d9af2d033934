"""Inception-v3 exactly as Google's ``inception-2015-12-05`` graph, the network YouTube-8M's
frame features come from (``pool_3``, 2048-d), in PyTorch.

What the graph computes, and this module with it: the uint8 RGB frame is cast to float32,
resized to 299x299 by TensorFlow 1's *legacy* bilinear resize (``align_corners=False``,
``half_pixel_centers=False``: source = destination * in/out, no half-pixel offset; not what
``torch.nn.functional.interpolate`` computes), mapped to ``(x - 128) / 128``; then 94
convolutions, each followed by ``BatchNormWithGlobalNormalization`` (epsilon 1e-3; its gamma
only where the node's ``scale_after_normalization`` is set: in Google's file every gamma is 1,
tensorflow/tensorflow#564) and ReLU; average pools that leave the padding out of the mean
(TensorFlow's SAME); a *max* pool in the last block's (``mixed_10``) pool branch; ``pool_3`` an
8x8 average. The blocks and their names:

=================  ==================  ==========================================
graph scope        state-dict prefix   block
=================  ==================  ==========================================
conv .. conv_4     Conv2d_1a_3x3 ..    stem (3x3/2, 3x3, 3x3 SAME, pool, 1x1, 3x3, pool)
mixed .. mixed_2   Mixed_5b .. 5d      35x35, 5x5 and double 3x3 towers, avg pool
mixed_3            Mixed_6a            35 -> 17 reduction
mixed_4 .. mixed_7 Mixed_6b .. 6e      17x17, factorized 7x7 towers, avg pool
mixed_8            Mixed_7a            17 -> 8 reduction
mixed_9, mixed_10  Mixed_7b, 7c        8x8, split 1x3/3x1 towers; avg / max pool
=================  ==================  ==========================================

The state-dict names are those of the PyTorch port distributed for FID
(``pt_inception-2015-12-05-6726825d.pth``, pytorch-fid), so that file loads as it is; Google's
GraphDef is read by :func:`load_inception` without TensorFlow (``_graphdef``) and mapped to them.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nextvlad.errors import UsageError

INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPSILON = 1e-3
GRAPH_MEMBER = "classify_image_graph_def.pb"  # inside inception-2015-12-05.tgz


class InceptionWeightsError(UsageError):
    """An ``--inception`` file that is not Google's Inception-v3 (or the FID port of it)."""


def legacy_resize_bilinear(images: Tensor, height: int, width: int) -> Tensor:
    """TensorFlow 1's ``ResizeBilinear`` (align_corners=False, half_pixel_centers=False).

    images: (B, H, W, C) any real dtype -> (B, height, width, C) float32. For output row ``y``
    the source row is ``y * (H / height)`` (float32), interpolated between ``floor`` of it and
    the next row (clamped to the last), with TensorFlow's order of float32 operations:
    ``top = tl + (tr - tl) * dx; bottom = bl + (br - bl) * dx; out = top + (bottom - top) * dy``.
    """
    if images.ndim != 4:
        raise ValueError(f"legacy_resize_bilinear takes (B, H, W, C) images, got {images.shape}")
    x = images.to(torch.float32)
    y0, y1, dy = _source_axis(x.shape[1], height, x.device)
    x0, x1, dx = _source_axis(x.shape[2], width, x.device)
    top, bottom = x[:, y0], x[:, y1]  # (B, height, W, C)
    dx = dx.view(1, 1, -1, 1)
    dy = dy.view(1, -1, 1, 1)
    top_left, top_right = top[:, :, x0], top[:, :, x1]  # (B, height, width, C)
    bottom_left, bottom_right = bottom[:, :, x0], bottom[:, :, x1]
    upper = top_left + (top_right - top_left) * dx
    lower = bottom_left + (bottom_right - bottom_left) * dx
    return upper + (lower - upper) * dy


def _source_axis(
    in_size: int, out_size: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    scale = float(np.float32(in_size) / np.float32(out_size))  # a float32 value, as TF's
    src = torch.arange(out_size, dtype=torch.float32, device=device) * scale
    floor = torch.floor(src)
    lower = floor.long()
    upper = torch.clamp(lower + 1, max=in_size - 1)
    return lower, upper, src - floor


class BasicConv2d(nn.Module):
    """Convolution (no bias) + batch norm (epsilon 1e-3, moving statistics) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], **conv) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, bias=False, **conv)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPSILON)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return F.relu(self.bn(self.conv(x)))
        # Inference: the batch norm folded into the convolution (one pass over the output
        # instead of two, ~20% faster on CPU; differs from the unfolded sum by float32 rounding).
        bn = self.bn
        mean, var = bn.running_mean, bn.running_var
        assert mean is not None and var is not None  # track_running_stats
        scale = bn.weight * torch.rsqrt(var + bn.eps)  # (cout,)
        weight = self.conv.weight * scale[:, None, None, None]
        bias = bn.bias - mean * scale
        conv = self.conv
        return F.relu(F.conv2d(x, weight, bias, conv.stride, conv.padding))


def _avg_pool_same(x: Tensor) -> Tensor:
    # TensorFlow's SAME average pool divides by the number of real (unpadded) inputs.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """mixed, mixed_1, mixed_2 (35x35)."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    """mixed_3: 35x35 -> 17x17."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """mixed_4 .. mixed_7 (17x17), 7x7 convolutions factorized into 1x7 and 7x1."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = {"padding": (0, 3)}, {"padding": (3, 0)}
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), **row)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(d))))
        bp = self.branch_pool(_avg_pool_same(x))
        return torch.cat([self.branch1x1(x), b7, d, bp], 1)


class InceptionD(nn.Module):
    """mixed_8: 17x17 -> 8x8."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """mixed_9, mixed_10 (8x8); ``max_pool`` for mixed_10's pool branch, as Google's graph."""

    def __init__(self, cin: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_same(x)
        parts = [
            self.branch1x1(x),
            self.branch3x3_2a(b3),
            self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(d),
            self.branch3x3dbl_3b(d),
            self.branch_pool(pooled),
        ]
        return torch.cat(parts, 1)


class InceptionV3(nn.Module):
    """Google's inception-2015-12-05 up to ``pool_3``.

    ``forward(frames)``: frames (B, H, W, 3) uint8 RGB, one size per batch -> (B, 2048) float32
    ``pool_3``. The resize to 299x299 and ``(x - 128) / 128`` happen inside.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)

    def forward(self, frames: Tensor) -> Tensor:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"InceptionV3 takes (B, H, W, 3) RGB frames, got {frames.shape}")
        with full_fp32_convolutions(frames.device):
            return self._features(frames)

    def _features(self, frames: Tensor) -> Tensor:
        x = legacy_resize_bilinear(frames, INPUT_SIZE, INPUT_SIZE)  # (B, 299, 299, 3)
        x = (x - 128.0) * (1.0 / 128.0)  # the graph's Sub and Mul
        x = x.permute(0, 3, 1, 2)  # (B, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        x = self.Mixed_7a(x)  # (B, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (B, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # pool_3: (B, 2048)


@contextlib.contextmanager
def full_fp32_convolutions(device: torch.device) -> Iterator[None]:
    """On CUDA, cuDNN convolutions in IEEE float32 rather than TF32 (PyTorch's default for
    cuDNN), whose 10-bit mantissa would move many bytes off Google's; restored afterwards."""
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:  # PyTorch before the fp32_precision settings
        old_flag = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old_flag


def load_inception(path: str | Path) -> InceptionV3:
    """Google's ``inception-2015-12-05.tgz``, the ``classify_image_graph_def.pb`` inside it, or
    the FID port's ``.pth`` state dict -> an :class:`InceptionV3` in eval mode (float32).

    Raises :class:`InceptionWeightsError` naming the file and what is missing or wrong.
    """
    from nextvlad.extract import _inception_weights as weights

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InceptionWeightsError(
            f"{path}: cannot read the Inception weights ({err.strerror})"
        ) from None
    # torch.save's zip, or its legacy format (a pickle; pytorch-fid's file may be one)
    if data[:4] == b"PK\x03\x04" or data[:1] == b"\x80":
        state = weights.from_state_dict(_torch_load(data, path), path)
    else:
        if data[:2] == b"\x1f\x8b":
            data = _graph_from_tgz(data, path)
        state = weights.from_graphdef(data, path)
    model = InceptionV3()
    model.load_state_dict(state, strict=False)  # num_batches_tracked is not in the files
    model.eval()
    model.requires_grad_(False)
    return model


def _torch_load(data: bytes, path: Path) -> dict:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as err:
        raise InceptionWeightsError(f"{path}: not a readable PyTorch state dict ({err})") from None
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{path}: a {type(state).__name__}, not a state dict")
    return state


def _graph_from_tgz(data: bytes, path: Path) -> bytes:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.isfile() and Path(member.name).name == GRAPH_MEMBER:
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file
                    return handle.read()
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as err:
        raise InceptionWeightsError(f"{path}: not a readable .tgz archive ({err})") from None
    raise InceptionWeightsError(f"{path}: no {GRAPH_MEMBER} in this archive")
