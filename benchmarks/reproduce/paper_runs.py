"""The main part's runs: the synthetic set, and each job through the runner (`nextvlad train`,
then `nextvlad eval --branch M` for each branch of a mixture), with what its run folder holds
read back (its steps, parameters and TensorBoard curves)."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from .plan import Job, Plan
from .runner import last_json, nextvlad, run_all

CURVES = ("train/gap", "eval/gap", "train/examples_per_second")


def run_jobs(
    jobs: list[Job], workers: int, threads: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Every job, the longest first, ``workers`` at a time; their results in order."""
    say("queued, longest first: " + ", ".join(f"{j.row.key}/{j.seed}" for j in _longest(jobs)))
    work = [(job.cost, partial(run_job, job, threads)) for job in jobs]
    return run_all(work, workers, say, _describe)


def _longest(jobs: list[Job]) -> list[Job]:
    return sorted(jobs, key=lambda j: -j.cost)


def _describe(result: dict[str, Any]) -> str:
    return (
        f"{result['row']} seed {result['seed']}: "
        f"GAP {result['metrics'].get('gap', float('nan')):.4f}, "
        f"{result['train_seconds']:.0f} s ({result['examples_per_second']:.0f} ex/s)"
    )


def run_job(job: Job, threads: int) -> dict[str, Any]:
    """Train one model, evaluate each branch of a mixture, read back its counts and curves."""
    from nextvlad.checkpoint import TRAINER, latest_checkpoint, read_config
    from nextvlad.models import count_config_parameters

    run = job.out
    shutil.rmtree(run, ignore_errors=True)  # this script owns its run folders: train afresh
    log = run.with_name(f"{run.name}.log")
    log.unlink(missing_ok=True)
    printed, seconds = nextvlad(job.command, threads, log)
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise RuntimeError(f"`nextvlad {' '.join(job.command)}` left no checkpoint in {run}")
    trainer = json.loads((checkpoint / TRAINER).read_text())["trainer"]
    config, _ = read_config(checkpoint)
    result: dict[str, Any] = {
        "group": job.group,
        "row": job.row.key,
        "seed": job.seed,
        "steps": trainer["step"],
        "examples": trainer["examples_seen"],
        "train_seconds": seconds,
        "epochs": trainer["epoch"],
        "examples_per_second": trainer["examples_seen"] / seconds,
        "metrics": _metrics(last_json(printed)),
        "parameters": count_config_parameters(config),
    }
    if job.row.branches:
        result["branch_metrics"] = [
            _metrics(last_json(nextvlad(_eval_command(job, b), threads, log)[0]))
            for b in range(job.row.branches)
        ]
        result["branch_parameters"] = count_config_parameters(config.branch)  # type: ignore[union-attr]
    curves = read_curves(run / "tensorboard")
    speeds = [v for _, v in curves.pop("train/examples_per_second", [])[1:]]  # after warm-up
    if speeds:  # the loop's own measure: training steps only, evaluations left out
        result["examples_per_second"] = statistics.fmean(speeds)
    result["curves"] = curves
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # weights are not needed afterwards
    return result


def _eval_command(job: Job, branch: int) -> list[str]:
    """`nextvlad eval --branch M` of the job's run on its held-out records."""
    command = ["eval", "--checkpoint", str(job.out), "--data", job.eval_data, "--json"]
    command += ["--branch", str(branch), "--batch-size", str(job.batch_size)]
    return [*command, "--num-workers", "0", "--device", "cpu"]


def _metrics(printed: dict[str, Any] | None) -> dict[str, Any]:
    """GAP, mAP, Hit@1, ... of a command's JSON, without the count of videos."""
    return {k: v for k, v in (printed or {}).items() if k != "num_videos"}


def read_curves(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value), ...] of the run's scalars in ``CURVES``, read back as TensorBoard
    reads them (``tensorboard``, in the dev extra, is needed for the runs, not for rendering)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep them all
    events.Reload()
    logged = set(events.Tags()["scalars"])
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in CURVES
        if tag in logged
    }


def write_data(plan: Plan, out: Path, say: Callable[[str], None]) -> dict[str, str]:
    """The synthetic train and held-out sets (reused when the plan has not changed), written
    in-process: `nextvlad synth` has no options for the plan's shorter videos and runs."""
    from nextvlad.data import write_synthetic
    from nextvlad.data.synth import SynthConfig

    config = SynthConfig(
        num_classes=plan.classes,
        min_frames=plan.min_frames,
        max_frames=plan.max_frames,
        min_run=plan.min_run,
        max_run=plan.max_run,
    )
    root = out / "data"
    marker = root / "plan.json"
    wanted = {"config": asdict(config), "train": plan.train_videos, "eval": plan.eval_videos}
    data = {"train": str(root / "train" / "*.tfrecord"), "eval": str(root / "eval" / "*.tfrecord")}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        say(f"using the synthetic set in {root}")
        return data
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    write_synthetic(root / "train", videos=plan.train_videos, shards=4, seed=1, config=config)
    write_synthetic(root / "eval", videos=plan.eval_videos, shards=2, seed=2, config=config)
    marker.write_text(json.dumps(wanted))
    say(
        f"wrote {plan.train_videos} + {plan.eval_videos} synthetic videos in "
        f"{time.perf_counter() - started:.0f} s"
    )
    return data
