"""``POST /v1/classify``: an uploaded video file -> its top labels.

The upload (multipart, one file field named ``file``) is read under its own size limit,
written to a private temporary folder and extracted there with issue 20's extractor
(:class:`nextvlad.extract.pipeline.Extractor`: frames by Google's rule, Inception-v3, PCA,
Google's bytes) in a thread of its own; the features then go through the same batcher as the
protocol's requests, so the model is shared and batched. The server reads only the bytes it
was sent: it never opens a URL that a client names.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextvlad.errors import NextVLADError, UsageError
from nextvlad.serve.protocol import ProtocolError

FIELD = "file"
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_RGB_DIM, _AUDIO_DIM = 1024, 128


def check_extractor(extractor: Any, backend: Any) -> None:
    """Refuse at start-up what could never be classified: a model whose inputs are not the
    extractor's (rgb 1024 and audio 128), or audio the extractor does not make."""
    dims = tuple(backend.config.stream_dims)
    if dims not in ((_RGB_DIM,), (_RGB_DIM, _AUDIO_DIM)):
        raise UsageError(f"--inception: the model takes features {dims}, not rgb 1024 (+ audio)")
    if backend.frame_level and "UINT8" not in backend.datatypes:
        raise UsageError("--inception: the model takes float frames, not the records' bytes")
    if len(dims) == 2 and extractor.audio is None and not extractor.zero_audio:
        raise UsageError(
            "the model takes audio features: give --audio-model and --audio-pca, or --zero-audio"
        )


class Classifier:
    """The /v1/classify side of a server: an extractor and the limits of uploads."""

    def __init__(self, extractor: Any, max_upload_bytes: int, max_pending: int = 2) -> None:
        self.extractor = extractor
        self.max_upload_bytes = max_upload_bytes
        self.max_pending = max_pending  # uploads being extracted; more get 503
        self.pending = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="nextvlad-extract")

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def features(self, filename: str, data: bytes) -> Any:
        """The ExtractedVideo of the upload (400 if it is not a video it can read)."""
        if self.pending >= self.max_pending:
            raise ProtocolError(f"{self.pending} uploads are being extracted; retry", 503)
        self.pending += 1
        try:
            suffix = Path(filename).suffix
            name = "upload" + (suffix if _SUFFIX.match(suffix) else "")
            with tempfile.TemporaryDirectory(prefix="nextvlad-upload-") as folder:
                path = Path(folder) / name
                path.write_bytes(data)
                loop = asyncio.get_running_loop()
                stem = Path(filename).stem or "upload"
                try:
                    return await loop.run_in_executor(
                        self._executor, self.extractor.extract, path, stem
                    )
                except NextVLADError as err:
                    message = str(err).replace(str(path), repr(filename))
                    raise ProtocolError(f"{FIELD} {filename!r}: {message}") from None
        finally:
            self.pending -= 1


def model_inputs(video: Any, backend: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The extracted video as one request of the backend's inputs (a batch of 1)."""
    takes_audio = len(backend.config.stream_dims) == 2
    if not backend.frame_level:
        means = [video.mean_rgb.astype(np.float32)[None]]
        if takes_audio:
            audio = video.mean_audio if video.mean_audio is not None else np.zeros(_AUDIO_DIM)
            means.append(np.asarray(audio, np.float32)[None])
        return backend.prepare(means, "FP32"), None
    streams = [video.rgb[None]]
    if takes_audio:
        streams.append(video.audio[None])
    counts = torch.tensor([video.rgb.shape[0]], dtype=torch.int64)
    return backend.prepare(streams, "UINT8"), counts


def answer(
    video: Any, probabilities: torch.Tensor, top_k: int, names: dict[int, str] | None
) -> dict:
    """The JSON of `nextvlad classify --json` for one video."""
    scores, indices = torch.topk(probabilities[0], min(top_k, probabilities.shape[1]))
    names = names or {}
    return {
        "id": video.id,
        "num_frames": int(video.rgb.shape[0]),
        "labels": [
            {"index": int(i), "name": names.get(int(i), ""), "score": round(float(s), 6)}
            for s, i in zip(scores, indices, strict=True)
        ],
    }
