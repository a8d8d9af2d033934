"""`nextvlad predict`: Kaggle-format predictions of a checkpoint or an ONNX export."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nextvlad._yt8m import SEGMENT_TOP_N
from nextvlad.cli._common import (
    TOP_K,
    add_inference_arguments,
    add_segment_arguments,
    add_top_k_argument,
    check_out,
    evaluation_loader,
    exported_format,
    load_checkpoint,
    positive_int,
    rank_segments,
    refuse_segment_options,
)
from nextvlad.errors import UsageError

_ONNX = "an .onnx file from `nextvlad export --format onnx`"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="write Kaggle-format predictions",
        description="Write predictions in the 2018 Kaggle format: VideoId,LabelConfidencePairs "
        "with the top-k 'label score' pairs by descending score; with --segments, the 2019 "
        "format: Class,Segments with the best 'vid:start' windows of each class.",
    )
    add_inference_arguments(
        p,
        checkpoint_help="run folder (its newest checkpoint), RUN/checkpoints/latest, a "
        f"checkpoint folder (RUN/checkpoints/step-N) or its model.safetensors, or {_ONNX}",
    )
    p.add_argument("--out", required=True, help="CSV file to write (missing folders are made)")
    add_top_k_argument(p, help="pairs a video, or classes a window", default=TOP_K)
    p.add_argument(
        "--vocabulary",
        help="vocabulary.csv: also write the top-k with class names (VideoId,Label,Name,Score) "
        "to OUT with .names.csv for its suffix (sub.csv -> sub.names.csv)",
    )
    add_segment_arguments(p)
    p.add_argument(
        "--max-per-class",
        type=positive_int,
        help=f"with --segments: windows a class keeps, by descending score ({SEGMENT_TOP_N})",
    )
    p.set_defaults(func=_predict)


def _onnx_batches(args: argparse.Namespace) -> tuple[Iterable[Any], Any]:
    """(batch, probabilities) of an exported .onnx file, and its model configuration."""
    from nextvlad.export import OnnxPredictor, iter_exported_predictions
    from nextvlad.training.progress import track_videos

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
    loader = evaluation_loader(
        args, predictor.config, model=f"the exported model {args.checkpoint}"
    )
    batches = iter_exported_predictions(predictor, track_videos(loader, "predict"))
    return batches, predictor.config


def _checkpoint_batches(args: argparse.Namespace) -> tuple[Iterable[Any], Any]:
    """(batch, logits) of a checkpoint, and its model configuration."""
    from nextvlad.training import iter_predictions

    if exported_format(args.checkpoint) == "TorchScript":
        raise UsageError(
            f"--checkpoint {args.checkpoint}: a TorchScript export (or another PyTorch "
            "archive), which predict does not run: loading one runs the code in it. Give the "
            "checkpoint it was exported from, or "
            f"{_ONNX}. In Python, nextvlad.export.load_exported(PATH) runs a TorchScript "
            "export you trust"
        )
    loaded = load_checkpoint(args, also=_ONNX)
    loader = evaluation_loader(args, loaded.config, model=f"the checkpoint {loaded.folder}")
    batches = iter_predictions(
        loaded.model, loaded.transform, loader, loaded.device, branch=args.branch,
        progress="predict",
    )  # fmt: skip
    return batches, loaded.config


def _warn_unnamed(names: dict[int, str], num_classes: int, path: str) -> None:
    """A vocabulary without some of the model's classes: say how many get no name."""
    missing = [c for c in range(num_classes) if c not in names]
    if not missing:
        return
    shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
    print(
        f"nextvlad predict: warning: --vocabulary {path} has no name for {len(missing)} of "
        f"the model's {num_classes} classes ({shown}); their Name is left empty",
        file=sys.stderr,
    )


@contextlib.contextmanager
def _open_atomic(path: Path | None) -> Iterator[Any]:
    """A text file that replaces ``path`` whole when the block ends without an error."""
    if path is None:
        yield None
        return
    from nextvlad.checkpoint import atomic_write

    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yield f


def _predict_segments(args: argparse.Namespace, out: Path) -> int:
    """`predict --segments`: the Kaggle 2019 submission of the windows of ``--data``."""
    from nextvlad.training.segments import write_segment_submission

    if args.vocabulary:
        raise UsageError("--vocabulary does not apply with --segments")
    kind = exported_format(args.checkpoint)
    if kind is not None:
        raise UsageError(
            f"--checkpoint {args.checkpoint}: an exported {kind} model; --segments takes the "
            "run or checkpoint folder it was exported from"
        )
    loaded = load_checkpoint(args)
    max_per_class = SEGMENT_TOP_N if args.max_per_class is None else args.max_per_class
    ranking = rank_segments(args, loaded, max_per_class=max_per_class)
    with _open_atomic(out) as f:
        count = write_segment_submission(f, ranking.ranked())
    print(f"wrote {count} classes of {ranking.num_windows} windows to {out}", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nextvlad.training import read_vocabulary, write_predictions

    out = Path(args.out)
    check_out(out)
    if args.segments:
        return _predict_segments(args, out)
    refuse_segment_options(args, "max_per_class")
    names = read_vocabulary(args.vocabulary) if args.vocabulary else None
    exported = exported_format(args.checkpoint) == "ONNX"
    batches, config = _onnx_batches(args) if exported else _checkpoint_batches(args)
    if names is not None:
        _warn_unnamed(names, config.num_classes, args.vocabulary)
    named_path = out.with_name(out.stem + ".names.csv") if names is not None else None
    with _open_atomic(out) as f, _open_atomic(named_path) as named:
        count = write_predictions(
            f,
            batches,
            top_k=args.top_k,
            names=names,
            named_out=named,
            probabilities=exported,
        )
    extra = f" and {named_path}" if named_path else ""
    print(f"wrote {count} videos to {out}{extra}", file=sys.stderr)
    return 0
