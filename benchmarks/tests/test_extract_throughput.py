"""benchmarks/extract_throughput.py --quick: the whole production path on a tiny video."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

import extract_throughput


@pytest.mark.slow
def test_quick_run_reports_every_stage(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert extract_throughput.main(["--quick", "--json", "--workdir", str(tmp_path)]) == 0
    report = json.loads(out.getvalue())
    ours = report["ours"]
    assert ours["frames"] == 2 and ours["videos"] == 1
    assert ours["frames_per_second"] > 0
    assert set(ours["breakdown_seconds"]) == {
        "decode_and_choose",
        "network",
        "pca_and_quantize",
        "write",
    }
    assert ours["breakdown_seconds"]["network"] > 0
    assert report["decode_alone"]["frames"] == 2
    assert "google" not in report  # --quick leaves Google's way out
