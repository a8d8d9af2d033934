"""YouTube-8M evaluation metrics, streaming: GAP@k, mAP, Hit@1 and PERR.

The definitions are those of Google's official YouTube-8M starter code
(``eval_util.EvaluationMetrics`` with ``average_precision_calculator`` and
``mean_average_precision_calculator``, empty classes filtered), re-implemented
with vectorised NumPy instead of the official per-video Python loops (what
``update()`` adds to an evaluation batch is measured in docs/performance.md).

Definitions (N videos, C classes, ``k = min(top_k, C)``):

- **GAP** (Eq. (17) of the NeXtVLAD paper, the Kaggle metric): keep each video's
  ``k`` highest predictions (the set ``numpy.argpartition(row, -k)[-k:]``, as
  the official code), pool the N*k (score, is_positive) pairs of all videos, sort
  them by descending score and compute ``sum_i p(i) * Δr(i)`` (the paper's r(i)
  is the recall gained at rank i): the sum, over the positives of the ranked
  list, of the precision at their rank, divided by the number of ground-truth
  positives of *all* videos (positives that fell out of a video's top k count
  in the denominator but never in the sum).
  GAP = 0 when there is no positive label at all.
- **mAP**: the same average precision computed per class over the (score,
  is_positive) pairs that entered the top k of some video for that class, with
  the class's ground-truth positive count over all videos as denominator,
  averaged over the classes that have at least one positive label (classes
  without positives are left out, as ``filter_empty_classes=True`` does; a class
  with positives none of which reach a top k counts as 0). The official code
  feeds its per-class calculators the top-k triplets too, not the full matrix,
  so this is exact without ever holding all N x C scores.
  NaN when no class has a positive label (the mean of an empty list).
- **Hit@1**: the fraction of videos whose top prediction (``argmax``, first
  index on ties) is a positive label.
- **PERR**: for a video with n positive labels, the fraction of its n highest
  predictions (``numpy.argpartition(row, -n)[-n:]``, as official) that are
  positive *and* scored above 0; averaged over all videos. A video with no
  positive label contributes 0 and still counts in the denominator (the
  official code divides an empty sum by C).

Accumulation. The official code averages Hit@1 and PERR per batch and weights
each batch mean by its batch size, which is the per-video mean over all videos:
this class keeps per-video sums, so any split into batches gives the same value
as one big batch (up to float64 rounding). GAP and mAP only depend on the pooled
top-k pairs and positive counts, which are also independent of batching.

Ties. The official calculators order equal scores by the position they happen
to take in a ``heapq`` list, shuffled with ``random.seed(0)``: an artefact of
insertion order that no streaming implementation can reproduce cheaply. Here a
run of equal scores in a ranked list contributes its *expected* average
precision over all orders of that run (closed form, no sampling), which is what
the official shuffle estimates "to avoid overestimating the AP". When no run of
equal scores mixes positives and negatives (the usual case with float32 scores)
the result is the official value; otherwise it lies within the range of values
the official shuffle can produce. Sums are in float64 (the official code sums
in float32 when, as in its pipeline, labels are float32; the shared fixture
shows it), so values agree with official ones to about 1e-7. Which items enter a
top k or top n at a tie is decided by ``numpy.argpartition`` exactly as in the
official code.

Streaming memory. ``update()`` never keeps a (videos, classes) matrix: per video
it stores k scores (the input's float dtype, float32 for float16/bfloat16), k
class indices (int16 when C <= 32,767) and k positive flags, i.e. 7*k = 140
bytes a video for k = 20 and float32 (140 MB for 1M videos), plus one int64
count per class. ``compute()`` sorts the N*k pooled pairs; its peak memory,
state included, is about 40 bytes a pair (measured: 0.8 GB for 1M videos at
k = 20, against 15 GB for the dense float32 matrix).

Labels must be multi-hot: every entry 0 or 1 (bool or any numeric dtype).
Predictions must be floating point; the official code never checks a range, and
neither does this, but PERR only counts positives scored above 0, so pass
probabilities (after the sigmoid), not logits.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["YT8MMetrics"]

ArrayOrTensor = np.ndarray | torch.Tensor


class YT8MMetrics:
    """Streaming YouTube-8M metrics (GAP@k, mAP, Hit@1, PERR) with the official definitions.

    Args:
        num_classes: C, the number of classes (3,862 for YouTube-8M 2018).
        top_k: predictions kept per video for GAP and mAP (20 for the Kaggle GAP@20).

    Example::

        metrics = YT8MMetrics(num_classes=3862)
        for predictions, labels in batches:  # (B, C) probabilities, (B, C) multi-hot
            metrics.update(predictions, labels)
        result = metrics.compute()  # {"gap": ..., "map": ..., "hit_at_one": ..., ...}
    """

    def __init__(self, num_classes: int, top_k: int = 20) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        self.num_classes = num_classes
        self.top_k = top_k
        self._k = min(top_k, num_classes)  # as the official code: top_k > C keeps every class
        self._index_dtype = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated video."""
        self._num_videos = 0
        self._hits = 0  # videos whose argmax is a positive label
        self._perr_sum = 0.0  # sum over videos of their precision at equal recall rate
        self._class_positives = np.zeros(self.num_classes, dtype=np.int64)  # (C,)
        self._top_scores: list[np.ndarray] = []  # each (B, k) float
        self._top_classes: list[np.ndarray] = []  # each (B, k) int16/int32
        self._top_positive: list[np.ndarray] = []  # each (B, k) bool

    @property
    def num_videos(self) -> int:
        """Number of videos accumulated since the last ``reset()``."""
        return self._num_videos

    def update(self, predictions: ArrayOrTensor, labels: ArrayOrTensor) -> None:
        """Accumulate one batch.

        Args:
            predictions: (B, C) floating-point scores, probabilities in [0, 1]; a NumPy
                array or a tensor on any device.
            labels: (B, C) multi-hot ground truth, 0 or 1 in any numeric or bool dtype.

        Raises:
            ValueError: on a shape that is not (B, num_classes), mismatched shapes, a
                non-float prediction dtype, NaN predictions, or labels other than 0/1.
        """
        scores = _to_scores(predictions)  # (B, C)
        truth = _to_numpy(labels, "labels")  # (B, C), any dtype; positive where != 0
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise ValueError(
                f"predictions must have shape (batch, {self.num_classes}), got {scores.shape}"
            )
        if truth.shape != scores.shape:
            raise ValueError(
                f"labels shape {truth.shape} does not match predictions shape {scores.shape}"
            )
        batch, num_classes = scores.shape
        if batch == 0:
            return
        pos_row, pos_col = np.divmod(_positive_flat_indices(truth), num_classes)  # (P,), (P,)
        num_positive = np.bincount(pos_row, minlength=batch)  # (B,)
        rows = np.arange(batch)  # (B,)

        # Hit@1: is the first argmax a positive label?
        self._hits += int(np.count_nonzero(truth[rows, scores.argmax(axis=1)]))

        # GAP / mAP: keep each video's top-k (score, class, positive) triplets, the same
        # set as the official numpy.argpartition(row, -k)[-k:].
        k = self._k
        top = _top_k_indices(scores, k)  # (B, k)
        top_scores = np.take_along_axis(scores, top, axis=1)  # (B, k)
        self._top_scores.append(top_scores)
        self._top_classes.append(top.astype(self._index_dtype))
        self._top_positive.append(np.take_along_axis(truth, top, axis=1) != 0)  # (B, k)
        self._class_positives += np.bincount(pos_col, minlength=num_classes)
        self._num_videos += batch

        self._perr_sum += _perr_sum(scores, truth, top_scores, num_positive, pos_row, pos_col)

    def merge(self, other: YT8MMetrics) -> None:
        """Add the videos accumulated by ``other`` (e.g. gathered from another process)."""
        if (other.num_classes, other.top_k) != (self.num_classes, self.top_k):
            raise ValueError(
                f"cannot merge metrics for (num_classes, top_k)=({other.num_classes}, "
                f"{other.top_k}) into ({self.num_classes}, {self.top_k})"
            )
        self._num_videos += other._num_videos
        self._hits += other._hits
        self._perr_sum += other._perr_sum
        self._class_positives += other._class_positives
        self._top_scores.extend(other._top_scores)
        self._top_classes.extend(other._top_classes)
        self._top_positive.extend(other._top_positive)

    def _pooled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pooled top-k pairs as flat arrays (consolidated in place, not duplicated)."""
        if len(self._top_scores) != 1 or self._top_scores[0].ndim != 1:
            for store in (self._top_scores, self._top_classes, self._top_positive):
                flat = np.concatenate([part.reshape(-1) for part in store])  # (N*k,)
                store[:] = [flat]
        return self._top_scores[0], self._top_classes[0], self._top_positive[0]

    def compute(self) -> dict[str, float | int]:
        """The metrics over every video accumulated so far.

        Returns:
            ``{"gap", "map", "hit_at_one", "perr"}`` as Python floats and
            ``"num_videos"`` as an int.

        Raises:
            ValueError: when no video has been accumulated (as the official code).
        """
        if self._num_videos == 0:
            raise ValueError("no videos accumulated: call update() before compute()")
        scores, classes, positive = self._pooled()  # (N*k,) each

        # Rank all pairs by descending score; a stable sort by class of that ranking then
        # ranks every class's pairs by descending score. The order inside a run of equal
        # scores does not matter: runs are handled in closed form.
        ranking = np.argsort(scores)[::-1]  # (N*k,)
        total_positives = int(self._class_positives.sum())
        if total_positives > 0:
            gap_sum = _ranked_precision_sums(scores[ranking], positive[ranking], None, 1)[0]
            gap = float(gap_sum / total_positives)  # Eq. (17)
        else:
            gap = 0.0

        ranked_classes = classes[ranking]  # (N*k,)
        by_class_order = np.argsort(ranked_classes, kind="stable")  # (N*k,)
        by_class = ranking[by_class_order]  # (N*k,)
        del ranking
        class_sums = _ranked_precision_sums(
            scores[by_class], positive[by_class], ranked_classes[by_class_order], self.num_classes
        )  # (C,)
        del by_class, by_class_order, ranked_classes
        has_positive = self._class_positives > 0  # (C,)
        if has_positive.any():
            aps = class_sums[has_positive] / self._class_positives[has_positive]
            mean_ap = float(aps.mean())
        else:
            mean_ap = float("nan")

        return {
            "gap": gap,
            "map": mean_ap,
            "hit_at_one": float(self._hits / self._num_videos),
            "perr": float(self._perr_sum / self._num_videos),
            "num_videos": self._num_videos,
        }


def _ranked_precision_sums(
    scores: np.ndarray,
    positive: np.ndarray,
    segments: np.ndarray | None,
    num_segments: int,
) -> npt.NDArray[np.float64]:
    """Sum of the precision at each positive's rank, per segment, ties in expectation.

    Args:
        scores: (n,) sorted by segment, then by descending score.
        positive: (n,) bool, aligned with ``scores``.
        segments: (n,) non-decreasing segment ids in [0, num_segments), or None for one
            segment.
        num_segments: the number of segments S.

    Returns:
        (S,) float64: for each segment, ``sum over its positives of (positives ranked up to
        and including it) / (its rank)``, ranks counted from 1 within the segment. A run of
        m equal scores holding q positives, after r0 pairs and P0 positives of its segment,
        contributes the mean over all orders of the run,
        ``(q/m) * sum_{i<m} (P0 + 1 + i*(q-1)/(m-1)) / (r0 + i + 1)``: the position
        r0 + i + 1 holds a positive with probability q/m, and then i*(q-1)/(m-1) of the
        run's other positives on average rank before it. For a run that is all positive
        or all negative this is the ordinary sum. Only runs holding a positive are
        expanded, so the work beyond one pass is proportional to those runs' sizes.
    """
    n = scores.shape[0]
    sums = np.zeros(num_segments, dtype=np.float64)  # (S,)
    positive_at = np.flatnonzero(positive)  # (P,) ascending
    if positive_at.size == 0:
        return sums
    new_run = np.empty(n, dtype=bool)  # (n,) a run of equal (segment, score) starts here
    new_run[0] = True
    np.not_equal(scores[1:], scores[:-1], out=new_run[1:])
    if segments is not None:
        new_run[1:] |= segments[1:] != segments[:-1]
    run_starts = np.flatnonzero(new_run)  # (R,)
    del new_run

    # The runs that hold a positive, with their start, size and positive count.
    run_of_positive = np.searchsorted(run_starts, positive_at, side="right") - 1  # (P,)
    run = np.unique(run_of_positive)  # (R+,)
    start = run_starts[run]  # (R+,)
    stop = np.where(
        run + 1 < run_starts.size, run_starts[np.minimum(run + 1, run_starts.size - 1)], n
    )
    del run_starts, run_of_positive
    size = stop - start  # (R+,) m
    q = np.searchsorted(positive_at, stop) - np.searchsorted(positive_at, start)  # (R+,)
    if segments is None:
        run_segment = np.zeros(run.size, dtype=np.intp)  # (R+,)
        segment_start = np.zeros(run.size, dtype=np.intp)  # (R+,)
    else:
        run_segment = segments[start].astype(np.intp)  # (R+,)
        segment_start = np.searchsorted(segments, run_segment, side="left")  # (R+,)
    above = np.searchsorted(positive_at, start) - np.searchsorted(positive_at, segment_start)
    first_rank = start - segment_start + 1  # (R+,) 1-based rank of the run's first pair

    # Expand those runs to one entry per pair: offset i in [0, m) of each run.
    run_index = np.repeat(np.arange(run.size), size)  # (E,)
    offset = np.arange(run_index.size) - np.repeat(np.cumsum(size) - size, size)  # (E,)
    m = size[run_index].astype(np.float64)  # (E,)
    qe = q[run_index].astype(np.float64)  # (E,)
    ratio = np.divide(qe - 1.0, m - 1.0, out=np.zeros_like(m), where=m > 1)  # (E,)
    term = (qe / m) * (above[run_index] + 1.0 + offset * ratio) / (first_rank[run_index] + offset)
    sums += np.bincount(run_segment[run_index], weights=term, minlength=num_segments)
    return sums


def _top_k_indices(scores: np.ndarray, k: int) -> npt.NDArray[np.intp]:
    """Column indices of each row's k largest scores: the official argpartition set.

    The set ``numpy.argpartition(row, -k)[-k:]`` is every class scored at least the
    k-th largest score whenever exactly k classes are; that case is found with a
    value-only ``numpy.partition`` (faster than ``argpartition``). Rows with a tie
    across the k-th place run the official ``argpartition``, which decides the tie.

    Args:
        scores: (B, C) predictions.
        k: 1 <= k <= C.

    Returns:
        (B, k) column indices, in no particular order within a row.
    """
    batch, num_classes = scores.shape
    if k == num_classes:
        return np.broadcast_to(np.arange(num_classes), (batch, num_classes))  # (B, C)
    kth = np.partition(scores, num_classes - k, axis=1)[:, num_classes - k]  # (B,)
    flat = np.flatnonzero(scores >= kth[:, None])  # (>= B*k,) row-major
    row = flat // num_classes  # (>= B*k,)
    exact = np.bincount(row, minlength=batch) == k  # (B,) no tie across the k-th place
    if exact.all():
        return (flat - row * num_classes).reshape(batch, k)  # (B, k)
    top = np.empty((batch, k), dtype=np.intp)  # (B, k)
    keep = exact[row]
    top[exact] = (flat[keep] - row[keep] * num_classes).reshape(-1, k)
    tied = np.flatnonzero(~exact)
    top[tied] = np.argpartition(scores[tied], num_classes - k, axis=1)[:, num_classes - k :]
    return top


def _perr_sum(
    scores: np.ndarray,
    truth: np.ndarray,
    top_scores: np.ndarray,
    num_positive: np.ndarray,
    pos_row: np.ndarray,
    pos_col: np.ndarray,
) -> float:
    """Sum over a batch's videos of their precision at equal recall rate.

    The official top-n of a video with n positives is ``numpy.argpartition(row, -n)[-n:]``.
    When the n-th largest score is strictly above the (n+1)-th, that set is every class
    scored at least the n-th largest, whatever the tie rule: this is read off the sorted
    top-k scores and the (few) positive entries. Other rows (a tie across the boundary,
    or n >= k) run the official ``argpartition``, grouped by n.

    Args:
        scores: (B, C) predictions.
        truth: (B, C) multi-hot labels, positive where != 0.
        top_scores: (B, k) the k largest scores of each row, in any order.
        num_positive: (B,) positives per row.
        pos_row: (P,) row of each positive entry.
        pos_col: (P,) class of each positive entry.

    Returns:
        The sum of the per-video PERR (a video without positives adds 0).
    """
    batch, num_classes = scores.shape
    k = top_scores.shape[1]
    ranked = np.sort(top_scores, axis=1)[:, ::-1]  # (B, k) descending
    total = 0.0

    candidate = np.flatnonzero((num_positive > 0) & (num_positive < k))  # (b,)
    n = num_positive[candidate]  # (b,)
    threshold = ranked[candidate, n - 1]  # (b,) the n-th largest score
    unique = threshold > ranked[candidate, n]  # (b,) no tie across the boundary
    fast, n, threshold = candidate[unique], n[unique], threshold[unique]
    if fast.size:
        row_threshold = np.full(batch, np.inf, dtype=np.float64)  # (B,)
        row_threshold[fast] = threshold
        pos_scores = scores[pos_row, pos_col]  # (P,)
        counted = (pos_scores >= row_threshold[pos_row]) & (pos_scores > 0)  # (P,)
        hits = np.bincount(pos_row[counted], minlength=batch)  # (B,)
        total += float(np.sum(hits[fast] / n))

    slow = np.ones(batch, dtype=bool)  # (B,)
    slow[fast] = False
    slow &= num_positive > 0
    for m in np.unique(num_positive[slow]):
        group = np.flatnonzero(slow & (num_positive == m))  # (g,)
        group_scores = scores[group]  # (g, C)
        top_n = np.argpartition(group_scores, num_classes - m, axis=1)[:, num_classes - m :]
        hit = (truth[group[:, None], top_n] != 0) & (
            np.take_along_axis(group_scores, top_n, axis=1) > 0
        )  # (g, m)
        total += np.count_nonzero(hit) / int(m)
    return total


def _to_numpy(value: ArrayOrTensor, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        return tensor.cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")


def _to_scores(predictions: ArrayOrTensor) -> np.ndarray:
    scores = _to_numpy(predictions, "predictions")
    if not np.issubdtype(scores.dtype, np.floating):
        raise ValueError(f"predictions must be floating point, got dtype {scores.dtype}")
    if scores.dtype == np.float16:
        scores = scores.astype(np.float32)
    if scores.size and np.isnan(scores.max()):
        raise ValueError("predictions contain NaN")
    return scores


def _positive_flat_indices(labels: np.ndarray) -> npt.NDArray[np.intp]:
    """Flat indices of the positive entries of (B, C) multi-hot labels, checking they are 0/1."""
    if labels.dtype == np.bool_:
        return np.flatnonzero(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"labels must be bool or numeric, got dtype {labels.dtype}")
    flat = np.flatnonzero(labels != 0)  # (P,); NaN != 0, so NaN is caught below
    if not np.all(labels.reshape(-1)[flat] == 1):
        raise ValueError("labels must be multi-hot: every entry 0 or 1")
    return flat
