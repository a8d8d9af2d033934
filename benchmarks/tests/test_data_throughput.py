"""benchmarks/data_throughput.py runs in its quick mode and reports what it read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
