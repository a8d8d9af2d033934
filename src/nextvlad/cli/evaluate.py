"""`nextvlad eval`: a checkpoint's GAP@20, mAP, Hit@1, PERR and loss on TFRecords."""

from __future__ import annotations

import argparse
import json
from typing import Any

from nextvlad.cli._common import (
    add_inference_arguments,
    evaluation_loader,
    exported_format,
    load_checkpoint,
)
from nextvlad.errors import UsageError


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


def _eval(args: argparse.Namespace) -> int:
    from nextvlad.training import evaluate

    _refuse_exported(args.checkpoint)
    loaded = load_checkpoint(args)
    loader = evaluation_loader(args, loaded.config, model=f"the checkpoint {loaded.folder}")
    metrics, loss_sum, count = evaluate(
        loaded.model,
        loaded.transform,
        loader,
        loaded.device,
        loaded.config.num_classes,
        branch=args.branch,
    )
    if count == 0:
        raise UsageError(f"no videos in {args.data}")
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
