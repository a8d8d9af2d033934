"""Progress on stderr: of a run's steps (step of total, epoch, ETA, examples/s, loss, lr),
and of the videos `nextvlad eval` and `predict` go through.

On a terminal a tqdm bar; elsewhere (a log file, a pipe, a batch job) a plain line every
``PLAIN_INTERVAL`` seconds (30), so that a long run is never silent:
``epoch 1/5: 120/1000 steps (12%), 9,600 examples, 812 ex/s, loss 0.4123, lr 0.0002,
elapsed 02:05, ETA 18:03``. Nothing with ``--no-progress``, nor on a rank but 0. While the bar
shows, log records meant for the console go through ``tqdm.write``, so an evaluation line or
the notice of a signal lands on a line of its own above the bar instead of being glued onto
it. :class:`Meter` is the one mechanism; :class:`Progress` (steps) and :func:`track_videos`
(videos) use it.

With ``--epochs`` the total is the epochs times the steps of an epoch: estimated before the
first epoch ends from the records of a few data files (headers only) scaled by size to all
of them, exact afterwards (the videos to evaluate are estimated the same way). Drawing costs
about 7 µs a step (measured with 20,000 updates on the 2-core CPU machine under load),
nothing next to a training step.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from nextvlad.data.errors import DataError
from nextvlad.data.remote import is_remote
from nextvlad.data.tfrecord import count_records

T = TypeVar("T")

BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} "
    "[{elapsed}, ETA {remaining}{postfix}]"
)
PLAIN_INTERVAL = 30.0  # seconds between plain progress lines where stderr is no terminal


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Meter:
    """A count towards a total (``total`` None: not known yet) on ``stream`` (stderr): a
    tqdm bar on a terminal, a plain line every ``interval`` seconds (``PLAIN_INTERVAL``)
    elsewhere, nothing when not ``enabled``.

    ``unit``: what is counted ("steps", "videos"); ``desc``: what counts (shown first);
    ``initial``: where the count starts (a resumed run).
    """

    def __init__(
        self,
        total: int | None,
        *,
        unit: str,
        desc: str,
        initial: int = 0,
        enabled: bool = True,
        stream: TextIO | None = None,
        mininterval: float = 0.5,
        interval: float | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.unit, self.desc, self.total = unit, desc, total
        self.n = self.initial = initial
        self.interval = PLAIN_INTERVAL if interval is None else interval
        self.started = self._last_line = time.monotonic()
        self._logging = contextlib.ExitStack()
        self._bar: tqdm | None = None
        if not enabled or not _isatty(self.stream):
            return
        self._bar = tqdm(
            total=total,
            initial=initial,
            file=self.stream,
            desc=desc,
            bar_format=BAR_FORMAT,
            unit=unit,
            dynamic_ncols=True,
            mininterval=mininterval,
            leave=True,
        )
        self._logging.enter_context(logging_redirect_tqdm())

    @property
    def on_terminal(self) -> bool:
        return self._bar is not None

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None and total != self._bar.total:
            self._bar.total = total
            self._bar.refresh()

    def show(self, n: int, *, desc: str | None = None, postfix: str = "", plain: str = "") -> None:
        """The count is ``n``; ``postfix``: what follows it on the bar and the plain line,
        ``plain``: what only the plain line adds before it (the bar redraws at most every
        ``mininterval`` seconds, a plain line comes every ``interval`` seconds)."""
        if not self.enabled:
            return
        self.desc = desc if desc is not None else self.desc
        bar = self._bar
        if bar is not None:
            bar.desc = self.desc
            bar.postfix = postfix
            bar.update(n - bar.n)
            return
        self.n = n
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            print(self._line(now, ", ".join(x for x in (plain, postfix) if x)), file=self.stream)
            self.stream.flush()

    def _line(self, now: float, middle: str) -> str:
        elapsed = now - self.started
        if self.total:
            count = f"{self.n:,}/{self.total:,} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            count = f"{self.n:,} {self.unit}"
        line = f"{self.desc}: {count}" + (f", {middle}" if middle else "")
        line += f", elapsed {tqdm.format_interval(elapsed)}"
        done = self.n - self.initial
        if self.total and done > 0 and self.n <= self.total:
            line += f", ETA {tqdm.format_interval((self.total - self.n) * elapsed / done)}"
        return line

    def close(self) -> None:
        """Leave the bar as it last was, on its own line, and give logging back."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._logging.close()


class Progress(Meter):
    """The steps of a run: a bar on a terminal, a plain line every ``interval`` seconds
    elsewhere, or nothing (``enabled`` False).

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
        interval: float | None = None,
    ) -> None:
        self.epochs = epochs
        super().__init__(
            total,
            unit="steps",
            desc=self._epoch_text(0),
            initial=initial,
            enabled=enabled,
            stream=stream,
            mininterval=mininterval,
            interval=interval,
        )

    def _epoch_text(self, epoch: int) -> str:
        return f"epoch {epoch + 1}" + (f"/{self.epochs}" if self.epochs is not None else "")

    def update(
        self,
        step: int,
        *,
        epoch: int,
        examples_per_s: float,
        loss: float,
        lr: float,
        examples: int | None = None,
    ) -> None:
        """Training is at ``step`` (``examples``: trained on so far, for the plain line)."""
        if not self.enabled:
            return
        shown = f"{loss:.4g}" if math.isfinite(loss) else "?"  # not read from the device yet
        self.show(
            step,
            desc=self._epoch_text(epoch),
            postfix=f"{examples_per_s:,.0f} ex/s, loss {shown}, lr {lr:.3g}",
            plain="" if examples is None else f"{examples:,} examples",
        )


def track_videos(
    batches: Iterable[T],
    desc: str,
    *,
    files: Sequence[str | Path] | None = None,
    unit: str = "videos",
    enabled: bool = True,
    stream: TextIO | None = None,
) -> Generator[T, None, None]:
    """``batches`` (of videos: anything with a length) as they come, with the videos done so
    far shown on stderr (:class:`Meter`; ``desc``: "eval", "predict"). ``files``: the data
    files, to estimate the total from (default: those of a DataLoader's dataset; empty: no
    total); ``unit``: what the batches hold ("windows" for `--segments`)."""
    if files is None:
        files = getattr(getattr(batches, "dataset", None), "files", None)
    total = records_estimate(files) if enabled and files else None
    meter = Meter(total, unit=unit, desc=desc, enabled=enabled, stream=stream)
    done = 0
    try:
        for batch in batches:
            yield batch
            done += len(batch)  # type: ignore[arg-type]
            if meter.total is not None and done > meter.total:
                meter.set_total(None)  # the estimate was short
            meter.show(done)
    finally:
        meter.close()


def records_estimate(files: Sequence[str | Path], *, sample: int = 4) -> int | None:
    """About the records of ``files``: those of up to ``sample`` files spread over the list
    (headers only), scaled by size to all of them. None when that cannot be told (no
    records, unreadable files, remote shards)."""
    if not files or any(is_remote(str(f)) for f in files):
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
    return records


def epoch_steps_estimate(
    files: Sequence[str | Path], global_batch: int, *, sample: int = 4
) -> int | None:
    """About the steps of one epoch over ``files`` at ``global_batch`` videos a step
    (``records_estimate``). None when that cannot be told (no records, unreadable files,
    remote shards)."""
    if global_batch < 1:
        return None
    records = records_estimate(files, sample=sample)
    return None if records is None else max(1, math.ceil(records / global_batch))
