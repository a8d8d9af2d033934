"""benchmarks/train_throughput.py and its helpers: the frame counts both throughput scripts draw
(``_frames``), the roofline tables (``_roofline``), the busy process of ``--contention``
(``_contention``), the JSON layout per contention setting, and one quick profiled run."""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import _frames
import _roofline
from _contention import busy_core, contention

BENCHMARKS = Path(__file__).resolve().parents[1]
SCRIPT = BENCHMARKS / "train_throughput.py"
TF_PYTHON = Path.home() / "tfenv" / "bin" / "python"
SPECS = ["300", "20-40", "60-300", "yt8m"]

# --------------------------------------------------------------------------------------------
# _frames
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "bounds"), [("300", (300, 300)), ("20-40", (20, 40)),
                                             ("60-300", (60, 300)), ("yt8m", (120, 300))])  # fmt: skip
def test_frames_lie_within_their_bounds(spec: str, bounds: tuple[int, int]) -> None:
    assert _frames.bounds(spec) == bounds
    counts = _frames.num_frames(spec, 5000)
    assert counts.shape == (5000,) and counts.dtype == np.int64
    assert bounds[0] == counts.min() and counts.max() == bounds[1]


@pytest.mark.parametrize("spec", ["0", "40-20", "abc", "yt9m", "10-", "-5"])
def test_frames_reject_what_is_no_distribution(spec: str) -> None:
    with pytest.raises(ValueError, match="frames"):
        _frames.bounds(spec)


@pytest.mark.parametrize("spec", SPECS[1:])
def test_frames_are_seeded(spec: str) -> None:
    first = _frames.num_frames(spec, 64)
    assert np.array_equal(first, _frames.num_frames(spec, 64))
    assert np.array_equal(first, _frames.num_frames(spec, 64, seed=_frames.SEED))
    assert not np.array_equal(first, _frames.num_frames(spec, 64, seed=2))


def test_yt8m_lengths_are_youtube_8m_seconds_cut_at_300() -> None:
    counts = _frames.num_frames("yt8m", 200_000)
    # E[min(U{120..500}, 300)] = (180 * 209.5 + 201 * 300) / 381 = 257.24
    assert 256.5 < counts.mean() < 258.0
    assert abs((counts == 300).mean() - 201 / 381) < 0.01  # every video of 300 s or more
    below = counts[counts < 300]
    assert abs(below.mean() - 209.5) < 0.5  # uniform below the cut


def test_both_scripts_draw_their_counts_from_frames() -> None:
    """train_throughput's batch has _frames' counts, and the TF script (which cannot be
    imported here: it imports TensorFlow) calls the same function with the same arguments."""
    import train_throughput

    for spec in SPECS:
        args = argparse.Namespace(frames=spec, batch_size=16)
        batch = train_throughput._batch(args, 25)
        assert batch.num_frames.tolist() == _frames.num_frames(spec, 16).tolist()
        assert batch.frames.shape[1] == batch.num_frames.max()
    source = (BENCHMARKS / "tf_reference_throughput.py").read_text()
    assert "_frames.num_frames(args.frames, args.batch_size)" in source
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "_frames" in imported and not imported & {"torch", "nextvlad"}


