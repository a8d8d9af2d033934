"""Where a step's time goes: the ops of one profiled step, their FLOPs against the machine's
peaks, and the Markdown tables ``train_throughput.py --profile-md`` writes into a page.

Pure functions over plain data: :func:`aggregate` takes the events of a
``torch.profiler.profile(record_shapes=True, with_flops=True)`` (anything with their
``name``, ``self_cpu_time_total``, ``flops``, ``input_shapes`` and ``input_dtypes``), the rest
takes and returns dicts and strings, so the tests need neither torch nor a profiler.

FLOPs are torch's (``with_flops``: ``aten::mm``, ``addmm``, ``bmm``, ... 2 a multiply-add)
except for the products torch does not count: oneDNN's linear (``mkldnn::_linear_pointwise``,
what ``nextvlad.nn.linear`` runs) gets ``2 * rows * out * in`` from its recorded input shapes,
and the dynamic int8 linear (``quantized::linear_dynamic``, whose packed weight has no recorded
shape) gets the FLOPs the caller counted for it (``extra_flops``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from reproduce.markdown import join, row, table

BEGIN = "<!-- roofline:begin -->"
END = "<!-- roofline:end -->"
MIN_SHARE = 0.01  # ops under 1% of the step are left out of the tables
MAX_OPS = 15
ONEDNN_LINEAR = "mkldnn::_linear_pointwise"
INT8_LINEAR = "quantized::linear_dynamic"
DTYPES = {"float": "fp32", "c10::BFloat16": "bf16", "signed char": "int8"}


def onednn_linear_flops(input_shapes: list[list[int]]) -> int:
    """2 * rows * out * in of ``_linear_pointwise(x (..., in), w (out, in), ...)``."""
    if len(input_shapes) < 2 or len(input_shapes[1]) != 2 or not input_shapes[0]:
        return 0
    out, inner = input_shapes[1]
    return 2 * math.prod(input_shapes[0][:-1]) * out * inner


def _sig(value: float) -> float:
    """``value`` to 4 significant digits (FLOPs of tiny models stay visible)."""
    return float(f"{value:.4g}")


def _dtype(name: str, input_dtypes: list[str] | None) -> str | None:
    if name.startswith("quantized::"):
        return "int8"
    return DTYPES.get(next(iter(input_dtypes or []), ""))


def aggregate(
    events: Iterable[Any], step_s: float, extra_flops: dict[str, int] | None = None
) -> dict[str, Any]:
    """The profiled step by op: every op's self CPU time, its share of ``step_s`` (the step's
    wall time), calls and FLOPs, most time first. Ops that compute FLOPs are split by the
    dtype of their first input (``aten::mm`` fp32 and bf16 are two rows)."""
    extra = dict(extra_flops or {})
    ops: dict[tuple[str, str | None], dict[str, Any]] = {}
    for event in events:
        name = event.name
        flops = int(event.flops or 0)
        if name == ONEDNN_LINEAR and not flops:
            flops = onednn_linear_flops(list(event.input_shapes or []))
        computes = bool(flops) or name in extra
        dtype = _dtype(name, getattr(event, "input_dtypes", None)) if computes else None
        op = ops.setdefault(
            (name, dtype), {"op": name, "dtype": dtype, "calls": 0, "self_us": 0.0, "flops": 0}
        )
        op["calls"] += 1
        op["self_us"] += float(event.self_cpu_time_total)
        op["flops"] += flops
    for name, flops in extra.items():
        for (op_name, _), op in ops.items():
            if op_name == name:
                op["flops"] += flops
                break  # one dtype (int8) for these ops
    rows = [_row(op, step_s) for op in sorted(ops.values(), key=lambda o: -o["self_us"])]
    total_us = sum(op["self_us"] for op in ops.values())
    return {
        "step_s": step_s,
        "ops_share": round(total_us / 1e6 / step_s, 3) if step_s > 0 else None,
        "gflop": _sig(sum(op["flops"] for op in ops.values()) / 1e9),
        "ops": rows,
    }


def _row(op: dict[str, Any], step_s: float) -> dict[str, Any]:
    seconds = op["self_us"] / 1e6
    gflop = op["flops"] / 1e9
    return {
        "op": op["op"],
        "dtype": op["dtype"],
        "calls": op["calls"],
        "self_ms": round(seconds * 1e3, 3),
        "share": round(seconds / step_s, 4) if step_s > 0 else None,
        "gflop": _sig(gflop) if op["flops"] else None,
        "gflop_per_s": _sig(gflop / seconds) if op["flops"] and seconds > 0 else None,
    }


def top(
    profile: dict[str, Any],
    peaks: dict[str, float],
    *,
    min_share: float = MIN_SHARE,
    max_ops: int = MAX_OPS,
) -> dict[str, Any]:
    """``profile`` (of :func:`aggregate`) with only its ops of at least ``min_share`` of the
    step (at most ``max_ops``), each with its ``peak_fraction``: its GFLOP/s over the peak of
    its dtype (``peaks``: GFLOP/s by ``fp32``/``bf16``/``int8``); the share of the ops left out
    is ``other_share``."""
    kept = [op for op in profile["ops"] if (op["share"] or 0) >= min_share][:max_ops]
    shown = sum(op["share"] or 0 for op in kept)
    everything = sum(op["share"] or 0 for op in profile["ops"])
    ops = []
    for op in kept:
        peak = peaks.get(op["dtype"] or "")
        rate = op["gflop_per_s"]
        fraction = _sig(rate / peak) if rate is not None and peak else None
        ops.append({**op, "peak_fraction": fraction})
    return {
        **{k: v for k, v in profile.items() if k != "ops"},
        "other_share": round(everything - shown, 4),
        "ops": ops,
    }


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def op_table(profile: dict[str, Any]) -> list[str]:
    """The lines of one step's table (a profile of :func:`top`)."""
    rows = [
        row(
            f"`{op['op']}`",
            op["dtype"] or "-",
            op["calls"],
            _number(op["self_ms"], 1),
            _percent(op["share"]),
            _number(op["gflop"], 2),
            _number(op["gflop_per_s"], 1),
            _percent(op.get("peak_fraction")),
        )
        for op in profile["ops"]
    ]
    rows.append(row("(other ops)", "", "", "", _percent(profile["other_share"]), "", "", ""))
    header = ["op", "dtype", "calls", "self ms", "of step", "GFLOP", "GFLOP/s", "of peak"]
    return table(header, "llrrrrrr", rows)


