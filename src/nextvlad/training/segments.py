"""Segment predictions of the 2019 task: each window's top-k classes, the best windows of
each class, the Kaggle 2019 submission (``Class,Segments``), and their MAP against the ratings
(``read_ratings``, ``SegmentEvaluation``: `eval --segments` and the evaluations of
`train --task segments`).

As Google's starter ``inference.py --segment_labels`` does, every window contributes its
top-k classes (among the whitelist, when there is one) with their probabilities; each class
keeps its best ``max_per_class`` windows by descending probability (Google's
``--segment_max_pred``, 100,000). Ties go to the window seen first. Without a dense
windows x classes matrix: the window ids are kept once, in a list, and the (class,
probability, window) triples in numpy chunks that are cut back to each class's best
``max_per_class`` whenever they have doubled, so memory is bounded by
min(windows x top-k, classes x max_per_class) triples of 12 bytes.

Usage::

    ranking = SegmentRanking(num_classes, top_k=20, max_per_class=100_000)
    for batch, logits in iter_predictions(model, transform, loader, device):
        ranking.add(batch.ids, torch.sigmoid(logits))
    with open("submission.csv", "w") as f:
        write_segment_submission(f, ranking.ranked())
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from nextvlad._yt8m import SEGMENT_TOP_N
from nextvlad.data import Batch, ReadStats, SegmentDataset, read_videos
from nextvlad.data.schema import Schema
from nextvlad.metrics import SegmentMAP
from nextvlad.metrics.submission import HEADER
from nextvlad.models import InputTransform
from nextvlad.training.distributed import Context
from nextvlad.training.evaluate import iter_predictions

__all__ = [
    "SegmentEvaluation",
    "SegmentRanking",
    "rank_windows",
    "read_ratings",
    "segment_map",
    "write_segment_submission",
]

_MIN_PRUNE = 1 << 20  # triples held before the first cut


class SegmentRanking:
    """The best ``max_per_class`` windows of every class, from each window's top ``top_k``.

    Args:
        num_classes: the model's outputs (C).
        top_k: classes a window contributes (20, Google's default).
        max_per_class: windows a class keeps (100,000, Google's ``--segment_max_pred``).
        classes: the whitelist (int array of class indices): a window's top-k is taken among
            these only; None: among all C.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        top_k: int = 20,
        max_per_class: int = SEGMENT_TOP_N,
        classes: np.ndarray | None = None,
    ) -> None:
        if top_k < 1 or max_per_class < 1:
            raise ValueError(f"top_k and max_per_class must be positive: {top_k}, {max_per_class}")
        self.num_classes = num_classes
        self.top_k = top_k
        self.max_per_class = max_per_class
        self.classes: Tensor | None = None
        if classes is not None:
            whitelist = np.unique(np.asarray(classes, np.int64))
            if whitelist.size == 0 or whitelist[0] < 0 or whitelist[-1] >= num_classes:
                raise ValueError(f"whitelist classes must lie in [0, {num_classes})")
            self.classes = torch.from_numpy(whitelist)
        self.ids: list[str] = []  # window index -> "vid:start"
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._held = 0  # triples in _chunks
        self._limit = _MIN_PRUNE  # cut when _held exceeds it

    @property
    def num_windows(self) -> int:
        return len(self.ids)

    def add(self, ids: Sequence[str], probabilities: Tensor) -> None:
        """A batch of windows: ``ids`` (B,) and their ``probabilities`` (B, C)."""
        if probabilities.shape != (len(ids), self.num_classes):
            raise ValueError(
                f"probabilities of shape {tuple(probabilities.shape)}, expected "
                f"({len(ids)}, {self.num_classes})"
            )
        scores = probabilities.float()
        if self.classes is not None:
            scores = scores[:, self.classes]  # (B, W)
        k = min(self.top_k, scores.shape[1])
        top, index = torch.topk(scores, k, dim=1)  # (B, k)
        if self.classes is not None:
            index = self.classes[index]  # (B, k) back to model classes
        first = len(self.ids)
        self.ids.extend(ids)
        windows = np.repeat(np.arange(first, first + len(ids), dtype=np.int32), k)  # (B*k,)
        self._chunks.append(
            (index.reshape(-1).numpy().astype(np.int32), top.reshape(-1).numpy(), windows)
        )
        self._held += windows.size
        if self._held > self._limit:
            self._prune()
            self._limit = max(_MIN_PRUNE, 2 * self._held)

    def _prune(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Merge the chunks into one, sorted by class, descending score, then window, and
        cut each class at ``max_per_class``."""
        if not self._chunks:
            empty = np.zeros(0, np.int32)
            return empty, np.zeros(0, np.float32), empty
        cls, score, window = (np.concatenate(parts) for parts in zip(*self._chunks, strict=True))
        order = np.lexsort((window, -score, cls))  # class, then score down, then window
        cls, score, window = cls[order], score[order], window[order]
        starts = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1]])  # (G,) first of each class
        sizes = np.diff(np.r_[starts, cls.size])  # (G,)
        rank = np.arange(cls.size) - np.repeat(starts, sizes)  # position within its class
        keep = rank < self.max_per_class
        cls, score, window = cls[keep], score[keep], window[keep]
        self._chunks = [(cls, score, window)]
        self._held = int(cls.size)
        return cls, score, window

    def ranked(self) -> Iterator[tuple[int, list[str]]]:
        """(class, window ids by descending probability) for every class some window chose,
        in ascending class order."""
        cls, _, window = self._prune()
        if cls.size == 0:
            return
        bounds = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1], True])  # (G+1,)
        for lo, hi in itertools.pairwise(bounds.tolist()):
            yield int(cls[lo]), [self.ids[i] for i in window[lo:hi].tolist()]


def write_segment_submission(out: TextIO, ranked: Iterator[tuple[int, list[str]]]) -> int:
    """The Kaggle 2019 submission: the header ``Class,Segments``, then ``CLASS,VID:START
    VID:START ...`` for each (class, window ids) of ``ranked``. Returns the lines written
    after the header."""
    out.write(HEADER + "\n")
    count = 0
    for class_id, segments in ranked:
        out.write(f"{class_id},{' '.join(segments)}\n")
        count += 1
    return count


def read_ratings(
    files: Sequence[str], schema: Schema, metric: SegmentMAP, *, skip_corrupt: bool = False
) -> tuple[int, int]:
    """Add the segment ratings of the records of ``files`` to ``metric``. Returns (videos
    read, videos with rated segments)."""
    num_videos = num_rated = 0
    for video in read_videos(files, schema, skip_corrupt=skip_corrupt, stats=ReadStats()):
        num_videos += 1
        segments = video.segments
        if segments is None or len(segments.labels) == 0:
            continue
        num_rated += 1
        metric.add_video(video.id, segments.start_times, segments.labels, segments.scores)
    return num_videos, num_rated


def rank_windows(
    model: nn.Module,
    transform: InputTransform,
    batches: Iterable[Batch],
    device: torch.device,
    ranking: SegmentRanking,
    **predict: Any,
) -> SegmentRanking:
    """Add the probabilities of ``model`` over the windows of ``batches`` to ``ranking``;
    ``predict``: ``iter_predictions``'s options (``branch``, ``max_batches``, ``precision``)."""
    for batch, logits in iter_predictions(model, transform, batches, device, **predict):
        ranking.add(batch.ids, torch.sigmoid(logits))
    return ranking


def segment_map(ranking: SegmentRanking, metric: SegmentMAP) -> dict[str, Any]:
    """MAP of ``ranking`` against ``metric``'s ratings (``metric`` is reset first), with its
    counts and ``num_windows``; a ranking of no class scores MAP 0."""
    metric.reset()
    for class_id, segments in ranking.ranked():
        metric.update(class_id, segments)
    if metric.num_classes == 0:
        result: dict[str, Any] = {"map": 0.0, "num_classes": 0}
    else:
        result = metric.compute()
    result["num_windows"] = ranking.num_windows
    return result


class SegmentEvaluation:
    """The evaluations of `train --task segments`: MAP@``top_n`` of the windows of
    ``files`` against their ratings, as `eval --segments` computes it (each window's top
    ``top_k`` classes among ``classes``). The ratings are read once; rank 0 ranks every
    window while the other processes wait."""

    def __init__(
        self,
        files: Sequence[str],
        schema: Schema,
        *,
        num_classes: int,
        max_frames: int,
        skip_corrupt: bool = False,
        classes: np.ndarray | None = None,
        top_k: int = 20,
        top_n: int = SEGMENT_TOP_N,
    ) -> None:
        self.files, self.num_classes, self.classes = list(files), num_classes, classes
        self.top_k, self.top_n = top_k, top_n
        self.windows = SegmentDataset(
            self.files,
            windows=True,
            schema=schema,
            num_classes=num_classes,
            max_frames=max_frames,
            skip_corrupt=skip_corrupt,
            rank=0,
            world_size=1,
        )
        self.metric = SegmentMAP(top_n=top_n)
        self.num_videos, self.num_rated_videos = read_ratings(
            self.files, schema, self.metric, skip_corrupt=skip_corrupt
        )

    def __call__(
        self,
        model: nn.Module,
        transform: InputTransform,
        ctx: Context,
        *,
        batch_size: int,
        num_workers: int,
        max_batches: int | None = None,
        precision: str = "fp32",
        **loader_args: Any,
    ) -> dict[str, float] | None:
        """Rank 0: ``segment_map`` of the model's ranking as floats (``segment_map`` and the
        counts); the other ranks None."""
        result = None
        if ctx.is_main:
            ranking = SegmentRanking(
                self.num_classes, top_k=self.top_k, max_per_class=self.top_n, classes=self.classes
            )
            loader = self.windows.loader(batch_size, num_workers=num_workers, **loader_args)
            rank_windows(
                model, transform, loader, ctx.device, ranking,
                max_batches=max_batches, precision=precision,
            )  # fmt: skip
            scored = segment_map(ranking, self.metric)
            result = {
                "segment_map": float(scored["map"]),
                "num_classes": float(scored["num_classes"]),
                "num_windows": float(scored["num_windows"]),
                "num_rated_pairs": float(self.metric.num_rated_pairs),
            }
        if ctx.distributed:
            dist.barrier(group=ctx.host_group)
        return result
