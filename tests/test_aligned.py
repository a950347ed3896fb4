"""anonymous_memory: page-aligned, zeroed memory, populated up front (``populate``) by a call that
drops the GIL where the kernel has MADV_POPULATE_WRITE, by MAP_POPULATE where it refuses it.

Residency is read with ``mincore(2)``: what is observed is that every page is in
memory when the call returns (or none, without ``populate``), not how long it took.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import sys
from typing import Any

import numpy as np
import pytest

from acqzarr.stores import aligned
from acqzarr.stores.aligned import anonymous_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore and madvise: Linux")

PAGE = mmap.PAGESIZE
NBYTES = 64 * PAGE + 4096 * 3  # not a whole number of pages on every page size


def _resident(memory: mmap.mmap) -> int:
    """Pages of ``memory`` in RAM now (mincore), without touching any of them."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.mincore.restype = ctypes.c_int
    view = ctypes.c_char.from_buffer(memory)
    address = ctypes.addressof(view)
    del view
    pages = _pages(memory)
    vec = ctypes.create_string_buffer(pages)
    assert libc.mincore(address, len(memory), vec) == 0, ctypes.get_errno()
    return sum(b & 1 for b in vec.raw[:pages])


def _pages(memory: mmap.mmap) -> int:
    return -(-len(memory) // PAGE)


def _check_zeroed_aligned_writable(memory: mmap.mmap) -> None:
    a = np.frombuffer(memory, np.uint8)
    assert a.ctypes.data % PAGE == 0
    assert not a.any()
    a[:] = 7
    assert (a == 7).all()
    del a


def test_populated_memory_is_resident_when_returned() -> None:
    memory = anonymous_memory(NBYTES)
    assert _resident(memory) == _pages(memory)
    _check_zeroed_aligned_writable(memory)
    memory.close()


def test_unpopulated_memory_faults_on_first_touch() -> None:
    memory = anonymous_memory(NBYTES, populate=False)
    assert _resident(memory) == 0
    a = np.frombuffer(memory, np.uint8)
    assert a.ctypes.data % PAGE == 0
    a[: 3 * PAGE] = 1  # three pages touched
    assert _resident(memory) == 3
    assert not a[3 * PAGE :].any()  # the rest reads as zeros
    del a
    memory.close()


def test_populating_goes_through_a_foreign_call_that_drops_the_gil() -> None:
    """The kernel of this machine has MADV_POPULATE_WRITE (Linux >= 5.14): populating is then a
    ctypes CDLL call, which releases the GIL for its length, not Python's mmap(MAP_POPULATE),
    which holds it (a 16 MiB band buffer stopped every other thread ~5 ms, docs/performance.md)."""
    release = tuple(int(p) for p in platform.release().split(".")[:2] if p.isdigit())
    if release < (5, 14):
        pytest.skip("MADV_POPULATE_WRITE needs Linux 5.14")
    anonymous_memory(PAGE).close()
    fn = aligned._madvise
    assert fn is not None
    assert isinstance(fn, ctypes._CFuncPtr)
    assert not fn._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # a PyDLL function would keep the GIL


def test_a_kernel_without_madv_populate_write_falls_back_to_map_populate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int, int]] = []

    def refused(address: int, length: int, advice: int) -> int:
        calls.append((address, length, advice))
        return -1  # EINVAL on a kernel before 5.14

    monkeypatch.setattr(aligned, "_madvise", refused)
    memory = anonymous_memory(NBYTES)
    assert calls and calls[0][2] == 23
    assert aligned._madvise is None  # asked once, never again
    assert _resident(memory) == _pages(memory)  # populated all the same (MAP_POPULATE)
    _check_zeroed_aligned_writable(memory)
    memory.close()
    again = anonymous_memory(NBYTES)
    assert len(calls) == 1
    assert _resident(again) == _pages(again)
    again.close()


@pytest.mark.parametrize("populate", [True, False])
def test_each_call_maps_memory_of_its_own(populate: bool) -> None:
    first, second = anonymous_memory(NBYTES, populate=populate), anonymous_memory(NBYTES, populate=populate)
    a: Any = np.frombuffer(first, np.uint8)
    b: Any = np.frombuffer(second, np.uint8)
    a[:] = 1
    assert not b.any()
    del a, b
    first.close()
    second.close()
