"""`nextvlad train` end to end from TFRecord shards, against the original's reader and step in
the same run.

    python benchmarks/e2e_train_throughput.py --frames yt8m --tf-python ~/tfenv/bin/python --json
    python benchmarks/e2e_train_throughput.py --frames 300 --precision fp32,bf16 --json
    python benchmarks/e2e_train_throughput.py --quick --json        # seconds, for CI

What runs: without ``--data GLOB``, ``python -m nextvlad synth --frames F`` writes frame-level
shards (``--frames``: ``300``, ``60-300`` or ``yt8m`` = min(U(120, 500), 300); enough videos
that no epoch ends inside the measured steps) into a temporary folder, then

- ours: the real command, ``python -m nextvlad train --preset P [--set K=V ...] --train-data
  GLOB --batch-size 80 --max-steps W+S --log-every L --precision X`` in a subprocess, with
  its default loader workers (processes on the same cores as the step, as users run it; the
  shards were just written, so they come from the page cache). Examples/s is the batch times
  the ``--steps`` (S) timed steps over the wall time between the TensorBoard events train
  writes at step W (the last of ``--warmup``) and at step W+S: the ``wall_time`` of its
  ``train/loss`` scalar, written after the loop has read the step's loss from the device.
  ``--log-every`` (1 here, so that every step has a time; train's default is 10, which
  ``--log-every 10 --warmup 10 --steps 20`` keeps) also costs what a log costs, the GAP of
  the batch, in every step;
- the original (``--tf-python``): ``tf_reference_e2e.py`` in TensorFlow's environment, the
  starter code's frame reader in tf.data (parallel readers, parse, decode_raw, pad to 300,
  dense labels, shuffle, batch, prefetch) feeding ``tf_reference_throughput.py``'s step on
  the same shards, timed the same way (the end of step W to the end of step W+S). Its model
  is ours translated (NeXtVLAD presets only); the same eigenvalues (``--eigenvals``).

Memory, for each side's process tree (train and its loader workers; TensorFlow's one
process): ``peak_rss_gib`` is the kernel's high-water mark of the largest process of the tree
(``os.wait4``'s rusage, which also covers the children it waited for: the loader workers),
over the whole run, so for ours it includes writing the final checkpoint (the weights and Adam
copied to bytes for the file); ``peak_tree_rss_gib`` and ``peak_tree_pss_gib`` are the sums
over the tree's processes sampled from ``/proc`` every ``--sample-interval`` seconds up to the
last timed step (PSS shares the pages a forked worker shares with train between them, RSS
counts them in each). Also reported: the load average before and after each side, the frame
distribution and the records' mean frames, workers and threads. Figures are ratios within one
run on one machine; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TF_PYTHON = Path.home() / "tfenv" / "bin" / "python"
EIGENVALUES = HERE.parents[1] / "shared" / "data" / "yt8m_pca" / "eigenvals.npy"
QUICK = {  # --quick: the demo's model, a few small steps
    "preset": "nextvlad-8g-16k-256h",
    "overrides": ["num_classes=25"],
    "batch_size": 8,
    "warmup": 1,
    "steps": 2,
    "frames": "20-40",
    "shards": 2,
}
SYNTH_CLASSES = 25  # classes of the synthetic labels (at most the model's)


# -- a process tree's memory ------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants now (Linux /proc; [pid] where it cannot be read)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):  # the task has ended
                todo += map(int, Path(f"/proc/{p}/task/{task}/children").read_text().split())
    return found


def _rollup(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) of a process in bytes, None if it is gone or unreadable."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0]) * 1024
    return values.get("Rss", 0), values.get("Pss", 0)


class TreeSampler:
    """Samples (time, processes, RSS sum, PSS sum) of a process tree every ``interval`` s."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if interval > 0:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rollups = [r for r in map(_rollup, _tree(self.pid)) if r is not None]
            if rollups:
                rss, pss = (sum(r[i] for r in rollups) for i in (0, 1))
                self.samples.append((time.time(), len(rollups), rss, pss))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def peaks(self, until: float | None = None) -> dict[str, Any]:
        """The largest sums sampled (up to ``until``, a time.time()), in GiB."""
        kept = [s for s in self.samples if until is None or s[0] <= until]
        if not kept:
            return {"peak_tree_rss_gib": None, "peak_tree_pss_gib": None, "max_processes": None}
        return {
            "peak_tree_rss_gib": round(max(s[2] for s in kept) / 2**30, 3),
            "peak_tree_pss_gib": round(max(s[3] for s in kept) / 2**30, 3),
            "max_processes": max(s[1] for s in kept),
        }


