"""Page-aligned anonymous memory: what O_DIRECT writes need, and what band buffers are made of.

Asking the kernel to populate a mapping up front (MAP_POPULATE) is several
times faster than faulting its pages in one by one on first touch on the VMs
this was measured on (docs/performance.md).
"""

from __future__ import annotations

import mmap

__all__ = ["anonymous_memory"]

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux only


def anonymous_memory(nbytes: int, *, populate: bool = True) -> mmap.mmap:
    """Page-aligned, zeroed memory of its own, faulted in now where the kernel can (MAP_POPULATE).

    Where ``mmap`` has no flags (Windows), an anonymous map is still page
    aligned; its pages are faulted on first touch.
    """
    if not hasattr(mmap, "MAP_ANONYMOUS"):
        return mmap.mmap(-1, nbytes)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (_POPULATE if populate else 0)
    return mmap.mmap(-1, nbytes, flags=flags)
