"""benchmarks/serve_load.py runs in its quick mode: every level answers, the overload only
200s and 503s, and the report holds the figures docs/serving.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "serve_load.py"


@pytest.mark.slow
def test_serve_load_quick() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    report = json.loads(out.stdout)
    assert [level["concurrency"] for level in report["levels"]] == [1, 4, 16]
    for level in report["levels"]:
        assert level["errors"] == 0 and level["statuses"].get("200", 0) > 0
    overload = report["overload"]
    assert overload["errors"] == 0
    assert sum(overload["statuses"].values()) == overload["requests"]
    assert report["offline"]["videos_per_s"] > 0
    assert report["goals"]["overload_only_200_and_503"] is True
    assert report["rss_levels"]["max_mib"] > 50  # the server's own RSS, not a wrapper's
