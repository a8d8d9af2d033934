"""Reading YouTube-8M-style TFRecords without TensorFlow, and a synthetic benchmark set.

Layout:

* :mod:`~nextvlad.data.tfrecord` - TFRecord framing with CRC32C checks (read and write).
* :mod:`~nextvlad.data.example` - generic ``tf.train.Example`` / ``SequenceExample`` codec.
* :mod:`~nextvlad.data.schema` - YouTube-8M schemas, :class:`Video`, ``decode_video``.
* :mod:`~nextvlad.data.reader` - file globs, sharded reading, corrupt-record skipping.
* :mod:`~nextvlad.data.remote` - ``gs://``, ``s3://``, ``https://`` shards through fsspec:
  streamed in blocks read ahead, retried; :mod:`~nextvlad.data.remote_cache` their cache.
* :mod:`~nextvlad.data.dataset` / :mod:`~nextvlad.data.batch` - the torch ``IterableDataset``
  and batches (uint8 frames padded to the longest video).
* :mod:`~nextvlad.data.segments` - rated segments and inference windows of the 2019 segment
  task, their dataset and collator, the class whitelist.
* :mod:`~nextvlad.data.synth` - the synthetic data set; :mod:`~nextvlad.data.summary` -
  ``nextvlad inspect``.

This package never imports ``nextvlad.nn`` or ``nextvlad.models``.
"""

from __future__ import annotations

from nextvlad.data.batch import Batch, VideoCollator
from nextvlad.data.dataset import VideoDataset, distributed_rank
from nextvlad.data.errors import (
    ClassRangeError,
    CorruptRecordError,
    DataError,
    NoDataFilesError,
    RecordError,
    SchemaError,
)
from nextvlad.data.example import (
    encode_example,
    encode_sequence_example,
    parse_example,
    parse_sequence_example,
)
from nextvlad.data.reader import ReadStats, read_videos, resolve_files
from nextvlad.data.schema import (
    FRAME_LEVEL,
    SEGMENT_SIZE,
    VIDEO_LEVEL,
    YT8M_NUM_CLASSES,
    FeatureSpec,
    Schema,
    Segments,
    Video,
    decode_video,
    encode_video,
    infer_schema,
)
from nextvlad.data.segments import (
    SegmentCollator,
    SegmentDataset,
    count_segments,
    load_segment_classes,
    rated_segments,
    segment_id,
    segment_windows,
)
from nextvlad.data.summary import Summary, detect_schema, summarize
from nextvlad.data.synth import SynthConfig, dequantize, quantize, synthetic_videos, write_synthetic
from nextvlad.data.tfrecord import TFRecordWriter, iter_records, masked_crc32c, write_records

__all__ = [
    "FRAME_LEVEL",
    "SEGMENT_SIZE",
    "VIDEO_LEVEL",
    "YT8M_NUM_CLASSES",
    "Batch",
    "ClassRangeError",
    "CorruptRecordError",
    "DataError",
    "FeatureSpec",
    "NoDataFilesError",
    "ReadStats",
    "RecordError",
    "Schema",
    "SchemaError",
    "SegmentCollator",
    "SegmentDataset",
    "Segments",
    "Summary",
    "SynthConfig",
    "TFRecordWriter",
    "Video",
    "VideoCollator",
    "VideoDataset",
    "count_segments",
    "decode_video",
    "dequantize",
    "detect_schema",
    "distributed_rank",
    "encode_example",
    "encode_sequence_example",
    "encode_video",
    "infer_schema",
    "iter_records",
    "load_segment_classes",
    "masked_crc32c",
    "parse_example",
    "parse_sequence_example",
    "quantize",
    "rated_segments",
    "read_videos",
    "resolve_files",
    "segment_id",
    "segment_windows",
    "summarize",
    "synthetic_videos",
    "write_records",
    "write_synthetic",
]
