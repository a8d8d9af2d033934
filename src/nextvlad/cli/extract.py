"""`nextvlad extract` (own videos -> YouTube-8M TFRecords) and `nextvlad classify` (own videos
-> top labels of a trained model).

Several processes (one per GPU)::

    torchrun --nproc-per-node N -m nextvlad extract VIDEOS... --out DIR ...

Each rank takes inputs[rank::world] and writes its own shards (``features-rR-NNNNN``) and
manifest; a rerun skips what DIR holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from nextvlad._args import DEVICE, POSITIVE_FLOAT, positive_int
from nextvlad.errors import UsageError


def add_weight_arguments(p: argparse.ArgumentParser, *, pca_required: bool = True) -> None:
    """The options of the extractor (shared by extract and classify)."""
    p.add_argument(
        "--inception",
        required=True,
        metavar="PATH",
        help="Inception-v3 weights: Google's inception-2015-12-05.tgz, the "
        "classify_image_graph_def.pb in it, or the FID state dict "
        "pt_inception-2015-12-05-6726825d.pth",
    )
    p.add_argument(
        "--pca",
        required=pca_required,
        metavar="PATH",
        help="the PCA: Google's yt8m_pca.tgz or its folder (mean.npy, eigenvals.npy, "
        "eigenvecs.npy), or a folder from `nextvlad extract --fit-pca`",
    )
    p.add_argument("--audio-model", metavar="PATH", help="VGGish weights: vggish_model.ckpt")
    p.add_argument(
        "--audio-pca",
        metavar="PATH",
        help="VGGish's PCA: vggish_pca_params.npz (with --audio-model)",
    )
    p.add_argument(
        "--zero-audio",
        action="store_true",
        help="without --audio-model: write audio bytes of 127, which dequantize to about 0.0 "
        "(Google's extractor writes 0, which dequantizes to -1.99)",
    )
    p.add_argument(
        "--fps", type=POSITIVE_FLOAT, default=1.0, help="frames a second, Google's rule (1)"
    )
    p.add_argument("--max-frames", type=positive_int, default=300, help="frames a video (300)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="frames a network call (32)")
    p.add_argument(
        "--device",
        type=DEVICE,
        default="auto",
        help="auto (a GPU when there is one), cpu, cuda, cuda:N",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract",
        help="YouTube-8M features of one's own videos",
        description="Extract YouTube-8M features (Inception-v3 pool_3 -> PCA -> 8 bits, one "
        "frame a second by Google's rule; VGGish audio) from videos and write them as "
        "YouTube-8M TFRecords that `nextvlad train` reads. Exit 0 when every input was "
        "written, 1 when some failed (DIR/failures.csv names them).",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, folders of PNG/JPEG frames (one image a frame, in name order), "
        "globs, s3:// gs:// https:// URLs, or a CSV of path,labels lines (labels joined by "
        "';', Google's --input_videos_csv)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder of the TFRecord shards")
    add_weight_arguments(p, pca_required=False)
    p.add_argument(
        "--shard-size", type=positive_int, default=100, help="videos a TFRecord shard (100)"
    )
    p.add_argument(
        "--video-level",
        action="store_true",
        help="write Examples of mean_rgb (and mean_audio) instead of frame-level records",
    )
    p.add_argument(
        "--id",
        choices=("name", "path"),
        default="name",
        help="record id: the file name without its extension (name, default) or the path as "
        "given (path, as Google's tool does)",
    )
    p.add_argument(
        "--labels",
        help="class indices for the inputs not from a CSV, joined by ';' (e.g. '3;17')",
    )
    p.add_argument(
        "--decode-workers",
        type=int,
        default=1,
        help="videos decoded ahead in CPU threads while the network runs (1; 0: none)",
    )
    p.add_argument(
        "--fit-pca",
        metavar="DIR",
        help="instead of records: fit a PCA on the inputs' pool_3 features and save it in "
        "Google's layout (mean.npy, eigenvals.npy, eigenvecs.npy) in DIR; --pca is not used",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_extract)

    c = subparsers.add_parser(
        "classify",
        help="top labels of one's own videos",
        description="Extract features of videos in memory and print each one's top labels "
        "by a trained checkpoint (frame-level models take the frames, video-level ones the "
        "means).",
    )
    c.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or frame folders")
    c.add_argument(
        "--checkpoint", required=True, help="run folder, checkpoint folder or its model.safetensors"
    )
    add_weight_arguments(c)
    c.add_argument("--top-k", type=positive_int, default=20, help="labels a video (20)")
    c.add_argument("--vocabulary", help="YouTube-8M's vocabulary.csv: print class names")
    c.add_argument("--json", action="store_true", help="one JSON object a line per video")
    c.set_defaults(func=_classify)


def _extract(args: argparse.Namespace) -> int:
    from nextvlad.cli._extract_run import run_extract

    return run_extract(args)


def _classify(args: argparse.Namespace) -> int:
    from nextvlad.classify import VideoClassifier
    from nextvlad.errors import NextVLADError

    extractor = build_extractor(args)
    names = None
    if args.vocabulary:
        from nextvlad.training import read_vocabulary

        names = read_vocabulary(args.vocabulary)
    device = _device(args.device)
    classifier = VideoClassifier(args.checkpoint, extractor, vocabulary=names, device=device)
    failed = 0
    for source in args.videos:
        try:
            result = classifier.classify(source, top_k=args.top_k)
        except NextVLADError as err:
            failed += 1
            print(f"nextvlad classify: {err}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(result.as_dict()), flush=True)
            continue
        note = f"  ({result.note})" if result.note else ""
        print(f"{result.id} ({result.num_frames} frames){note}")
        for c, name, score in result.labels:
            print(f"  {score:.4f}  {c:5d}  {name}".rstrip())
    return 1 if failed else 0


def _device(text: str) -> str:
    """The device of ``--device``; under torchrun ``cuda`` is this process's GPU (LOCAL_RANK)."""
    from nextvlad.training.distributed import resolve_device

    try:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UsageError("LOCAL_RANK must be an integer") from None
    return str(resolve_device(text, local_rank))


def build_extractor(args: argparse.Namespace) -> Any:
    """The Extractor of the weight options."""
    from nextvlad.extract import Extractor

    if args.zero_audio and args.audio_model:
        raise UsageError("--zero-audio is for runs without --audio-model; give one of them")
    for name in ("inception", "pca", "audio_model", "audio_pca"):
        value = getattr(args, name)
        if value and not os.path.exists(value):
            raise UsageError(f"--{name.replace('_', '-')} {value}: no such file or folder")
    return Extractor.from_files(
        args.inception,
        args.pca,
        audio_model=args.audio_model,
        audio_pca=args.audio_pca,
        zero_audio=args.zero_audio,
        fps=args.fps,
        max_frames=args.max_frames,
        batch_size=args.batch_size,
        device=_device(args.device),
    )
