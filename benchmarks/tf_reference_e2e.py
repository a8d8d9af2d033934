"""The original's way to train end to end: its tf.data-style reader of frame-level TFRecords
feeding the TensorFlow step of ``tf_reference_throughput.py``, timed over the steps after a
warm-up.

    ~/tfenv/bin/python benchmarks/tf_reference_e2e.py --data 'shards/*.tfrecord' --json

``benchmarks/e2e_train_throughput.py --tf-python ~/tfenv/bin/python`` runs this beside
`nextvlad train` on the same shards; it imports neither torch nor ``nextvlad``.

The reader is Google's starter-code ``YT8MFrameFeatureReader`` (linrongc/youtube-8m keeps it),
its TF1 queues written as tf.data: the shards in a shuffled order (``string_input_producer``),
``--readers`` (the original's ``num_readers``, 8) TFRecord readers interleaved and as many
parsers in parallel, each record parsed as a ``SequenceExample`` (context ``id`` and
``labels``, feature lists ``rgb`` and ``audio`` of bytes), each frame ``decode_raw`` to uint8
and reshaped to [frames, 1024] and [frames, 128], cut or zero-padded to ``--max-frames`` (300;
``resize_axis``), ``num_frames`` the rgb count capped at 300, the labels a dense vector of
the vocabulary; shuffled in a buffer of 5 batches (``shuffle_batch_join``'s capacity), batched
(``--batch-size``, 80) and prefetched. One difference, on purpose: the original dequantises in
the reader, so its queues hold float32 frames; here the reader keeps uint8 and the step's own
``transform`` dequantises, so that the step is exactly ``tf_reference_throughput.py``'s (the
same arithmetic, in the step instead of the reader threads; the buffered batches take a
quarter of the original's memory).

The step is ``tf_reference_throughput.step_functions``'s ``train``, traced by ``tf.function``
(``--xla``: ``jit_compile=True``) once for the batch's fixed shapes. Each step takes the next
batch from the iterator, runs, and reads the loss back; the ``--warmup`` steps (2; the first
traces the step and waits for the shuffle buffer) are not timed, and examples/s is the batch times the ``--steps`` timed steps over the
wall time from the end of the last warm-up step to the end of the last step, which is how
``e2e_train_throughput.py`` times `nextvlad train` from its event file.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import platform
import resource
import statistics
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from tf_reference_throughput import (
    AUDIO_DIM,
    PRESETS,
    RGB_DIM,
    NeXtVLADReference,
    _config,
    configure_threads,
    load_eigenvalues,
    step_functions,
)

FEATURES = (("rgb", RGB_DIM), ("audio", AUDIO_DIM))
SHUFFLE_BATCHES = 5  # shuffle_batch_join(capacity=batch_size * 5) in the original's train.py


def resize_axis(tensor: tf.Tensor, axis: int, new_size: int) -> tf.Tensor:
    """Cut or zero-pad ``tensor`` to ``new_size`` along ``axis`` (the starter code's)."""
    shape = tf.unstack(tf.shape(tensor))
    pad_shape = shape[:]
    pad_shape[axis] = tf.maximum(0, new_size - shape[axis])
    shape[axis] = tf.minimum(shape[axis], new_size)
    resized = tf.concat(
        [
            tf.slice(tensor, tf.zeros_like(tf.stack(shape)), tf.stack(shape)),
            tf.zeros(tf.stack(pad_shape), tensor.dtype),
        ],
        axis,
    )
    static = tensor.shape.as_list()
    static[axis] = new_size
    resized.set_shape(static)
    return resized


def parse_frame_example(
    serialized: tf.Tensor, num_classes: int, max_frames: int
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One SequenceExample -> (frames uint8 [max_frames, 1152], num_frames int32, labels
    float32 [num_classes])."""
    context, lists = tf.io.parse_single_sequence_example(
        serialized,
        context_features={
            "id": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.VarLenFeature(tf.int64),
        },
        sequence_features={
            name: tf.io.FixedLenSequenceFeature([], dtype=tf.string) for name, _ in FEATURES
        },
    )
    matrices = []
    num_frames = None
    for name, dim in FEATURES:
        decoded = tf.reshape(tf.io.decode_raw(lists[name], tf.uint8), [-1, dim])
        if num_frames is None:  # the first feature's count, as the original
            num_frames = tf.minimum(tf.shape(decoded)[0], max_frames)
        matrices.append(resize_axis(decoded, 0, max_frames))
    indices = context["labels"].values
    labels = tf.sparse.to_dense(
        tf.sparse.SparseTensor(
            tf.expand_dims(indices, -1), tf.ones_like(indices, dtype=tf.bool), (num_classes,)
        ),
        default_value=False,
        validate_indices=False,
    )
    return tf.concat(matrices, 1), num_frames, tf.cast(labels, tf.float32)


def frame_reader(
    files: list[str],
    *,
    batch_size: int,
    num_classes: int,
    max_frames: int = 300,
    readers: int = 8,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches (frames, num_frames, labels) of ``files``, over and over (see the module)."""
    shards = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed).repeat()
    cycle = min(readers, len(files))  # the shards read at once
    records = shards.interleave(
        tf.data.TFRecordDataset, cycle_length=cycle, num_parallel_calls=cycle, deterministic=False
    )
    examples = records.map(
        lambda r: parse_frame_example(r, num_classes, max_frames),
        num_parallel_calls=readers,
        deterministic=False,
    )
    batches = examples.shuffle(SHUFFLE_BATCHES * batch_size, seed=seed)
    return batches.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    config = _config(args)
    files = sorted(glob.glob(args.data))
    if not files:
        raise SystemExit(f"--data {args.data}: no file")
    tf.random.set_seed(args.seed)
    model = NeXtVLADReference(config, seed=args.seed)
    eigenvalues, eigen_source = load_eigenvalues(args.eigenvalues)
    train, _ = step_functions(model, eigenvalues, args.batch_size)
    step = tf.function(train, jit_compile=args.xla)
    dataset = frame_reader(
        files,
        batch_size=args.batch_size,
        num_classes=config.vocab,
        max_frames=args.max_frames,
        readers=args.readers,
        seed=args.seed,
    )
    batches = iter(dataset)
    ends = [time.perf_counter()]  # the end of each step, after its loss is read back
    frames = 0
    for i in range(args.warmup + args.steps):  # the first traces the step
        quantized, num_frames, labels = next(batches)
        step(quantized, num_frames, labels).numpy()
        ends.append(time.perf_counter())
        if i >= args.warmup:
            frames += int(num_frames.numpy().sum())
    start = args.warmup
    window = ends[-1] - ends[start]
    times = [b - a for a, b in itertools.pairwise(ends[start:])]
    return {
        "examples_per_s": args.batch_size * args.steps / window,
        "window_s": round(window, 3),
        "median_step_s": round(statistics.median(times), 4),
        "step_times_s": [round(t, 4) for t in times],
        "first_step_s": round(ends[1] - ends[0], 3),  # the trace and the shuffle buffer filling
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "mean_frames": frames / (args.batch_size * args.steps),  # of the timed batches
        "padded_frames": args.max_frames,
        "files": len(files),
        "trainable_params": model.num_trainable(),
        "eigenvalues": eigen_source,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, metavar="GLOB", help="frame-level TFRecords")
    parser.add_argument("--preset", default="nextvlad-8g-128k-2048h", choices=sorted(PRESETS))
    parser.add_argument(
        "--set",
        dest="overrides",
        default="{}",
        help='JSON of Config overrides, e.g. \'{"clusters": 16, "vocab": 25}\'',
    )
    parser.add_argument("--batch-size", type=int, default=80)
    parser.add_argument("--max-frames", type=int, default=300, help="padded length (300)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps, the first included")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument(
        "--readers", type=int, default=8, help="parallel readers and parsers (num_readers, 8)"
    )
    parser.add_argument("--xla", action="store_true", help="tf.function(jit_compile=True)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF default)")
    parser.add_argument(
        "--inter-op-threads", type=int, default=0, help="inter-op threads (0: TF default)"
    )
    parser.add_argument("--eigenvalues", help="eigenvals.npy (default: as tf_reference_throughput)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.batch_size < 2:
        raise SystemExit("--steps and --warmup must be at least 1, --batch-size at least 2")
    configure_threads(args)
    loadavg_before = os.getloadavg()
    result: dict[str, Any] = {
        "preset": args.preset,
        "overrides": json.loads(args.overrides),
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "readers": args.readers,
        "shuffle_buffer": SHUFFLE_BATCHES * args.batch_size,
        "xla": args.xla,
        **measure(args),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "default",
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
        "loadavg_before": [round(x, 2) for x in loadavg_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
