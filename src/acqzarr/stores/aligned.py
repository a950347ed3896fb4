"""Page-aligned anonymous memory: what O_DIRECT writes need, and what band buffers are made of.

Asking the kernel to populate a mapping up front is several times faster than
faulting its pages in one by one on first touch on the VMs this was measured on
(docs/performance.md).  It must not hold the GIL meanwhile: Python's ``mmap``
makes the whole mapping, MAP_POPULATE included, without releasing it, so a
16 MiB band buffer mapped on the prefill thread stopped every other thread of
the process for ~5 ms, the appending one included (the append p99 of a camera at
2,000 frames/s, docs/performance.md).  So the mapping is made without
MAP_POPULATE and populated by ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14 and
later) called through ctypes, which releases the GIL for the call; where the
kernel refuses it, MAP_POPULATE is used as before.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from collections.abc import Callable

__all__ = ["anonymous_memory"]

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux only
_MADV_POPULATE_WRITE = 23  # linux/mman.h (5.14): fault every page in, writable, now


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    """libc's ``madvise`` through ctypes (which drops the GIL for the call), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _libc_madvise()


def anonymous_memory(nbytes: int, *, populate: bool = True) -> mmap.mmap:
    """Page-aligned, zeroed memory of its own, faulted in now where the kernel can (``populate``),
    with the GIL released while it is.

    Where ``mmap`` has no flags (Windows), an anonymous map is still page
    aligned; its pages are faulted on first touch.
    """
    global _madvise
    if not hasattr(mmap, "MAP_ANONYMOUS"):
        return mmap.mmap(-1, nbytes)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    if not populate or not _POPULATE:
        return mmap.mmap(-1, nbytes, flags=flags)
    if _madvise is not None:
        memory = mmap.mmap(-1, nbytes, flags=flags)
        view = ctypes.c_char.from_buffer(memory)  # only for the address: released at once
        address = ctypes.addressof(view)
        del view
        if _madvise(address, nbytes, _MADV_POPULATE_WRITE) == 0:
            return memory
        _madvise = None  # an older kernel (EINVAL): MAP_POPULATE from now on
        memory.close()
    return mmap.mmap(-1, nbytes, flags=flags | _POPULATE)
