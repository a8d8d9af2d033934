"""`nextvlad demo` end to end at a tiny size."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from nextvlad.cli import main
from nextvlad.demo import folder_bytes


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
    started = time.perf_counter()
    assert main(args) == 0
    elapsed = time.perf_counter() - started
    printed = capsys.readouterr().out
    assert "NeXtVLAD" in printed and "mean pool" in printed and "GAP" in printed
    rows = json.loads((out / "results.json").read_text())
    assert [r["preset"] for r in rows] == ["nextvlad-8g-16k-256h", "meanpool-256h"]
    assert all(0.0 <= r["gap"] <= 1.0 and r["steps"] == 2 for r in rows)
    assert len((out / "predictions.csv").read_text().splitlines()) == 13
    # Where it writes, said first; how long it took and what it left there, at the end.
    assert printed.splitlines()[0].startswith(f"working folder: {out.resolve()} ")
    took = re.search(r"^whole demo: (\d+) min (\d+) s$", printed, re.MULTILINE)
    assert took is not None, printed
    assert 0.8 * elapsed - 1 <= 60 * int(took.group(1)) + int(took.group(2)) <= elapsed + 1
    left = re.search(
        rf"^{re.escape(str(out.resolve()))} now holds (\d+) MiB \((\d+) MiB", printed, re.M
    )
    assert left is not None, printed
    assert int(left.group(1)) == round(folder_bytes(out) / 2**20)
    assert int(left.group(2)) == round(folder_bytes(out / "data") / 2**20)
    assert 0 < folder_bytes(out / "data") < folder_bytes(out)
    assert main(args) == 0  # reuses the data, retrains afresh


def test_folder_bytes_counts_every_file(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x").write_bytes(b"123")
    (tmp_path / "a" / "b" / "y").write_bytes(b"4567")
    assert folder_bytes(tmp_path) == 7
    assert folder_bytes(tmp_path / "missing") == 0
