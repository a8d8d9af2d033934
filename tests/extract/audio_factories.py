"""Test factories for the audio side: a VGGish checkpoint in the format of Google's
``vggish_model.ckpt`` (a V1 TensorFlow checkpoint, written by our own writer) and a
``vggish_pca_params.npz``, both of random weights, and generated sound files.

The weights are scaled (He initialisation, a 1/sqrt(fan-in) embedding layer) so that the PCA
features of ordinary sounds spread over the quantization range instead of all clipping.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from nextvlad.extract._tf_checkpoint_writer import write_v1_checkpoint
from nextvlad.extract.vggish import VGGISH_SHAPES

__all__ = ["vggish_tensors", "write_audio_file", "write_audio_pca", "write_vggish_checkpoint"]


def vggish_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """Random VGGish weights, TF layout (:data:`nextvlad.extract.vggish.VGGISH_SHAPES`):
    uniform with He's variance (``2 / fan_in``; ``1 / (32 fan_in)`` for the embedding layer)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in VGGISH_SHAPES.items():
        if name.endswith("/biases"):
            out[name] = rng.uniform(-0.01, 0.01, shape).astype(np.float32)
            continue
        fan_in = int(np.prod(shape[:-1]))
        variance = 1.0 / (32 * fan_in) if name.startswith("vggish/fc2/") else 2.0 / fan_in
        weights = rng.random(shape, dtype=np.float32)  # U[0, 1): variance 1/12
        weights -= np.float32(0.5)
        weights *= np.float32(np.sqrt(12 * variance))
        out[name] = weights
    return out


def write_vggish_checkpoint(
    path: str | Path, seed: int = 0, tensors: dict[str, np.ndarray] | None = None
) -> Path:
    """A V1 checkpoint (one file, as Google's) of random VGGish weights (or of ``tensors``)."""
    path = Path(path)
    write_v1_checkpoint(path, vggish_tensors(seed) if tensors is None else tensors)
    return path


def write_audio_pca(path: str | Path, seed: int = 0, scale: float = 1.0) -> Path:
    """``vggish_pca_params.npz``: a random orthogonal ``pca_eigen_vectors`` (128, 128) times
    ``scale`` and small ``pca_means`` (128,), float64 as Google's, with ``np.savez``."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((128, 128)))
    vectors = scale * q * np.sign(np.diag(r))  # (128, 128) orthogonal rows
    means = 0.05 * rng.standard_normal(128)
    path = Path(path)
    np.savez(path, pca_eigen_vectors=vectors, pca_means=means)
    return path


def write_audio_file(
    path: str | Path,
    *,
    seconds: float = 2.0,
    rate: int = 44100,
    layout: str = "stereo",
    frequency: float = 440.0,
    amplitude: float = 0.5,
    codec: str | None = None,
) -> Path:
    """A sine of ``frequency`` Hz in every channel, encoded by PyAV (``codec`` by the
    extension's default: PCM for .wav, AAC for .mp4/.m4a) into ``path``."""
    path = Path(path)
    codec = codec or ("pcm_s16le" if path.suffix == ".wav" else "aac")
    t = np.arange(round(seconds * rate)) / rate
    wave = (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        channels = stream.codec_context.layout.nb_channels
        fmt = stream.codec_context.format.name
        planar = np.repeat(wave[None], channels, axis=0)  # (C, T) float32
        step = stream.codec_context.frame_size or 1024
        for start in range(0, planar.shape[1], step):
            chunk = planar[:, start : start + step]
            if fmt == "s16":
                data = np.round(chunk.T * 32767).astype(np.int16).reshape(1, -1)
            elif fmt == "fltp":
                data = np.ascontiguousarray(chunk)
            else:
                raise ValueError(f"sample format {fmt} not handled")
            frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
