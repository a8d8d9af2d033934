"""benchmarks/data_throughput.py runs in its quick mode and reports what it read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "data_throughput.py"


def test_throughput_benchmark_quick() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(out.stdout)
    assert report["one_process"]["examples"] == 64
    assert report["workers_2"]["examples"] == 64
    assert report["one_process"]["examples_per_s"] > 0


def test_throughput_benchmark_s3_quick() -> None:
    """--source s3: local and loopback-S3 figures in one run, the same videos read by each."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--source", "s3", "--quick", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(out.stdout)
    assert report["source"] == "s3"
    for side in ("local", "remote"):
        for key in ("one_process", "workers_2"):
            assert report[side][key]["examples"] == 64, (side, key)
            assert report[side][key]["examples_per_s"] > 0
            assert report[side][key]["mb_per_s"] > 0
    cache = report["remote"]["cache_workers_2"]
    assert cache["examples"] == 64
    assert cache["cached_shards"] == 4  # read whole, so every shard was copied in epoch 1
    assert cache["epoch_1_mb_per_s"] > 0 and cache["epoch_2_mb_per_s"] > 0
    assert set(report["ratios"]) == {
        "one_process",
        "workers_2",
        "cache_workers_2_epoch_1",
        "cache_workers_2_epoch_2",
    }
    assert len(report["load_average_before"]) == len(report["load_average_after"]) == 3
