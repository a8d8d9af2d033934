"""Training and inference throughput of a preset on random uint8 frames.

    python benchmarks/train_throughput.py --preset nextvlad-8g-128k-2048h --batch-size 80 --json

For every path (``reference``: the plain formulation, padded frames computed then masked,
per-tensor Adam; ``default``: what ``nextvlad train`` runs, padded frames skipped and the fused
Adam; ``folded``: the default with NeXtVLAD's expansion FC folded away; all the same function)
and mode (``train``: input transform, forward, the
reference's loss, backward, per-tensor clipping, Adam; ``infer``: transform and forward without
gradients) it reports examples/s (batch / median step time after warm-up), the peak RSS of a
fresh process doing only that, the model FLOPs per example (counted by
``torch.utils.flop_counter``) and the FLOP utilisation against a 4096 x 4096 fp32 matmul peak
measured in the same run. Speeds are ratios to be compared within one run, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch


def _frames(
    args: argparse.Namespace, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    low, _, high = args.frames.partition("-")
    lo, hi = int(low), int(high or low)
    num_frames = torch.randint(lo, hi + 1, (args.batch_size,), generator=generator)
    t = int(num_frames.max())
    frames = torch.randint(
        0, 256, (args.batch_size, t, 1152), dtype=torch.uint8, generator=generator
    )
    return frames, num_frames


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from nextvlad.losses import yt8m_loss
    from nextvlad.models import InputTransform, create_model
    from nextvlad.nn import NeXtVLAD
    from nextvlad.training.loop import clip_each_gradient
    from nextvlad.training.optim import adam

    torch.manual_seed(0)
    overrides = json.loads(args.overrides)
    model = create_model(args.preset, **overrides)
    for module in model.modules():
        if isinstance(module, NeXtVLAD):
            module.folded = args.path == "folded"
            module.skip_padding = args.path != "reference"
    transform = InputTransform((1024, 128))
    parameters = [p for p in model.parameters() if p.requires_grad]
    if args.path == "reference":
        optimizer = torch.optim.Adam(parameters, lr=2e-4, fused=False)
    else:
        optimizer = adam(parameters, lr=2e-4, eps=1e-8)
    generator = torch.Generator().manual_seed(1)
    frames, num_frames = _frames(args, generator)
    num_classes = model.config.num_classes  # type: ignore[union-attr]
    labels = (torch.rand(args.batch_size, num_classes, generator=generator) < 0.001).float()

    def step() -> None:
        if args.mode == "train":
            out = model(transform(frames, num_frames), num_frames)
            loss = yt8m_loss(
                out.logits,
                labels,
                branch_logits=out.branch_logits,
                l2_tensors=model.regularized_parameters(),
            )["total"]  # type: ignore[operator]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_each_gradient(parameters, 1.0)
            optimizer.step()
        else:
            with torch.no_grad():
                model(transform(frames, num_frames), num_frames)

    model.train(args.mode == "train")
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    extra = _metrics_cost(args, model, transform, frames, num_frames, labels, median)
    return {
        **extra,
        "examples_per_s": args.batch_size / median,
        "median_step_s": median,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "gflop_per_example": counter.get_total_flops() / args.batch_size / 1e9,
        "mean_frames": float(num_frames.float().mean()),
        "padded_frames": int(frames.shape[1]),
    }


def _metrics_cost(
    args: argparse.Namespace,
    model: torch.nn.Module,
    transform: torch.nn.Module,
    frames: torch.Tensor,
    num_frames: torch.Tensor,
    labels: torch.Tensor,
    step_s: float,
) -> dict[str, float]:
    """Inference only: what `nextvlad eval` adds to a batch's forward pass (the loss and the
    official metrics' update, plus their final computation spread over the timed batches)."""
    if args.mode != "infer":
        return {}
    from nextvlad.losses import cross_entropy
    from nextvlad.metrics import YT8MMetrics

    with torch.no_grad():
        logits = model(transform(frames, num_frames), num_frames).logits
    metrics = YT8MMetrics(logits.shape[1])
    start = time.perf_counter()
    for _ in range(args.steps):
        float(cross_entropy(logits, labels))
        metrics.update(torch.sigmoid(logits), labels)
    metrics.compute()
    per_batch = (time.perf_counter() - start) / args.steps
    return {"eval_metrics_s_per_batch": per_batch, "eval_metrics_share": per_batch / step_s}


def _matmul_peak() -> float:
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    times = []
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * 4096**3 / min(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="nextvlad-8g-128k-2048h")
    parser.add_argument(
        "--set",
        dest="overrides",
        default="{}",
        help="JSON of preset overrides, e.g. '{\"num_clusters\": 16}'",
    )
    parser.add_argument("--batch-size", type=int, default=80)
    parser.add_argument("--frames", default="300", help="frames a video: N or LOW-HIGH (uniform)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--paths",
        default="reference,default,folded",
        help="comma-separated: reference (the plain formulation: padded frames computed and "
        "masked, per-tensor Adam), default (what `nextvlad train` runs: padded frames skipped, "
        "fused Adam), folded (default + `--folded`)",
    )
    parser.add_argument("--modes", default="train,infer", help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 step (CI smoke)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--path", help=argparse.SUPPRESS)  # internal: measure in this process
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.batch_size, args.steps, args.warmup = "nextvlad-8g-16k-256h", 4, 1, 0
        args.overrides = json.dumps({"num_classes": 25})
        args.frames = "20-40"
    if args.path:
        print(json.dumps(_measure(args)))
        return 0
    peak = _matmul_peak()
    results: dict[str, Any] = {
        "preset": args.preset,
        "overrides": json.loads(args.overrides),
        "batch_size": args.batch_size,
        "frames": args.frames,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "matmul_peak_gflops_fp32": round(peak, 1),
        "paths": {},
    }
    for path in args.paths.split(","):
        for mode in args.modes.split(","):
            command = [
                sys.executable,
                __file__,
                "--path",
                path,
                "--mode",
                mode,
                "--preset",
                args.preset,
                "--set",
                args.overrides,
                "--batch-size",
                str(args.batch_size),
                "--frames",
                args.frames,
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{path}/{mode} failed:\n{done.stderr[-2000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            achieved = row["gflop_per_example"] * row["examples_per_s"]
            row["flop_utilisation"] = round(achieved / peak, 3)
            results["paths"].setdefault(path, {})[mode] = row
    if "default" in results["paths"]:
        base = results["paths"]["default"]
        for rows in results["paths"].values():
            for mode, row in rows.items():
                row["speedup_vs_default"] = round(
                    row["examples_per_s"] / base[mode]["examples_per_s"], 3
                )
    if args.json:
        print(json.dumps(results))
    else:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
