"""`nextvlad score-segments`: MAP@N of a 2019 segment submission against segment-rated records,
as Google's ``segment_eval_inference.py`` computes it (docs/segments.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from nextvlad._args import non_negative_int
from nextvlad._yt8m import SEGMENT_TOP_N
from nextvlad.cli._common import add_cache_argument, add_skip_corrupt_argument
from nextvlad.errors import ConfigError, UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score-segments",
        help="score a 2019 segment submission (Class,Segments) with MAP@100K",
        description=(
            "Score a Kaggle 2019 segment submission against segment-rated TFRecords exactly "
            "as Google's segment_eval_inference.py: each class's list is cut at --top-n, "
            "entries whose (segment, class) pair was never rated are dropped, the AP of each "
            "class has the number of its positive rated segments as denominator, and the MAP "
            "is the mean over the classes of the submission. The submission is read one class "
            "line at a time; only the ratings are held in memory."
        ),
    )
    p.add_argument("--submission", required=True, metavar="FILE.csv", help="the submission")
    p.add_argument(
        "--data", required=True, nargs="+", metavar="GLOB", help="segment-rated TFRecords"
    )
    p.add_argument(
        "--top-n",
        type=non_negative_int,
        default=SEGMENT_TOP_N,
        help=f"entries of a class scored ({SEGMENT_TOP_N}, as on Kaggle); 0 scores them all",
    )
    add_skip_corrupt_argument(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_cache_argument(p)
    p.set_defaults(func=_score_segments)


def read_ratings(
    patterns: list[str], metric: Any, *, skip_corrupt: bool = False
) -> tuple[int, int]:
    """Add the segment ratings of the records of ``patterns`` to ``metric`` (a SegmentMAP).
    Returns (videos read, videos with rated segments)."""
    from nextvlad.data.summary import files_schema
    from nextvlad.training.segments import read_ratings as read_file_ratings

    files, schema = files_schema(patterns, skip_corrupt=skip_corrupt)
    return read_file_ratings(files, schema, metric, skip_corrupt=skip_corrupt)


def _score_segments(args: argparse.Namespace) -> int:
    from nextvlad.metrics import SegmentMAP, SubmissionError, read_submission

    started = time.perf_counter()
    metric = SegmentMAP(top_n=args.top_n)
    num_videos, num_rated = read_ratings(args.data, metric, skip_corrupt=args.skip_corrupt)
    if metric.num_rated_pairs == 0:
        raise ConfigError(
            f"no rated segment in the {num_videos} videos of {' '.join(args.data)}: "
            "score-segments needs segment-rated records (segment_start_times, "
            "segment_labels, segment_scores), such as YouTube-8M's 3/frame/validate"
        )
    try:
        for line in read_submission(args.submission):
            metric.update(line.class_id, line.segments)
    except SubmissionError as err:
        raise UsageError(f"--submission {err}") from None
    except FileNotFoundError:
        raise UsageError(f"--submission {args.submission}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--submission {args.submission} is a folder; give a file") from None
    except OSError as err:  # unreadable: the option's file, as --vocabulary's
        raise UsageError(f"--submission {args.submission}: {err.strerror or err}") from None
    if metric.num_classes == 0:
        raise UsageError(f"--submission {args.submission}: no class line")
    result: dict[str, Any] = metric.compute()
    result["num_videos"] = num_videos
    result["num_rated_videos"] = num_rated
    result["seconds"] = round(time.perf_counter() - started, 3)
    print_segment_result(result, args.top_n, as_json=args.json, what="of the submission")
    return 0


def print_segment_result(
    result: dict[str, Any], top_n: int, *, as_json: bool, what: str, windows: bool = False
) -> None:
    """The MAP and its counts (``windows``: also the windows ranked), or one JSON object."""
    if as_json:
        print(json.dumps(result))
        return
    top = f"@{top_n}" if top_n else ""
    print(f"MAP{top:<9} {result['map']:.6f}")
    print(f"{'classes':<12} {result['num_classes']}")
    print(f"{'rated pairs':<12} {result['num_rated_pairs']}")
    print(f"{'positives':<12} {result['num_positive_segments']}")
    if windows:
        print(f"{'windows':<12} {result['num_windows']}")
    without = result["num_classes_without_positives"]
    if without:
        classes, have = ("class", "has") if without == 1 else ("classes", "have")
        print(
            f"nextvlad: note: {without} {classes} {what} {have} no positive rated segment (AP 0; "
            "Google's script stops on them)",
            file=sys.stderr,
        )
