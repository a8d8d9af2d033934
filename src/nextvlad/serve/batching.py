"""Dynamic batching: concurrent requests merged into one forward pass, then split back.

Requests wait in a bounded queue (``max_queue`` requests; a full queue refuses at once, so
memory is bounded under any load). The batcher takes the oldest request, then more while
they fit in ``max_batch_size`` videos and ``max_delay_ms`` has not passed since it took the
first; frame inputs are padded to the longest video of the batch and run with each video's
real ``num_frames`` (the padding is masked as in training, so a video's probabilities do not
depend on its neighbours). The model runs in one worker thread, so the event loop keeps
answering (health, metrics, refusals) while a batch runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nextvlad.serve.metrics import ServerMetrics


class QueueFullError(Exception):
    """The queue holds ``max_queue`` requests: answer 503 and let the client retry."""


@dataclass
class _Work:
    x: Tensor  # (b, T, D) frames or (b, D) features
    num_frames: Tensor | None  # (b,) int64
    future: asyncio.Future[Tensor]
    enqueued: float = field(default_factory=time.perf_counter)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def merge(
    items: list[_Work], convert: Callable[[Tensor], Tensor] = lambda x: x
) -> tuple[Tensor, Tensor | None]:
    """One batch of the items' videos, each made the model's dtype by ``convert``; frames
    padded with zeros to the longest."""
    if items[0].num_frames is None:
        return torch.cat([convert(w.x) for w in items]), None
    parts = [convert(w.x) for w in items]
    length = max(int(p.shape[1]) for p in parts)
    size = sum(len(w) for w in items)
    x = torch.zeros(size, length, parts[0].shape[2], dtype=parts[0].dtype)  # (B, T, D)
    start = 0
    for p in parts:
        x[start : start + len(p), : p.shape[1]] = p
        start += len(p)
    counts = [w.num_frames for w in items if w.num_frames is not None]
    return x, torch.cat(counts)


class Batcher:
    """Queue and batch the requests of one model; ``run`` is the backend's forward,
    ``convert`` makes a request's tensor the dtype it takes (both in the worker thread)."""

    def __init__(
        self,
        run: Callable[[Tensor, Tensor | None], Tensor],
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue: int,
        metrics: ServerMetrics,
        convert: Callable[[Tensor], Tensor] = lambda x: x,
    ) -> None:
        self._run = run
        self._convert = convert
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.metrics = metrics
        self._items: collections.deque[_Work] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="nextvlad-model")
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # a batch is running
        self._arriving = 0  # requests being read and checked, not queued yet

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        """Finish the batches queued, then stop (the server has stopped taking requests)."""
        while self._items or self._busy:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return len(self._items)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around the reading and checking of a request: a batch being filled waits (up to
        ``max_delay_ms``) only while some request is arriving; with none, it runs at once."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1
            self._arrived.set()

    def enqueue(self, x: Tensor, num_frames: Tensor | None) -> asyncio.Future[Tensor]:
        """Queue a request: the future of its probabilities (b, C); QueueFullError at once
        when the queue is full."""
        if len(self._items) >= self.max_queue:
            raise QueueFullError
        future: asyncio.Future[Tensor] = asyncio.get_running_loop().create_future()
        self._items.append(_Work(x, num_frames, future))
        self.metrics.queue_depth.set(len(self._items))
        self._arrived.set()
        return future

    async def submit(self, x: Tensor, num_frames: Tensor | None) -> Tensor:
        """``enqueue``, then wait for the probabilities."""
        return await self.enqueue(x, num_frames)

    async def _next(self, deadline: float | None) -> bool:
        """Wait until a request is queued (until ``deadline``, loop time, and only while one
        is arriving); False if none."""
        loop = asyncio.get_running_loop()
        while not self._items:
            self._arrived.clear()
            if deadline is None:
                await self._arrived.wait()
                continue
            left = deadline - loop.time()
            if left <= 0 or not self._arriving:
                return False
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True

    async def _take(self) -> list[_Work]:
        """The next batch: the oldest request and those after it that fit in time and size."""
        await self._next(None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay
        batch = [self._items.popleft()]
        size = len(batch[0])
        while size < self.max_batch_size and await self._next(deadline):
            if size + len(self._items[0]) > self.max_batch_size:
                break  # it starts the next batch
            batch.append(self._items.popleft())
            size += len(batch[-1])
        self.metrics.queue_depth.set(len(self._items))
        return [w for w in batch if not w.future.done()]  # a client that went away

    async def _serve(self) -> None:
        while True:
            batch = await self._take()
            self._busy = True
            try:
                await self._answer(batch)
            finally:
                self._busy = False

    def _forward(self, batch: list[_Work]) -> tuple[int, Tensor]:
        """(videos, probabilities) of one batch, in the worker thread."""
        x, num_frames = merge(batch, self._convert)
        return len(x), self._run(x, num_frames)

    async def _answer(self, batch: list[_Work]) -> None:
        """Run one batch and resolve its requests' futures."""
        if not batch:
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            size, probabilities = await loop.run_in_executor(self._executor, self._forward, batch)
        except Exception as err:  # the model's failure: each request answers 500
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(err)
            return
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(size)
        self.metrics.batch_requests.observe(len(batch))
        start = 0
        for w in batch:
            if not w.future.done():
                w.future.set_result(probabilities[start : start + len(w)])
            start += len(w)
