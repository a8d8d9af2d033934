"""benchmarks/train_throughput.py and its helpers: the frame counts both throughput scripts draw
(``_frames``)."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import _frames

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
