"""Training and inference throughput of `nextvlad train`'s own step, on random uint8 frames.

    python benchmarks/train_throughput.py --frames 60-300 --json
    python benchmarks/train_throughput.py --frames 60-300 --tf-python ~/tfenv/bin/python --json
    python benchmarks/train_throughput.py --frames yt8m --profile --profile-md docs/performance.md
    python benchmarks/train_throughput.py --frames yt8m --contention both \\
        --tf-python ~/tfenv/bin/python --json

``train`` times the step `nextvlad train` runs, built by the same function
(``nextvlad.training.step.build_step``) from the same options: ``TrainStep.prepare`` (the
host's packing of the real frames, the copies) and the step (input transform, forward, the
reference's loss, backward, per-tensor clipping, fused Adam with TF1's epsilon, the on-device
non-finite bookkeeping), with the loop's read of the device every ``--log-every`` (10) steps
and once at the end of the timed steps. ``infer`` times `nextvlad eval`'s batches
(``nextvlad.training.evaluate.iter_predictions``: transform and forward in eval mode, logits
to the host); ``int8`` the same with ``--quantize int8``.

Paths (each in a fresh process, so that its peak RSS is its own): ``default`` (the plain
options: NeXtVLAD folded or not by its rule, ``FOLD_MIN_FRAMES``), ``unfolded``
(``--no-folded``), ``folded`` (``--folded``), ``compiled`` (``--compile``, training only;
compilation is not timed), ``bf16`` (``--precision bf16``), ``bf16-folded`` and
``bf16-unfolded`` (with ``--folded``, ``--no-folded``). Reported per path and mode: examples/s (batch x timed steps /
their wall time), the peak RSS, the model FLOPs per example (``torch.utils.flop_counter``,
oneDNN's products included) and the utilisation against the GEMM peak of the path's dtype,
measured in the same run (``matmul_peaks_gflops``, best of 3 after a warm-up: fp32 by
``nextvlad.nn.linear`` on 4096 x 4096, which is oneDNN; bf16 by the same linear under bf16
autocast, as ``--precision bf16`` runs it; int8 by ``nextvlad.models.quantize.quantize_int8``'s
dynamic int8 linear, 4096 in and out, on 4096 rows; the ``bf16*`` paths' rows use the bf16 peak, ``int8``
rows the int8 peak, the others fp32). ``--tf-python`` also runs ``tf_reference_throughput.py``
(the original's formulation in TensorFlow, in its own virtual environment) with the same batch
and frames, and reports each path's ratio to it, with the load average before and after.

``--frames``: ``N``, ``LOW-HIGH`` (uniform integers) or ``yt8m`` (``min(U(120, 500), 300)``:
YouTube-8M's video lengths in seconds, cut at the 300 frames its reader keeps), drawn by
``benchmarks/_frames.py``, which the TF script uses too, so both measure the same lengths;
``--frames 60-300,300,yt8m`` measures each in one run. ``--repeats N`` runs N rounds (TF, then
every path) for each and reports the median round of each path and the ratios of the medians.

``--profile`` adds, in each path's process, one step under ``torch.profiler`` (after the timed
steps, so not part of their time nor of the peak RSS): by op, its self CPU time, share of the
step, calls, FLOPs (oneDNN's and the int8 linears' counted from their shapes:
``benchmarks/_roofline.py``), GFLOP/s and fraction of its dtype's peak; each row's ``profile``
holds the ops of at least 1% of the step (15 at most). ``--profile-md PATH`` (implies
``--profile``) writes those as Markdown tables, one per frames, path and mode, between
``<!-- roofline:begin -->`` and ``<!-- roofline:end -->`` in PATH (docs/performance.md has them).

``--contention on`` runs one busy process (a pure-Python spin loop, one core) for the duration
of every measurement, the TF reference's included (``benchmarks/_contention.py``): what the
speeds are when another job shares the machine. ``--contention both`` measures every path
without and then with it in each round; the results without are where they always were, those
with it under each distribution's ``contention_on``, each with its ratios to TF measured under
the same setting.
Figures are ratios within one run; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _frames
import _roofline
from _contention import contention
from nextvlad._cpu_env import apply_cpu_defaults

apply_cpu_defaults()  # the process settings `nextvlad train` runs with, before torch loads

import torch  # noqa: E402

PATHS = {
    "default": {},
    "unfolded": {"folded": False},
    "folded": {"folded": True},
    "compiled": {"compile": True},
    "bf16": {"precision": "bf16"},
    "bf16-folded": {"precision": "bf16", "folded": True},
    "bf16-unfolded": {"precision": "bf16", "folded": False},
}
CONTENTION = {"off": ["off"], "on": ["on"], "both": ["off", "on"]}
HERE = Path(__file__).resolve().parent


def _register_onednn_flops() -> None:
    """Count oneDNN's matrix products (``nextvlad.nn.linear``) like aten's."""
    from torch.utils.flop_counter import register_flop_formula

    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return

    @register_flop_formula(op)
    def _flops(x_shape: Any, w_shape: Any, *args: Any, **kwargs: Any) -> int:
        rows = 1
        for size in x_shape[:-1]:
            rows *= size
        return 2 * rows * w_shape[0] * w_shape[1]


def _batch(args: argparse.Namespace, num_classes: int) -> Any:
    from nextvlad.data import Batch

    g = torch.Generator().manual_seed(1)
    num_frames = torch.from_numpy(_frames.num_frames(args.frames, args.batch_size))
    t = int(num_frames.max())
    frames = torch.randint(0, 256, (args.batch_size, t, 1152), dtype=torch.uint8, generator=g)
    frames[torch.arange(t) >= num_frames[:, None]] = 0  # as the loader pads
    labels = (torch.rand(args.batch_size, num_classes, generator=g) < 0.001).float()
    ids = [f"v{i}" for i in range(args.batch_size)]
    return Batch(ids=ids, labels=labels, frames=frames, num_frames=num_frames)


def _profile(run: Callable[[int], None], model: torch.nn.Module) -> dict[str, Any]:
    """One more step (``run(1)``) under the profiler, by op (``_roofline.aggregate``). The int8
    linears' FLOPs are counted here, from their layers' sizes and inputs: the profiler records
    no shape for their packed weights."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.profiler import ProfilerActivity, profile

    int8_flops = [0]

    def count(layer: Any, inputs: tuple[torch.Tensor, ...]) -> None:
        int8_flops[0] += 2 * inputs[0].numel() * layer.out_features  # 2 * rows * in * out

    hooks = [
        m.register_forward_pre_hook(count) for m in model.modules() if isinstance(m, DynamicLinear)
    ]
    try:
        activities = [ProfilerActivity.CPU]
        with profile(activities=activities, record_shapes=True, with_flops=True) as prof:
            start = time.perf_counter()
            run(1)
            seconds = time.perf_counter() - start
    finally:
        for hook in hooks:
            hook.remove()
    extra = {_roofline.INT8_LINEAR: int8_flops[0]} if hooks else None
    return _roofline.aggregate(prof.events(), seconds, extra)


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    from nextvlad.models import InputTransform, build_model, get_config
    from nextvlad.training.evaluate import iter_predictions
    from nextvlad.training.options import TrainOptions
    from nextvlad.training.step import build_step

    _register_onednn_flops()
    torch.manual_seed(0)
    device = torch.device(args.device)
    path = "default" if args.mode == "int8" else args.path
    options = TrainOptions(
        preset=args.preset,
        train_data=["(random frames)"],
        out="(none)",
        model_overrides=json.loads(args.overrides),
        max_steps=args.steps,
        **PATHS[path],
    )
    config = get_config(options.preset, **options.model_overrides)
    model = build_model(config).to(device)
    transform = InputTransform(config.stream_dims).to(device)
    batch = _batch(args, config.num_classes)
    forward: torch.nn.Module = model
    if args.mode == "train":
        step = build_step(model, transform, options, config, device)
        model.train()

        def run(count: int) -> None:
            for i in range(count):
                with step.sync_debug(device.type == "cuda"):
                    step(step.prepare(batch), i * args.batch_size)
                if (i + 1) % options.log_every == 0:
                    step.read()
            step.read()

    else:
        for module in model.modules():
            if hasattr(module, "folded"):
                module.folded = options.nextvlad_folded  # "auto" by default, as `nextvlad eval`
        if options.compile:
            forward = torch.compile(model)  # type: ignore[assignment]

        def run(count: int) -> None:
            for _ in iter_predictions(forward, transform, [batch] * count, device,
                                      precision=options.precision):  # fmt: skip
                pass

    counter = FlopCounterMode(display=False)  # the float model's FLOPs, also for int8
    with counter:
        run(1)
    if args.mode == "int8":
        from nextvlad.models.quantize import quantize_int8

        forward = quantize_int8(model)
    run(max(args.warmup, 1 if options.compile else 0))  # compilation happens here
    start = time.perf_counter()
    run(args.steps)
    seconds = time.perf_counter() - start
    row = {
        "examples_per_s": args.batch_size * args.steps / seconds,
        "step_s": seconds / args.steps,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "gflop_per_example": counter.get_total_flops() / args.batch_size / 1e9,
        "mean_frames": float(batch.num_frames.float().mean()),
        "padded_frames": int(batch.frames.shape[1]),
    }
    if args.profile:  # after the timed steps and the peak RSS: neither includes it
        row["profile"] = _profile(run, forward)
    return row


