"""Segment predictions of the 2019 task: each window's top-k classes, the best windows of
each class, and the Kaggle 2019 submission (``Class,Segments``).

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
from collections.abc import Iterator, Sequence
from typing import TextIO

import numpy as np
import torch
from torch import Tensor

from nextvlad.metrics.submission import HEADER

__all__ = ["SegmentRanking", "write_segment_submission"]

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
        max_per_class: int = 100_000,
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