def run_tree(
    command: list[str], log: Path, interval: float
) -> tuple[int, float, float, TreeSampler]:
    """Run ``command`` (stdout and stderr to ``log``) and wait for it: (exit code, its
    tree's peak RSS in GiB by the kernel, wall seconds, the sampler)."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(process.pid, interval)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            sampler.stop()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    # ru_maxrss: KiB on Linux; the largest of the process and the children it waited for.
    return process.returncode, usage.ru_maxrss / 2**20, time.perf_counter() - start, sampler


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- ours: `nextvlad train` -------------------------------------------------------------------


def step_times(path: Path) -> dict[int, float]:
    """Step -> wall time of its ``train/loss`` event in a run folder's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    if "train/loss" not in events.Tags()["scalars"]:
        return {}
    return {e.step: e.wall_time for e in events.Scalars("train/loss")}


def window(
    times: dict[int, float], warmup: int, steps: int, batch_size: int, log_every: int
) -> dict[str, Any]:
    """Examples/s over steps ``warmup`` .. ``warmup + steps`` from their end times, and the
    time of each logged interval (a step when ``log_every`` is 1)."""
    first, last = warmup, warmup + steps
    missing = [s for s in range(first, last + 1, log_every) if s not in times]
    if missing:
        raise SystemExit(f"train logged no train/loss at steps {missing} (events: {sorted(times)})")
    span = times[last] - times[first]
    ticks = [times[s] for s in range(first, last + 1, log_every)]
    intervals = [(b - a) / log_every for a, b in itertools.pairwise(ticks)]
    return {
        "examples_per_s": batch_size * steps / span,
        "window_s": round(span, 3),
        "median_step_s": round(statistics.median(intervals), 4),
        "step_times_s": [round(t, 4) for t in intervals],
        "last_timed_step_at": times[last],
    }


def run_ours(args: argparse.Namespace, data: str, work: Path, precision: str) -> dict[str, Any]:
    run = work / f"run-{precision}"
    command = [
        sys.executable, "-m", "nextvlad", "train", "--preset", args.preset,
        "--train-data", data, "--out", str(run), "--batch-size", str(args.batch_size),
        "--max-steps", str(args.warmup + args.steps), "--log-every", str(args.log_every),
        "--precision", precision, "--eigenvals", args.eigenvals,
    ]  # fmt: skip
    for override in args.overrides:
        command += ["--set", override]
    if args.num_workers is not None:
        command += ["--num-workers", str(args.num_workers)]
    before = _loadavg()
    code, peak, wall, sampler = run_tree(command, work / f"train-{precision}.log", args.interval)
    after = _loadavg()
    log = (work / f"train-{precision}.log").read_text(errors="replace")
    if code != 0:
        raise SystemExit(f"nextvlad train failed ({code}):\n{log[-3000:]}")
    timed = window(step_times(run), args.warmup, args.steps, args.batch_size, args.log_every)
    options = json.loads((run / "run.json").read_text())
    checkpoints = run / "checkpoints"
    latest = checkpoints / (checkpoints / "latest").read_text().strip()
    trainer = json.loads((latest / "trainer.json").read_text())["trainer"]
    trained = timed.pop("last_timed_step_at")
    return {
        **timed,
        # False: an epoch ended or a batch was short, so fewer examples than batch x steps
        "all_batches_full": trainer["examples_seen"] == args.batch_size * trainer["step"]
        and trainer["epoch"] == 0,
        "peak_rss_gib": round(peak, 3),
        **sampler.peaks(until=trained),
        "num_workers": options["num_workers"],
        "log_every": options["log_every"],
        "precision": options["precision"],
        "wall_s": round(wall, 1),  # start-up, every step and the final checkpoint
        # what train said (a warning such as bf16's on a CPU without it), less its progress
        "log": [line for line in log.splitlines() if not line.startswith("epoch ")][-10:],
        "loadavg_before": before,
        "loadavg_after": after,
        "command": command,
    }


