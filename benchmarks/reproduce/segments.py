"""The 2019 segment task (``--part segments``): a video-label-trained NeXtVLAD applied to rated
5-frame segments as it is, against the same model fine-tuned on the segment labels, and the
3-branch mixture fine-tuned with distillation, on the synthetic segment-rated set.

Every step is a ``nextvlad`` command (``synth | train | eval --segments``) run by the runner
that runs the main part's too; its tasks are chains (pre-training, then fine-tuning, each
followed by its evaluation), ``--jobs`` at a time.
"""

from __future__ import annotations

import json
import shlex
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .runner import last_json, nextvlad, run_all
from .summary import spread


@dataclass(frozen=True)
class Arm:
    """One model of the comparison: a preset (scaled down), trained on video labels, or
    fine-tuned on segment labels from the run of another arm."""

    key: str  # run folder name and JSON key
    label: str
    preset: str  # registered preset, see `nextvlad list-models`
    overrides: dict[str, Any]  # the scaling, as `--set KEY=VALUE`
    init_from: str | None = None  # fine-tuning: the arm whose run it starts from
    cost: float = 1.0  # rough training time relative to the NeXtVLAD arm, longest first


# The Table 1 scaling of plan.py (K and H divided by 4, 25 classes as synth's).
_SINGLE = {"num_clusters": 32, "hidden_size": 512, "num_classes": 25}
_MIXTURE = {"num_clusters": 28, "hidden_size": 512, "num_classes": 25}
ARMS: tuple[Arm, ...] = (
    Arm(
        "video",
        "NeXtVLAD (8G, 32K, 512H), video labels, as is",
        "nextvlad-8g-128k-2048h",
        _SINGLE,
    ),
    Arm(
        "finetune",
        "NeXtVLAD (8G, 32K, 512H), fine-tuned on segment labels",
        "nextvlad-8g-128k-2048h",
        _SINGLE,
        init_from="video",
        cost=0.3,
    ),
    Arm(
        "mix-video",
        "3 NeXtVLAD (8G, 28K, 512H), video labels, as is",
        "mix3-nextvlad-8g-112k-2048h",
        _MIXTURE,
        cost=3.0,
    ),
    Arm(
        "mix-finetune",
        "3 NeXtVLAD (8G, 28K, 512H), fine-tuned on segment labels with distillation",
        "mix3-nextvlad-8g-112k-2048h",
        _MIXTURE,
        init_from="mix-video",
        cost=1.0,
    ),
)
# (fine-tuned, baseline) pairs whose per-seed differences are reported
DIFFERENCES = (("finetune", "video"), ("mix-finetune", "mix-video"), ("mix-finetune", "video"))


@dataclass(frozen=True)
class SegmentPlan:
    """Sizes and recipes of the segment part (full or quick)."""

    name: str
    train_videos: int  # `synth --segment-rated --seed 100`: pre-training and fine-tuning
    eval_videos: int  # `synth --segment-rated --seed 200`: the rated segments scored
    epochs: int  # pre-training on video labels
    finetune_epochs: int  # fine-tuning on the rated segments of the same videos
    seeds: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3  # as plan.py's (the paper's 2e-4 is for millions of videos)
    finetune_batch_size: int = 64  # the 2019 authors: 512 (for ~240k rated segments)
    finetune_learning_rate: float = 2e-4  # the 2019 authors' fine-tuning rate
    # the mixture's distillation while fine-tuning: None keeps the preset's (T 3, λ 9);
    # the 2019 authors used T 20, λ 400
    finetune_temperature: float | None = None
    finetune_distill_weight: float | None = None
    train_seed: int = 100
    eval_seed: int = 200
    arms: tuple[str, ...] = field(default=tuple(a.key for a in ARMS))


SEGMENTS_FULL = SegmentPlan("full", train_videos=512, eval_videos=256, epochs=2, finetune_epochs=5)
SEGMENTS_QUICK = SegmentPlan(
    "quick",
    train_videos=48,
    eval_videos=24,
    epochs=1,
    finetune_epochs=1,
    seeds=1,
    batch_size=16,
    finetune_batch_size=32,
)


