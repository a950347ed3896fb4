"""Reusable layer buffers backed by pre-populated anonymous memory.

On these VMs the first write to freshly allocated memory costs a host page
fault per page (~0.4 GB/s, see PERF-NOTES), slower than compressing the data.
So layer buffers are mapped with MAP_POPULATE (the kernel faults the pages in
up front, several times faster) and then reused for the life of the stream
instead of being allocated per layer.
"""

from __future__ import annotations

import mmap
import threading
from typing import Any

import numpy as np

__all__ = ["LayerPool", "mapped_array"]

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


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
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (_POPULATE if populate else 0)
    mem = mmap.mmap(-1, nbytes, flags=flags)
    return np.frombuffer(mem, dtype=dtype).reshape(shape)


class LayerPool:
    """Hands out buffers of one shape (layers or encoded output), reusing returned ones first.

    The pool does not bound itself: the stream's in-flight budget decides how
    many buffers may be out at once.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any], *, populate: bool = True) -> None:
        self.shape = shape
        self.dtype = dtype
        self.populate = populate
        self._free: list[np.ndarray[Any, Any]] = []
        self._lock = threading.Lock()
        self.outstanding = 0
        self.allocated = 0

    def take(self) -> np.ndarray[Any, Any]:
        with self._lock:
            self.outstanding += 1
            if self._free:
                return self._free.pop()
            self.allocated += 1
        return mapped_array(self.shape, self.dtype, populate=self.populate)

    def give(self, buf: np.ndarray[Any, Any]) -> None:
        with self._lock:
            self.outstanding -= 1
            self._free.append(buf)

    def prefill(self, n: int) -> None:
        """Map ``n`` buffers now, so the acquisition loop never pays for it."""
        bufs = [mapped_array(self.shape, self.dtype, populate=self.populate) for _ in range(n)]
        with self._lock:
            self.allocated += n
            self._free.extend(bufs)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
