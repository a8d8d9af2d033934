"""A small progress bar on stderr: steps, examples/s, loss and ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Redraws one line on a terminal; prints a line every ``interval`` seconds otherwise."""

    def __init__(
        self,
        total_steps: int | None,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 10.0,
    ) -> None:
        self.total = total_steps
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if not self.tty else 0.2
        self.start = time.monotonic()
        self.last = 0.0
        self.first_step: int | None = None

    def update(self, step: int, examples_per_s: float, **values: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.first_step is None:
            self.first_step = step
        if now - self.last < self.interval and step != self.total:
            return
        self.last = now
        done = step - self.first_step
        elapsed = now - self.start
        parts = [f"step {step}" + (f"/{self.total}" if self.total else "")]
        parts.append(f"{examples_per_s:,.0f} ex/s")
        parts += [f"{k} {v:.4g}" for k, v in values.items()]
        if self.total and done > 0:
            parts.append(f"ETA {_duration(elapsed / done * (self.total - step))}")
        line = " | ".join(parts)
        if self.tty:
            self.stream.write("\r" + line.ljust(100)[:150])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