def _best_of_3(product: Callable[[], Any], flops: int) -> float:
    """GFLOP/s of the fastest of 3 calls of ``product``, after one untimed call."""
    product()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    return flops / min(times) / 1e9


@torch.no_grad()
def _matmul_peaks(size: int = 4096) -> dict[str, float]:
    """GFLOP/s of a size x size x size product in each dtype, as the paths compute theirs:
    fp32 by the library's linear (oneDNN on CPUs), bf16 by the same linear under bf16 autocast
    (``--precision bf16``), int8 by ``quantize_int8``'s dynamic linear (``--quantize int8``:
    the input quantised on the fly, included)."""
    from nextvlad.models.quantize import quantize_int8
    from nextvlad.nn import linear

    flops = 2 * size**3
    a, b = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a.bfloat16(), b.bfloat16()

    def bf16() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return linear(a16, b16)

    int8 = quantize_int8(torch.nn.Sequential(torch.nn.Linear(size, size, bias=False)))
    return {
        "fp32": round(_best_of_3(lambda: linear(a, b), flops), 1),
        "bf16": round(_best_of_3(bf16, flops), 1),
        "int8": round(_best_of_3(lambda: int8(a), flops), 1),
    }


def _dtype(path: str, mode: str) -> str:
    """Which peak a path and mode's utilisation is against."""
    return "int8" if mode == "int8" else "bf16" if path.startswith("bf16") else "fp32"


