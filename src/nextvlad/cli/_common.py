"""What several subcommands share: argument types, the arguments and loading of the commands
that run a checkpoint (`eval`, `predict`), the evaluation-data loader, and their `--segments`
mode (the arguments, the whitelist, the ranking of the windows)."""

from __future__ import annotations

import argparse
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from nextvlad._args import CACHE_DIR_HELP, DEVICE, non_negative_int, positive_int
from nextvlad.errors import UsageError

__all__ = [
    "TOP_K",
    "Loaded",
    "add_branch_argument",
    "add_cache_argument",
    "add_inference_arguments",
    "add_loader_arguments",
    "add_segment_arguments",
    "add_skip_corrupt_argument",
    "add_top_k_argument",
    "check_out",
    "evaluation_loader",
    "exported_format",
    "load_checkpoint",
    "positive_int",
    "rank_segments",
    "refuse_segment_options",
]

# Suffixes of TorchScript archives (`nextvlad export --format torchscript --out model.pt`).
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")
_NOT_ZIP = (".safetensors", ".json", ".onnx")  # the files that are never TorchScript
# Classes a video keeps in the 2018 submission ('label score' pairs), and a window in the 2019
# segment task: the Kaggle evaluations' 20 (GAP@20).
TOP_K = 20


def add_inference_arguments(p: argparse.ArgumentParser, *, checkpoint_help: str) -> None:
    """The arguments of `eval` and `predict`: the checkpoint, the data, how to run them."""
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--data", required=True, nargs="+", metavar="GLOB", help="TFRecords")
    add_branch_argument(p, verb="use")
    add_loader_arguments(p)
    add_cache_argument(p)
    p.add_argument("--device", type=DEVICE, default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8: the linear layers in int8 (dynamic quantisation, on the CPU): faster, at "
        "about float32's GAP (the measured speed and GAP: docs/performance.md)",
    )


def add_branch_argument(p: argparse.ArgumentParser, *, verb: str) -> None:
    """``--branch M`` of the commands that run or export a model: one branch of a mixture."""
    p.add_argument(
        "--branch",
        type=non_negative_int,
        metavar="M",
        help=f"mixtures: {verb} branch M alone (default: the whole mixture)",
    )


def add_loader_arguments(p: argparse.ArgumentParser, *, scope: str = "") -> None:
    """``--batch-size``, ``--num-workers`` and ``--skip-corrupt`` of the commands that run a
    model over records (`eval`, `predict`, `export --eval-data`); ``scope`` starts their help
    ("--eval-data: ")."""
    p.add_argument(
        "--batch-size", type=positive_int, default=256, help=f"{scope}videos a batch (256)"
    )
    p.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=2,
        help=f"{scope}data loader processes (2; 0 reads in this process)",
    )
    add_skip_corrupt_argument(p, scope=scope)


def add_skip_corrupt_argument(p: argparse.ArgumentParser, *, scope: str = "") -> None:
    """``--skip-corrupt``, of every command that reads records."""
    p.add_argument(
        "--skip-corrupt",
        action="store_true",
        help=f"{scope}skip and count corrupt records instead of stopping at the first",
    )


def add_top_k_argument(p: argparse.ArgumentParser, *, help: str, default: int | None) -> None:
    """``--top-k`` of `predict` and `eval --segments`: classes a video or a window keeps
    (``TOP_K``); ``default`` None where the option applies with --segments only."""
    p.add_argument("--top-k", type=positive_int, default=default, help=f"{help} ({TOP_K})")


