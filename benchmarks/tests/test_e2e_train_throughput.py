"""benchmarks/e2e_train_throughput.py: `nextvlad train` end to end in its quick mode (ours
alone, as CI runs it; with the TensorFlow side where ~/tfenv exists), and the arithmetic of
its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e_train_throughput import TF_PYTHON, ratios, run_tree, window

SCRIPT = Path(__file__).resolve().parents[1] / "e2e_train_throughput.py"
QUICK_STEPS = 2


def _quick(*extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", *extra],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _check_ours(row: dict[str, Any], precision: str) -> None:
    assert row["precision"] == precision and row["log_every"] == 1
    assert row["num_workers"] == 2  # train's default
    assert row["all_batches_full"]  # enough videos that no epoch ended
    assert row["examples_per_s"] > 0 and row["window_s"] > 0 and row["median_step_s"] > 0
    assert len(row["step_times_s"]) == QUICK_STEPS and all(t > 0 for t in row["step_times_s"])
    assert row["examples_per_s"] == pytest.approx(8 * QUICK_STEPS / row["window_s"], rel=1e-2)
    assert row["peak_rss_gib"] > 0.1  # torch alone takes more
    if Path("/proc/self/smaps_rollup").exists():
        assert row["peak_tree_pss_gib"] > 0 and row["peak_tree_rss_gib"] > 0
        assert row["max_processes"] >= 1
    assert row["command"][2:4] == ["nextvlad", "train"]
    assert any(line.startswith(f"trained to step {1 + QUICK_STEPS} ") for line in row["log"])
    assert len(row["loadavg_before"]) == len(row["loadavg_after"]) == 3


def test_quick_ours_alone() -> None:
    report = _quick()
    assert "tf_reference" not in report and "vs_tf_reference" not in report
    assert report["preset"] == "nextvlad-8g-16k-256h" and report["overrides"] == {"num_classes": 25}
    assert report["batch_size"] == 8 and report["timed_steps"] == QUICK_STEPS
    data = report["data"]
    assert (
        data["frames"] == "20-40"
        and data["files"] == 2
        and data["videos"] == 8 * 6
        and data["described_files"] == 2
    )
    assert 20 <= data["min_frames"] <= data["mean_frames"] <= data["max_frames"] <= 40
    assert report["torch_threads"] >= 1 and report["cpu_count"] >= 1
    assert set(report["ours"]) == {"fp32"}
    _check_ours(report["ours"]["fp32"], "fp32")
    assert len(report["loadavg_before"]) == len(report["loadavg_after"]) == 3


@pytest.mark.slow
def test_quick_against_tensorflow() -> None:
    """Both sides on the same shards; the ratios are ours over TF's (15-30 s)."""
    if not TF_PYTHON.exists():
        pytest.skip(f"no TensorFlow environment at {TF_PYTHON}")
    report = _quick("--tf-python", str(TF_PYTHON), "--precision", "fp32,bf16")
    tf = report["tf_reference"]
    assert tf["examples_per_s"] > 0 and tf["peak_rss_gib"] > 0 and tf["window_s"] > 0
    assert len(tf["step_times_s"]) == QUICK_STEPS and tf["files"] == 2
    assert tf["padded_frames"] == 300 and 20 <= tf["mean_frames"] <= 40
    assert tf["config"]["vocab"] == 25 and tf["config"]["clusters"] == 16
    assert tf["config"]["expansion"] == 1 and tf["config"]["hidden"] == 256
    assert tf["batch_size"] == 8 and tf["readers"] == 8
    for precision in ("fp32", "bf16"):
        row = report["ours"][precision]
        _check_ours(row, precision)
        ratio = report["vs_tf_reference"][precision]
        assert ratio["examples_per_s"] == round(row["examples_per_s"] / tf["examples_per_s"], 3)
        assert ratio["peak_rss"] == round(row["peak_rss_gib"] / tf["peak_rss_gib"], 3)


def test_window_and_ratios() -> None:
    """Examples/s over the steps after the warm-up, from the steps' end times."""
    times = {1: 100.0, 2: 101.0, 3: 103.0, 4: 104.0, 5: 106.0}
    row = window(times, warmup=1, steps=4, batch_size=80, log_every=1)
    assert row["examples_per_s"] == 80 * 4 / 6.0 and row["window_s"] == 6.0
    assert row["step_times_s"] == [1.0, 2.0, 1.0, 2.0] and row["median_step_s"] == 1.5
    assert row["last_timed_step_at"] == 106.0
    logged = {10: 0.0, 20: 30.0, 30: 50.0}  # --log-every 10: a time every 10 steps
    row = window(logged, warmup=10, steps=20, batch_size=80, log_every=10)
    assert row["examples_per_s"] == 80 * 20 / 50.0 and row["step_times_s"] == [3.0, 2.0]
    with pytest.raises(SystemExit, match=r"steps \[3, 4, 5\]"):
        window({1: 0.0, 2: 1.0}, warmup=1, steps=4, batch_size=80, log_every=1)
    ours = {
        "fp32": {"examples_per_s": 15.0, "peak_rss_gib": 3.0},
        "bf16": {"examples_per_s": 30.0, "peak_rss_gib": 2.0},
    }
    tf = {"examples_per_s": 20.0, "peak_rss_gib": 4.0}
    assert ratios(ours, tf) == {
        "fp32": {"examples_per_s": 0.75, "peak_rss": 0.75},
        "bf16": {"examples_per_s": 1.5, "peak_rss": 0.5},
    }


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="Linux /proc only")
def test_tree_memory_counts_the_children(tmp_path: Path) -> None:
    """A child's child that holds 200 MiB shows in the kernel's peak (wait4) and in the sampled
    sums of the tree, as a loader worker of `nextvlad train` would."""
    child = (
        "import os, subprocess, sys, time\n"
        'code = \'import time; b = bytearray(200 * 2**20); b[::4096] = b"x" * len(b[::4096]); '
        "time.sleep(1.5)'\n"
        "subprocess.run([sys.executable, '-c', code], check=True)\n"
    )
    code, peak, wall, sampler = run_tree([sys.executable, "-c", child], tmp_path / "log", 0.1)
    assert code == 0 and wall > 1.0
    assert peak >= 0.19  # GiB: the grandchild's 200 MiB
    peaks = sampler.peaks()
    assert peaks["max_processes"] == 2
    assert peaks["peak_tree_rss_gib"] >= 0.19 and peaks["peak_tree_pss_gib"] >= 0.19
    assert sampler.peaks(until=0.0)["peak_tree_rss_gib"] is None  # nothing sampled before
