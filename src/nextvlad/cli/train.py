"""`nextvlad train`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from nextvlad.cli._common import check_out
from nextvlad.errors import UsageError

_PAPER = "the paper's recipe (Sec. 4.2)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model preset on TFRecords",
        description=(
            f"Train a preset with {_PAPER}: Adam (lr 2e-4), lr x0.8 every 2M examples, batch 80 "
            "per process, each gradient clipped to norm 1.0, L2 1e-5 on the classifier. "
            "Mixtures train with on-the-fly distillation (Eq. (16)). Multi-GPU / multi-machine: "
            "torchrun --nproc_per_node N -m nextvlad train ... (DDP; gloo on CPU). "
            "Reference-compatible models (--set reference_compat=true, what `nextvlad import-tf` "
            "writes) are trained on batches padded to the original's 300 frames, whose "
            "batch-norm statistics and mixture gate count the padding."
        ),
    )
    from nextvlad.training.options import add_arguments

    add_arguments(p)
    p.set_defaults(func=_train)


def train_options(args: argparse.Namespace) -> Any:
    """The ``TrainOptions`` of a parsed `nextvlad train` command line, checked before anything
    is read or written: the preset with its --set options, --eigenvals, the option values.

    Raises:
        UsageError: any of them is wrong (exit code 2).
    """
    from nextvlad.errors import ConfigError
    from nextvlad.models import get_config, load_eigenvalues
    from nextvlad.training.options import from_args

    if args.epochs is None and args.max_steps is None:
        raise UsageError("give --epochs or --max-steps")
    check_out(args.out, folder=True)
    try:
        config = get_config(args.preset, **dict(args.model_overrides))
    except ConfigError as err:
        raise UsageError(f"--preset/--set: {err}") from None
    except (TypeError, ValueError) as err:  # e.g. --set dropout=abc
        raise UsageError(f"--set: a value of the wrong type ({err})") from None
    if args.eigenvals not in (None, "none") and config.input_level == "frame":
        try:
            load_eigenvalues(args.eigenvals, config.stream_dims[0])
        except ConfigError as err:
            raise UsageError(f"--eigenvals: {err}") from None
    try:
        return from_args(args)
    except ConfigError as err:
        raise UsageError(str(err)) from None


def _train(args: argparse.Namespace) -> int:
    from nextvlad.training import train

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    summary = train(train_options(args))
    if summary.get("eval"):
        print(json.dumps(summary["eval"]))
    # Stopped by SIGINT or SIGTERM (after a checkpoint): the shell's code, 128 + the signal.
    return 128 + summary["signal"] if summary.get("signal") else 0
