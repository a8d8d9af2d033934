"""`nextvlad train` on one GPU from TFRecords on local disk: examples/s, the loader's alone, memory.

    bash benchmarks/gpu.sh                     # writes the data, then runs this
    python benchmarks/gpu_throughput.py --data '/tmp/nextvlad-gpu/data/*.tfrecord' --json

Trains the paper's configuration (``nextvlad-8g-128k-2048h``, 3,862 classes) through the real
loader (``VideoDataset``, DataLoader workers, pinned memory) and ``nextvlad.training.train``
itself, with ``--precision bf16 --compile`` and ``--sync-debug`` (any host-device
synchronisation inside a step is an error), and reports: the training examples/s (the
median of the --log-every intervals after the first, which holds compilation), the loader's
examples/s alone (one pass with the same workers, batch size and pinning, nothing else
running), and the GPU memory (peak allocated and reserved). It runs on the CPU too, for a
smoke test (``--device cpu --quick``), where the figures mean little.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from nextvlad._cpu_env import apply_cpu_defaults

apply_cpu_defaults()  # the process settings `nextvlad train` runs with, before torch loads

import torch  # noqa: E402


def loader_examples_per_s(files: str, args: argparse.Namespace) -> float:
    """One pass of the training loader alone (after its workers have started)."""
    from nextvlad.data import VideoDataset

    dataset = VideoDataset(files, num_classes=args.classes, shuffle=True, seed=0)
    loader = dataset.loader(
        args.batch_size, num_workers=args.num_workers, pin_memory=args.device == "cuda"
    )
    batches = iter(loader)
    count = len(next(batches))  # the workers are up
    start = time.perf_counter()
    for batch in batches:
        count += len(batch)
    return (count - args.batch_size) / max(time.perf_counter() - start, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="frame-level TFRecords (glob)")
    parser.add_argument("--preset", default="nextvlad-8g-128k-2048h")
    parser.add_argument("--classes", type=int, default=3862, help="classes in the data (3862)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=300, help="training steps (300)")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--no-compile", action="store_true", help="eager, not --compile")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--quick", action="store_true", help="a few small steps (smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    from nextvlad.training import TrainOptions, train

    overrides: dict[str, Any] = {"num_classes": args.classes}
    if args.quick:
        args.steps, args.log_every, args.batch_size = 4, 2, 8
        overrides.update(num_clusters=8, hidden_size=32)
    result: dict[str, Any] = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "compile": not args.no_compile,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
        "num_workers": args.num_workers,
        "loader_examples_per_s": loader_examples_per_s(args.data, args),
    }
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as run:
        options = TrainOptions(
            preset=args.preset,
            train_data=[args.data],
            out=str(Path(run) / "run"),
            model_overrides=overrides,
            eigenvals="none",
            batch_size=args.batch_size,
            max_steps=args.steps,
            log_every=args.log_every,
            eval_every=0,
            checkpoint_every=10**9,  # one checkpoint, at the end
            num_workers=args.num_workers,
            device=args.device,
            precision=args.precision,
            compile=not args.no_compile,
            sync_debug=args.device == "cuda",
            progress=False,
        )
        started = time.perf_counter()
        summary = train(options)
        result["wall_s"] = round(time.perf_counter() - started, 1)
    result["train_examples_per_s"] = summary["examples_per_s"]
    result["steps"] = summary["steps"]
    if args.device == "cuda":
        result["gpu_peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["gpu_peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
