"""Classify one's own videos: :class:`~nextvlad.extract.Extractor` features into a trained model.

The model sees a video exactly as training sees a record: the extracted video is serialized in
YouTube-8M's layout (:func:`nextvlad.extract.writer.encode_extracted`), decoded by the data
layer, collated into a batch (uint8 frames (1, n, 1152) rgb ++ audio with ``num_frames``, or
the video-level means) and run through the checkpoint's input transform and model
(:func:`nextvlad.training.iter_predictions`); scores are the sigmoid of the logits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nextvlad.errors import UsageError
from nextvlad.extract.pipeline import AUDIO_DIM, ExtractedVideo, Extractor

__all__ = ["Classification", "VideoClassifier"]


@dataclass
class Classification:
    """One video's top labels: ``(class index, name or "", score)`` by descending score."""

    id: str
    num_frames: int
    labels: list[tuple[int, str, float]]
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of `nextvlad classify --json`."""
        out: dict[str, Any] = {
            "id": self.id,
            "num_frames": self.num_frames,
            "labels": [{"index": c, "name": n, "score": round(s, 6)} for c, n, s in self.labels],
        }
        if self.note:
            out["note"] = self.note
        return out


class VideoClassifier:
    """A checkpoint and an extractor: video in, top labels out.

    Args:
        checkpoint: a run folder, checkpoint folder or its model.safetensors.
        extractor: the feature extractor (its audio must fit the model's streams).
        vocabulary: class index -> name (YouTube-8M's vocabulary.csv, ``read_vocabulary``).
        device: where the model runs.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        extractor: Extractor,
        *,
        vocabulary: Mapping[int, str] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        from nextvlad.checkpoint import load_for_inference

        model, transform, config, folder = load_for_inference(checkpoint)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.transform = transform.to(self.device)
        self.config = config
        self.folder = folder
        self.extractor = extractor
        self.vocabulary = dict(vocabulary or {})
        self.video_level = config.input_level == "video"
        dims = tuple(config.stream_dims)
        wants_audio = len(dims) > 1 and dims[1] == AUDIO_DIM
        has_audio = extractor.audio is not None or extractor.zero_audio
        if wants_audio and not has_audio:
            raise UsageError(
                f"the checkpoint {folder} takes audio features ({dims}): give --audio-model "
                "and --audio-pca, or --zero-audio"
            )
        self.takes_audio = wants_audio

    def scores(self, video: ExtractedVideo) -> torch.Tensor:
        """(num_classes,) sigmoid scores of an extracted video."""
        from nextvlad.checkpoint import check_data_fits
        from nextvlad.data.batch import VideoCollator
        from nextvlad.data.schema import decode_video, infer_schema
        from nextvlad.extract.writer import encode_extracted
        from nextvlad.training import iter_predictions
        from nextvlad.training.evaluate import reference_frames

        if not self.takes_audio:  # a model of rgb alone
            video = dataclasses.replace(video, audio=None, mean_audio=None)
        record = encode_extracted(video, video_level=self.video_level)
        schema = infer_schema(record)
        assert schema is not None  # an extracted video has at least one frame
        check_data_fits(self.config, schema, f"the features of {video.id}", model=str(self.folder))
        decoded = decode_video(record, schema)
        batch = VideoCollator(self.config.num_classes, pad_to=reference_frames(self.model))(
            [decoded]
        )
        ((_, logits),) = iter_predictions(self.model, self.transform, [batch], self.device)
        return torch.sigmoid(logits[0])

    def classify(
        self,
        source: str | Path,
        *,
        top_k: int = 20,
        video_id: str | None = None,
    ) -> Classification:
        """Extract ``source`` and return its ``top_k`` labels."""
        video = self.extractor.extract(source, video_id)
        return self.top(video, top_k)

    def top(self, video: ExtractedVideo, top_k: int = 20) -> Classification:
        """The ``top_k`` labels of an extracted video."""
        scores = self.scores(video)
        values, classes = torch.topk(scores, min(top_k, scores.numel()))
        labels = [
            (int(c), self.vocabulary.get(int(c), ""), float(s))
            for c, s in zip(classes.tolist(), values.tolist(), strict=True)
        ]
        return Classification(video.id, video.num_frames, labels, video.note)

    def classify_many(
        self, sources: Sequence[str | Path], *, top_k: int = 20
    ) -> list[Classification | Exception]:
        """:meth:`classify` of each source; a video that fails gives its error."""
        from nextvlad.errors import NextVLADError

        out: list[Classification | Exception] = []
        for source in sources:
            try:
                out.append(self.classify(source, top_k=top_k))
            except NextVLADError as err:
                out.append(err)
        return out
