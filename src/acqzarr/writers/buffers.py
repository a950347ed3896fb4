"""Reusable band buffers backed by pre-populated anonymous memory.

On virtual machines the first write to freshly allocated memory costs a host
page fault per page, slower than compressing the data (docs/performance.md,
"Measurements behind the design").  So band buffers are mapped with
MAP_POPULATE (the kernel faults the pages in up front, several times faster)
and then reused for the life of the stream
instead of being allocated per band.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..stores.aligned import anonymous_memory

__all__ = ["BufferPool", "BufferPools", "mapped_array"]


def mapped_array(
    shape: tuple[int, ...], dtype: np.dtype[Any], *, populate: bool = True
) -> np.ndarray[Any, Any]:
    """A zeroed, page-aligned array in its own anonymous mapping.

    ``populate`` faults every page in now (MAP_POPULATE); without it pages are
    faulted on first touch, so resident memory follows what is actually used.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype)
    return np.frombuffer(anonymous_memory(nbytes, populate=populate), dtype=dtype).reshape(shape)


class BufferPool:
    """Hands out buffers of one shape (bands or encoded output), reusing returned ones first.

    The pool does not bound itself: the stream's in-flight budget decides how
    many buffers may be out at once.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
        *,
        populate: bool = True,
        make_room: Callable[[BufferPool, int], None] | None = None,
    ) -> None:
        self.shape = shape
        self.dtype = dtype
        self.populate = populate
        self.nbytes = math.prod(shape) * dtype.itemsize  # of one buffer
        self._make_room = make_room  # called before mapping another buffer (``BufferPools``)
        self._free: list[np.ndarray[Any, Any]] = []
        self._cond = threading.Condition()
        self._mapping = 0  # buffers being mapped in the background
        self.mapped = 0  # buffers this pool has mapped so far (it keeps them until cleared)

    def take(self) -> np.ndarray[Any, Any]:
        with self._cond:
            while not self._free and self._mapping:
                self._cond.wait()  # one is on its way: cheaper than mapping another
            if self._free:
                return self._free.pop()
        if self._make_room is not None:
            self._make_room(self, self.nbytes)
        buf = mapped_array(self.shape, self.dtype, populate=self.populate)
        with self._cond:
            self.mapped += 1
        return buf

    def drop_free(self, nbytes: int) -> int:
        """Unmap free buffers (kept for reuse) until ``nbytes`` are gone or none is left; the bytes
        dropped.  Their memory returns to the system as the arrays go."""
        dropped = 0
        with self._cond:
            while self._free and dropped < nbytes:
                self._free.pop()
                self.mapped -= 1
                dropped += self.nbytes
        return dropped

    def give(self, buf: np.ndarray[Any, Any]) -> None:
        with self._cond:
            self._free.append(buf)
            self._cond.notify_all()

    def prefill(self, n: int, *, background: bool = False) -> None:
        """Map ``n`` buffers now (or on a helper thread), so the acquisition loop never pays for it."""
        if n <= 0:
            return
        with self._cond:
            self._mapping += n

        def fill() -> None:
            for _ in range(n):
                try:
                    buf = mapped_array(self.shape, self.dtype, populate=self.populate)
                except BaseException:
                    with self._cond:
                        self._mapping -= 1
                        self._cond.notify_all()
                    raise
                with self._cond:
                    self._mapping -= 1
                    self.mapped += 1
                    self._free.append(buf)
                    self._cond.notify_all()

        if background:
            threading.Thread(target=fill, name="acqzarr-prefill", daemon=True).start()
        else:
            fill()

    @property
    def mapped_nbytes(self) -> int:
        return self.mapped * self.nbytes

    def clear(self) -> None:
        with self._cond:
            self.mapped -= len(self._free)
            self._free.clear()


class BufferPools:
    """A stream's buffer pools, one per buffer shape (and dtype, and populating or not).

    Arrays of one shape (cameras of one model, positions, channels as arrays) share their
    buffers: what a pool keeps mapped then follows the most the stream had in flight at once,
    which the in-flight cap bounds, instead of the sum of every array's own peak (four cameras
    with a pool each kept ~1.3x the cap resident).

    ``limit`` (the in-flight cap) bounds what all pools keep mapped together: band buffers and
    encoder outputs have their own pools, and each grows to its own peak, which can come at
    different times (bands waiting for compression, then outputs waiting for the disk), so the
    two peaks together went past the cap (128x128 stacks: +267 MiB resident for a 256 MiB cap).
    Before a pool maps another buffer past the limit, the other pools unmap free buffers.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._pools: dict[tuple[tuple[int, ...], str, bool], BufferPool] = {}
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...], dtype: np.dtype[Any], *, populate: bool = True) -> BufferPool:
        key = (tuple(shape), np.dtype(dtype).str, populate)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = BufferPool(
                    key[0], np.dtype(dtype), populate=populate, make_room=self._make_room
                )
            return pool

    def _make_room(self, taker: BufferPool, nbytes: int) -> None:
        """Unmap other pools' free buffers while mapping ``nbytes`` more would pass the limit.  The
        taker's own free buffers are none (it is mapping because it has none)."""
        if self.limit is None:
            return
        with self._lock:
            pools = [pool for pool in self._pools.values() if pool is not taker]
            over = sum(pool.mapped_nbytes for pool in self._pools.values()) + nbytes - self.limit
        for pool in pools:
            if over <= 0:
                return
            over -= pool.drop_free(over)

    def mapped_nbytes(self) -> int:
        """Bytes of buffers mapped and kept: they grow to the most in flight at once, which can
        first happen late in a run (within the cap), and output buffers fault in lazily."""
        with self._lock:
            return sum(pool.mapped_nbytes for pool in self._pools.values())

    def clear(self) -> None:
        """Drop every free buffer (the stream is closed: nothing is in flight)."""
        with self._lock:
            for pool in self._pools.values():
                pool.clear()
