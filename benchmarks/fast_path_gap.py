"""Does the fast path learn the same model? GAP of the default and the fast training path.

    python benchmarks/fast_path_gap.py --json

Trains the demo's NeXtVLAD (``nextvlad-8g-16k-256h``) on the demo's synthetic frame-level set
with the demo's recipe, once per seed and path, and evaluates each on the held-out synthetic
videos with the official metrics:

- ``default``: ``nextvlad train`` as it is (padded frames skipped, fused TF1-epsilon Adam);
- ``bf16`` (``--paths default,bf16``): ``--precision bf16``, whose GAP should stay within 0.002
  of float32's (``--video-precisions fp32,bf16`` also trains the video-level presets so);
- ``fast``: ``--folded --bucket-by-length`` (the expansion FC folded away; batches of videos of
  similar length). Folding is the same function; bucketing changes which videos share a batch,
  so the two paths see different batches and their GAPs differ by training noise, which the
  spread over seeds measures.

Each model is also evaluated as `nextvlad eval --quantize int8` evaluates it (its int8 copy,
``nextvlad.models.quantize``): ``int8_gap`` and ``int8_gap_change`` (int8 minus float32). With
``--video-data DIR`` (the real YouTube-8M 2018 video-level shards, ``validate00{00..59}``) the
video-level presets are trained with the recipes of docs/real-data.md on shards 0000-0049 and
evaluated in float32 and int8 on 0050-0059.

Prints GAP, mAP, Hit@1 and training examples/s per run, and the mean and spread per path.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nextvlad.checkpoint import load_for_inference
from nextvlad.data import VideoDataset, detect_schema, resolve_files, write_synthetic
from nextvlad.models.quantize import quantize_int8
from nextvlad.training import TrainOptions, train
from nextvlad.training.evaluate import evaluate

PATHS = {
    "default": {},
    "fast": {"folded": True, "bucket_by_length": True},
    "bf16": {"precision": "bf16"},  # --paths default,bf16: bf16 training's GAP against fp32
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per path")
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--videos", type=int, default=2000, help="synthetic training videos")
    parser.add_argument("--eval-videos", type=int, default=500)
    parser.add_argument("--out", help="working folder (default: a temporary one)")
    parser.add_argument(
        "--video-data",
        metavar="DIR",
        help="real YouTube-8M 2018 video-level shards (validate00*.tfrecord): also compare "
        "int8 and float32 on the video-level presets",
    )
    parser.add_argument(
        "--paths", default="default,fast", help=f"comma-separated, of {', '.join(PATHS)}"
    )
    parser.add_argument(
        "--video-precisions",
        default="fp32",
        help="with --video-data: fp32 or fp32,bf16 (also train each video-level preset under "
        "bf16 autocast and report its GAP against float32's)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny set, 1 seed, 3 steps (CI)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    paths = args.paths.split(",")
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown --paths {', '.join(unknown)} (of {', '.join(PATHS)})")
    if args.quick:
        args.seeds, args.steps, args.videos, args.eval_videos = 1, 3, 64, 32
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        write_synthetic(root / "train", videos=args.videos, shards=4, num_classes=25, seed=1)
        write_synthetic(root / "eval", videos=args.eval_videos, shards=2, num_classes=25, seed=2)
        runs: list[dict[str, Any]] = []
        for seed in range(args.seeds):
            for path in paths:
                runs.append(_run(root, path, PATHS[path], seed, args.steps))
                if not args.json:
                    print(json.dumps(runs[-1]))
        video_level = (
            _video_level(Path(args.video_data), root, args.video_precisions.split(","))
            if args.video_data
            else None
        )
    summary: dict[str, Any] = {"steps": args.steps, "videos": args.videos, "runs": runs}
    if video_level is not None:
        summary["video_level_int8"] = video_level
    for path in paths:
        mine = [r for r in runs if r["path"] == path]
        for key in ("gap", "map", "hit_at_one", "train_examples_per_s", "int8_gap_change"):
            values = [r[key] for r in mine]
            summary.setdefault(path, {})[key] = {
                "mean": statistics.fmean(values),
                "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            }
    print(json.dumps(summary) if args.json else json.dumps(summary, indent=2))
    return 0


def _run(root: Path, path: str, extra: dict[str, Any], seed: int, steps: int) -> dict[str, Any]:
    run = root / "runs" / f"{path}-{seed}"
    options = TrainOptions(
        preset="nextvlad-8g-16k-256h",
        train_data=[str(root / "train" / "*.tfrecord")],
        out=str(run),
        model_overrides={"num_classes": 25},
        eigenvals="none",  # the synthetic features are not PCA-whitened
        batch_size=64,
        learning_rate=1e-3,
        max_steps=steps,
        eval_every=0,
        checkpoint_every=steps,
        num_workers=1,
        seed=seed,
        device="cpu",
        progress=False,
        **extra,
    )
    started = time.perf_counter()
    summary = train(options)
    seconds = time.perf_counter() - started
    result, int8 = _evaluate_both(run, str(root / "eval" / "*.tfrecord"), 25)
    return {
        "path": path,
        "seed": seed,
        "gap": result["gap"],
        "map": result["map"],
        "hit_at_one": result["hit_at_one"],
        "train_examples_per_s": summary["steps_this_run"] * 64 / seconds,
        "int8_gap": int8["gap"],
        "int8_gap_change": int8["gap"] - result["gap"],
    }


def _evaluate_both(run: Path, data: str, num_classes: int) -> tuple[dict[str, Any], ...]:
    """The official metrics of a run's model in float32 and as its int8 copy."""
    model, transform, _, _ = load_for_inference(run)
    schema = detect_schema(resolve_files([data]))
    assert schema is not None, data
    results = []
    for candidate in (model, quantize_int8(model)):
        dataset = VideoDataset(data, schema, num_classes=num_classes, rank=0, world_size=1)
        metrics, _, _ = evaluate(
            candidate, transform, dataset.loader(256), torch.device("cpu"), num_classes
        )
        results.append(metrics.compute())
    return tuple(results)


