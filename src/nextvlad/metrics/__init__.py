"""Evaluation metrics, streaming, with the definitions of Google's official YouTube-8M code.

* :mod:`~nextvlad.metrics.video` - :class:`YT8MMetrics`: GAP@k, mAP, Hit@1, PERR of the
  video-level task (2017/2018).
* :mod:`~nextvlad.metrics.segments` - :class:`SegmentMAP`: MAP@N of the 2019 segment task, as
  ``segment_eval_inference.py`` (NumPy and the standard library only).
* :mod:`~nextvlad.metrics.submission` - :func:`read_submission`: the Kaggle 2019
  ``Class,Segments`` file, one class line at a time.

This package never imports ``nextvlad.models`` or ``nextvlad.data``.
"""

from __future__ import annotations

from nextvlad.metrics.segments import SegmentMAP, segment_id
from nextvlad.metrics.submission import SubmissionError, SubmissionLine, read_submission
from nextvlad.metrics.video import YT8MMetrics

__all__ = [
    "SegmentMAP",
    "SubmissionError",
    "SubmissionLine",
    "YT8MMetrics",
    "read_submission",
    "segment_id",
]
