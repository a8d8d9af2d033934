"""Facts about the YouTube-8M data set, in one place for the data and the model sides.

Depends on nothing, so ``nextvlad.data``, ``nextvlad.metrics`` and ``nextvlad.models`` import it
without importing each other. Public names are re-exported where users meet them
(``nextvlad.data.YT8M_NUM_CLASSES``, ``nextvlad.models.config.YT8M_NUM_CLASSES``).
"""

from __future__ import annotations

YT8M_NUM_CLASSES = 3862  # classes of the 2018 vocabulary
RGB_DIM = 1024  # bytes of a frame's rgb feature (PCA-whitened Inception, quantised)
AUDIO_DIM = 128  # bytes of a frame's audio feature (PCA-whitened VGGish, quantised)
MAX_FRAMES = 300  # frames (one a second) the reference reader cuts and pads every video to

# Features are quantised to 8 bits over [-2, 2]; the reference reader dequantises with
# ``q * DEQUANT_SCALE + DEQUANT_BIAS``.
DEQUANT_SCALE = 4.0 / 255.0  # (max - min) / 255 with max = 2, min = -2
DEQUANT_BIAS = 4.0 / 512.0 - 2.0  # (max - min) / 512 + min

# The 2019 segment task: the Kaggle MAP scores the first 100,000 entries of each class's list
# (MAP@100K; Google's segment_eval_inference.py --top_n), so a submission keeps that many.
SEGMENT_TOP_N = 100_000


def segment_id(video_id: str, start: int) -> str:
    """The id of a segment, ``"<video_id>:<start>"`` with ``start`` its first frame (second):
    the entries of the 2019 submission and the keys of its ratings."""
    return f"{video_id}:{int(start)}"
