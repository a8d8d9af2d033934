"""The progress bar of a run (tqdm, on stderr): step of total, epoch, ETA, examples/s, loss, lr.

It shows only on a terminal, on rank 0 and without ``--no-progress``; otherwise nothing is
drawn (log lines still say what happens). While it shows, log records meant for the console
go through ``tqdm.write``, so an evaluation line or the notice of a signal lands on a line of
its own above the bar instead of being glued onto it.

With ``--epochs`` the total is the epochs times the steps of an epoch: estimated before the
first epoch ends from the records of a few data files (headers only) scaled by size to all
of them, exact afterwards. Drawing costs about 7 µs a step (measured with 20,000 updates on
the 2-core CPU machine under load), nothing next to a training step.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from nextvlad.data.errors import DataError
from nextvlad.data.remote import is_remote
from nextvlad.data.tfrecord import count_records

BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps "
    "[{elapsed}, ETA {remaining}{postfix}]"
)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Progress:
    """A tqdm bar over the steps of a run, or nothing (``enabled`` False or not a terminal).

    ``total``: the step training ends at, if known (:meth:`set_total` changes it);
    ``initial``: the step it starts from (a resumed run); ``epochs``: --epochs, if given.
    """

    def __init__(
        self,
        total: int | None,
        *,
        initial: int = 0,
        epochs: int | None = None,
        enabled: bool = True,
        stream: TextIO | None = None,
        mininterval: float = 0.5,
    ) -> None:
        stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and _isatty(stream)
        self.epochs = epochs
        self._logging = contextlib.ExitStack()
        self._bar: tqdm | None = None
        if not self.enabled:
            return
        self._bar = tqdm(
            total=total,
            initial=initial,
            file=stream,
            desc=self._epoch_text(0),
            bar_format=BAR_FORMAT,
            dynamic_ncols=True,
            mininterval=mininterval,
            leave=True,
        )
        self._logging.enter_context(logging_redirect_tqdm())

    def _epoch_text(self, epoch: int) -> str:
        return f"epoch {epoch + 1}" + (f"/{self.epochs}" if self.epochs is not None else "")

    def set_total(self, total: int | None) -> None:
        if self._bar is not None and total != self._bar.total:
            self._bar.total = total
            self._bar.refresh()

    def update(
        self, step: int, *, epoch: int, examples_per_s: float, loss: float, lr: float
    ) -> None:
        """Training is at ``step`` (the bar redraws at most every ``mininterval`` seconds)."""
        bar = self._bar
        if bar is None:
            return
        bar.desc = self._epoch_text(epoch)
        shown = f"{loss:.4g}" if math.isfinite(loss) else "?"  # not read from the device yet
        bar.postfix = f"{examples_per_s:,.0f} ex/s, loss {shown}, lr {lr:.3g}"
        bar.update(step - bar.n)

    def close(self) -> None:
        """Leave the bar as it last was, on its own line, and give logging back."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._logging.close()


def epoch_steps_estimate(
    files: Sequence[str | Path], global_batch: int, *, sample: int = 4
) -> int | None:
    """About the steps of one epoch over ``files`` at ``global_batch`` videos a step: the
    records of up to ``sample`` files spread over the list (headers only), scaled by size to
    all of them. None when that cannot be told (no records, unreadable files, remote shards)."""
    if not files or global_batch < 1 or any(is_remote(str(f)) for f in files):
        return None  # remote shards: no stat of every object nor a read of some at the start
    picks = sorted({round(i * (len(files) - 1) / max(sample - 1, 1)) for i in range(sample)})
    try:
        sizes = [os.path.getsize(f) for f in files]
        records = sum(count_records(files[i]) for i in picks)
    except (OSError, DataError):
        return None
    sampled = sum(sizes[i] for i in picks)
    if not records or not sampled:
        return None
    if len(picks) < len(files):
        records = round(records * sum(sizes) / sampled)
    return max(1, math.ceil(records / global_batch))
