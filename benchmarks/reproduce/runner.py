"""The one job runner of the reproduction, for both parts: every training and evaluation is a
`nextvlad` command in a subprocess (``python -m nextvlad train | eval | synth``), exactly what a
user runs, ``--jobs`` at a time with ``--threads`` torch threads each (``OMP_NUM_THREADS``); and
what is recorded about the machine and the library that ran."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from .plan import REPO

NEXTVLAD = [sys.executable, "-m", "nextvlad"]  # the `nextvlad` command of this interpreter
R = TypeVar("R")


def nextvlad(args: list[str], threads: int, log: Path) -> tuple[str, float]:
    """Runs `nextvlad ARGS` with ``threads`` torch threads; its stdout and the seconds taken.
    stderr goes to ``log``; a failure stops the part with the command and the log's end."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("a") as err:
        done = subprocess.run(
            NEXTVLAD + args, env=env, stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"`nextvlad {' '.join(args)}` exited {done.returncode}:\n{tail}")
    return done.stdout, time.perf_counter() - started


def last_json(stdout: str) -> dict[str, Any] | None:
    """The JSON object on the last line a command printed, None without one."""
    lines = stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        return None
    value: dict[str, Any] = json.loads(lines[-1])
    return value


def run_all(
    work: Sequence[tuple[float, Callable[[], R]]],
    workers: int,
    say: Callable[[str], None],
    describe: Callable[[R], str],
) -> list[R]:
    """Calls each ``(cost, task)``'s task, the costliest first, ``workers`` at a time (threads,
    each waiting on its own `nextvlad` processes); their results in the order of ``work``, a
    progress line for each (``describe``) as it ends. A failure is raised once the running
    tasks have ended, and no other task starts."""
    queue = iter(sorted(range(len(work)), key=lambda i: -work[i][0]))
    results: dict[int, R] = {}
    running: dict[Future[R], int] = {}
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def start_next() -> None:
            index = next(queue, None)
            if index is not None:
                running[pool.submit(work[index][1])] = index

        for _ in range(workers):
            start_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                results[index] = future.result()
                say(
                    f"[{len(results)}/{len(work)}] {describe(results[index])}; "
                    f"{time.perf_counter() - started:.0f} s elapsed"
                )
                start_next()
    return [results[i] for i in range(len(work))]


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
    """CPU time (user + system) of the finished `nextvlad` processes."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
