"""uvicorn around the app, with the exit the project's commands have: SIGTERM drains (stop
accepting, finish the requests in flight and the batches queued) and exits 0; Ctrl-C 130."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn

GRACE_SECONDS = 30  # the longest a drain waits for the requests in flight


class _Server(uvicorn.Server):
    """uvicorn's server, but a signal that stopped it is noted instead of raised again once
    it has shut down (uvicorn re-raises it, so that the process would die of SIGTERM)."""

    signals: list[int]

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        self.signals = []
        with super().capture_signals():
            yield
            captured = getattr(self, "_captured_signals", [])
            self.signals = list(captured)
            captured.clear()


def run(app: Any, *, host: str, port: int, log_level: str) -> int:
    """Serve ``app`` until a signal; the exit code (0 after SIGTERM, 130 after Ctrl-C)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    server = _Server(config)
    server.run()
    if not server.started:  # the port was taken, or the app failed to start
        return 1
    return 130 if signal.SIGINT in server.signals else 0