# docs/real-data.md's best recipes (GAP 0.681 and 0.680 there).
VIDEO_RECIPES = {
    "video-logistic": {"batch_size": 64, "learning_rate": 0.03, "l2_penalty": 1e-8, "epochs": 4},
    "video-moe": {"batch_size": 128, "learning_rate": 0.03, "l2_penalty": 1e-8, "epochs": 4},
}


def _video_level(data: Path, root: Path, precisions: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for preset, recipe in VIDEO_RECIPES.items():
        for precision in precisions:
            row = _video_run(data, root, preset, recipe, precision)
            if precision == "fp32":
                out[preset] = row
            else:
                row["gap_change"] = row["gap"] - out[preset]["gap"]
                out[f"{preset}-{precision}"] = row
    return out


def _video_run(
    data: Path, root: Path, preset: str, recipe: dict[str, Any], precision: str
) -> dict[str, Any]:
    """One video-level preset trained on shards 0000-0049, evaluated on 0050-0059."""
    if precision == "fp32":
        run, extra = root / "runs" / preset, {}
    else:
        run, extra = root / "runs" / f"{preset}-{precision}", {"precision": precision}
    train(
        TrainOptions(
            preset=preset,
            train_data=[str(data / "validate00[0-4]*.tfrecord")],
            out=str(run),
            lr_decay=0.95,
            lr_decay_examples=4_000_000,
            eval_every=0,
            checkpoint_every=10**9,
            num_workers=1,
            device="cpu",
            progress=False,
            **recipe,
            **extra,
        )
    )
    result, int8 = _evaluate_both(run, str(data / "validate005*.tfrecord"), 3862)
    return {"gap": result["gap"], "int8_gap": int8["gap"],
            "int8_gap_change": int8["gap"] - result["gap"]}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
