"""From a video to YouTube-8M features: frames -> Inception-v3 ``pool_3`` -> PCA -> bytes.

:class:`Extractor` chooses frames with Google's rule (:mod:`nextvlad.extract.frames`), runs
them through the network in batches (``torch.inference_mode``), projects them with the PCA
and quantizes them with Google's arithmetic (:mod:`nextvlad.extract.pca`); ``mean_rgb`` is the
mean of the unquantized PCA features. Audio, when a VGGish model is given, is one row a second
from :mod:`nextvlad.extract.audio` (VGGish, its PCA, unquantized), cut or padded to the rgb rows
(``align_audio``: rows past the last rgb frame are cut, missing ones repeat the last row), then
quantized by ``vggish_postprocess``'s rule; ``mean_audio`` is the mean of those aligned,
unquantized rows.

Without an audio model no audio is written, unless ``zero_audio``: then every audio byte is
:data:`ZERO_AUDIO_BYTE` (127), the byte whose YouTube-8M dequantization
``q * 4/255 + 4/512 - 2`` is nearest 0.0 (-2.6e-5; Google's extractor writes 0, which
dequantizes to -1.99), and ``mean_audio`` is 0.0. A video without an audio stream, when an
audio model is given, gets the same (its :attr:`ExtractedVideo.note` says so).

The GPU path: ``Extractor.from_files(..., device="cuda")`` puts the network on
the GPU; :meth:`Extractor.extract_many` decodes the next videos in CPU worker threads while
the GPU runs the current one.
"""

from __future__ import annotations

import concurrent.futures
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from nextvlad._yt8m import AUDIO_DIM, DEQUANT_BIAS, DEQUANT_SCALE, RGB_DIM
from nextvlad.errors import NextVLADError
from nextvlad.extract._sources import local_copy
from nextvlad.extract.audio import ZERO_AUDIO_BYTE, align_audio, decode_audio, quantize_audio
from nextvlad.extract.frames import Frame, VideoError, iter_frames
from nextvlad.extract.mel import samples_needed

__all__ = [
    "AUDIO_DIM",
    "RGB_DIM",
    "ZERO_AUDIO_BYTE",
    "ExtractedVideo",
    "Extractor",
    "align_audio",
    "dequantize",
]

POOL_DIM = 2048


def dequantize(q: np.ndarray) -> np.ndarray:
    """YouTube-8M's dequantization of bytes (``readers.py``): ``q * 4/255 + 4/512 - 2``."""
    return (q.astype(np.float32) * DEQUANT_SCALE + DEQUANT_BIAS).astype(np.float32)


class Projection(Protocol):
    """What the pipeline needs of a PCA (:class:`nextvlad.extract.pca.PCA`)."""

    def project(self, x: np.ndarray) -> np.ndarray: ...


class Audio(Protocol):
    """What the pipeline needs of the audio side (:class:`nextvlad.extract.audio.AudioExtractor`):
    (n, 128) float32 PCA-whitened, unquantized VGGish features of a 16 kHz mono waveform."""

    hop_seconds: float  # between examples (one a second)

    def embeddings(self, waveform: np.ndarray, max_examples: int | None = None) -> np.ndarray: ...


@dataclass
class ExtractedVideo:
    """One video's features in YouTube-8M's layout."""

    id: str
    labels: list[int]
    rgb: np.ndarray  # (n, 1024) uint8
    audio: np.ndarray | None  # (n, 128) uint8, aligned with rgb rows
    mean_rgb: np.ndarray  # (1024,) float32, mean of the unquantized features
    mean_audio: np.ndarray | None  # (128,) float32
    note: str | None = None  # e.g. "no audio stream: zero audio" (for the summary)

    @property
    def num_frames(self) -> int:
        return len(self.rgb)


def video_id(source: str | Path, how: str = "name") -> str:
    """``id`` of a video: its file name without the extension (``how="name"``), or the path
    as given (``how="path"``, as Google's tool does)."""
    if how == "path":
        return str(source)
    text = str(source).rstrip("/")
    name = text.rsplit("/", 1)[-1]
    return Path(name).stem if "." in name else name


def batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """Consecutive frames of one image size, at most ``size`` a batch."""
    batch: list[Frame] = []
    for frame in frames:
        if batch and (len(batch) == size or frame.rgb.shape != batch[0].rgb.shape):
            yield batch
            batch = []
        batch.append(frame)
    if batch:
        yield batch


@dataclass
class Timings:
    """Seconds spent in each stage (for the benchmark and the progress line)."""

    decode: float = 0.0
    network: float = 0.0
    pca: float = 0.0
    audio: float = 0.0
    frames: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class Extractor:
    """Frames -> ``pool_3`` -> PCA -> bytes, as Google's YouTube-8M extractor computes them.

    Args:
        network: (B, H, W, 3) uint8 tensor -> (B, 2048) float32 ``pool_3``
            (:class:`nextvlad.extract.inception.InceptionV3`), on ``device``.
        pca: the PCA (``project``: (n, 2048) -> (n, 1024) float32).
        audio: the audio side, or None for none.
        zero_audio: without ``audio``, write :data:`ZERO_AUDIO_BYTE` rows as audio.
        fps, max_frames: Google's ``--frames_per_second`` (1) and ``--max_frames`` (300).
        batch_size: frames a network call.
        device: where the network runs.
    """

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor],
        pca: Projection,
        *,
        audio: Audio | None = None,
        zero_audio: bool = False,
        fps: float = 1.0,
        max_frames: int = 300,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> None:
        if fps <= 0 or max_frames < 1 or batch_size < 1:
            raise ValueError("fps must be positive, max_frames and batch_size at least 1")
        self.network = network
        self.pca = pca
        self.audio = audio
        self.zero_audio = zero_audio
        self.fps = fps
        self.max_frames = max_frames
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.timings = Timings()

    @classmethod
    def from_files(
        cls,
        inception: str | Path,
        pca: str | Path,
        *,
        audio_model: str | Path | None = None,
        audio_pca: str | Path | None = None,
        zero_audio: bool = False,
        fps: float = 1.0,
        max_frames: int = 300,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> Extractor:
        """The extractor of Google's weight files (see :mod:`nextvlad.extract.inception`,
        :mod:`nextvlad.extract.pca`, :mod:`nextvlad.extract.audio` for what each takes)."""
        from nextvlad.errors import UsageError
        from nextvlad.extract.inception import load_inception
        from nextvlad.extract.pca import PCA

        if (audio_model is None) != (audio_pca is None):
            raise UsageError("--audio-model and --audio-pca go together: give both or neither")
        projection = PCA.load(pca)  # the quick file first: its mistakes show at once
        network = load_inception(inception).to(device)
        audio = None
        if audio_model is not None and audio_pca is not None:
            from nextvlad.extract.audio import AudioExtractor

            audio = AudioExtractor.from_files(audio_model, audio_pca, device=device)
        return cls(
            network,
            projection,
            audio=audio,
            zero_audio=zero_audio,
            fps=fps,
            max_frames=max_frames,
            batch_size=batch_size,
            device=device,
        )

    # The stages, each usable alone (the benchmark times them).

    def frames(self, source: str | Path) -> Iterator[Frame]:
        """The frames Google's rule keeps (a folder: its images)."""
        return iter_frames(source, self.fps, self.max_frames)

    def pool3(self, frames: Iterable[Frame]) -> np.ndarray:
        """(n, 2048) float32 ``pool_3`` of ``frames``, in batches of ``batch_size``."""
        out = [np.empty((0, POOL_DIM), np.float32)]
        clock = _Clock()
        for batch in batches(_timed(frames, self.timings, clock), self.batch_size):
            x = torch.from_numpy(np.stack([f.rgb for f in batch])).to(self.device)
            with torch.inference_mode():
                y = self.network(x)
            out.append(y.float().cpu().numpy())
            self.timings.network += clock.lap()
            self.timings.frames += len(batch)
        return np.concatenate(out)

    def extract(
        self, source: str | Path, video_id: str | None = None, labels: Sequence[int] = ()
    ) -> ExtractedVideo:
        """The features of one video file, image folder or remote video (copied first).

        Raises:
            VideoError: it cannot be opened or decoded, or yields no frame.
        """
        with local_copy(source) as path:
            track = self._audio_track(path)
            pool = self.pool3(self.frames(path))
        return self._finish(source, pool, track, video_id, labels)

    def extract_many(
        self, items: Iterable[tuple[str | Path, str | None, Sequence[int]]], workers: int = 1
    ) -> Iterator[tuple[str | Path, ExtractedVideo | NextVLADError]]:
        """``(source, extract(...))`` of each ``(source, id, labels)``, in order; with
        ``workers`` > 0 the next ``workers`` videos are decoded (and their audio computed) in
        CPU threads while the network runs. A video that fails gives its error."""
        if workers < 1:
            for source, vid, labels in items:
                try:
                    yield source, self.extract(source, vid, labels)
                except NextVLADError as err:
                    yield source, err
            return
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            it = iter(items)
            ahead = [
                (item, pool.submit(self._decode, item[0])) for item in itertools.islice(it, workers)
            ]
            while ahead:
                (source, vid, labels), future = ahead.pop(0)
                for item in itertools.islice(it, 1):
                    ahead.append((item, pool.submit(self._decode, item[0])))
                try:
                    frames, track = future.result()
                    yield source, self._finish(source, self.pool3(frames), track, vid, labels)
                except NextVLADError as err:
                    yield source, err

    def _decode(self, source: str | Path) -> tuple[list[Frame], _Track]:
        clock = _Clock()
        with local_copy(source) as path:
            track = self._audio_track(path)
            frames = list(self.frames(path))
        self.timings.decode += clock.lap()
        return frames, track

    def _audio_track(self, path: str) -> _Track:
        """(unquantized audio rows or None, note): VGGish's rows, or None and why zero audio is
        written."""
        if self.audio is None:
            return None, None
        if Path(path).is_dir():
            return None, "an image folder has no audio: zero audio written"
        clock = _Clock()
        needed = samples_needed(self.max_frames, self.audio.hop_seconds)  # decode no further
        waveform = decode_audio(path, max_samples=needed)
        if waveform is None:
            return None, "no audio stream: zero audio written"
        found = self.audio.embeddings(waveform, self.max_frames)
        self.timings.audio += clock.lap()
        return np.asarray(found, np.float32), None

    def _finish(
        self,
        source: str | Path,
        pool: np.ndarray,
        track: _Track,
        vid: str | None,
        labels: Sequence[int],
    ) -> ExtractedVideo:
        if not len(pool):
            raise VideoError(f"{source}: no frames")
        clock = _Clock()
        features = np.asarray(self.pca.project(pool), np.float32)
        rgb = _quantize(features)
        self.timings.pca += clock.lap()
        rows, note = track
        audio = mean_audio = None
        if rows is not None:
            aligned = align_audio(rows, len(rgb))  # (n, 128) float32
            audio = quantize_audio(aligned)
            mean_audio = aligned.mean(axis=0).astype(np.float32)
        elif self.audio is not None or self.zero_audio:
            audio = np.full((len(rgb), AUDIO_DIM), ZERO_AUDIO_BYTE, np.uint8)
            mean_audio = np.zeros(AUDIO_DIM, np.float32)
        return ExtractedVideo(
            id=vid if vid is not None else video_id(source),
            labels=[int(c) for c in labels],
            rgb=rgb,
            audio=audio,
            mean_rgb=features.mean(axis=0).astype(np.float32),
            mean_audio=mean_audio,
            note=note,
        )


_Track = tuple[np.ndarray | None, str | None]


def _quantize(features: np.ndarray) -> np.ndarray:
    from nextvlad.extract.pca import quantize

    return np.asarray(quantize(features), np.uint8)


class _Clock:
    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self._last = self._now()

    def lap(self) -> float:
        now = self._now()
        elapsed, self._last = now - self._last, now
        return elapsed


def _timed(frames: Iterable[Frame], timings: Timings, clock: _Clock) -> Iterator[Frame]:
    """``frames``, with the time spent producing them added to ``timings.decode``."""
    clock.lap()
    for frame in frames:
        timings.decode += clock.lap()
        yield frame
        clock.lap()