def check_out(path: str | Path, *, folder: bool = False, flag: str = "--out") -> None:
    """A path to write (``folder``: a folder to make or fill) must not be a file where a folder
    is wanted or the other way round, nor lie below a file: a usage error, before any work."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file; give a folder")
    if not folder and path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name")
    for parent in path.parents:  # the nearest that exists must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {path}: {parent} is a file, not a folder")
            return


def add_cache_argument(p: argparse.ArgumentParser) -> None:
    """``--cache-dir``: where remote shards are cached (`nextvlad.cli.main` applies it)."""
    p.add_argument("--cache-dir", metavar="DIR", help=CACHE_DIR_HELP)


def exported_format(path: str | Path) -> str | None:
    """The format of a file that `nextvlad export` may have written, "ONNX" or "TorchScript"
    (by its suffix, or a zip archive as TorchScript's); None for anything else, folders
    included."""
    path = Path(path)
    if path.is_dir():
        return None
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "ONNX"
    if suffix in _TORCHSCRIPT_SUFFIXES:
        return "TorchScript"
    if path.is_file() and suffix not in _NOT_ZIP and zipfile.is_zipfile(path):
        return "TorchScript"
    return None


class Loaded(NamedTuple):
    """A checkpoint ready to run: ``load_checkpoint``'s answer."""

    model: Any  # on ``device``, in eval mode
    transform: Any  # its input transform (InputTransform), on ``device``
    config: Any  # its ModelConfig
    folder: Path  # the model folder it came from
    device: Any  # torch.device


def load_checkpoint(args: argparse.Namespace, *, also: str = "") -> Loaded:
    """The model of ``--checkpoint`` on ``--device``, in int8 with ``--quantize int8``.
    ``also``: what else the command takes, for the messages (``resolve_model_dir``)."""
    from nextvlad.checkpoint import load_for_inference, resolve_model_dir
    from nextvlad.training.distributed import resolve_device

    folder = resolve_model_dir(args.checkpoint, also=also)
    model, transform, config, _ = load_for_inference(folder)
    device = resolve_device(args.device)
    if args.quantize == "int8":
        from nextvlad.models.quantize import quantize_int8

        if device.type != "cpu":
            raise UsageError("--quantize int8 runs on the CPU: add --device cpu")
        model = quantize_int8(model)
    return Loaded(model.to(device), transform.to(device), config, folder, device)


def evaluation_loader(
    args: argparse.Namespace,
    config: Any,
    *,
    model: str,
    patterns: Sequence[str] | None = None,
    what: str = "the data",
    segments: bool = False,
) -> Any:
    """A loader over the files of ``patterns`` (default ``args.data``; one pass, in order) for
    a model of ``config``, with the command's ``--batch-size``, ``--num-workers`` and
    ``--skip-corrupt``; ``what`` names the data in errors ("the data", "--eval-data"),
    ``model`` the file the model comes from ("the checkpoint RUN/checkpoints/step-00000010").
    ``segments``: the 5-frame windows of every video (``--stride``), frame-level data only."""
    from nextvlad.checkpoint import check_data_fits
    from nextvlad.data import SegmentDataset, VideoDataset
    from nextvlad.data.summary import files_schema

    patterns = args.data if patterns is None else patterns
    data = " ".join(patterns)
    files, schema = files_schema(
        patterns,
        skip_corrupt=args.skip_corrupt,
        what=what,
        frame_level_for="--segments" if segments else None,
    )
    check_data_fits(config, schema, f"{what} ({data})", model=model)
    common = {
        "schema": schema,
        "num_classes": config.num_classes,
        "skip_corrupt": args.skip_corrupt,
        "rank": 0,
        "world_size": 1,
    }
    dataset = (
        SegmentDataset(files, windows=True, stride=args.stride, **common)
        if segments
        else VideoDataset(files, **common)
    )
    return dataset.loader(args.batch_size, num_workers=args.num_workers)


def add_segment_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `predict --segments` and `eval --segments` (the 2019 segment task)."""
    p.add_argument(
        "--segments",
        action="store_true",
        help="the 2019 segment task: predict every 5-frame window of the (frame-level) "
        "videos and rank the windows of each class (docs/segments.md)",
    )
    p.add_argument(
        "--segment-classes",
        metavar="FILE",
        help="with --segments: the class whitelist (the Index column of Google's "
        "segment_label_ids.csv); a window's top-k classes are taken among these",
    )
    p.add_argument(
        "--stride",
        type=positive_int,
        help="with --segments: frames from one window's start to the next (5)",
    )


def refuse_segment_options(args: argparse.Namespace, *names: str) -> None:
    """Options that only apply with --segments, given without it: a usage error."""
    for name in ("segment_classes", "stride", *names):
        if getattr(args, name, None) is not None:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} applies with --segments only")


def rank_segments(args: argparse.Namespace, loaded: Loaded, *, max_per_class: int) -> Any:
    """The SegmentRanking of ``loaded``'s probabilities over the windows of ``args.data``
    (``--top-k``, ``--segment-classes``, ``--stride``, the loader options)."""
    from nextvlad.data.segments import segment_classes_option
    from nextvlad.errors import ConfigError
    from nextvlad.training.progress import track_videos
    from nextvlad.training.segments import SegmentRanking, rank_windows

    config, model = loaded.config, f"the checkpoint {loaded.folder}"
    if config.input_level != "frame":  # a model that does not fit the data: exit 1
        raise ConfigError(
            f"--segments needs a model of frame-level input; {model} holds a "
            f"{config.input_level}-level model"
        )
    classes = segment_classes_option(args.segment_classes, config.num_classes)
    loader = evaluation_loader(args, config, model=model, segments=True)
    ranking = SegmentRanking(
        config.num_classes, top_k=args.top_k, max_per_class=max_per_class, classes=classes
    )
    windows = track_videos(loader, f"{args.command} --segments", files=(), unit="windows")
    rank_windows(
        loaded.model, loaded.transform, windows, loaded.device, ranking, branch=args.branch
    )
    if ranking.num_windows == 0:  # the data's content: exit 1
        raise ConfigError(
            f"no window in --data {' '.join(args.data)}: every video is shorter than one 5-frame "
            "segment"
        )
    return ranking
