"""YouTube-8M's PCA of Inception's ``pool_3`` features and its 8-bit quantization.

Google's release (``yt8m_pca.tgz``, http://data.yt8m.org/yt8m_pca.tgz) holds three NumPy files:
``mean.npy`` (2048, 1), ``eigenvals.npy`` (2048, 1) and ``eigenvecs.npy`` (2048, 2048) whose
*rows* are the eigenvectors, largest eigenvalue first. ``feature_extractor.py`` (google/youtube-8m)
turns them into float32 constants and computes, in float32::

    f = ((x - mean) @ eigenvecs.T[:, :1024]) / sqrt(eigenvals[:1024] + 1e-4)

and ``extract_tfrecords_main.py`` stores each frame as ``round((clip(f, -2, 2) + 2) * 255 / 4)``
(Python's ``round`` on a float32: half to even). :meth:`PCA.project` and :func:`quantize` do the
same operations in the same order and precision.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextvlad.errors import UsageError

FEATURE_DIM = 2048  # Inception-v3 pool_3
PCA_DIM = 1024  # what YouTube-8M keeps
EPSILON = 1e-4  # added to the eigenvalues before the square root (Google's whitening)
QUANT_MIN, QUANT_MAX = -2.0, 2.0

_FILES = ("mean.npy", "eigenvals.npy", "eigenvecs.npy")


class PCAError(UsageError):
    """A PCA file or folder that is missing a part or holds arrays of the wrong shape."""


@dataclass
class PCA:
    """Google's PCA in float32: ``mean`` (2048,), ``eigenvals`` (2048,), ``eigenvecs`` (2048, 2048)
    with one eigenvector per row, sorted by decreasing eigenvalue."""

    mean: np.ndarray
    eigenvals: np.ndarray
    eigenvecs: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.ascontiguousarray(self.mean, np.float32).reshape(-1)
        self.eigenvals = np.ascontiguousarray(self.eigenvals, np.float32).reshape(-1)
        self.eigenvecs = np.ascontiguousarray(self.eigenvecs, np.float32)
        _check_shapes(self.mean.shape, self.eigenvals.shape, self.eigenvecs.shape, where="PCA")
        # What feature_extractor.py turns into float32 constants, once.
        self._projection = np.ascontiguousarray(self.eigenvecs.T[:, :PCA_DIM])  # (2048, 1024)
        self._scale = np.sqrt(self.eigenvals[:PCA_DIM] + np.float32(EPSILON))  # (1024,) float32

    def project(self, x: np.ndarray) -> np.ndarray:
        """x: (n, 2048) pool_3 features -> (n, 1024) float32 whitened PCA features."""
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or x.shape[1] != FEATURE_DIM:
            raise ValueError(f"PCA.project takes (n, {FEATURE_DIM}) features, got {x.shape}")
        centred = x - self.mean  # (n, 2048)
        return (centred @ self._projection) / self._scale  # (n, 1024)

    @classmethod
    def load(cls, path: str | Path) -> PCA:
        """Reads ``yt8m_pca.tgz`` (or any tar holding the three files) or a folder of them."""
        path = Path(path)
        if path.is_dir():
            arrays = {}
            for name in _FILES:
                file = path / name
                if not file.is_file():
                    raise PCAError(
                        f"{path}: no {name} in this PCA folder (needs {', '.join(_FILES)})"
                    )
                arrays[name] = _load_npy(file.read_bytes(), f"{file}")
        elif path.is_file():
            arrays = _load_tar(path)
        else:
            raise PCAError(f"{path}: no such PCA file or folder")
        return cls.from_arrays(arrays, where=str(path))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], *, where: str) -> PCA:
        mean, vals, vecs = (arrays[name] for name in _FILES)
        _check_shapes(mean.shape, vals.shape, vecs.shape, where=where)
        return cls(mean, vals, vecs)

    def save(self, folder: str | Path) -> None:
        """Writes the three files in Google's layout (mean and eigenvals as (2048, 1))."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "mean.npy", self.mean.reshape(-1, 1))
        np.save(folder / "eigenvals.npy", self.eigenvals.reshape(-1, 1))
        np.save(folder / "eigenvecs.npy", self.eigenvecs)


def quantize(features: np.ndarray) -> np.ndarray:
    """Float features -> uint8 as ``extract_tfrecords_main.quantize``: clip to [-2, 2], then
    ``round((f + 2) * 255 / 4)``, half to even, in float32."""
    f = np.clip(np.asarray(features, np.float32), np.float32(QUANT_MIN), np.float32(QUANT_MAX))
    scale = np.float32(255.0 / (QUANT_MAX - QUANT_MIN))  # 63.75, exact
    return np.rint((f - np.float32(QUANT_MIN)) * scale).astype(np.uint8)


def fit_pca(features: np.ndarray) -> PCA:
    """A PCA in Google's layout fitted on one's own pool_3 features (n, 2048), n >= 2.

    ``mean`` is the features' mean; ``eigenvals``/``eigenvecs`` are the eigenvalues and
    eigenvectors (rows) of their covariance (divided by n - 1), from ``numpy.linalg.eigh`` in
    float64, sorted by decreasing eigenvalue, each eigenvector's sign chosen so that its entry
    of largest magnitude is positive (a deterministic choice; PCA leaves it free). With fewer
    than 1025 frames some of the 1024 kept eigenvalues are ~0 and their components are noise
    scaled by 1/sqrt(1e-4): fit on many frames (Google fitted on millions).
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or x.shape[1] != FEATURE_DIM:
        raise ValueError(f"fit_pca takes (n, {FEATURE_DIM}) features, got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"fit_pca needs at least 2 feature rows, got {x.shape[0]}")
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)  # (2048, 2048)
    vals, vecs = np.linalg.eigh(cov)  # ascending; columns are eigenvectors
    order = np.argsort(vals)[::-1]
    vals = np.clip(vals[order], 0.0, None)
    vecs = vecs[:, order].T  # rows = eigenvectors
    peak = np.abs(vecs).argmax(axis=1)
    signs = np.sign(vecs[np.arange(FEATURE_DIM), peak])
    vecs *= np.where(signs == 0, 1.0, signs)[:, None]
    return PCA(mean, vals, vecs)


def _check_shapes(mean: tuple, vals: tuple, vecs: tuple, *, where: str) -> None:
    d = FEATURE_DIM
    if mean not in ((d,), (d, 1)):
        raise PCAError(f"{where}: mean.npy has shape {mean}, expected ({d}, 1)")
    if vals not in ((d,), (d, 1)):
        raise PCAError(f"{where}: eigenvals.npy has shape {vals}, expected ({d}, 1)")
    if vecs != (d, d):
        raise PCAError(f"{where}: eigenvecs.npy has shape {vecs}, expected ({d}, {d})")


def _load_npy(data: bytes, where: str) -> np.ndarray:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise PCAError(f"{where}: not a NumPy .npy array ({err})") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
        raise PCAError(f"{where}: expected a float array, got {getattr(array, 'dtype', '?')}")
    return array


def _load_tar(path: Path) -> dict[str, np.ndarray]:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            arrays = {}
            for name in _FILES:
                member = members.get(name)
                if member is None:
                    raise PCAError(f"{path}: no {name} in this archive (needs {', '.join(_FILES)})")
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                arrays[name] = _load_npy(handle.read(), f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise PCAError(f"{path}: not a PCA folder or .tgz archive ({err})") from None
    return arrays
