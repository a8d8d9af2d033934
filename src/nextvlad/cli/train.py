"""`nextvlad train`, `nextvlad eval`, `nextvlad predict`."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from nextvlad.cli._common import evaluation_loader, positive_int
from nextvlad.errors import UsageError

_PAPER = "the paper's recipe (Sec. 4.2)"


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _seed(text: str) -> int:
    value = _non_negative_int(text)
    if value >= 2**63:
        raise argparse.ArgumentTypeError(f"{text} is not below 2**63")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _decay_factor(text: str) -> float:
    value = _finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def _device(text: str) -> str:
    """auto, cpu, cuda or cuda:N, checked against the devices this machine has."""
    import torch

    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: this machine has no CUDA device")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: this machine has {count} CUDA devices")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"{text!r}: expected auto, cpu, cuda or cuda:N")
    return text


def _override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. num_classes=25")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.replace("-", "_"), value


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model preset on TFRecords",
        description=(
            f"Train a preset with {_PAPER}: Adam (lr 2e-4), lr x0.8 every 2M examples, batch 80 "
            "per process, each gradient clipped to norm 1.0, L2 1e-5 on the classifier. "
            "Mixtures train with on-the-fly distillation (Eq. (16)). Multi-GPU / multi-machine: "
            "torchrun --nproc_per_node N -m nextvlad train ... (DDP; gloo on CPU)."
        ),
    )
    p.add_argument("--preset", required=True, help="model preset (nextvlad list-models)")
    p.add_argument(
        "--train-data", required=True, nargs="+", metavar="GLOB", help="training TFRecords"
    )
    p.add_argument(
        "--eval-data", nargs="+", default=[], metavar="GLOB", help="evaluation TFRecords"
    )
    p.add_argument("--out", required=True, help="run folder (options, checkpoints, TensorBoard)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        type=_override,
        default=[],
        metavar="KEY=VALUE",
        help="override a preset option, e.g. --set num_classes=25",
    )
    p.add_argument(
        "--eigenvals",
        help="PCA eigenvalues .npy for reverse whitening of rgb frames (Google's "
        "yt8m_pca/eigenvals.npy); 'none' to train without it and without a warning",
    )
    p.add_argument("--epochs", type=positive_int, help="passes over the training data")
    p.add_argument("--max-steps", type=positive_int, help="stop after this many steps")
    p.add_argument("--batch-size", type=positive_int, default=80, help="per process (default 80)")
    p.add_argument("--lr", type=_positive_float, default=2e-4, help="initial learning rate (2e-4)")
    p.add_argument(
        "--lr-decay", type=_decay_factor, default=0.8, help="staircase decay factor (0.8)"
    )
    p.add_argument(
        "--lr-decay-examples",
        type=positive_int,
        default=2_000_000,
        help="examples between decays (2M; the final submission used 2.5M and 0.9)",
    )
    p.add_argument(
        "--clip-norm",
        type=_non_negative_float,
        default=1.0,
        help="per-tensor gradient norm clip (1.0)",
    )
    p.add_argument(
        "--l2", type=_non_negative_float, default=1e-5, help="L2 penalty on the classifier (1e-5)"
    )
    p.add_argument("--temperature", type=_positive_float, help="mixture distillation temperature T")
    p.add_argument(
        "--distill-weight", type=_non_negative_float, help="mixture distillation weight λ"
    )
    p.add_argument(
        "--eval-every",
        type=_non_negative_int,
        default=1000,
        help="steps between evaluations (0: end)",
    )
    p.add_argument(
        "--checkpoint-every", type=positive_int, default=1000, help="steps between checkpoints"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    p.add_argument(
        "--num-workers", type=_non_negative_int, default=2, help="data loader processes (2)"
    )
    p.add_argument(
        "--shuffle-buffer",
        type=positive_int,
        default=256,
        help="videos each data shard holds for shuffling (256; a frame-level video is ~200 KB)",
    )
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help="skip corrupt records, count them and report the count at the end and in "
        "TensorBoard (data/skipped_records), instead of stopping at the first",
    )
    p.add_argument(
        "--skip-nonfinite",
        action="store_true",
        help="skip a batch whose loss or gradient is not finite (no update), count it and "
        "report the count (train/nonfinite_batches), instead of stopping",
    )
    p.add_argument(
        "--bucket-by-length",
        action="store_true",
        help="batch videos of similar length together (less time on padded frames)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="seed of weights and data order")
    p.add_argument(
        "--device", type=_device, default="auto", help="auto (GPU when present), cpu, cuda, cuda:N"
    )
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (turns off the skipping of padded frames, whose "
        "shapes depend on the data)",
    )
    p.add_argument(
        "--folded",
        action="store_true",
        help="NeXtVLAD with the expansion FC folded into the layers after it: the same "
        "function with fewer operations per frame (see docs/performance.md)",
    )
    p.add_argument(
        "--sync-batchnorm", action="store_true", help="with DDP: global batch statistics"
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic algorithms only (torch.use_deterministic_algorithms): a resumed "
        "run then ends with the weights of an uninterrupted one",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    for name in ("eval", "predict"):
        p = subparsers.add_parser(
            name,
            help="evaluate a checkpoint (GAP@20, mAP, Hit@1, PERR)"
            if name == "eval"
            else "write Kaggle-format predictions",
            description=(
                "Evaluate a run's newest checkpoint (or a checkpoint folder) with the official "
                "YouTube-8M metrics."
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
            "--num-workers", type=_non_negative_int, default=2, help="data loader processes (2)"
        )
        p.add_argument("--skip-corrupt", action="store_true", help="skip and count corrupt records")
        p.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda, cuda:N")
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
    from nextvlad.training import TrainOptions

    if args.epochs is None and args.max_steps is None:
        raise UsageError("give --epochs or --max-steps")
    try:
        config = get_config(args.preset, **dict(args.overrides))
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
        return TrainOptions(
            preset=args.preset,
            train_data=list(args.train_data),
            eval_data=list(args.eval_data),
            out=args.out,
            model_overrides=dict(args.overrides),
            eigenvals=args.eigenvals,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            lr_decay=args.lr_decay,
            lr_decay_examples=args.lr_decay_examples,
            clip_norm=args.clip_norm,
            skip_nonfinite=args.skip_nonfinite,
            l2_penalty=args.l2,
            temperature=args.temperature,
            distill_weight=args.distill_weight,
            epochs=args.epochs,
            max_steps=args.max_steps,
            eval_every=args.eval_every,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            num_workers=args.num_workers,
            shuffle_buffer=args.shuffle_buffer,
            skip_corrupt=args.skip_corrupt,
            bucket_by_length=args.bucket_by_length,
            seed=args.seed,
            device=args.device,
            precision=args.precision,
            compile=args.compile,
            folded=args.folded,
            sync_batchnorm=args.sync_batchnorm,
            deterministic=args.deterministic,
            progress=not args.no_progress,
        )
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
