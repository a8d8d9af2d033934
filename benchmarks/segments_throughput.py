"""Time and peak memory of `nextvlad score-segments` on a synthetic segment-rated set.

Writes ``--videos`` frame-level records (one frame each: the scorer reads only the segment
keys) with ``--segments`` rated segments a video, each video rated for one of ``--classes``
classes (about 1 in 3 positive), and a submission with one line per class of
``--per-class`` entries (the rated segments of the class shuffled among unrated ids),
then runs the command in a child process and reports its wall time and peak RSS, next to the
peak RSS of a child that only imports what the command imports. Prints one JSON object.

    python benchmarks/segments_throughput.py                 # 25,000 rated segments, 1,000 classes
    python benchmarks/segments_throughput.py --quick         # seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from nextvlad.data import Segments, Video, encode_video, write_records

_IMPORTS = "import nextvlad.cli, nextvlad.cli.segments, nextvlad.data, nextvlad.metrics"


def _write_data(folder: Path, videos: int, segments: int, classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    frames = {"rgb": np.zeros((1, 1024), np.uint8), "audio": np.zeros((1, 128), np.uint8)}
    by_class: dict[int, list[str]] = {c: [] for c in range(classes)}
    records = []
    for v in range(videos):
        vid = f"v{v:06d}"
        cls = int(rng.integers(classes))
        starts = np.sort(rng.choice(60, segments, replace=False)).astype(np.int64) * 5
        scores = (rng.random(segments) < 1 / 3).astype(np.float32)
        seg = Segments(starts, starts + 5, np.full(segments, cls, np.int64), scores)
        records.append(encode_video(Video(vid, np.array([cls], np.int64), frames, 1, seg)))
        by_class[cls].extend(f"{vid}:{s}" for s in starts)
    write_records(folder / "rated.tfrecord", records)
    return by_class


def _write_submission(path: Path, by_class: dict, per_class: int, seed: int) -> int:
    rng = random.Random(seed)
    entries = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("Class,Segments\n")
        for cls, rated in by_class.items():
            unrated = [f"u{cls}x{i}:{5 * (i % 60)}" for i in range(max(0, per_class - len(rated)))]
            line = rated[:per_class] + unrated
            rng.shuffle(line)
            entries += len(line)
            f.write(f"{cls}," + " ".join(line) + "\n")
    return entries


def _child_peak_rss(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of a child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}): {' '.join(argv)}")
    return wall, usage.ru_maxrss / 1024, out  # ru_maxrss in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=5000)
    p.add_argument("--segments", type=int, default=5, help="rated segments a video (5)")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--per-class", type=int, default=10_000, help="entries a class line")
    p.add_argument("--top-n", type=int, default=100_000)
    p.add_argument("--quick", action="store_true", help="200 videos, 50 classes, 500 a line")
    p.add_argument("--json", action="store_true", help="(the output is always JSON)")
    args = p.parse_args(argv)
    if args.quick:
        args.videos, args.classes, args.per_class = 200, 50, 500
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        by_class = _write_data(folder, args.videos, args.segments, args.classes, seed=0)
        entries = _write_submission(folder / "sub.csv", by_class, args.per_class, seed=1)
        prepare = time.perf_counter() - started
        _, import_peak, _ = _child_peak_rss([sys.executable, "-c", _IMPORTS])
        command = [sys.executable, "-m", "nextvlad", "score-segments", "--json"]
        command += ["--submission", str(folder / "sub.csv"), "--top-n", str(args.top_n)]
        command += ["--data", str(folder / "rated.tfrecord")]
        wall, peak, out = _child_peak_rss(command)
        scored: dict[str, Any] = json.loads(out)
        result = {
            "videos": args.videos,
            "rated_segments": scored["num_rated_pairs"],
            "positive_segments": scored["num_positive_segments"],
            "classes": scored["num_classes"],
            "submission_entries": entries,
            "submission_mib": round((folder / "sub.csv").stat().st_size / 2**20, 1),
            "map": scored["map"],
            "wall_s": round(wall, 2),
            "command_s": scored["seconds"],
            "entries_per_s": round(entries / scored["seconds"]),
            "peak_rss_mib": round(peak, 1),
            "import_peak_rss_mib": round(import_peak, 1),
            "prepare_s": round(prepare, 2),
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