def data_commands(plan: SegmentPlan, root: Path) -> dict[str, list[str]]:
    """`nextvlad synth` for the training and the held-out set (the default --concept-seed)."""
    sets = {
        "train": (plan.train_videos, plan.train_seed),
        "eval": (plan.eval_videos, plan.eval_seed),
    }
    return {
        name: [
            *("synth", "--frame-level", "--segment-rated", "--out", str(root / name)),
            *("--videos", str(videos), "--seed", str(seed), "--shards", "2"),
        ]
        for name, (videos, seed) in sets.items()
    }


def train_command(plan: SegmentPlan, arm: Arm, seed: int, data: Path, runs: Path) -> list[str]:
    """`nextvlad train` of one arm and seed (fine-tuning: from the seed's run of its parent)."""
    command = ["train", "--preset", arm.preset]
    for key, value in arm.overrides.items():
        command += ["--set", f"{key}={value}"]
    command += ["--train-data", str(data / "train" / "*.tfrecord")]
    command += ["--out", str(runs / f"{arm.key}-s{seed}"), "--seed", str(seed)]
    if arm.init_from is None:
        epochs, batch, lr = plan.epochs, plan.batch_size, plan.learning_rate
    else:
        epochs, batch = plan.finetune_epochs, plan.finetune_batch_size
        lr = plan.finetune_learning_rate
        command += ["--task", "segments", "--init-from", str(runs / f"{arm.init_from}-s{seed}")]
        command += ["--eval-data", str(data / "eval" / "*.tfrecord")]
        if plan.finetune_temperature is not None and arm.preset.startswith("mix"):
            command += ["--temperature", f"{plan.finetune_temperature:g}"]
        if plan.finetune_distill_weight is not None and arm.preset.startswith("mix"):
            command += ["--distill-weight", f"{plan.finetune_distill_weight:g}"]
    command += ["--epochs", str(epochs), "--batch-size", str(batch), "--lr", f"{lr:g}"]
    command += ["--eigenvals", "none", "--eval-every", "0", "--checkpoint-every", "1000000000"]
    return [*command, "--num-workers", "0", "--device", "cpu", "--no-progress"]


def eval_command(arm: Arm, seed: int, data: Path, runs: Path) -> list[str]:
    """`nextvlad eval --segments` of one run on the held-out rated segments (MAP@100K)."""
    run = str(runs / f"{arm.key}-s{seed}")
    data_glob = str(data / "eval" / "*.tfrecord")
    command = ["eval", "--segments", "--checkpoint", run, "--data", data_glob, "--json"]
    return [*command, "--num-workers", "0", "--device", "cpu"]


def write_data(plan: SegmentPlan, out: Path, say: Callable[[str], None]) -> Path:
    """The segment-rated sets in OUT/segments/data (reused when the plan's sizes match)."""
    root = out / "segments" / "data"
    commands = data_commands(plan, root)
    marker = root / "commands.json"
    if marker.is_file() and json.loads(marker.read_text()) == commands:
        say(f"using the segment-rated set in {root}")
        return root
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    for command in commands.values():
        nextvlad(command, 1, root / "synth.log")
    marker.write_text(json.dumps(commands))
    say(
        f"wrote {plan.train_videos} + {plan.eval_videos} segment-rated videos in "
        f"{time.perf_counter() - started:.0f} s"
    )
    return root


