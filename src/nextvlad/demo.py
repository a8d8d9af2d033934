"""`nextvlad demo`: the main job on the built-in synthetic set, in a few minutes on a CPU.

Generates the synthetic frame-level set (``nextvlad.data.synth``), trains a small NeXtVLAD
and the mean-pool baseline on it with the same budget, evaluates both with the official
metrics, writes Kaggle-format predictions of the NeXtVLAD model and prints a table.
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

from nextvlad.data import VideoDataset, write_synthetic
from nextvlad.models import count_config_parameters
from nextvlad.training import TrainOptions, iter_predictions, load_for_inference, train
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
    write_synthetic(
        root / "data" / "train",
        videos=options.videos,
        shards=4,
        num_classes=options.classes,
        seed=2 * options.seed + 1,
    )
    write_synthetic(
        root / "data" / "eval",
        videos=options.eval_videos,
        shards=2,
        num_classes=options.classes,
        seed=2 * options.seed + 2,
    )
    marker.write_text(json.dumps(wanted))
    log.info(
        "wrote %d + %d synthetic videos in %.0f s",
        options.videos,
        options.eval_videos,
        time.perf_counter() - started,
    )
    return train_glob, eval_glob


def run_demo(options: DemoOptions, stream: TextIO = sys.stdout) -> list[dict[str, Any]]:
    root = Path(options.out)
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
    print(f"\npredictions of the NeXtVLAD model: {root / 'predictions.csv'}", file=stream)
    (root / "results.json").write_text(json.dumps(rows, indent=2))
    return rows


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
