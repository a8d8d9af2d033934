"""Data subcommands: ``synth`` (write the synthetic set) and ``inspect`` (summarise files)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from nextvlad._args import non_negative_int, positive_int
from nextvlad.cli._common import add_cache_argument, add_skip_corrupt_argument, check_out
from nextvlad.errors import UsageError

SEGMENT_RATINGS = 5  # ratings a synthetic video with --segment-rated (about the 2019 set's)


def register(subparsers: argparse._SubParsersAction) -> None:
    synth = subparsers.add_parser(
        "synth",
        help="write a synthetic YouTube-8M-like data set (TFRecords, 2018 format)",
        description=(
            "Writes synthetic videos whose classes show as short runs of concept frames among "
            "drifting background frames: easy for a clustering aggregator, hard for a mean of "
            "frames. Deterministic from --seed; use the same --concept-seed (default) and "
            "different --seed values for train and validation sets."
        ),
    )
    synth.add_argument("--out", required=True, help="output folder (created if needed)")
    synth.add_argument(
        "--videos", type=non_negative_int, default=1000, help="number of videos (1000)"
    )
    synth.add_argument("--shards", type=positive_int, default=4, help="number of files (4)")
    level = synth.add_mutually_exclusive_group()
    level.add_argument(
        "--frame-level",
        dest="frame_level",
        action="store_true",
        default=True,
        help="SequenceExamples with uint8 rgb/audio frames (default)",
    )
    level.add_argument(
        "--video-level",
        dest="frame_level",
        action="store_false",
        help="Examples with mean_rgb/mean_audio float vectors",
    )
    synth.add_argument("--classes", type=positive_int, default=25, help="number of classes (25)")
    synth.add_argument(
        "--frames",
        metavar="N|LOW-HIGH|yt8m",
        help=(
            "frames a video: N each, LOW-HIGH uniform, or yt8m: min(U(120, 500), 300), "
            "YouTube-8M's lengths as a 300-frame reader sees them (default 60-300)"
        ),
    )
    synth.add_argument("--seed", type=int, default=0, help="seed of the videos (0)")
    synth.add_argument(
        "--concept-seed", type=int, default=0, help="seed of the class prototypes (0)"
    )
    synth.add_argument("--prefix", default="synth", help="file name prefix ('synth')")
    synth.add_argument(
        "--segment-rated",
        action="store_true",
        help=(
            "add 2019-style segment ratings (frame-level only): a few rated 5-frame segments a "
            "video, 1.0 where the segment shows the class's concept, 0.0 where it does not"
        ),
    )
    synth.add_argument(
        "--segment-ratings",
        type=positive_int,
        default=SEGMENT_RATINGS,
        help=f"ratings a video with --segment-rated (at most; {SEGMENT_RATINGS})",
    )
    synth.set_defaults(func=_synth)

    inspect = subparsers.add_parser(
        "inspect",
        help="summarise TFRecord files: videos, frames, labels, features, corrupt records",
        description=(
            "Read every record of the files and report what a run would see: frame- or "
            "video-level records and their features, the number of videos (and of distinct "
            "ids), frames per video, label occurrences and the classes seen, segment labels "
            "(rated segments, ratings, positives, classes with segments), "
            "and the corrupt records with their file and offset. Useful before training on "
            "new data; --classes also checks the labels against a model's number of classes."
        ),
    )
    inspect.add_argument("files", nargs="+", metavar="GLOB", help="files or globs (quote globs)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    add_cache_argument(inspect)
    add_skip_corrupt_argument(inspect)
    inspect.add_argument(
        "--classes", type=positive_int, default=None, help="also check that labels are below this"
    )
    inspect.set_defaults(func=_inspect)


def _synth(args: argparse.Namespace) -> int:
    from nextvlad.data.synth import SynthConfig, frame_options, write_synthetic
    from nextvlad.errors import ConfigError

    if args.videos < 1:
        raise UsageError(f"--videos must be at least 1, got {args.videos}")
    try:
        frames = {} if args.frames is None else frame_options(args.frames)
    except ConfigError as err:
        raise UsageError(f"--frames {err}") from None
    check_out(args.out, folder=True)
    if args.segment_rated and not args.frame_level:
        raise UsageError("--segment-rated needs frame-level videos (not --video-level)")
    start = time.perf_counter()
    try:
        config = SynthConfig(num_classes=args.classes, concept_seed=args.concept_seed, **frames)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    paths = write_synthetic(
        args.out,
        videos=args.videos,
        shards=args.shards,
        frame_level=args.frame_level,
        num_classes=args.classes,
        seed=args.seed,
        prefix=args.prefix,
        config=config,
        segment_ratings=args.segment_ratings if args.segment_rated else 0,
    )
    level = "frame-level" if args.frame_level else "video-level"
    if args.segment_rated:
        level = "segment-rated " + level
    print(
        f"wrote {args.videos} {level} videos ({args.classes} classes, seed {args.seed}) to "
        f"{len(paths)} files in {args.out} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from nextvlad.data.errors import NoDataFilesError
    from nextvlad.data.reader import resolve_files
    from nextvlad.data.summary import summarize

    try:
        files = resolve_files(args.files)
    except NoDataFilesError as err:
        raise UsageError(str(err)) from None
    summary = summarize(files, skip_corrupt=args.skip_corrupt, num_classes=args.classes)
    counts = _segment_counts(files, summary, args) if summary.num_videos_with_segments else None
    if args.json:
        report = summary.to_json()
        if counts is not None:
            report.update(counts)
        print(json.dumps(report))
    else:
        print(summary.format())
        if counts is not None:
            print(
                f"rated segments:       {counts['num_rated_segments']} "
                f"({counts['num_segment_ratings']} ratings, "
                f"{counts['num_positive_ratings']} positive; "
                f"{counts['num_positive_segments']} segments with a positive)"
            )
            print(f"classes with segments: {counts['num_segment_classes']}")
    return 0


def _segment_counts(files: list[str], summary: Any, args: argparse.Namespace) -> dict[str, int]:
    """Counts of the segment ratings (a second pass over the files; only for rated data)."""
    from nextvlad.data.reader import read_videos
    from nextvlad.data.segments import count_segments

    videos = read_videos(
        files, summary.schema, num_classes=args.classes, skip_corrupt=args.skip_corrupt
    )
    return count_segments(videos)
