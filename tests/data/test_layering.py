"""The data layer stands apart from the models, and the benchmark script runs."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_data_does_not_import_models() -> None:
    code = (
        "import sys, nextvlad.data, nextvlad.cli.data;"
        "print(sorted(m for m in sys.modules if m.startswith(('nextvlad.nn', 'nextvlad.models'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_throughput_benchmark_quick() -> None:
    script = REPO_ROOT / "benchmarks" / "data_throughput.py"
    out = subprocess.run(
        [sys.executable, str(script), "--quick", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(out.stdout)
    assert report["one_process"]["examples"] == 64
    assert report["workers_2"]["examples"] == 64
    assert report["one_process"]["examples_per_s"] > 0
