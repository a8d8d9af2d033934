"""`nextvlad demo`: the main job on the built-in synthetic set, in a few minutes on a CPU.

Generates the synthetic frame-level set (``nextvlad.data.synth``), trains a small NeXtVLAD
and the mean-pool baseline on it with the same budget, evaluates both with the official
metrics, writes Kaggle-format predictions of the NeXtVLAD model and prints a table.

Everything is written under ``--out`` (``nextvlad-demo`` in the current folder) and kept: the
synthetic set (about 0.5 GB at the default sizes, reused by a rerun), both runs and the
predictions. The demo prints the folder first and its size at the end.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from nextvlad.checkpoint import load_for_inference
from nextvlad.data import VideoDataset, write_synthetic
from nextvlad.models import count_config_parameters
from nextvlad.training import TrainOptions, iter_predictions, train
from nextvlad.training.evaluate import evaluate, write_predictions

log = logging.getLogger("nextvlad.demo")


@dataclass
class DemoOptions:
    out: str = "nextvlad-demo"  # folder for the data, the runs and the predictions
    videos: int = 2000  # synthetic training videos
    eval_videos: int = 500  # synthetic evaluation videos
    classes: int = 25  # classes of the synthetic set
    steps: int = 150  # training steps of each model
    batch_size: int = 64
    learning_rate: float = 1e-3  # the paper's 2e-4 is for millions of examples
    num_workers: int = 1
    seed: int = 0
    progress: bool = True


# (name shown, preset, overrides): the same head (H 256, SE gating, logistic) for both.
MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("NeXtVLAD", "nextvlad-8g-16k-256h", {}),
    ("mean pool", "meanpool-256h", {}),
)


def _data(options: DemoOptions, root: Path) -> tuple[str, str]:
    marker = root / "data" / "demo.json"
    wanted = {
        "videos": options.videos,
        "eval_videos": options.eval_videos,
        "classes": options.classes,
        "seed": options.seed,
    }
    train_glob = str(root / "data" / "train" / "*.tfrecord")
    eval_glob = str(root / "data" / "eval" / "*.tfrecord")
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        log.info("using the synthetic set in %s", root / "data")
        return train_glob, eval_glob
    started = time.perf_counter()
    splits = (("train", options.videos, 4), ("eval", options.eval_videos, 2))
    for offset, (split, videos, shards) in enumerate(splits, start=1):
        seed = 2 * options.seed + offset  # 2s+1 for the training set, 2s+2 for evaluation
        write_synthetic(
            root / "data" / split,
            videos=videos,
            shards=shards,
            num_classes=options.classes,
            seed=seed,
        )
    marker.write_text(json.dumps(wanted))
    log.info(
        "wrote %d + %d synthetic videos in %.0f s",
        options.videos,
        options.eval_videos,
        time.perf_counter() - started,
    )
    return train_glob, eval_glob


def run_demo(options: DemoOptions, stream: TextIO | None = None) -> list[dict[str, Any]]:
    """Run the demo; print (to ``stream``, default stdout) where it writes first, and at the
    end the table, the time taken and the space its folder takes (it is kept: a rerun
    reuses the synthetic set)."""
    stream = stream if stream is not None else sys.stdout  # at call time (tests capture it)
    demo_started = time.perf_counter()
    root = Path(options.out)
    print(f"working folder: {root.resolve()} (synthetic set, runs, predictions)", file=stream)
    train_glob, eval_glob = _data(options, root)
    rows = []
    for name, preset, overrides in MODELS:
        overrides = {**overrides, "num_classes": options.classes}
        run = root / "runs" / preset
        if run.exists():  # the demo owns its folder: train afresh each time
            shutil.rmtree(run)
        log.info("training %s (%s) for %d steps", name, preset, options.steps)
        train_options = TrainOptions(
            preset=preset,
            train_data=[train_glob],
            out=str(run),
            model_overrides=overrides,
            eigenvals="none",  # the synthetic features are not PCA-whitened
            batch_size=options.batch_size,
            learning_rate=options.learning_rate,
            max_steps=options.steps,
            eval_every=0,
            checkpoint_every=options.steps,
            num_workers=options.num_workers,
            seed=options.seed,
            device="cpu",
            progress=options.progress,
        )
        started = time.perf_counter()
        summary = train(train_options)
        seconds = time.perf_counter() - started
        model, transform, config, _ = load_for_inference(run)
        dataset = VideoDataset(eval_glob, num_classes=options.classes, rank=0, world_size=1)
        metrics, loss_sum, count = evaluate(
            model, transform, dataset.loader(256), torch.device("cpu"), options.classes
        )
        result = metrics.compute()
        rows.append(
            {
                "model": name,
                "preset": preset,
                "parameters": count_config_parameters(config),
                "gap": result["gap"],
                "map": result["map"],
                "hit_at_one": result["hit_at_one"],
                "loss": loss_sum / max(count, 1),
                "steps": summary["steps"],
                "train_examples_per_s": summary["steps_this_run"] * options.batch_size / seconds
                if summary["steps_this_run"]
                else None,
            }
        )
        if name == "NeXtVLAD":
            with open(root / "predictions.csv", "w", encoding="utf-8") as f:
                write_predictions(
                    f, iter_predictions(model, transform, dataset.loader(256), torch.device("cpu"))
                )
    _print_table(rows, stream)
    (root / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\npredictions of the NeXtVLAD model: {root / 'predictions.csv'}", file=stream)
    minutes, seconds = divmod(round(time.perf_counter() - demo_started), 60)
    print(f"whole demo: {minutes} min {seconds} s", file=stream)
    print(_space_note(root), file=stream)
    return rows


def folder_bytes(folder: Path) -> int:
    """Bytes in the files under ``folder`` (0 if it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _space_note(root: Path) -> str:
    total, data = folder_bytes(root) / 2**20, folder_bytes(root / "data") / 2**20
    return (
        f"{root.resolve()} now holds {total:.0f} MiB ({data:.0f} MiB of it the "
        "synthetic set, which a rerun reuses); delete the folder when you are done"
    )


def _print_table(rows: list[dict[str, Any]], stream: TextIO) -> None:
    print(
        f"\n{'model':<10} {'parameters':>11} {'GAP':>7} {'mAP':>7} {'Hit@1':>7} {'train ex/s':>11}",
        file=stream,
    )
    for r in rows:
        speed = "-" if r["train_examples_per_s"] is None else f"{r['train_examples_per_s']:.0f}"
        print(
            f"{r['model']:<10} {r['parameters']:>11,} {r['gap']:>7.4f} {r['map']:>7.4f} "
            f"{r['hit_at_one']:>7.4f} {speed:>11}",
            file=stream,
        )
