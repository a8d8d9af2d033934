"""Cheap stand-ins that the pipeline and command tests put in from their side.

Inception-v3 costs about 6 GFLOP a frame (seconds on this CPU), so the tests of what lies
around the network (batches, records, shards, resume, failures) run a cheap network of the
same interface instead, put in by patching ``load_inception`` (in process) or by
:data:`CHEAP_MAIN` (a subprocess); the whole way with the real network is tested on a few
frames only (test_extract_cli.py's end-to-end test, test_pipeline.py's Inception test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class CheapNetwork(nn.Module):
    """(B, H, W, 3) uint8 -> (B, 2048) float32: a 4x4 average of the frame, a fixed random
    projection (features that vary with the frame and spread over the quantizer's range)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(48, 2048, generator=g) * 0.5)
        self.calls: list[int] = []

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(frames))
        x = frames.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        x = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)  # (B, 48)
        return (x - 0.5) @ self.weight + 0.1


def cheap_load_inception(path: str | Path) -> CheapNetwork:
    """``load_inception``'s stand-in: a missing file is still an error."""
    if not Path(path).exists():
        raise FileNotFoundError(path)
    return CheapNetwork()


def patch_network(monkeypatch) -> None:
    """Make ``load_inception`` (used by ``Extractor.from_files``) return a CheapNetwork."""
    import nextvlad.extract.inception as inception

    monkeypatch.setattr(inception, "load_inception", cheap_load_inception)


class FakeAudio:
    """An audio side whose embeddings are ``rows`` rows of its own, whatever the waveform."""

    hop_seconds = 1.0

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.calls: list[tuple[int, int | None]] = []

    def embeddings(self, waveform: np.ndarray, max_examples: int | None = None) -> np.ndarray:
        self.calls.append((len(waveform), max_examples))
        return self.table()

    def table(self) -> np.ndarray:
        values = np.arange(self.rows * 128, dtype=np.float32).reshape(self.rows, 128)
        return np.sin(values) * 2.5  # some beyond the quantizer's [-2, 2]


# `python -c CHEAP_MAIN PAUSE extract ...`: `nextvlad extract ...` with the cheap network, and
# the shard writer sleeping PAUSE seconds after each record (so that a test can kill it while
# a shard is being written).
CHEAP_MAIN = """
import sys, time
import nextvlad.extract.inception as inception
import nextvlad.extract.writer as writer
from tests.extract.stand_ins import cheap_load_inception

inception.load_inception = cheap_load_inception
pause = float(sys.argv.pop(1))
original = writer.ShardWriter.write

def slowed(self, video_id, record):
    original(self, video_id, record)
    print(f"wrote {video_id}", flush=True)
    time.sleep(pause)

writer.ShardWriter.write = slowed
from nextvlad.cli import main
sys.exit(main(sys.argv[1:]))
"""
