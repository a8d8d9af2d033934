"""Another job on the machine, on purpose: one busy process that holds one core while a
measurement runs (``benchmarks/train_throughput.py --contention on``).

The process is a pure-Python spin loop (one thread, no affinity set: the scheduler places it as
it would anyone else's job). It looks at its parent between spins and ends by itself when the
parent is gone, so a benchmark killed without its ``finally`` leaves no spinner behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

# Spins a million iterations (tens of ms) between looks at its parent, whose pid it is given
# (read at its own start, a parent killed meanwhile would be missed).
SPIN = """
import os, sys
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(1_000_000):
        pass
"""


@contextlib.contextmanager
def busy_core() -> Iterator[subprocess.Popen[bytes]]:
    """``with busy_core() as spinner:`` one process keeps one core busy inside the block; it is
    stopped (and waited for) when the block ends, however it ends."""
    command = [sys.executable, "-c", SPIN, str(os.getpid())]
    spinner = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        yield spinner
    finally:
        spinner.terminate()
        try:
            spinner.wait(timeout=5)
        except subprocess.TimeoutExpired:
            spinner.kill()
            spinner.wait()


def contention(setting: str) -> contextlib.AbstractContextManager[object]:
    """``busy_core()`` for ``"on"``, nothing for ``"off"``."""
    if setting == "on":
        return busy_core()
    if setting == "off":
        return contextlib.nullcontext()
    raise ValueError(f"contention {setting!r}: give off or on")
