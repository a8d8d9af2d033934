"""The data layer stands apart from the models (the data benchmark's test is in
benchmarks/tests/test_data_throughput.py)."""

from __future__ import annotations

import subprocess
import sys


def test_data_does_not_import_models() -> None:
    code = (
        "import sys, nextvlad.data, nextvlad.cli.data;"
        "print(sorted(m for m in sys.modules if m.startswith(('nextvlad.nn', 'nextvlad.models'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
