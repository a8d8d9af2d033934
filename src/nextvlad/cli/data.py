"""Data subcommands: ``synth`` (write the synthetic set) and ``inspect`` (summarise files)."""

from __future__ import annotations

import argparse
import json
import time

from nextvlad.errors import UsageError


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
    synth.add_argument("--videos", type=int, default=1000, help="number of videos (1000)")
    synth.add_argument("--shards", type=int, default=4, help="number of files (4)")
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
    synth.add_argument("--classes", type=int, default=25, help="number of classes (25)")
    synth.add_argument("--seed", type=int, default=0, help="seed of the videos (0)")
    synth.add_argument(
        "--concept-seed", type=int, default=0, help="seed of the class prototypes (0)"
    )
    synth.add_argument("--prefix", default="synth", help="file name prefix ('synth')")
    synth.set_defaults(func=_synth)

    inspect = subparsers.add_parser(
        "inspect",
        help="summarise TFRecord files: videos, frames, labels, features, corrupt records",
        description=(
            "Read every record of the files and report what a run would see: frame- or "
            "video-level records and their features, the number of videos (and of distinct "
            "ids), frames per video, label occurrences and the classes seen, segment labels, "
            "and the corrupt records with their file and offset. Useful before training on "
            "new data; --classes also checks the labels against a model's number of classes."
        ),
    )
    inspect.add_argument("files", nargs="+", metavar="GLOB", help="files or globs (quote globs)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="skip and count corrupt records instead of stopping at the first",
    )
    inspect.add_argument(
        "--classes", type=int, default=None, help="also check that labels are below this"
    )
    inspect.set_defaults(func=_inspect)


def _synth(args: argparse.Namespace) -> int:
    from nextvlad.data.synth import SynthConfig, write_synthetic
    from nextvlad.errors import ConfigError

    if args.videos < 0:
        raise UsageError(f"--videos must be non-negative, got {args.videos}")
    if args.shards < 1:
        raise UsageError(f"--shards must be at least 1, got {args.shards}")
    if args.classes < 1:
        raise UsageError(f"--classes must be at least 1, got {args.classes}")
    start = time.perf_counter()
    try:
        config = SynthConfig(num_classes=args.classes, concept_seed=args.concept_seed)
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
    )
    level = "frame-level" if args.frame_level else "video-level"
    print(
        f"wrote {args.videos} {level} videos ({args.classes} classes, seed {args.seed}) to "
        f"{len(paths)} files in {args.out} in {time.perf_counter() - start:.1f} s"
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from nextvlad.data.errors import NoDataFilesError
    from nextvlad.data.reader import resolve_files
    from nextvlad.data.summary import summarize

    if args.classes is not None and args.classes < 1:
        raise UsageError(f"--classes must be at least 1, got {args.classes}")
    try:
        files = resolve_files(args.files)
    except NoDataFilesError as err:
        raise UsageError(str(err)) from None
    summary = summarize(files, skip_corrupt=args.skip_corrupt, num_classes=args.classes)
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        print(summary.format())
    return 0
