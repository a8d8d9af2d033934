"""YouTube-8M features of one's own videos, as Google's extractor computes them.

Frames by Google's rule (:mod:`~nextvlad.extract.frames`), Inception-v3 ``pool_3``
(:mod:`~nextvlad.extract.inception`), PCA and 8-bit quantization
(:mod:`~nextvlad.extract.pca`), VGGish audio (:mod:`~nextvlad.extract.audio`), the whole way
in :class:`Extractor` (:mod:`~nextvlad.extract.pipeline`) and the records in
:mod:`~nextvlad.extract.writer`. This package uses :mod:`nextvlad.data` and never the models.
"""

from nextvlad.extract.frames import Frame, VideoError, iter_folder_frames, iter_video_frames
from nextvlad.extract.pipeline import ZERO_AUDIO_BYTE, ExtractedVideo, Extractor

__all__ = [
    "ZERO_AUDIO_BYTE",
    "ExtractedVideo",
    "Extractor",
    "Frame",
    "VideoError",
    "iter_folder_frames",
    "iter_video_frames",
]