@pytest.mark.skipif(not TF_PYTHON.exists(), reason="no ~/tfenv (the TF script's environment)")
def test_frames_are_the_same_under_the_tf_environment() -> None:
    """The TF script runs another Python and numpy; _frames draws the same counts there."""
    code = (
        f"import sys, json; sys.path.insert(0, {str(BENCHMARKS)!r}); import _frames; "
        f"print(json.dumps({{s: _frames.num_frames(s, 80).tolist() for s in {SPECS!r}}}))"
    )
    out = subprocess.run(
        [str(TF_PYTHON), "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    theirs = json.loads(out.stdout)
    assert theirs == {s: _frames.num_frames(s, 80).tolist() for s in SPECS}


# --------------------------------------------------------------------------------------------
# _roofline
# --------------------------------------------------------------------------------------------


def _event(name: str, self_us: float, flops: int = 0, shapes: Any = (), dtypes: Any = ()) -> Any:
    return SimpleNamespace(
        name=name,
        self_cpu_time_total=self_us,
        flops=flops,
        input_shapes=list(shapes),
        input_dtypes=list(dtypes),
    )


EVENTS = [
    _event("mkldnn::_linear_pointwise", 300.0, 0, [[2, 3, 64], [32, 64], [32]], ["float"] * 3),
    _event("mkldnn::_linear_pointwise", 100.0, 0, [[6, 64], [32, 64], []], ["float"] * 3),
    _event("aten::mm", 200.0, 1000, [[4, 5], [5, 50]], ["c10::BFloat16"] * 2),
    _event("aten::mm", 50.0, 500, [[4, 5], [5, 25]], ["float"] * 2),
    _event("quantized::linear_dynamic", 150.0, 0, [[8, 16], [], []], ["float", "", "Scalar"]),
    _event("aten::native_batch_norm", 180.0, 0, [[8, 16]], ["float"]),
    _event("aten::empty", 5.0),
    _event("aten::empty", 5.0),
]


def test_aggregate_counts_onednn_and_int8_flops_by_op_and_dtype() -> None:
    profile = _roofline.aggregate(EVENTS, 0.001, {_roofline.INT8_LINEAR: 4096})
    ops = {(op["op"], op["dtype"]): op for op in profile["ops"]}
    linear = ops["mkldnn::_linear_pointwise", "fp32"]
    assert linear["calls"] == 2
    assert linear["gflop"] == pytest.approx(2 * 12 * 32 * 64 / 1e9, rel=1e-3)  # 2 * rows * out * in
    assert linear["self_ms"] == 0.4 and linear["share"] == 0.4
    assert linear["gflop_per_s"] == pytest.approx(2 * 12 * 32 * 64 / 1e9 / 400e-6, rel=1e-3)
    assert ops["aten::mm", "bf16"]["gflop"] == 1e-6 and ops["aten::mm", "fp32"]["calls"] == 1
    assert ops["quantized::linear_dynamic", "int8"]["gflop"] == 4096 / 1e9
    assert ops["aten::native_batch_norm", None]["gflop"] is None
    assert ops["aten::empty", None]["calls"] == 2
    assert [op["self_ms"] for op in profile["ops"]] == sorted(
        (op["self_ms"] for op in profile["ops"]), reverse=True
    )
    assert profile["ops_share"] == 0.99  # 990 us of ops in a 1 ms step
    assert profile["gflop"] == pytest.approx((2 * 12 * 32 * 64 + 1500 + 4096) / 1e9, rel=1e-3)


def test_top_keeps_the_big_ops_against_their_dtype_peak() -> None:
    profile = _roofline.aggregate(EVENTS, 0.001, {_roofline.INT8_LINEAR: 4096})
    peaks = {"fp32": 100.0, "bf16": 0.01, "int8": 400.0}
    kept = _roofline.top(profile, peaks, min_share=0.1, max_ops=4)
    names = [(op["op"], op["dtype"]) for op in kept["ops"]]
    assert names == [
        ("mkldnn::_linear_pointwise", "fp32"),
        ("aten::mm", "bf16"),
        ("aten::native_batch_norm", None),
        ("quantized::linear_dynamic", "int8"),
    ]
    by = {op["op"] + str(op["dtype"]): op for op in kept["ops"]}
    linear = by["mkldnn::_linear_pointwisefp32"]
    assert linear["peak_fraction"] == pytest.approx(linear["gflop_per_s"] / 100.0, rel=1e-3)
    mm = by["aten::mmbf16"]
    assert mm["peak_fraction"] == pytest.approx(mm["gflop_per_s"] / 0.01, rel=1e-3)
    assert by["aten::native_batch_normNone"]["peak_fraction"] is None
    assert kept["other_share"] == 0.06  # the fp32 mm (5%) and the two empties (1%)
    assert _roofline.top(profile, peaks)["other_share"] == 0.0  # nothing under 1% but 0.5%s
    assert len(_roofline.top(profile, peaks, max_ops=2)["ops"]) == 2


def _results(profile: dict[str, Any]) -> dict[str, Any]:
    row = {"step_s": 0.002, "profile": profile}
    return {
        "preset": "tiny",
        "batch_size": 4,
        "torch": "2.x",
        "threads": 2,
        "matmul_peak_size": 1024,
        "matmul_peaks_gflops": {"fp32": 100.0, "bf16": 200.0, "int8": 400.0},
        "distributions": {
            "yt8m": {
                "frames": "yt8m",
                "paths": {"default": {"train": row, "infer": {"step_s": 1.0}}},
                "contention_on": {"paths": {"bf16": {"infer": row}}},
            }
        },
    }


def test_render_gives_one_table_per_profiled_row() -> None:
    profile = _roofline.top(_roofline.aggregate(EVENTS, 0.001), {"fp32": 100.0})
    text = _roofline.render(_results(profile))
    assert "fp32 100, bf16 200, int8 400 GFLOP/s" in text and "(1024 × 1024)" in text
    headings = [line for line in text.splitlines() if line.startswith("### ")]
    assert headings == [
        "### yt8m frames, `default`, train",
        "### yt8m frames, `bf16`, infer, one core busy",
    ]  # the infer row without a profile has no table
    assert text.count("| op | dtype | calls | self ms | of step | GFLOP | GFLOP/s | of peak |") == 2
    assert "| `mkldnn::_linear_pointwise` | fp32 | 2 | 0.4 | 40.0% |" in text
    assert "| (other ops) |" in text


def test_replace_writes_between_the_markers_and_only_there() -> None:
    page = f"# Title\n\nbefore\n\n{_roofline.BEGIN}\nold text\n{_roofline.END}\n\nafter\n"
    once = _roofline.replace(page, "new table\n")
    assert once == f"# Title\n\nbefore\n\n{_roofline.BEGIN}\nnew table\n{_roofline.END}\n\nafter\n"
    assert _roofline.replace(once, "new table\n") == once  # idempotent
    assert _roofline.replace(_roofline.replace(page, "other"), "new table") == once


@pytest.mark.parametrize(
    "page",
    [
        "no markers at all\n",
        f"{_roofline.BEGIN}\nonly the first\n",
        f"only the second\n{_roofline.END}\n",
        f"{_roofline.END}\nreversed\n{_roofline.BEGIN}\n",
    ],
)
def test_replace_needs_both_markers_in_order(page: str) -> None:
    with pytest.raises(ValueError, match="roofline:begin"):
        _roofline.replace(page, "table")


def test_performance_page_has_the_markers() -> None:
    page = (BENCHMARKS.parent / "docs" / "performance.md").read_text(encoding="utf-8")
    assert "## Where the time goes (roofline)" in page
    _roofline.replace(page, "table")


# --------------------------------------------------------------------------------------------
# _contention
# --------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_busy_core_runs_a_spinner_for_the_block_only() -> None:
    with busy_core() as spinner:
        time.sleep(0.5)
        assert spinner.poll() is None
        if Path(f"/proc/{spinner.pid}/stat").exists():
            assert _cpu_seconds(spinner.pid) > 0.05  # it spins (a share of a core, at least)
    assert spinner.poll() is not None  # stopped and waited for
    with pytest.raises(RuntimeError), busy_core() as spinner:
        raise RuntimeError
    assert spinner.poll() is not None


def test_contention_setting() -> None:
    assert isinstance(contention("off"), contextlib.nullcontext)
    with pytest.raises(ValueError, match="off or on"):
        contention("sometimes")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_spinner_ends_when_its_parent_is_killed() -> None:
    code = (
        f"import sys, time; sys.path.insert(0, {str(BENCHMARKS)!r}); "
        "from _contention import busy_core\n"
        "with busy_core() as s:\n    print(s.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)  # no finally runs
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "Z":  # exited, not yet reaped by its new parent
                break
        time.sleep(0.05)
    else:
        assert not Path(f"/proc/{pid}").exists(), "the spinner outlived its parent"


# --------------------------------------------------------------------------------------------
# train_throughput.py: the layout per contention setting, and a quick profiled run
# --------------------------------------------------------------------------------------------


def test_each_contention_setting_has_its_own_results_and_ratios(monkeypatch) -> None:
    """--contention both: every measurement inside the busy process's block when on; the
    results without it where they always were, those with it under contention_on, each with
    ratios to the TF reference measured under the same setting."""
    import train_throughput

    busy: list[bool] = []
    state = {"on": False}

    @contextlib.contextmanager
    def fake_contention(setting: str) -> Iterator[None]:
        state["on"] = setting == "on"
        yield
        state["on"] = False

    def fake_subprocess(args: Any, path: str, mode: str) -> dict[str, Any]:
        busy.append(state["on"])
        return {"examples_per_s": 5.0 if state["on"] else 10.0, "gflop_per_example": 1.0}

    def fake_tf(args: Any) -> dict[str, Any]:
        busy.append(state["on"])
        speed = 2.0 if state["on"] else 8.0
        return {"paths": {"tf_graph": {"train": {"examples_per_s": speed}}}}

    monkeypatch.setattr(train_throughput, "contention", fake_contention)
    monkeypatch.setattr(train_throughput, "_subprocess", fake_subprocess)
    monkeypatch.setattr(train_throughput, "_tf_reference", fake_tf)
    args = argparse.Namespace(
        contention="both", repeats=1, frames="yt8m", batch_size=8, tf_python="tf",
        paths="default,bf16", modes="train",
    )  # fmt: skip
    peaks = {"fp32": 100.0, "bf16": 200.0, "int8": 400.0}
    block = train_throughput._distribution(args, peaks)
    assert busy == [False, False, False, True, True, True]  # TF, default, bf16; then with it
    assert block["mean_frames"] == float(_frames.num_frames("yt8m", 8).mean())
    assert block["vs_tf_reference"] == {"default": {"train": 1.25}, "bf16": {"train": 1.25}}
    assert block["contention_on"]["vs_tf_reference"]["default"]["train"] == 2.5
    assert block["paths"]["default"]["train"]["flop_utilisation"] == 0.1
    assert block["paths"]["bf16"]["train"]["peak_dtype"] == "bf16"
    assert block["paths"]["bf16"]["train"]["flop_utilisation"] == 0.05
    assert block["contention_on"]["paths"]["bf16"]["train"]["examples_per_s"] == 5.0


def test_profile_md_needs_the_markers_before_anything_runs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# no markers\n")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--profile-md", str(page)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "roofline:begin" in done.stderr


def test_quick_profiled_run(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# P\n\n{_roofline.BEGIN}\n{_roofline.END}\n\nend\n")
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", "--paths", "default",
         "--modes", "train,int8", "--profile-md", str(page)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert set(report["matmul_peaks_gflops"]) == {"fp32", "bf16", "int8"}
    assert report["matmul_peak_gflops_fp32"] == report["matmul_peaks_gflops"]["fp32"]
    assert report["contention"] == "off"
    block = report["distributions"]["20-40"]
    assert "contention_on" not in block
    assert block["mean_frames"] == block["paths"]["default"]["train"]["mean_frames"]
    for mode, dtype in (("train", "fp32"), ("int8", "int8")):
        row = block["paths"]["default"][mode]
        assert row["peak_dtype"] == dtype and row["flop_utilisation"] > 0
        profile = row["profile"]
        assert {"step_s", "ops_share", "gflop", "other_share", "ops"} <= set(profile)
        assert 0 < len(profile["ops"]) <= _roofline.MAX_OPS
        for op in profile["ops"]:
            assert {"op", "dtype", "calls", "self_ms", "share", "gflop", "gflop_per_s",
                    "peak_fraction"} <= set(op)  # fmt: skip
            assert op["share"] >= _roofline.MIN_SHARE
        # the profiled step's FLOPs are the model's (counted by FlopCounterMode for the row)
        gflop = row["gflop_per_example"] * report["batch_size"]
        assert profile["gflop"] == pytest.approx(gflop, rel=0.05)
    text = page.read_text()
    assert "### 20-40 frames, `default`, train" in text
    assert "### 20-40 frames, `default`, int8" in text
    assert text.startswith("# P\n\n") and text.endswith(f"{_roofline.END}\n\nend\n")
