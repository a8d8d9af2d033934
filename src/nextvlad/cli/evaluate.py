"""`nextvlad eval`: a checkpoint's GAP@20, mAP, Hit@1, PERR and loss on TFRecords; with
``--segments``, its MAP@N on the 2019 segment task (as `predict --segments` then
`score-segments`)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from nextvlad._args import non_negative_int
from nextvlad._yt8m import SEGMENT_TOP_N
from nextvlad.cli._common import (
    TOP_K,
    add_inference_arguments,
    add_segment_arguments,
    add_top_k_argument,
    evaluation_loader,
    exported_format,
    load_checkpoint,
    rank_segments,
    refuse_segment_options,
)
from nextvlad.errors import ConfigError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint (GAP@20, mAP, Hit@1, PERR)",
        description=(
            "Evaluate a run's newest checkpoint (or a checkpoint folder) with the official "
            "YouTube-8M metrics. Reference-compatible models get batches padded to 300 "
            "frames, as the original's reader pads them."
        ),
    )
    add_inference_arguments(
        p,
        checkpoint_help="run folder (its newest checkpoint), RUN/checkpoints/latest, a "
        "checkpoint folder (RUN/checkpoints/step-N) or its model.safetensors",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_segment_arguments(p)
    p.add_argument(
        "--top-n",
        type=non_negative_int,
        help=f"with --segments: entries of a class scored ({SEGMENT_TOP_N}, as on Kaggle); 0 all",
    )
    add_top_k_argument(p, help="with --segments: classes a window contributes", default=None)
    p.set_defaults(func=_eval)


def _refuse_exported(path: str) -> None:
    kind = exported_format(path)
    if kind is None:
        return
    raise UsageError(
        f"--checkpoint {path}: an exported {kind} model (`nextvlad export`), which eval does "
        "not take; give the run or checkpoint folder it was exported from. For an exported "
        "model, `nextvlad export --eval-data GLOB` reports its GAP next to PyTorch's, and "
        "`nextvlad predict --checkpoint MODEL.onnx` writes its predictions"
    )


def _eval_segments(args: argparse.Namespace) -> int:
    """`eval --segments`: the windows' rankings scored against the ratings of the same
    records, as `score-segments` scores the submission `predict --segments` writes."""
    from nextvlad.cli.segments import print_segment_result, read_ratings
    from nextvlad.metrics import SegmentMAP
    from nextvlad.training.segments import segment_map

    started = time.perf_counter()
    top_n = SEGMENT_TOP_N if args.top_n is None else args.top_n
    args.top_k = TOP_K if args.top_k is None else args.top_k
    loaded = load_checkpoint(args)
    metric = SegmentMAP(top_n=top_n)
    num_videos, num_rated = read_ratings(args.data, metric, skip_corrupt=args.skip_corrupt)
    if metric.num_rated_pairs == 0:  # the data's content, as in score-segments: exit 1
        raise ConfigError(
            f"--segments: no rated segment in the {num_videos} videos of {' '.join(args.data)}; "
            "eval --segments needs segment-rated records (segment_start_times, segment_labels, "
            "segment_scores)"
        )
    # Entries past top-n are never scored: keeping top-n a class ranks as predict's
    # --max-per-class 100000 followed by score-segments --top-n N (N <= 100000).
    ranking = rank_segments(args, loaded, max_per_class=top_n or 2**62)
    result: dict[str, Any] = segment_map(ranking, metric)
    if result["num_classes"] == 0:
        raise UsageError("--segments: no window got a class")
    result["num_videos"] = num_videos
    result["num_rated_videos"] = num_rated
    result["seconds"] = round(time.perf_counter() - started, 3)
    print_segment_result(result, top_n, as_json=args.json, what="of the ranking", windows=True)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from nextvlad.training import evaluate

    _refuse_exported(args.checkpoint)
    if args.segments:
        return _eval_segments(args)
    refuse_segment_options(args, "top_n", "top_k")
    loaded = load_checkpoint(args)
    loader = evaluation_loader(args, loaded.config, model=f"the checkpoint {loaded.folder}")
    metrics, loss_sum, count = evaluate(
        loaded.model,
        loaded.transform,
        loader,
        loaded.device,
        loaded.config.num_classes,
        branch=args.branch,
        progress="eval",
    )
    if count == 0:  # e.g. every record skipped as corrupt: the data's content, exit 1
        raise ConfigError(f"no videos in {' '.join(args.data)}")
    result: dict[str, Any] = {k: v for k, v in metrics.compute().items()}
    result["loss"] = loss_sum / count
    result["num_videos"] = int(count)
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("gap", "map", "hit_at_one", "perr", "loss"):
            print(f"{key:<11} {result[key]:.6f}")
        print(f"{'videos':<11} {count}")
    return 0
