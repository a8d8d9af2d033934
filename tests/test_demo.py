"""`nextvlad demo` end to end at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nextvlad.cli import main


def test_demo_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = [
        "demo",
        "--out",
        str(out),
        "--videos",
        "24",
        "--eval-videos",
        "12",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--no-progress",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "NeXtVLAD" in printed and "mean pool" in printed and "GAP" in printed
    rows = json.loads((out / "results.json").read_text())
    assert [r["preset"] for r in rows] == ["nextvlad-8g-16k-256h", "meanpool-256h"]
    assert all(0.0 <= r["gap"] <= 1.0 and r["steps"] == 2 for r in rows)
    assert len((out / "predictions.csv").read_text().splitlines()) == 13
    assert main(args) == 0  # reuses the data, retrains afresh
