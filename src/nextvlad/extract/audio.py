"""Audio features as YouTube-8M's: VGGish embeddings, PCA-whitened and quantized to 8 bits.

A video's first audio stream is decoded by FFmpeg (PyAV) and resampled to 16 kHz by FFmpeg's
``swr`` resampler, channel by channel; the channels are then averaged. (VGGish's
``waveform_to_examples`` averages the channels first, then resamples with ``resampy``: both
steps are linear, so the order does not matter, but the two resamplers' filters differ, so the
samples differ slightly. FFmpeg's own mono downmix is not used: for float output it mixes
stereo as ``(L + R) / sqrt(2)``, 3 dB louder than the mean VGGish takes.) Time 0 of the audio
is its first decoded sample.

:mod:`nextvlad.extract.mel` makes 0.96 s log-mel examples (one a second by default, so that
row ``i`` covers ``[i, i + 0.96)`` s beside the rgb frame of second ``i``), :mod:`.vggish` embeds
them, and ``vggish_postprocess.py``'s arithmetic finishes: ``pca_eigen_vectors @ (e - pca_means)``,
clipped to [-2, 2], then ``uint8((x + 2) * 255 / 4)`` (truncated, not rounded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from nextvlad._yt8m import AUDIO_DIM, DEQUANT_BIAS, DEQUANT_SCALE
from nextvlad.errors import NextVLADError, UsageError
from nextvlad.extract.mel import (
    SAMPLE_RATE,
    YT8M_EXAMPLE_HOP_SECONDS,
    log_mel_examples,
    samples_needed,
)
from nextvlad.extract.vggish import EMBEDDING_SIZE, VGGish, load_vggish

__all__ = [
    "QUANTIZE_MAX",
    "QUANTIZE_MIN",
    "ZERO_AUDIO_BYTE",
    "AudioDecodeError",
    "AudioExtractor",
    "AudioPCA",
    "AudioPCAError",
    "align_audio",
    "decode_audio",
    "quantize_audio",
]

QUANTIZE_MIN = -2.0  # vggish_params.QUANTIZE_MIN_VAL
QUANTIZE_MAX = 2.0  # vggish_params.QUANTIZE_MAX_VAL
PCA_EIGEN_VECTORS = "pca_eigen_vectors"  # the keys of vggish_pca_params.npz
PCA_MEANS = "pca_means"

# The byte that YouTube-8M's reader dequantizes nearest 0.0 (127 -> -2.6e-5), the PCA mean:
# what a missing audio row carries when there is no row to repeat.
ZERO_AUDIO_BYTE = round(-DEQUANT_BIAS / DEQUANT_SCALE)


class AudioDecodeError(NextVLADError):
    """A file whose audio cannot be opened or decoded."""


class AudioPCAError(UsageError):
    """A VGGish PCA file (``vggish_pca_params.npz``) that cannot be read or has the wrong shape."""


def decode_audio(path: str | Path, max_samples: int | None = None) -> np.ndarray | None:
    """(T,) float32 samples of the first audio stream of ``path``, 16 kHz mono, in [-1, 1]
    (the first ``max_samples`` only, decoding no further, when given); None when the file has
    no audio stream.

    Raises:
        AudioDecodeError: the file cannot be opened, or its audio cannot be decoded.
    """
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as err:
        raise AudioDecodeError(f"{path}: cannot open: {_reason(err)}") from None
    with container:
        if not container.streams.audio:
            return None
        try:
            parts = _resampled(container, container.streams.audio[0], max_samples)
        except (av.FFmpegError, ValueError) as err:
            reason = _reason(err)
            raise AudioDecodeError(f"{path}: audio stream cannot be decoded: {reason}") from None
    if not parts:
        return np.zeros(0, np.float32)
    channels = {part.shape[0] for part in parts}
    if len(channels) != 1:
        raise AudioDecodeError(f"{path}: the audio stream changes its channel count")
    samples = np.concatenate(parts, axis=1)[:, :max_samples]  # (C, T) float32
    return samples.mean(axis=0, dtype=np.float64).astype(np.float32)  # (T,)


def _resampled(
    container: av.container.InputContainer, stream: av.AudioStream, max_samples: int | None
) -> list[np.ndarray]:
    """The stream decoded and resampled to 16 kHz, its channels kept: (C, n) float32 pieces,
    decoded until ``max_samples`` samples are there (all when None)."""
    stream.codec_context.thread_type = "AUTO"
    resampler = av.AudioResampler(format="fltp", layout=None, rate=SAMPLE_RATE)
    parts: list[np.ndarray] = []
    have = 0
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            parts.append(out.to_ndarray())  # (C, n)
            have += parts[-1].shape[1]
        if max_samples is not None and have >= max_samples:
            return parts  # enough: the rest is not decoded
    parts.extend(out.to_ndarray() for out in resampler.resample(None))  # the filter's tail
    return parts


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return " ".join(str(text).split())


def quantize_audio(features: np.ndarray) -> np.ndarray:
    """``vggish_postprocess``'s 8 bits: clip to [-2, 2], scale to [0, 255], truncate."""
    clipped = np.clip(features, QUANTIZE_MIN, QUANTIZE_MAX)
    return ((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN))).astype(np.uint8)