def _subprocess(args: argparse.Namespace, path: str, mode: str) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--path", path, "--mode", mode, "--preset", args.preset,
        "--set", args.overrides, "--batch-size", str(args.batch_size), "--frames", args.frames,
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
    ]  # fmt: skip
    if args.profile:
        command.append("--profile")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{path}/{mode} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _tf_reference(args: argparse.Namespace) -> dict[str, Any]:
    """The original's formulation in TensorFlow, same batch, frames and steps, in the modes
    ours are compared with (its inference for our infer and int8)."""
    wanted = set(args.modes.split(","))
    modes = [mode for mode in ("train", "infer") if mode in wanted]
    if "int8" in wanted and "infer" not in modes:
        modes.append("infer")
    command = [
        args.tf_python, str(HERE / "tf_reference_throughput.py"), "--json",
        "--batch-size", str(args.batch_size), "--frames", args.frames,
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--modes", ",".join(modes),
    ]  # fmt: skip
    if args.quick:  # its own tiny model; the same batch size and frames as ours
        command = [
            args.tf_python, str(HERE / "tf_reference_throughput.py"), "--quick", "--json",
            "--frames", args.frames, "--modes", ",".join(modes),
        ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"tf_reference_throughput.py failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _ratios(paths: dict[str, Any], tf_rows: dict[str, Any]) -> dict[str, Any]:
    """Each path and mode's examples/s over the original's (int8 over its inference)."""
    out: dict[str, Any] = {}
    for path, rows in paths.items():
        for mode, row in rows.items():
            base = tf_rows.get("infer" if mode == "int8" else mode)
            if base:
                out.setdefault(path, {})[mode] = round(
                    row["examples_per_s"] / base["examples_per_s"], 3
                )
    return out


def _repeat(args: argparse.Namespace, peaks: dict[str, float], setting: str) -> dict[str, Any]:
    """One round under one contention setting: the TF reference (if asked for), then every
    path and mode, each measured with the busy process running if ``setting`` is on."""
    rep: dict[str, Any] = {"loadavg_before": [round(x, 2) for x in os.getloadavg()], "paths": {}}
    if args.tf_python:
        with contention(setting):
            rep["tf_reference"] = _tf_reference(args)
    for path in args.paths.split(","):
        for mode in args.modes.split(","):
            if mode == "int8" and path != "default":
                continue  # int8 is the default path's inference with --quantize int8
            if mode != "train" and path == "compiled":
                continue  # --compile is a training option
            with contention(setting):
                row = _subprocess(args, path, mode)
            dtype = _dtype(path, mode)
            row["peak_dtype"] = dtype
            row["flop_utilisation"] = round(
                row["gflop_per_example"] * row["examples_per_s"] / peaks[dtype], 3
            )
            if "profile" in row:
                row["profile"] = _roofline.top(row["profile"], peaks)
            rep["paths"].setdefault(path, {})[mode] = row
    rep["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return rep


def _median_rows(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per path and mode, the round with the median examples/s (its other figures with it)."""
    out: dict[str, Any] = {}
    for path, rows in rounds[0].items():
        for mode in rows:
            ranked = sorted((r[path][mode] for r in rounds), key=lambda x: x["examples_per_s"])
            out.setdefault(path, {})[mode] = ranked[len(ranked) // 2]
    return out


def _summary(args: argparse.Namespace, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one setting, their medians and the medians' ratios to TF."""
    block: dict[str, Any] = {"rounds": rounds, "paths": _median_rows([r["paths"] for r in rounds])}
    if args.tf_python:
        tf = [next(iter(r["tf_reference"]["paths"].values())) for r in rounds]
        block["tf_reference"] = _median_rows([{"tf": t} for t in tf])["tf"]
        block["vs_tf_reference"] = _ratios(block["paths"], block["tf_reference"])
    return block


def _distribution(args: argparse.Namespace, peaks: dict[str, float]) -> dict[str, Any]:
    """``--repeats`` rounds for one frame distribution, each under every contention setting
    in turn; without contention at the top, with it under ``contention_on``."""
    settings = CONTENTION[args.contention]
    rounds = [{s: _repeat(args, peaks, s) for s in settings} for _ in range(args.repeats)]
    counts = _frames.num_frames(args.frames, args.batch_size)
    block: dict[str, Any] = {"frames": args.frames, "mean_frames": float(counts.mean())}
    if "off" in settings:
        block.update(_summary(args, [r["off"] for r in rounds]))
    if "on" in settings:
        block["contention_on"] = _summary(args, [r["on"] for r in rounds])
    return block


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="examples:\n" + __doc__.split("\n\n")[1] + "\n\nwhat each figure is: this "
        "script's docstring and docs/performance.md (Benchmarks, Where the time goes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="nextvlad-8g-128k-2048h")
    parser.add_argument(
        "--set", dest="overrides", default="{}", help="JSON of preset overrides, e.g. '{}'"
    )
    parser.add_argument("--batch-size", type=int, default=80)
    parser.add_argument(
        "--frames",
        help=f"frames a video: {_frames.DISTRIBUTIONS}; several, comma-separated, are measured "
        "one after the other in the same run (default 300; 20-40 with --quick)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds (TF, then every path) per frame distribution; medians are reported",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--paths", default="default,folded", help=f"comma-separated, of {', '.join(PATHS)}"
    )
    parser.add_argument("--modes", default="train,infer", help="comma-separated: train,infer,int8")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--tf-python",
        metavar="PYTHON",
        help="a Python with TensorFlow (e.g. ~/tfenv/bin/python): also run the original's "
        "formulation and report ratios to it",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one more step per path and mode under torch.profiler, untimed: its ops' time, "
        "FLOPs and fraction of their dtype's peak in each row's 'profile'",
    )
    parser.add_argument(
        "--profile-md",
        metavar="PATH",
        help="write the profiles as Markdown tables between PATH's "
        f"{_roofline.BEGIN} and {_roofline.END} (implies --profile)",
    )
    parser.add_argument(
        "--contention",
        choices=sorted(CONTENTION),
        default="off",
        help="on: one busy process holds a core during every measurement (TF's too); both: "
        "every path without, then with it",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny model, 1 step, 1024 x 1024 peaks (CI smoke)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--path", help=argparse.SUPPRESS)  # internal: measure in this process
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    peak_size = 4096
    if args.quick:
        args.preset, args.batch_size, args.steps, args.warmup = "nextvlad-8g-16k-256h", 4, 1, 0
        args.overrides = json.dumps({"num_classes": 25})
        args.frames = args.frames or "20-40"
        peak_size = 1024
    args.frames = args.frames or "300"
    for spec in args.frames.split(","):
        try:
            _frames.bounds(spec)
        except ValueError as error:
            parser.error(str(error))
    if args.path:
        print(json.dumps(_measure(args)))
        return 0
    page = None
    if args.profile_md:
        args.profile = True
        try:  # before the run: a page without the markers fails now, not after an hour
            page = Path(args.profile_md).read_text(encoding="utf-8")
            _roofline.replace(page, "")
        except (OSError, ValueError) as error:
            parser.error(f"--profile-md {args.profile_md}: {error}")
    results: dict[str, Any] = {
        "preset": args.preset,
        "overrides": json.loads(args.overrides),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "repeats": args.repeats,
        "contention": args.contention,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    peaks = _matmul_peaks(peak_size)
    results["matmul_peak_gflops_fp32"] = peaks["fp32"]
    results["matmul_peaks_gflops"] = peaks
    results["matmul_peak_size"] = peak_size
    results["distributions"] = {
        frames: _distribution(argparse.Namespace(**{**vars(args), "frames": frames}), peaks)
        for frames in args.frames.split(",")
    }
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    if page is not None:  # read again: the page may have been edited during the run
        page = Path(args.profile_md).read_text(encoding="utf-8")
        page = _roofline.replace(page, _roofline.render(results))
        Path(args.profile_md).write_text(page, encoding="utf-8")
    print(json.dumps(results) if args.json else json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
