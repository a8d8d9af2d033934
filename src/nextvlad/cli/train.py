"""`nextvlad train`, `nextvlad eval`, `nextvlad predict`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from nextvlad.errors import UsageError

_PAPER = "the paper's recipe (Sec. 4.2)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


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
    p.add_argument("--epochs", type=_positive_int, help="passes over the training data")
    p.add_argument("--max-steps", type=_positive_int, help="stop after this many steps")
    p.add_argument("--batch-size", type=_positive_int, default=80, help="per process (default 80)")
    p.add_argument("--lr", type=float, default=2e-4, help="initial learning rate (2e-4)")
    p.add_argument("--lr-decay", type=float, default=0.8, help="staircase decay factor (0.8)")
    p.add_argument(
        "--lr-decay-examples",
        type=_positive_int,
        default=2_000_000,
        help="examples between decays (2M; the final submission used 2.5M and 0.9)",
    )
    p.add_argument(
        "--clip-norm", type=float, default=1.0, help="per-tensor gradient norm clip (1.0)"
    )
    p.add_argument("--l2", type=float, default=1e-5, help="L2 penalty on the classifier (1e-5)")
    p.add_argument("--temperature", type=float, help="mixture distillation temperature T")
    p.add_argument("--distill-weight", type=float, help="mixture distillation weight λ")
    p.add_argument(
        "--eval-every", type=int, default=1000, help="steps between evaluations (0: end)"
    )
    p.add_argument(
        "--checkpoint-every", type=_positive_int, default=1000, help="steps between checkpoints"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    p.add_argument("--num-workers", type=int, default=2, help="data loader processes (2)")
    p.add_argument("--skip-corrupt", action="store_true", help="skip and count corrupt records")
    p.add_argument(
        "--bucket-by-length",
        action="store_true",
        help="batch videos of similar length together (less time on padded frames)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of weights and data order")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--folded",
        action="store_true",
        help="NeXtVLAD with the expansion FC folded into the layers after it: the same "
        "function with fewer operations per frame (see docs/performance.md)",
    )
    p.add_argument(
        "--sync-batchnorm", action="store_true", help="with DDP: global batch statistics"
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
        p.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
        p.add_argument("--data", required=True, nargs="+", metavar="GLOB", help="TFRecords")
        p.add_argument("--branch", type=int, help="mixtures: use branch M alone")
        p.add_argument("--batch-size", type=_positive_int, default=256, help="videos a batch (256)")
        p.add_argument("--num-workers", type=int, default=2, help="data loader processes (2)")
        p.add_argument("--skip-corrupt", action="store_true", help="skip and count corrupt records")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
        if name == "eval":
            p.add_argument("--json", action="store_true", help="print one JSON object")
            p.set_defaults(func=_eval)
        else:
            p.add_argument("--out", required=True, help="CSV file to write")
            p.add_argument("--top-k", type=_positive_int, default=20, help="pairs a video (20)")
            p.add_argument("--vocabulary", help="vocabulary.csv: also write OUT with names")
            p.set_defaults(func=_predict)


def _train(args: argparse.Namespace) -> int:
    from nextvlad.training import TrainOptions, train

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.epochs is None and args.max_steps is None:
        raise UsageError("give --epochs or --max-steps")
    options = TrainOptions(
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
        l2_penalty=args.l2,
        temperature=args.temperature,
        distill_weight=args.distill_weight,
        epochs=args.epochs,
        max_steps=args.max_steps,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        num_workers=args.num_workers,
        skip_corrupt=args.skip_corrupt,
        bucket_by_length=args.bucket_by_length,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        folded=args.folded,
        sync_batchnorm=args.sync_batchnorm,
        progress=not args.no_progress,
    )
    summary = train(options)
    if summary.get("eval"):
        print(json.dumps(summary["eval"]))
    return 0


def _load(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, Any]:
    from nextvlad.data import VideoDataset, detect_schema, resolve_files
    from nextvlad.training.distributed import resolve_device
    from nextvlad.training.loop import check_data_fits
    from nextvlad.training.state import load_for_inference

    model, transform, config, _ = load_for_inference(args.checkpoint)
    files = resolve_files(args.data)
    schema = detect_schema(files, skip_corrupt=args.skip_corrupt)
    if schema is None:
        raise UsageError(f"no record in {args.data} shows a known schema")
    check_data_fits(config, schema, "the data")
    device = resolve_device(args.device)
    dataset = VideoDataset(
        files,
        schema=schema,
        num_classes=config.num_classes,
        skip_corrupt=args.skip_corrupt,
        rank=0,
        world_size=1,
    )
    loader = dataset.loader(args.batch_size, num_workers=args.num_workers)
    return model.to(device), transform.to(device), config, loader, device


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
    model, transform, _, loader, device = _load(args)
    out = Path(args.out)
    named_path = out.with_name(out.stem + ".names.csv") if names is not None else None
    with open(out, "w", encoding="utf-8") as f:
        named = open(named_path, "w", encoding="utf-8") if named_path else None  # noqa: SIM115
        try:
            count = write_predictions(
                f,
                iter_predictions(model, transform, loader, device, branch=args.branch),
                top_k=args.top_k,
                names=names,
                named_out=named,
            )
        finally:
            if named is not None:
                named.close()
    extra = f" and {named_path}" if named_path else ""
    print(f"wrote {count} videos to {out}{extra}", file=sys.stderr)
    return 0
