"""Running the reproduction: the synthetic set, a pool of training processes, and what is
recorded about the machine and the library that ran."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .plan import REPO, Job, Plan


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")


def run_job(job: Job) -> dict[str, Any]:
    """Train one model (in a worker), evaluate it (and its branches), read back its curves."""
    import torch

    from nextvlad.checkpoint import load_for_inference
    from nextvlad.data import VideoDataset
    from nextvlad.models import count_config_parameters
    from nextvlad.training import TrainOptions, evaluate, train

    options = TrainOptions(**job.options)
    run = Path(options.out)
    if run.exists():  # this script owns its run folders: train afresh
        shutil.rmtree(run)
    started = time.perf_counter()
    summary = train(options)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "group": job.group,
        "row": job.row.key,
        "seed": job.seed,
        "steps": summary["steps"],
        "examples": summary["examples_seen"],
        "train_seconds": seconds,
        "epochs": summary["epochs_completed"],
        "examples_per_second": summary["examples_seen"] / seconds,
        "metrics": {k: v for k, v in (summary["eval"] or {}).items() if k != "num_videos"},
    }
    model, transform, config, _ = load_for_inference(run)
    result["parameters"] = count_config_parameters(config)
    if job.row.branches:
        dataset = VideoDataset(
            options.eval_data, num_classes=config.num_classes, rank=0, world_size=1
        )
        branches = []
        for branch in range(job.row.branches):
            metrics, _, _ = evaluate(
                model,
                transform,
                dataset.loader(options.batch_size),
                torch.device("cpu"),
                config.num_classes,
                branch=branch,
            )
            branches.append({k: float(v) for k, v in metrics.compute().items()})
        result["branch_metrics"] = branches
        result["branch_parameters"] = count_config_parameters(config.branch)  # type: ignore[union-attr]
    curves = read_curves(run / "tensorboard")
    speeds = [v for _, v in curves.pop("train/examples_per_second", [])[1:]]  # after warm-up
    if speeds:  # the loop's own measure: training steps only, evaluations left out
        result["examples_per_second"] = statistics.fmean(speeds)
    result["curves"] = curves
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # weights are not needed afterwards
    return result


CURVES = ("train/gap", "eval/gap", "train/examples_per_second")


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


def run_jobs(
    jobs: list[Job], workers: int, threads: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Runs the jobs, longest first, ``workers`` at a time; returns their results in order."""
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].cost)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    started = time.perf_counter()
    context = mp.get_context("spawn")  # no fork of a process that holds torch threads
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        pending: dict[Future[dict[str, Any]], int] = {
            pool.submit(run_job, jobs[i]): i for i in order
        }
        say(
            "queued, longest first: "
            + ", ".join(f"{jobs[i].row.key}/{jobs[i].seed}" for i in order)
        )
        done_count = 0
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                result = future.result()
                results[index] = result
                done_count += 1
                metrics = result["metrics"]
                say(
                    f"[{done_count}/{len(jobs)}] {result['row']} seed {result['seed']}: "
                    f"GAP {metrics.get('gap', float('nan')):.4f}, "
                    f"{result['train_seconds']:.0f} s ({result['examples_per_second']:.0f} ex/s); "
                    f"{time.perf_counter() - started:.0f} s elapsed"
                )
    return [r for r in results if r is not None]


def write_data(plan: Plan, out: Path, say: Callable[[str], None]) -> dict[str, str]:
    """The synthetic train and held-out sets (reused when the plan has not changed)."""
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


def machine() -> dict[str, Any]:
    """The processor, cores, versions and load of the machine that ran."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "system": f"{platform.system()} {platform.release()}",
        "load_average": load_average(),
    }


def source_version() -> str | None:
    """The git commit of the library that ran, marked when src/ had uncommitted changes."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit} (with uncommitted changes in src/)" if dirty else commit


def load_average() -> float | None:
    """The 1-minute load average (other jobs on the machine slow every run down)."""
    try:
        return round(os.getloadavg()[0], 1)
    except (AttributeError, OSError):
        return None


def children_cpu_seconds() -> float | None:
    """CPU time (user + system) of the finished worker processes."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
