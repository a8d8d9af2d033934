"""MAP@N of the 2019 YouTube-8M segment task, as Google's ``segment_eval_inference.py``.

The ground truth is a set of rated (segment, class) pairs: segment ``"<video_id>:<start>"``
was shown to raters for that class, who judged it positive (score > 0; 1.0 in the data) or
negative (0.0). A submission gives, for some classes, a list of segments by descending
confidence. For each class of the submission, as Google's script does:

1. the class's list is cut at ``top_n`` entries (before anything is dropped; ``top_n=None``
   or 0 keeps every entry, as Google's ``--top_n=0``);
2. the entries whose (segment, class) pair was never rated are dropped, leaving L entries;
3. the i-th of those (i = 0 .. L-1) gets the score (L - i) / L, so the order is the
   submission's (the scores are distinct: Google's tie shuffle never matters);
4. its AP is ``sum over the positive entries at rank r (1-based) of (positives up to r) / r``,
   divided by the number of positive rated segments of the class in the *whole* ground
   truth (Google's ``average_precision_calculator.ap_at_n`` with ``n=None`` and
   ``total_num_positives``; a positive listed below the cut, or not at all, counts in the
   denominator only). An empty list after step 2 gives AP 0.

The MAP is the mean of those APs over the classes *of the submission* (Google's
``np.mean(peek_map_at_n())`` over ``len(seg_preds)`` calculators): a class the data rates but
the submission leaves out counts nowhere; a class the submission lists with no rated entry
counts 0.

Where this differs from Google's script (which never ran on these cases):

- a class with no positive rated segment scores AP 0 (Google's script stops with a
  ``KeyError`` on ``positive_counter``); :meth:`SegmentMAP.compute` reports how many there
  were;
- a submission of one class is scored (``MeanAveragePrecisionCalculator`` refuses
  ``num_class <= 1``);
- a class given twice is refused (Google's reader keeps the last line silently).

A segment listed twice for a class is, as in Google's script, counted at both ranks.
A rating given twice for one pair keeps the last one (Google's dictionary does the same).

Memory: the ratings only, one dictionary a class (``segment id -> positive``), with each
segment id string stored once; a class line is scored as it comes and only its AP is kept.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from nextvlad._yt8m import SEGMENT_TOP_N, segment_id

__all__ = ["SegmentMAP", "segment_id"]

_UNRATED = -1


class SegmentMAP:
    """Streaming MAP@N of the 2019 segment task (Google's ``segment_eval_inference.py``).

    Feed every rating first (:meth:`add_rating` or :meth:`add_video`), then one class of the
    submission at a time (:meth:`update`), then :meth:`compute`.

    Args:
        top_n: entries of a class's list that are scored (100,000 on Kaggle); None or 0
            scores them all.

    Example::

        metric = SegmentMAP(top_n=100_000)
        metric.add_rating("vid1:5", 3, 1.0)
        metric.add_rating("vid2:0", 3, 0.0)
        metric.update(3, ["vid2:0", "vid1:5", "vid9:0"])  # vid9:0 was never rated: dropped
        metric.compute()["map"]  # 0.5: the positive is 2nd of 2
    """

    def __init__(self, top_n: int | None = SEGMENT_TOP_N) -> None:
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int)):
            raise ValueError(f"top_n must be a non-negative integer or None, got {top_n!r}")
        if top_n is not None and top_n < 0:
            raise ValueError(f"top_n must be a non-negative integer or None, got {top_n!r}")
        self.top_n = top_n or None
        self._ratings: dict[int, dict[str, int]] = {}  # class -> segment id -> 1 / 0
        self._positives: dict[int, int] = {}  # class -> positive rated segments
        self._segment_ids: dict[str, str] = {}  # each id string once, shared by its classes
        self._num_pairs = 0
        self._aps: dict[int, float] = {}  # class of the submission -> its AP
        self._num_entries = 0  # entries scored (after the top-n cut)
        self._num_rated_entries = 0  # of those, entries with a rated pair

    # --- the ground truth ---------------------------------------------------------------

    def add_rating(self, segment: str, class_id: int, score: float) -> None:
        """One rated pair: ``segment`` (``"vid:start"``) rated for ``class_id``, positive when
        ``score > 0`` (Google's test). A second rating of the pair replaces the first."""
        if self._aps:
            raise ValueError("ratings must all be added before the first update()")
        if isinstance(class_id, bool) or not isinstance(class_id, int | np.integer):
            raise ValueError(f"class_id must be an integer, got {class_id!r}")
        if math.isnan(score):
            raise ValueError(f"score of {segment} for class {class_id} is NaN")
        cls = int(class_id)
        segment = self._segment_ids.setdefault(segment, segment)
        rated = self._ratings.setdefault(cls, {})
        positive = 1 if score > 0 else 0
        old = rated.get(segment)
        if old is None:
            self._num_pairs += 1
        rated[segment] = positive
        self._positives[cls] = self._positives.get(cls, 0) + positive - (old or 0)

    def add_video(
        self,
        video_id: str,
        start_times: Iterable[int],
        labels: Iterable[int],
        scores: Iterable[float],
    ) -> None:
        """The rated segments of one video (the arrays of ``Video.segments``, shape (S,))."""
        for start, label, score in zip(start_times, labels, scores, strict=True):
            self.add_rating(segment_id(video_id, int(start)), int(label), float(score))

    @property
    def num_rated_pairs(self) -> int:
        """Rated (segment, class) pairs ("Total rated segments" in Google's log)."""
        return self._num_pairs

    @property
    def num_rated_segments(self) -> int:
        """Distinct segment ids among the rated pairs."""
        return len(self._segment_ids)

    @property
    def num_positive_pairs(self) -> int:
        """Rated pairs judged positive: the sum of every class's AP denominator."""
        return sum(self._positives.values())

    def num_positives(self, class_id: int) -> int:
        """Positive rated segments of ``class_id`` (its AP denominator)."""
        return self._positives.get(int(class_id), 0)

    # --- the submission -----------------------------------------------------------------

    def update(self, class_id: int, segments: Sequence[str]) -> float:
        """Score one class of the submission: ``segments`` by descending confidence.
        Returns the class's AP.

        Raises:
            ValueError: ``class_id`` already scored.
        """
        cls = int(class_id)
        if cls in self._aps:
            raise ValueError(f"class {cls} is scored twice")
        if self.top_n is not None and len(segments) > self.top_n:
            segments = segments[: self.top_n]
        rated = self._ratings.get(cls, {})
        values = np.fromiter(
            map(rated.get, segments, itertools.repeat(_UNRATED)), np.int8, count=len(segments)
        )  # (n,) 1 positive, 0 negative, -1 unrated
        positive = values[values != _UNRATED] == 1  # (L,) in submission order
        ap = _average_precision(positive, self._positives.get(cls, 0))
        self._aps[cls] = ap
        self._num_entries += len(segments)
        self._num_rated_entries += int(positive.size)
        return ap

    def reset(self) -> None:
        """Forget the submission scored so far and keep the ratings: the metric scores the
        next one (evaluations during training read the ratings once)."""
        self._aps = {}
        self._num_entries = self._num_rated_entries = 0

    @property
    def num_classes(self) -> int:
        """Classes of the submission scored so far."""
        return len(self._aps)

    def average_precisions(self) -> dict[int, float]:
        """The AP of every class scored so far."""
        return dict(self._aps)

    def compute(self) -> dict[str, Any]:
        """The MAP over the classes scored so far, with counts.

        Returns:
            ``map`` (float), ``num_classes`` (classes of the submission),
            ``num_classes_without_positives`` (of those, classes with no positive rating: AP 0),
            ``num_rated_classes`` (classes with a positive rating in the ground truth),
            ``num_rated_segments``, ``num_rated_pairs``, ``num_positive_segments`` (positive
            rated pairs), ``num_entries`` (entries scored, after the cut),
            ``num_rated_entries`` (of those, the ones with a rated pair), ``top_n`` (None: no
            cut).

        Raises:
            ValueError: when no class has been scored.
        """
        if not self._aps:
            raise ValueError("no class scored: call update() before compute()")
        return {
            "map": float(np.mean(list(self._aps.values()))),
            "num_classes": len(self._aps),
            "num_classes_without_positives": sum(
                1 for cls in self._aps if self._positives.get(cls, 0) == 0
            ),
            "num_rated_classes": sum(1 for count in self._positives.values() if count > 0),
            "num_rated_segments": self.num_rated_segments,
            "num_rated_pairs": self._num_pairs,
            "num_positive_segments": self.num_positive_pairs,
            "num_entries": self._num_entries,
            "num_rated_entries": self._num_rated_entries,
            "top_n": self.top_n,
        }


def _average_precision(positive: np.ndarray, num_positives: int) -> float:
    """AP of a ranked list of (L,) positive flags with ``num_positives`` as denominator
    (0 when it is 0 or the list is empty, as Google's ``ap_at_n``)."""
    if num_positives == 0 or positive.size == 0:
        return 0.0
    ranks = np.flatnonzero(positive) + 1  # (P,) 1-based ranks of the positives
    hits = np.arange(1, ranks.size + 1)  # (P,) positives up to and including each
    return float(np.sum(hits / ranks) / num_positives)