def run_chain(
    plan: SegmentPlan, chain: list[Arm], seed: int, data: Path, runs: Path, threads: int
) -> list[dict[str, Any]]:
    """Trains and evaluates the arms of one chain (pre-training, then fine-tuning) in order."""
    results = []
    for arm in chain:
        run = runs / f"{arm.key}-s{seed}"
        shutil.rmtree(run, ignore_errors=True)  # this script owns its run folders
        log = runs / f"{arm.key}-s{seed}.log"
        log.unlink(missing_ok=True)
        printed, train_seconds = nextvlad(train_command(plan, arm, seed, data, runs), threads, log)
        stdout, eval_seconds = nextvlad(eval_command(arm, seed, data, runs), threads, log)
        metrics = last_json(stdout) or {}
        results.append(
            {
                "arm": arm.key,
                "seed": seed,
                "map": metrics["map"],
                "train_seconds": train_seconds,
                "eval_seconds": eval_seconds,
                "eval": {k: v for k, v in metrics.items() if k != "map"},
                # fine-tuning: train's own evaluation at its end ({"segment_map": ...})
                "train_eval": last_json(printed),
            }
        )
    return results


def chains(plan: SegmentPlan) -> list[list[Arm]]:
    """The arms of the plan grouped into chains (an arm after the one it fine-tunes)."""
    arms = [a for a in ARMS if a.key in plan.arms]
    roots = [a for a in arms if a.init_from is None]
    return [[root, *(a for a in arms if a.init_from == root.key)] for root in roots]


def run_part(
    plan: SegmentPlan, out: Path, workers: int, threads: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Every arm and seed of the part, ``workers`` chains at a time, the longest first."""
    data = write_data(plan, out, say)
    runs = out / "segments" / "runs"
    work = [
        (sum(a.cost for a in chain), partial(run_chain, plan, chain, seed, data, runs, threads))
        for chain in chains(plan)
        for seed in range(plan.seeds)
    ]
    say(f"{len(work)} chains of runs, {workers} at a time with {threads} thread(s) each")
    results = [r for chain in run_all(work, workers, say, _describe) for r in chain]
    order = {a.key: i for i, a in enumerate(ARMS)}
    return sorted(results, key=lambda r: (order[r["arm"]], r["seed"]))


def _describe(chain: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{r['arm']} seed {r['seed']}: MAP@100K {r['map']:.4f} (train "
        f"{r['train_seconds']:.0f} s, eval {r['eval_seconds']:.0f} s)"
        for r in chain
    )


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: MAP@100K over seeds, times, parameters; per pair: the per-seed differences."""
    from nextvlad.models import count_config_parameters, get_config

    arms: dict[str, Any] = {}
    for arm in ARMS:
        runs = [r for r in results if r["arm"] == arm.key]
        if not runs:
            continue
        arms[arm.key] = {
            "label": arm.label,
            "preset": arm.preset,
            "overrides": arm.overrides,
            "init_from": arm.init_from,
            "parameters": count_config_parameters(get_config(arm.preset, **arm.overrides)),
            "seeds": [r["seed"] for r in runs],
            "map": spread([r["map"] for r in runs]),
            "per_seed": [r["map"] for r in runs],
            "train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
        }
    return {"arms": arms, "differences": differences(results)}


def differences(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """MAP@100K of the first arm of each pair minus the second's, seed by seed."""
    by = {(r["arm"], r["seed"]): r["map"] for r in results}
    out = []
    for a, b in DIFFERENCES:
        seeds = sorted(s for arm, s in by if arm == a and (b, s) in by)
        if seeds:
            values = [by[(a, s)] - by[(b, s)] for s in seeds]
            out.append({"arm": a, "baseline": b, "per_seed": values, **spread(values)})
    return out


def plan_record(plan: SegmentPlan) -> dict[str, Any]:
    """The plan as the JSON keeps it, with the commands of seed 0 written out."""
    data, runs = Path("D"), Path("R")
    commands = [shlex.join(["nextvlad", *c]) for c in data_commands(plan, data).values()]
    for chain in chains(plan):
        for arm in chain:
            commands.append(shlex.join(["nextvlad", *train_command(plan, arm, 0, data, runs)]))
            commands.append(shlex.join(["nextvlad", *eval_command(arm, 0, data, runs)]))
    return {**asdict(plan), "commands": commands}
