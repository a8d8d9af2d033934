"""`nextvlad demo`: synthetic data, a small NeXtVLAD against the mean-pool baseline."""

from __future__ import annotations

import argparse
import logging
import sys

from nextvlad.cli._common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train and compare NeXtVLAD and mean pooling on the synthetic set (a few minutes)",
        description=(
            "Generate the synthetic frame-level set, train a small NeXtVLAD and the mean-pool "
            "baseline with the same budget, evaluate both (GAP@20, mAP, Hit@1), write "
            "Kaggle-format predictions and print a table. Runs on the CPU, in minutes on free "
            "cores and several times that when other jobs share them (measured times: "
            "docs/training.md)."
        ),
    )
    p.add_argument(
        "--out",
        default="nextvlad-demo",
        help="working folder, kept afterwards (nextvlad-demo; about 0.5 GB at the default sizes, "
        "most of it the synthetic set, which a rerun reuses)",
    )
    p.add_argument("--videos", type=positive_int, default=2000, help="training videos (2000)")
    p.add_argument("--eval-videos", type=positive_int, default=500, help="evaluation videos (500)")
    p.add_argument("--classes", type=positive_int, default=25, help="classes (25)")
    p.add_argument("--steps", type=positive_int, default=150, help="training steps a model (150)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="batch size (64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the models")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from nextvlad.demo import DemoOptions, run_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    options = DemoOptions(
        out=args.out,
        videos=args.videos,
        eval_videos=args.eval_videos,
        classes=args.classes,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    run_demo(options)
    return 0