def profiled_rows(results: dict[str, Any]) -> Iterator[tuple[str, str, str, str, dict]]:
    """(frames, contention, path, mode, row) of every measured row with a profile, in the
    report's order."""
    for frames, block in results["distributions"].items():
        for contention, setting in (("off", block), ("on", block.get("contention_on") or {})):
            for path, rows in (setting.get("paths") or {}).items():
                for mode, measured in rows.items():
                    if measured.get("profile"):
                        yield frames, contention, path, mode, measured


def render(results: dict[str, Any]) -> str:
    """The text between the markers: one table per (frames, contention, path, mode)."""
    peaks = results.get("matmul_peaks_gflops", {})
    rates = ", ".join(f"{k} {v:,.0f}" for k, v in peaks.items())
    size = results.get("matmul_peak_size", 4096)
    intro = (
        f"`{results['preset']}`, batch {results['batch_size']}, torch {results['torch']}, "
        f"{results['threads']} threads; GEMM peaks measured in the run ({size} × {size}): "
        f"{rates} GFLOP/s. One profiled step a row, after the timed ones; ops under "
        f"{MIN_SHARE:.0%} of the step are in (other ops)."
    )
    blocks: list[str | list[str] | None] = [intro]
    for frames, contention, path, mode, measured in profiled_rows(results):
        profile = measured["profile"]
        busy = ", one core busy" if contention == "on" else ""
        blocks.append(f"### {frames} frames, `{path}`, {mode}{busy}")
        blocks.append(
            f"Profiled step {1e3 * profile['step_s']:,.0f} ms (timed steps "
            f"{1e3 * measured['step_s']:,.0f} ms), {_percent(profile['ops_share'])} of it in "
            f"ops, {profile['gflop']:,.2f} GFLOP."
        )
        blocks.append(op_table(profile))
    return join(*blocks)


def replace(page: str, body: str) -> str:
    """``page`` with what lies between the markers replaced by ``body``; ValueError if the
    page lacks either marker or has them out of order."""
    start, stop = page.find(BEGIN), page.find(END)
    if start < 0 or stop < 0 or stop < start:
        raise ValueError(f"the page needs {BEGIN} and then {END}, each on a line of its own")
    return page[: start + len(BEGIN)] + "\n" + body.strip("\n") + "\n" + page[stop:]
