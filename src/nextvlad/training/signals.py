"""Stopping cleanly on SIGINT and SIGTERM.

The training process finishes its step, writes a checkpoint and exits with 128 + the signal
(:class:`StopSignal`). DataLoader workers leave both signals to it: Ctrl-C in a terminal and
``scancel``/``kill`` of a process group signal every process of the group, and a worker that
died of it would take the batch the main process still needs to finish its step. So each
worker moves into a process group of its own when it starts (:func:`worker_init`): signals
sent to the training process's group no longer reach it, and it ends as DataLoader workers
always end, when the loader shuts it down (or, should the main process die, when its
watchdog sees that the parent is gone).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

log = logging.getLogger("nextvlad.train")


class StopSignal:
    """SIGINT/SIGTERM while training: finish the step, write a checkpoint, stop.

    The handlers only set ``signum``; the loop looks at it after each step. A second signal
    raises KeyboardInterrupt at once (checkpoints are atomic, so that is safe too). The
    previous handlers are put back when training ends. Outside the main thread (where Python
    cannot install handlers) nothing is installed.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous = signal.signal(signum, self._handle)
                self._previous[signum] = signal.SIG_DFL if previous is None else previous
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s: stopping after this step with a checkpoint (send it again to stop at once)",
            signal.Signals(signum).name,
        )


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the training loaders: a process group of the worker's own, so
    that signals to the training process's group (Ctrl-C, scancel, kill -- -PGID) pass it by;
    SIGINT is ignored too, for platforms without process groups."""
    if hasattr(os, "setpgid"):
        try:
            os.setpgid(0, 0)
        except OSError:  # not allowed here (e.g. a session leader): ignore SIGTERM instead
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
