"""Recycled byte buffers.

On this project's VMs the first touch of a fresh memory page costs about 4 us (as much as
copying it a few times), so buffers that are allocated per record or per batch are recycled: a
buffer goes back to its pool when the numpy array made over it (and every view of that array) is
freed.
"""

from __future__ import annotations

import weakref

import numpy as np


class BufferPool:
    """Free ``bytearray`` buffers by size class (multiples of ``step``), at most ``limit`` bytes
    of them; thread-safe enough for the GIL (list append/pop)."""

    def __init__(self, *, step: int, limit: int) -> None:
        self.step = step
        self.limit = limit
        self.free: dict[int, list[bytearray]] = {}
        self.free_bytes = 0

    def get(self, size: int) -> bytearray:
        """A buffer of at least ``size`` bytes (contents undefined)."""
        steps = -(-max(size, 1) // self.step)
        bucket = self.free.get(steps)
        if bucket:
            try:
                buffer = bucket.pop()
            except IndexError:  # emptied by another thread meanwhile
                return bytearray(steps * self.step)
            self.free_bytes -= len(buffer)
            return buffer
        return bytearray(steps * self.step)

    def put(self, buffer: bytearray) -> None:
        if self.free_bytes + len(buffer) <= self.limit:
            self.free.setdefault(len(buffer) // self.step, []).append(buffer)
            self.free_bytes += len(buffer)

    def array(self, size: int) -> np.ndarray:
        """A uint8 array of ``size`` bytes whose buffer returns to the pool when the array and
        all its views are freed."""
        buffer = self.get(size)
        owner = np.frombuffer(buffer, np.uint8, size)
        weakref.finalize(owner, self.put, buffer)
        return owner
