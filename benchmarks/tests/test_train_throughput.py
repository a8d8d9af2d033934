"""benchmarks/train_throughput.py and its helpers: the frame counts both throughput scripts draw
(``_frames``), the busy process of ``--contention`` (``_contention``) and the JSON layout per
contention setting."""

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
from typing import Any

import numpy as np
import pytest

import _frames
from _contention import busy_core, contention

BENCHMARKS = Path(__file__).resolve().parents[1]
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
# train_throughput.py: the layout per contention setting
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