def align_audio(rows: np.ndarray, n_frames: int) -> np.ndarray:
    """Audio ``rows`` (m, 128) cut or padded to the video's ``n_frames`` rgb rows.

    Rows past the last rgb frame are cut (they describe no frame). Missing rows, which a video
    whose last second is partial has (its last rgb frame is taken, but 0.96 s of audio do not
    remain after it), repeat the last audio row: the nearest sound in time, where a PCA-mean
    row (:data:`ZERO_AUDIO_BYTE`, "an average sound") is a value YouTube-8M's audio never
    shows for a video with sound. A track with no row at all is padded with
    :data:`ZERO_AUDIO_BYTE` (0.0 for float rows), as a video without audio is.
    """
    if len(rows) >= n_frames:
        return rows[:n_frames]
    if len(rows):
        fill = rows[-1]
    else:
        fill = np.full(rows.shape[1:], ZERO_AUDIO_BYTE if rows.dtype == np.uint8 else 0, rows.dtype)
    pad = np.broadcast_to(fill, (n_frames - len(rows), *rows.shape[1:]))
    return np.concatenate([rows, pad])


@dataclass
class AudioPCA:
    """VGGish's PCA: ``eigen_vectors`` (128, 128) (rows: output dimensions), ``means`` (128,)."""

    eigen_vectors: np.ndarray
    means: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> AudioPCA:
        """Reads ``vggish_pca_params.npz`` (arrays only: no pickle).

        Raises:
            AudioPCAError: unreadable, a key missing, or a shape not VGGish's.
        """
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):  # a lone .npy array
                raise AudioPCAError(f"{path}: not a VGGish PCA file (an .npy, not an .npz)")
            with loaded as npz:
                missing = [key for key in (PCA_EIGEN_VECTORS, PCA_MEANS) if key not in npz]
                if missing:
                    raise AudioPCAError(f"{path}: not a VGGish PCA file: {missing[0]} missing")
                vectors, means = npz[PCA_EIGEN_VECTORS], npz[PCA_MEANS]
        except AudioPCAError:
            raise
        except (OSError, ValueError, EOFError) as err:
            raise AudioPCAError(f"{path}: cannot read the VGGish PCA file: {err}") from None
        size = EMBEDDING_SIZE
        if vectors.shape != (size, size):
            raise AudioPCAError(
                f"{path}: {PCA_EIGEN_VECTORS} has shape {list(vectors.shape)}, not [{size}, {size}]"
            )
        if means.size != size:
            raise AudioPCAError(f"{path}: {PCA_MEANS} has {means.size} values, not {size}")
        if not (
            np.issubdtype(vectors.dtype, np.floating) and np.issubdtype(means.dtype, np.floating)
        ):
            raise AudioPCAError(f"{path}: the PCA parameters are not floating-point arrays")
        return cls(vectors, means.reshape(-1))

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, 128) embeddings -> (n, 128) PCA-whitened features (unclipped, in the parameters'
        precision, as ``Postprocessor.postprocess`` computes them)."""
        return (self.eigen_vectors @ (embeddings.T - self.means[:, None])).T


class AudioExtractor:
    """VGGish + PCA + quantization: a waveform or a video file to YouTube-8M audio rows."""

    def __init__(
        self,
        model: VGGish,
        pca: AudioPCA,
        *,
        hop_seconds: float = YT8M_EXAMPLE_HOP_SECONDS,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.pca = pca
        self.hop_seconds = hop_seconds
        self.batch_size = batch_size

    @classmethod
    def from_files(
        cls,
        checkpoint: str | Path,
        pca_params: str | Path,
        *,
        hop_seconds: float = YT8M_EXAMPLE_HOP_SECONDS,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> AudioExtractor:
        """From Google's ``vggish_model.ckpt`` and ``vggish_pca_params.npz``.

        Raises:
            VGGishWeightsError, AudioPCAError: a file that is not what it should be (named).
        """
        pca = AudioPCA.load(pca_params)
        model = load_vggish(checkpoint)
        return cls(model, pca, hop_seconds=hop_seconds, batch_size=batch_size, device=device)

    def _postprocessed(self, waveform: np.ndarray, max_examples: int | None) -> np.ndarray:
        examples = log_mel_examples(waveform, self.hop_seconds, max_examples)  # (n, 96, 64)
        parts = [np.zeros((0, AUDIO_DIM))]
        with torch.inference_mode():
            for start in range(0, len(examples), self.batch_size):
                batch = torch.from_numpy(examples[start : start + self.batch_size])
                embedded = self.model(batch.to(self.device)).float().cpu().numpy()  # (b, 128)
                parts.append(self.pca.apply(embedded))
        return np.concatenate(parts)  # (n, 128)

    def embeddings(self, waveform: np.ndarray, max_examples: int | None = None) -> np.ndarray:
        """(n, 128) float32 PCA-whitened, unquantized features of 16 kHz mono ``waveform``."""
        return self._postprocessed(waveform, max_examples).astype(np.float32)

    def features(self, waveform: np.ndarray, max_examples: int | None = None) -> np.ndarray:
        """(n, 128) uint8 audio rows of 16 kHz mono ``waveform``, one per example."""
        return quantize_audio(self._postprocessed(waveform, max_examples))

    def extract(self, path: str | Path, max_examples: int | None = None) -> np.ndarray | None:
        """(n, 128) uint8 audio rows of the video at ``path``; None without an audio stream.

        Raises:
            AudioDecodeError: the file or its audio stream cannot be decoded.
        """
        limit = None if max_examples is None else samples_needed(max_examples, self.hop_seconds)
        waveform = decode_audio(path, max_samples=limit)
        return None if waveform is None else self.features(waveform, max_examples)
