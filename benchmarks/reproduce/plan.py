"""What the reproduction runs: the rows of the paper's tables (scaled down), the two sizes of a
run (full and quick) and the training jobs they make."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REAL_DATA = REPO.parent / "shared" / "data" / "yt8m-2018-video-level"


@dataclass(frozen=True)
class Row:
    """One model of the comparison: a registered preset with overrides (the scaled-down row)."""

    key: str  # run folder name and JSON key
    label: str  # the scaled row, in the paper's notation
    preset: str  # registered preset (the paper-sized row), see `nextvlad list-models`
    overrides: dict[str, Any]  # the scaling (and num_classes, added at run time)
    paper: str | None = None  # the paper's row it stands for
    paper_params: str | None = None  # the paper's parameter figure
    paper_gap: float | None = None  # the paper's GAP
    distill_weight: float | None = None  # mixtures: λ (None: the preset's 9)
    branches: int = 0  # mixtures: evaluate each branch alone too
    curve: bool = True  # evaluate on held-out data at every epoch end (Fig. 6, panel b)
    cost: float = 1.0  # rough run time relative to NeXtVLAD (8G), to start long runs first


# Table 1, scaled down: K and H divided by 4 (128 -> 32, 256 -> 64, 2048 -> 512, 1024 -> 256),
# everything else (λ 2, G, r 8, dropout, gating, the logistic classifier) as the paper's rows.
# NetVLAD_random samples as many random frames a video as the longest synthetic video has (the
# paper: 300, YouTube-8M's longest).
TABLE1: tuple[Row, ...] = (
    Row(
        "netvlad",
        "NetVLAD (-, 0.5drop, 32K, 512H)",
        "netvlad-128k-2048h",
        {"num_clusters": 32, "hidden_size": 512},
        "NetVLAD (-, 0.5drop, 128K, 2048H)",
        "297M",
        0.8474,
        cost=0.5,
    ),
    Row(
        "netvlad-random",
        "NetVLAD_random (-, 0.5drop, 64K, 256H)",
        "netvlad-random-256k-1024h",
        {"num_clusters": 64, "hidden_size": 256},  # sample_frames set from the data's length
        "NetVLAD_random (-, 0.5drop, 256K, 1024H)",
        "274M",
        0.8507,
        cost=0.5,
    ),
    Row(
        "netvlad-small",
        "NetVLAD_small (-, 0.5drop, 32K, 512H)",
        "netvlad-small-128k-2048h",
        {"num_clusters": 32, "hidden_size": 512},
        "NetVLAD_small (-, 0.5drop, 128K, 2048H)",
        "88M",
        0.8582,
        cost=0.3,
    ),
    Row(
        "nextvlad-32g",
        "NeXtVLAD (32G, 0.2drop, 32K, 512H)",
        "nextvlad-32g-128k-2048h",
        {"num_clusters": 32, "hidden_size": 512},
        "NeXtVLAD (32G, 0.2drop, 128K, 2048H)",
        "55M",
        0.8681,
        curve=False,
    ),
    Row(
        "nextvlad-16g",
        "NeXtVLAD (16G, 0.5drop, 32K, 512H)",
        "nextvlad-16g-128k-2048h",
        {"num_clusters": 32, "hidden_size": 512},
        "NeXtVLAD (16G, 0.5drop, 128K, 2048H)",
        "58M",
        0.8697,
        curve=False,
    ),
    Row(
        "nextvlad-8g",
        "NeXtVLAD (8G, 0.5drop, 32K, 512H)",
        "nextvlad-8g-128k-2048h",
        {"num_clusters": 32, "hidden_size": 512},
        "NeXtVLAD (8G, 0.5drop, 128K, 2048H)",
        "89M",
        0.8723,
    ),
    Row(
        "meanpool",
        "mean pool (512H, SE gating)",
        "meanpool-2048h",
        {"hidden_size": 512},
        "(not in the paper: the mean of the frames, then NeXtVLAD's head)",
        cost=0.05,
    ),
)

# Tables 2 and 3, scaled down the same way: the final mixture's branches (8G, 112K, 2048H,
# r 16) become 8G, 28K, 512H. Table 3 is the paper's only mixture experiment at 120k steps
# (its Table 1 budget), so both mixtures get the same budget as the Table 1 rows here.
MIXTURES: tuple[Row, ...] = (
    Row(
        "mix3-t3",
        "3 NeXtVLAD (8G, 28K, 512H), T = 3, λ = 9",
        "mix3-nextvlad-8g-112k-2048h",
        {"num_clusters": 28, "hidden_size": 512},
        "3 NeXtVLAD (3T, 120k steps)",
        "237M",
        0.8788,
        branches=3,
        curve=False,
        cost=3.0,
    ),
    Row(
        "mix3-t0",
        "3 NeXtVLAD (8G, 28K, 512H), no distillation (λ = 0)",
        "mix3-nextvlad-8g-112k-2048h",
        {"num_clusters": 28, "hidden_size": 512},
        "3 NeXtVLAD (0T, 120k steps)",
        "237M",
        0.8798,
        distill_weight=0.0,
        branches=3,
        curve=False,
        cost=3.0,
    ),
)

# Real data: the best recipes of docs/real-data.md (tuned there on the same evaluation split).
REAL: tuple[tuple[Row, dict[str, Any]], ...] = (
    (
        Row("video-logistic", "video-logistic", "video-logistic", {}, curve=False, cost=1.0),
        {"batch_size": 64, "learning_rate": 0.03, "l2_penalty": 1e-8, "epochs": 4},
    ),
    (
        Row("video-moe", "video-moe (2 mixtures)", "video-moe", {}, curve=False, cost=4.0),
        {"batch_size": 128, "learning_rate": 0.03, "l2_penalty": 1e-8, "epochs": 4},
    ),
)

# The paper-sized presets whose parameters are counted (`nextvlad params`): Tables 1 and 2.
PARAM_PRESETS = (
    "netvlad-128k-2048h",
    "netvlad-random-256k-1024h",
    "netvlad-small-128k-2048h",
    "nextvlad-32g-128k-2048h",
    "nextvlad-16g-128k-2048h",
    "nextvlad-8g-128k-2048h",
    "nextvlad-8g-112k-2048h",
    "mix3-nextvlad-8g-112k-2048h",
)


@dataclass(frozen=True)
class Plan:
    """Sizes of one reproduction (the full run or the quick smoke run)."""

    name: str
    train_videos: int  # synthetic training videos
    eval_videos: int  # synthetic held-out videos
    classes: int = 25
    # Video and concept-run lengths: the benchmark set's 60-300 frames (mean 180) and 4-12-frame
    # runs, cut to a third of the mean so that every model gets five epochs in the budget.
    min_frames: int = 30
    max_frames: int = 90
    min_run: int = 2
    max_run: int = 4
    epochs: int = 5  # the paper's Table 1 budget, in epochs
    batch_size: int = 64
    learning_rate: float = 1e-3  # the paper's 2e-4 is for millions of videos (as the demo)
    seeds: int = 3
    log_every: int = 1  # steps between training-GAP points
    real_train: str = "validate00[0-4]*.tfrecord"  # 14,547 videos
    real_eval: str = "validate005*.tfrecord"  # 2,952 videos
    real_epochs: int | None = None  # None: each recipe's own

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_videos / self.batch_size)

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


FULL = Plan("full", train_videos=1024, eval_videos=512)
QUICK = Plan(
    "quick",
    train_videos=128,
    eval_videos=64,
    epochs=2,
    batch_size=32,
    seeds=1,
    real_train="validate000[0-1].tfrecord",
    real_eval="validate0050.tfrecord",
    real_epochs=1,
)


@dataclass
class Job:
    """One training run: a `nextvlad train` command and the run folder it writes."""

    group: str  # "table1", "mixture" or "real"
    row: Row
    seed: int
    command: list[str]  # the words after `nextvlad`
    out: Path  # its run folder (--out)
    eval_data: str  # its held-out records (--eval-data), also for the branches' evaluations
    batch_size: int
    cost: float = 1.0  # relative cost, to start the longest jobs first


def train_command(row: Row, overrides: dict[str, Any], **flags: Any) -> list[str]:
    """`nextvlad train --preset ROW'S --set KEY=VALUE ... --FLAG VALUE ... --no-progress`, a
    keyword for each flag (``batch_size=64``: ``--batch-size 64``; None: the flag left out)."""
    command = ["train", "--preset", row.preset]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    for name, value in flags.items():
        if value is not None:
            command += [
                f"--{name.replace('_', '-')}",
                f"{value:g}" if isinstance(value, float) else str(value),
            ]
    return [*command, "--no-progress"]


def make_jobs(plan: Plan, out: Path, data: dict[str, str], real_data: Path | None) -> list[Job]:
    """Every training run of the reproduction, with its command."""
    jobs = []
    common = {
        "batch_size": plan.batch_size,
        "lr": plan.learning_rate,
        "epochs": plan.epochs,
        "log_every": plan.log_every,
        "checkpoint_every": 10**9,  # only at the end
        "num_workers": 0,  # in-process reading: the cores are busy training
        "device": "cpu",
    }
    for group, rows in (("table1", TABLE1), ("mixture", MIXTURES)):
        for row in rows:
            overrides = {**row.overrides, "num_classes": plan.classes}
            if row.key == "netvlad-random":
                overrides["sample_frames"] = plan.max_frames
            for seed in range(plan.seeds):
                run = out / "runs" / row.key / f"seed{seed}"
                command = train_command(
                    row,
                    overrides,
                    train_data=data["train"],
                    eval_data=data["eval"],
                    out=run,
                    seed=seed,
                    eigenvals="none",  # synthetic features are not PCA-whitened
                    eval_every=plan.steps_per_epoch if row.curve else 0,
                    distill_weight=row.distill_weight,
                    **common,
                )
                jobs.append(
                    Job(group, row, seed, command, run, data["eval"], plan.batch_size, row.cost)
                )
    if real_data is not None:
        for row, recipe in REAL:
            epochs = plan.real_epochs or recipe["epochs"]
            run = out / "runs" / row.key / "seed0"
            real_eval = str(real_data / plan.real_eval)
            recipe_flags = {
                **common,
                "batch_size": recipe["batch_size"],
                "lr": recipe["learning_rate"],
                "l2": recipe["l2_penalty"],
                "epochs": epochs,
                "lr_decay": 0.95,
                "lr_decay_examples": 4_000_000,
                "eval_every": 0,
                "log_every": 10,
            }
            command = train_command(
                row,
                {},
                train_data=str(real_data / plan.real_train),
                eval_data=real_eval,
                out=run,
                seed=0,
                **recipe_flags,
            )
            cost = row.cost * epochs / recipe["epochs"]
            jobs.append(Job("real", row, 0, command, run, real_eval, recipe["batch_size"], cost))
    return jobs
