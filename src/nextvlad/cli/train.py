"""`nextvlad train`, `nextvlad eval`, `nextvlad predict`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from nextvlad._args import DEVICE, non_negative_int, positive_int
from nextvlad.cli._common import evaluation_loader
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

    for name in ("eval", "predict"):
        p = subparsers.add_parser(
            name,
            help="evaluate a checkpoint (GAP@20, mAP, Hit@1, PERR)"
            if name == "eval"
            else "write Kaggle-format predictions",
            description=(
                "Evaluate a run's newest checkpoint (or a checkpoint folder) with the official "
                "YouTube-8M metrics. Reference-compatible models get batches padded to 300 "
                "frames, as the original's reader pads them."
                if name == "eval"
                else "Write predictions in the 2018 Kaggle format: VideoId,LabelConfidencePairs with "
                "the top-k 'label score' pairs by descending score."
            ),
        )
        p.add_argument(
            "--checkpoint",
            required=True,
            help="run folder or checkpoint folder"
            + (", or an .onnx file from `nextvlad export`" if name == "predict" else ""),
        )
        p.add_argument("--data", required=True, nargs="+", metavar="GLOB", help="TFRecords")
        p.add_argument("--branch", type=int, help="mixtures: use branch M alone")
        p.add_argument("--batch-size", type=positive_int, default=256, help="videos a batch (256)")
        p.add_argument(
            "--num-workers", type=non_negative_int, default=2, help="data loader processes (2)"
        )
        p.add_argument("--skip-corrupt", action="store_true", help="skip and count corrupt records")
        p.add_argument("--device", type=DEVICE, default="auto", help="auto, cpu, cuda, cuda:N")
        p.add_argument(
            "--quantize",
            choices=("none", "int8"),
            default="none",
            help="int8: the linear layers in int8 (dynamic quantisation, on the CPU): about "
            "twice as fast, GAP within 0.001 of float32 where measured (docs/performance.md)",
        )
        if name == "eval":
            p.add_argument("--json", action="store_true", help="print one JSON object")
            p.set_defaults(func=_eval)
        else:
            p.add_argument("--out", required=True, help="CSV file to write")
            p.add_argument("--top-k", type=positive_int, default=20, help="pairs a video (20)")
            p.add_argument("--vocabulary", help="vocabulary.csv: also write OUT with names")
            p.set_defaults(func=_predict)


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
        except EOFError:  # numpy's answer to an empty file
            raise UsageError(f"--eigenvals: {args.eigenvals} is empty") from None
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


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, Any]:
    from nextvlad.training.distributed import resolve_device
    from nextvlad.training.state import load_for_inference

    model, transform, config, _ = load_for_inference(args.checkpoint)
    device = resolve_device(args.device)
    if args.quantize == "int8":
        from nextvlad.models.quantize import quantize_int8

        if device.type != "cpu":
            raise UsageError("--quantize int8 runs on the CPU: add --device cpu")
        model = quantize_int8(model)
    return model.to(device), transform.to(device), config, _loader(args, config), device


def _loader(args: argparse.Namespace, config: Any) -> Any:
    return evaluation_loader(
        args.data,
        config,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        skip_corrupt=args.skip_corrupt,
        what="the data",
    )


def _eval(args: argparse.Namespace) -> int:
    from nextvlad.training import evaluate

    model, transform, config, loader, device = _load(args)
    metrics, loss_sum, count = evaluate(
        model, transform, loader, device, config.num_classes, branch=args.branch
    )
    if count == 0:
        raise UsageError(f"no videos in {args.data}")
    result: dict[str, Any] = {k: v for k, v in metrics.compute().items()}
    result["loss"] = loss_sum / count
    result["num_videos"] = count
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("gap", "map", "hit_at_one", "perr", "loss"):
            print(f"{key:<11} {result[key]:.6f}")
        print(f"{'videos':<11} {count}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nextvlad.training import iter_predictions, read_vocabulary, write_predictions

    names = read_vocabulary(args.vocabulary) if args.vocabulary else None
    exported = Path(args.checkpoint).suffix.lower() == ".onnx"
    if exported:  # a file from `nextvlad export`: ONNX Runtime, probabilities out
        from nextvlad.export import OnnxPredictor, iter_exported_predictions

        if args.branch is not None:
            raise UsageError(
                "--branch does not apply to an exported model: export the branch with "
                "`nextvlad export --branch M`"
            )
        if args.quantize != "none":
            raise UsageError(
                "--quantize does not apply to an exported model: export it with "
                "`nextvlad export --quantize int8`"
            )
        predictor = OnnxPredictor(args.checkpoint, device=args.device)
        batches = iter_exported_predictions(predictor, _loader(args, predictor.config))
    else:
        model, transform, _, loader, device = _load(args)
        batches = iter_predictions(model, transform, loader, device, branch=args.branch)
    out = Path(args.out)
    named_path = out.with_name(out.stem + ".names.csv") if names is not None else None
    with open(out, "w", encoding="utf-8") as f:
        named = open(named_path, "w", encoding="utf-8") if named_path else None  # noqa: SIM115
        try:
            count = write_predictions(
                f,
                batches,
                top_k=args.top_k,
                names=names,
                named_out=named,
                probabilities=exported,
            )
        finally:
            if named is not None:
                named.close()
    extra = f" and {named_path}" if named_path else ""
    print(f"wrote {count} videos to {out}{extra}", file=sys.stderr)
    return 0
