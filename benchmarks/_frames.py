"""The frame counts of a benchmark batch, the one definition both throughput scripts use.

``benchmarks/train_throughput.py`` (torch) and ``benchmarks/tf_reference_throughput.py``
(TensorFlow, in its own virtual environment) draw their batch's frame counts here, so that for
the same ``--frames``, batch size and seed both measure videos of the same lengths. numpy and
the standard library only: the TensorFlow script must not import torch or ``nextvlad``.

Distributions (``--frames``):

- ``N``: every video N frames;
- ``LOW-HIGH``: integers uniform in [LOW, HIGH];
- ``yt8m``: ``min(U(120, 500), 300)``, integers: YouTube-8M's video lengths in seconds (120 to
  500 s, one frame a second), cut at the 300 frames its reader keeps. The mean is
  ``(180 * 209.5 + 201 * 300) / 381 = 257.2`` frames.
"""

from __future__ import annotations

import numpy as np

SEED = 1
YT8M_SECONDS = (120, 500)  # the dataset's video lengths, one frame a second
YT8M_MAX_FRAMES = 300  # what the reader keeps
DISTRIBUTIONS = "N, LOW-HIGH (uniform integers) or yt8m (min(U(120, 500), 300))"


def bounds(spec: str) -> tuple[int, int]:
    """The fewest and most frames a video of ``spec`` can have; ValueError if it is none of
    ``N``, ``LOW-HIGH`` (1 <= LOW <= HIGH) and ``yt8m``."""
    if spec == "yt8m":
        return YT8M_SECONDS[0], YT8M_MAX_FRAMES
    low, dash, high = spec.partition("-")
    try:
        lo, hi = int(low), int(high if dash else low)
    except ValueError:
        raise ValueError(f"frames {spec!r}: give {DISTRIBUTIONS}") from None
    if not 1 <= lo <= hi:
        raise ValueError(f"frames {spec!r}: need 1 <= LOW <= HIGH")
    return lo, hi


def num_frames(spec: str, batch_size: int, seed: int = SEED) -> np.ndarray:
    """(batch_size,) int64: the frames of each video of a batch of ``spec``, drawn by numpy's
    default generator (PCG64) from ``seed``."""
    lo, hi = bounds(spec)
    rng = np.random.default_rng(seed)
    if spec == "yt8m":
        seconds = rng.integers(YT8M_SECONDS[0], YT8M_SECONDS[1] + 1, batch_size)
        return np.minimum(seconds, YT8M_MAX_FRAMES).astype(np.int64)
    return rng.integers(lo, hi + 1, batch_size).astype(np.int64)
