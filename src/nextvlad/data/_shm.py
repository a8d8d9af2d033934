"""Recycled shared-memory segments for batches made in DataLoader workers.

Why: a worker that sends a batch normally puts it in a *fresh* shared-memory block, and on
virtual machines the first touch of every new page is slow (about 4 us a page here: 23 ms for a
22 MB frame batch, more than reading and parsing its 64 records). Here each worker keeps a pool of
``memfd`` segments and writes batches into segments that the main process has released, so pages
are allocated once and reused.

Protocol: the first 8 bytes of a segment are a busy flag. The worker sets it when it fills the
segment; the batch travels as (segment token, layout), plus the file descriptor the first time a
segment is sent. The main process maps a segment once, keeps the mapping (keyed by the random
token) while the worker lives, wraps each batch in tensors without copying, and clears the flag
when the last of those tensors is freed. The worker reuses only segments whose flag is clear, so
a batch the main process still holds is never overwritten, and a segment is sent again only after
the main process has seen (and mapped) it. A batch that is never received keeps its segment busy
until the worker exits.
"""

from __future__ import annotations

import mmap
import os
import threading
import weakref
from multiprocessing.reduction import DupFd
from typing import Any

import numpy as np

HEADER = 64  # bytes before the data (busy flag, then padding for alignment)
ALIGN = 64
AVAILABLE = hasattr(os, "memfd_create") and hasattr(mmap, "MAP_POPULATE")
_MAX_FREE = 8  # free segments a pool keeps


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class Segment:
    """One shared-memory block owned by a worker."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token = int.from_bytes(os.urandom(8), "little")
        self.sent = False  # the file descriptor went to the main process with a first batch
        self.fd = os.memfd_create("nextvlad-batch", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, HEADER + capacity)
        self.map = mmap.mmap(self.fd, HEADER + capacity)
        self.flag = np.frombuffer(self.map, np.uint64, 1, 0)
        self.data = np.frombuffer(self.map, np.uint8, capacity, HEADER)

    @property
    def busy(self) -> bool:
        return bool(self.flag[0])

    def close(self) -> None:
        del self.flag, self.data
        self.map.close()
        os.close(self.fd)


class SegmentPool:
    """A worker's segments; ``take(nbytes)`` returns a free one, marked busy."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []

    def take(self, nbytes: int) -> Segment:
        free = [s for s in self.segments if not s.busy]
        fitting = [s for s in free if s.capacity >= nbytes]
        if fitting:
            segment = min(fitting, key=lambda s: s.capacity)
        else:
            # Room for batches a bit larger than this one (padding varies), in 1 MiB steps.
            capacity = -(-int(nbytes * 1.25) // (1 << 20)) * (1 << 20)
            segment = Segment(capacity)
            self.segments.append(segment)
            if len(free) >= _MAX_FREE:  # too small to serve: give the smallest free one back
                smallest = min(free, key=lambda s: s.capacity)
                self.segments.remove(smallest)
                smallest.close()
        segment.flag[0] = 1
        return segment


_POOL: SegmentPool | None = None


def pool() -> SegmentPool:
    """This process's pool (each DataLoader worker process has its own)."""
    global _POOL
    if _POOL is None:
        _POOL = SegmentPool()
    return _POOL


class SegmentRef:
    """A picklable handle to a busy segment: sent instead of the tensors that live in it."""

    def __init__(self, segment: Segment) -> None:
        self.token = segment.token
        self.pid = os.getpid()
        self.size = HEADER + segment.capacity
        self.fd: Any = None
        if not segment.sent:
            self.fd = DupFd(segment.fd)
            segment.sent = True

    def open(self) -> np.ndarray:
        """In the receiving process: the segment's data bytes as a uint8 array that clears the
        busy flag when it (and every view of it) is freed."""
        with _LOCK:
            entry = _MAPPINGS.get(self.token)
            if entry is None:
                if self.fd is None:
                    raise RuntimeError("a shared batch segment this process has not mapped")
                fd = self.fd.detach()
                try:
                    mapping = mmap.mmap(fd, self.size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
                finally:
                    os.close(fd)
                _forget_dead_workers()
                _MAPPINGS[self.token] = (self.pid, mapping)
            else:
                mapping = entry[1]
        data = np.frombuffer(mapping, np.uint8, self.size - HEADER, HEADER)
        weakref.finalize(data, _release, mapping)
        return data


# Receiving side: token -> (worker pid, mapping), for the segments of live workers.
_MAPPINGS: dict[int, tuple[int, mmap.mmap]] = {}
_LOCK = threading.Lock()


def _forget_dead_workers() -> None:
    """Drops the mappings of workers that have exited (batches still alive keep theirs)."""
    for token, (pid, _) in list(_MAPPINGS.items()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            del _MAPPINGS[token]
        except PermissionError:  # pragma: no cover - someone else's process: not ours any more
            del _MAPPINGS[token]


def _release(mapping: mmap.mmap) -> None:
    mapping[:8] = bytes(8)  # the worker may reuse the segment
