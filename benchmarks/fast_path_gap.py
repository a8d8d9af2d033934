"""Does the fast path learn the same model? GAP of the default and the fast training path.

    python benchmarks/fast_path_gap.py --json

Trains the demo's NeXtVLAD (``nextvlad-8g-16k-256h``) on the demo's synthetic frame-level set
with the demo's recipe, once per seed and path, and evaluates each on the held-out synthetic
videos with the official metrics:

- ``default``: ``nextvlad train`` as it is (padded frames skipped, fused TF1-epsilon Adam);
- ``fast``: ``--folded --bucket-by-length`` (the expansion FC folded away; batches of videos of
  similar length). Folding is the same function; bucketing changes which videos share a batch,
  so the two paths see different batches and their GAPs differ by training noise, which the
  spread over seeds measures.

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

from nextvlad.data import VideoDataset, write_synthetic
from nextvlad.training import TrainOptions, load_for_inference, train
from nextvlad.training.evaluate import evaluate

PATHS = {"default": {}, "fast": {"folded": True, "bucket_by_length": True}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per path")
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--videos", type=int, default=2000, help="synthetic training videos")
    parser.add_argument("--eval-videos", type=int, default=500)
    parser.add_argument("--out", help="working folder (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="tiny set, 1 seed, 3 steps (CI)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.videos, args.eval_videos = 1, 3, 64, 32
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        write_synthetic(root / "train", videos=args.videos, shards=4, num_classes=25, seed=1)
        write_synthetic(root / "eval", videos=args.eval_videos, shards=2, num_classes=25, seed=2)
        runs: list[dict[str, Any]] = []
        for seed in range(args.seeds):
            for path, extra in PATHS.items():
                runs.append(_run(root, path, extra, seed, args.steps))
                if not args.json:
                    print(json.dumps(runs[-1]))
    summary: dict[str, Any] = {"steps": args.steps, "videos": args.videos, "runs": runs}
    for path in PATHS:
        mine = [r for r in runs if r["path"] == path]
        for key in ("gap", "map", "hit_at_one", "train_examples_per_s"):
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
    model, transform, _, _ = load_for_inference(run)
    data = VideoDataset(str(root / "eval" / "*.tfrecord"), num_classes=25, rank=0, world_size=1)
    metrics, _, _ = evaluate(model, transform, data.loader(256), torch.device("cpu"), 25)
    result = metrics.compute()
    return {
        "path": path,
        "seed": seed,
        "gap": result["gap"],
        "map": result["map"],
        "hit_at_one": result["hit_at_one"],
        "train_examples_per_s": summary["steps_this_run"] * 64 / seconds,
    }


if __name__ == "__main__":
    raise SystemExit(main())
