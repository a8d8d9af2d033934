"""Input transform: uint8 quantised frames -> model input, on the model's device.

YouTube-8M stores each frame feature quantised to 8 bits in [-2, 2]; the reference reader
dequantises with ``q * 4/255 + (4/512 - 2)`` and sets frames at index >= num_frames to 0.0
(after dequantisation). The NeXtVLAD model then reverses the PCA whitening of the rgb features
(Eq. (11)): ``x = (deq - 4/512) * (sqrt(e) + 1e-4)`` on the rgb dimensions, with Google's PCA
eigenvalues e (``yt8m_pca.tgz``: ``eigenvals.npy``). Padded frames therefore end up at
``-4/512 * (sqrt(e) + 1e-4)`` on the rgb dimensions, not at zero, exactly as in the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from nextvlad._yt8m import AUDIO_DIM, DEQUANT_BIAS, DEQUANT_SCALE, RGB_DIM
from nextvlad.errors import ConfigError
from nextvlad.nn import frame_mask
from nextvlad.nn.packing import FramePacking

__all__ = [
    "DEQUANT_BIAS",
    "DEQUANT_SCALE",
    "WHITENING_EPSILON",
    "WHITENING_OFFSET",
    "InputTransform",
    "load_eigenvalues",
]

WHITENING_OFFSET = 4.0 / 512.0
WHITENING_EPSILON = 1e-4
_NPY_MAGIC = b"\x93NUMPY"  # how an .npy file starts


def load_eigenvalues(path: str | Path, dim: int = RGB_DIM) -> Tensor:
    """The first ``dim`` PCA eigenvalues from an .npy file of shape (n,) or (n, 1), n >= dim.

    Raises:
        ConfigError: no such file, a file that is not a float .npy array (never unpickled), or
            one of the wrong shape or with negative or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"eigenvalue file not found: {path}")
    values = _read_npy(path)
    if values.dtype.kind not in "fiu":  # real numbers (Google's file holds float32)
        raise ConfigError(
            f"{path} is not a float .npy array (it holds {values.dtype} values; expected "
            "float eigenvalues such as those of Google's yt8m_pca/eigenvals.npy)"
        )
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] < dim:
        raise ConfigError(
            f"{path}: expected at least {dim} eigenvalues of shape (n,) or (n, 1), "
            f"got shape {values.shape}"
        )
    values = values[:dim].astype(np.float32)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ConfigError(f"{path}: eigenvalues must be finite and non-negative")
    return torch.from_numpy(values)


def _read_npy(path: Path) -> np.ndarray:
    """The array of an .npy file, never unpickled: numpy's own message for a file that is not
    an array (which suggests unpickling it) becomes a plain one."""
    with path.open("rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        what = "an empty file" if not magic else "no .npy header"
        if magic.startswith(b"PK"):
            what = "a zip archive, e.g. an .npz of several arrays"
        raise ConfigError(f"{path} is not a float .npy array ({what})")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        text = str(err)
        if "Object arrays" in text:
            what = "it holds Python objects"
        elif "pickle" in text:
            what = "a damaged header"
        else:
            what = f"damaged or truncated: {text}"
        raise ConfigError(f"{path} is not a float .npy array ({what})") from None


class InputTransform(nn.Module):
    """Dequantise uint8 frames, zero the padded frames, reverse the whitening of stream 0.

    Args:
        feature_dims: sizes of the concatenated streams (rgb first).
        eigenvalues: (feature_dims[0],) PCA eigenvalues of stream 0; None: no reverse
            whitening.
        dequantize: False for inputs that are already float (e.g. one's own features).
    """

    def __init__(
        self,
        feature_dims: Sequence[int] = (RGB_DIM, AUDIO_DIM),
        eigenvalues: Tensor | None = None,
        *,
        dequantize: bool = True,
    ) -> None:
        super().__init__()
        self.feature_dims = tuple(feature_dims)
        self.dequantize = dequantize
        self.reverse_whitening = eigenvalues is not None
        total = sum(self.feature_dims)
        offset = torch.zeros(total)
        scale = torch.ones(total)
        if eigenvalues is not None:
            n = self.feature_dims[0]
            if eigenvalues.shape != (n,):
                raise ConfigError(f"expected {n} eigenvalues, got shape {tuple(eigenvalues.shape)}")
            scale[:n] = torch.sqrt(eigenvalues.to(torch.float32)) + WHITENING_EPSILON
            offset[:n] = WHITENING_OFFSET
        self.offset: Tensor
        self.scale: Tensor
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def forward(self, frames: Tensor, num_frames: Tensor | FramePacking | None = None) -> Tensor:
        """frames: (B, T, D) uint8 (or float if not dequantising); num_frames: (B,) (on any
        device) or the batch's packing -> float (B, T, D) model input."""
        if frames.shape[-1] != self.offset.shape[0]:
            raise ValueError(
                f"expected frames with {self.offset.shape[0]} features, got {tuple(frames.shape)}"
            )
        # One new tensor, then in place (the same arithmetic as out of place, without a fresh
        # (B, T, D) tensor for every operation).
        x = frames.to(torch.float32, copy=True)
        if self.dequantize:
            x.mul_(DEQUANT_SCALE).add_(DEQUANT_BIAS)
        if num_frames is not None and x.ndim == 3:
            if isinstance(num_frames, FramePacking):
                mask = num_frames.frame_mask.unsqueeze(-1) > 0  # (B, T, 1)
            else:
                counts = num_frames.to(x.device, non_blocking=True)
                mask = frame_mask(counts, x.shape[1], torch.bool).unsqueeze(-1)  # (B, T, 1)
            x.masked_fill_(~mask, 0.0)
        if self.reverse_whitening:
            x.sub_(self.offset).mul_(self.scale)  # Eq. (11)
        return x