# -- the original: tf_reference_e2e.py --------------------------------------------------------


def tf_config(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Our preset as ``tf_reference_throughput.Config`` fields (NeXtVLAD + SE gating + a
    logistic classifier, the only model the TF reference builds)."""
    from nextvlad.models import get_config

    config = get_config(preset, **overrides)
    streams = getattr(config, "streams", ())
    if (
        getattr(config, "aggregator", None) != "nextvlad"
        or config.gating != "se"
        or config.classifier != "logistic"
        or [s.name for s in streams] != ["rgb", "audio"]
        or streams[0].expansion != streams[1].expansion
    ):
        raise SystemExit(
            f"--tf-python: the TF reference is NeXtVLAD with SE gating and a logistic "
            f"classifier on rgb and audio; --preset {preset} with these --set is not"
        )
    rgb, audio = streams
    return {
        "groups": rgb.groups,
        "clusters": rgb.num_clusters,
        "expansion": rgb.expansion,
        "hidden": config.hidden_size,
        "gating_reduction": config.gating_reduction,
        "vocab": config.num_classes,
        "drop_rate": config.dropout,
        "audio_clusters": audio.num_clusters,
        "audio_groups": audio.groups,
    }


def run_tf(
    args: argparse.Namespace, data: str, work: Path, config: dict[str, Any]
) -> dict[str, Any]:
    command = [
        args.tf_python, str(HERE / "tf_reference_e2e.py"), "--json", "--data", data,
        "--set", json.dumps(config), "--batch-size", str(args.batch_size),
        "--warmup", str(args.warmup), "--steps", str(args.steps),
        "--readers", str(args.readers),
    ]  # fmt: skip
    if args.eigenvals != "none":
        command += ["--eigenvalues", args.eigenvals]
    if args.xla:
        command.append("--xla")
    code, peak, wall, sampler = run_tree(command, work / "tf.log", args.interval)
    log = (work / "tf.log").read_text(errors="replace")
    if code != 0:
        raise SystemExit(f"tf_reference_e2e.py failed ({code}):\n{log[-3000:]}")
    row = json.loads(next(ln for ln in reversed(log.splitlines()) if ln.startswith("{")))
    row["peak_rss_gib_self"] = round(row.pop("peak_rss_gib"), 3)  # TF's own RUSAGE_SELF
    del row["preset"]  # ours, translated: the model is all in "config"
    row["config"] = row.pop("overrides")
    return {**row, "peak_rss_gib": round(peak, 3), **sampler.peaks(), "wall_s": round(wall, 1)}


# -- the run ----------------------------------------------------------------------------------


def ratios(ours: dict[str, dict[str, Any]], tf: dict[str, Any]) -> dict[str, Any]:
    """Each precision's examples/s and peak RSS over the original's."""
    return {
        precision: {
            "examples_per_s": round(row["examples_per_s"] / tf["examples_per_s"], 3),
            "peak_rss": round(row["peak_rss_gib"] / tf["peak_rss_gib"], 3),
        }
        for precision, row in ours.items()
    }


def synthesize(args: argparse.Namespace, folder: Path, num_classes: int) -> str:
    """Shards of ``--frames`` videos by `nextvlad synth`; their glob."""
    from nextvlad.training.options import TrainOptions

    workers = args.num_workers
    if workers is None:
        workers = TrainOptions.__dataclass_fields__["num_workers"].default
    # Each worker's stream ends with a short batch: enough full ones before the first of them.
    videos = args.videos or args.batch_size * (args.warmup + args.steps + max(workers, 1) + 1)
    command = [
        sys.executable, "-m", "nextvlad", "synth", "--out", str(folder),
        "--videos", str(videos), "--shards", str(args.shards), "--frames", args.frames,
        "--classes", str(min(SYNTH_CLASSES, num_classes)),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"nextvlad synth failed:\n{done.stderr[-3000:]}")
    return str(folder / "*.tfrecord")


def describe_data(data: str, most: int = 16) -> dict[str, Any]:
    """Videos and frames of the records (as `nextvlad inspect` counts them), of all the files
    or of ``most`` spread over them."""
    from nextvlad.data import resolve_files
    from nextvlad.data.summary import summarize

    files = resolve_files([data])
    picked = [files[round(i * (len(files) - 1) / max(most - 1, 1))] for i in range(most)]
    described = files if len(files) <= most else sorted(set(picked))
    summary = summarize(described)
    frames = summary.frames or {}
    return {
        "files": len(files),
        "described_files": len(described),
        "videos": summary.num_videos,  # of the described files
        "mean_frames": round(frames.get("mean", 0.0), 1),
        "min_frames": frames.get("min"),
        "max_frames": frames.get("max"),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="GLOB", help="frame-level shards (default: synthesize)")
    p.add_argument(
        "--frames", default="yt8m", help="synthetic frame counts: N, LOW-HIGH or yt8m (yt8m)"
    )
    p.add_argument(
        "--videos", type=int, help="synthetic videos (default: batch x (steps + workers + 1))"
    )
    p.add_argument("--shards", type=int, default=8, help="synthetic shards (8)")
    p.add_argument("--preset", default="nextvlad-8g-128k-2048h")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a preset override for train (and the TF model), e.g. --set num_classes=25",
    )
    p.add_argument("--batch-size", type=int, default=80)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps, the first included (2)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (10)")
    p.add_argument("--log-every", type=int, default=1, help="train's --log-every (1)")
    p.add_argument("--num-workers", type=int, help="train's --num-workers (default: train's)")
    p.add_argument(
        "--precision", default="fp32", help="train's --precision; fp32,bf16 runs both (fp32)"
    )
    p.add_argument(
        "--eigenvals",
        help=f"eigenvals.npy for both sides (default: {EIGENVALUES} if present, else none)",
    )
    p.add_argument(
        "--tf-python", metavar="PYTHON", help=f"also run the original (e.g. {TF_PYTHON})"
    )
    p.add_argument("--readers", type=int, default=8, help="the original's num_readers (8)")
    p.add_argument("--xla", action="store_true", help="the original's step with XLA")
    p.add_argument(
        "--sample-interval",
        dest="interval",
        type=float,
        default=0.5,
        help="seconds between samples of the trees' memory (0: none)",
    )
    p.add_argument("--quick", action="store_true", help="tiny model, a few steps (CI)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if (
        args.warmup < 1
        or args.steps < 1
        or args.warmup % args.log_every
        or args.steps % args.log_every
    ):
        raise SystemExit("--warmup and --steps must be at least 1 and multiples of --log-every")
    if args.eigenvals is None:
        args.eigenvals = str(EIGENVALUES) if EIGENVALUES.exists() else "none"

    import torch

    from nextvlad import _args

    overrides = dict(_args.OVERRIDE(text) for text in args.overrides)
    tf_model = tf_config(args.preset, overrides) if args.tf_python else None
    from nextvlad.models import get_config

    num_classes = get_config(args.preset, **overrides).num_classes
    report: dict[str, Any] = {
        "preset": args.preset,
        "overrides": overrides,
        "batch_size": args.batch_size,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "eigenvals": args.eigenvals,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),  # train's default in the same environment
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_before": _loadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="e2e-train-") as tmp:
        work = Path(tmp)
        data = args.data or synthesize(args, work / "data", num_classes)
        report["data"] = {
            "glob": args.data or "(synthetic)",
            "frames": None if args.data else args.frames,
            **describe_data(data),
        }
        if tf_model is not None:
            report["tf_reference"] = run_tf(args, data, work, tf_model)
        report["ours"] = {
            precision: run_ours(args, data, work, precision)
            for precision in args.precision.split(",")
        }
    if tf_model is not None:
        report["vs_tf_reference"] = ratios(report["ours"], report["tf_reference"])
    report["loadavg_after"] = _loadavg()
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
