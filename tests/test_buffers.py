"""BufferPool and mapped_array: zeroed, page-aligned buffers of one shape, reused before new ones are mapped.

``mapped_array`` is counted (and, for the background tests, held) by patching it in
``acqzarr.writers.buffers``, so "no new mapping" is observed directly rather than inferred from timing.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from acqzarr.writers import buffers
from acqzarr.writers.buffers import BufferPool, BufferPools, mapped_array

WAIT = 10.0


class CountingMapper:
    """Stands in for ``mapped_array``: counts calls; mappings made on ``held_thread`` wait for ``gate``."""

    def __init__(self, held_thread: str | None = None, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.held_thread = held_thread
        self.fail = fail

    def __call__(self, shape: tuple[int, ...], dtype: np.dtype[Any], *, populate: bool = True) -> Any:
        name = threading.current_thread().name
        self.calls.append(name)
        if name == self.held_thread:
            self.entered.set()
            assert self.gate.wait(WAIT)
            if self.fail:
                raise MemoryError("no memory for the band")
        return mapped_array(shape, dtype, populate=populate)


@pytest.fixture
def mapper(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CountingMapper]:
    def install(**kwargs: Any) -> CountingMapper:
        m = CountingMapper(**kwargs)
        monkeypatch.setattr(buffers, "mapped_array", m)
        return m

    return install


@pytest.mark.parametrize("populate", [True, False])
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((3, 4, 5), "uint16"), ((2, 3, 1, 16, 16), "float32"), ((4097,), "uint8"), ((7, 3), "int64")],
)
def test_mapped_array_is_zeroed_writable_and_page_aligned(
    shape: tuple[int, ...], dtype: str, populate: bool
) -> None:
    a = mapped_array(shape, np.dtype(dtype), populate=populate)
    assert a.shape == shape
    assert a.dtype == np.dtype(dtype)
    assert a.flags.c_contiguous
    assert a.flags.writeable
    assert a.ctypes.data % mmap.PAGESIZE == 0
    assert not a.any()
    a[...] = 1
    assert (a == 1).all()


def test_mapped_array_of_no_bytes() -> None:
    a = mapped_array((0, 16), np.dtype("uint16"))
    assert a.shape == (0, 16)
    assert a.dtype == np.uint16


def test_separate_mappings_do_not_share_memory() -> None:
    pool = BufferPool((8, 8), np.dtype("uint16"))
    a, b = pool.take(), pool.take()
    assert not np.shares_memory(a, b)
    a[...] = 7
    assert not b.any()


def test_take_has_the_pools_shape_and_dtype() -> None:
    pool = BufferPool((2, 3, 16, 16), np.dtype("float32"), populate=False)
    buf = pool.take()
    assert buf.shape == (2, 3, 16, 16)
    assert buf.dtype == np.float32
    assert not buf.any()


def test_a_returned_buffer_is_reused_with_its_contents(mapper: Callable[..., CountingMapper]) -> None:
    m = mapper()
    pool = BufferPool((4, 4), np.dtype("uint16"))
    a = pool.take()
    a[...] = 5
    pool.give(a)
    b = pool.take()
    assert b is a  # the same memory, not a copy (the pool does not clear: callers do)
    assert (b == 5).all()
    assert len(m.calls) == 1


def test_prefill_maps_buffers_up_front(mapper: Callable[..., CountingMapper]) -> None:
    m = mapper()
    pool = BufferPool((4, 4), np.dtype("uint16"))
    pool.prefill(3)
    assert len(m.calls) == 3
    taken = [pool.take() for _ in range(3)]
    assert len(m.calls) == 3  # all three came from the prefill
    assert not any(np.shares_memory(x, y) for i, x in enumerate(taken) for y in taken[i + 1 :])
    pool.take()  # the pool is empty: a new mapping
    assert len(m.calls) == 4


@pytest.mark.parametrize("n", [0, -2])
def test_prefill_of_nothing_maps_nothing(mapper: Callable[..., CountingMapper], n: int) -> None:
    m = mapper()
    pool = BufferPool((4, 4), np.dtype("uint16"))
    pool.prefill(n, background=True)
    pool.prefill(n)
    assert m.calls == []
    pool.take()  # and take does not wait for a mapping that never comes
    assert len(m.calls) == 1


def test_take_waits_for_a_background_prefill_instead_of_mapping_another(
    mapper: Callable[..., CountingMapper],
) -> None:
    m = mapper(held_thread="acqzarr-prefill")
    pool = BufferPool((4, 4), np.dtype("uint16"))
    pool.prefill(1, background=True)
    assert m.entered.wait(WAIT)
    got: list[np.ndarray[Any, Any]] = []
    done = threading.Event()

    def take() -> None:
        got.append(pool.take())
        done.set()

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    try:
        assert not done.wait(0.05)  # waiting for the prefill's buffer
        assert m.calls == ["acqzarr-prefill"]
    finally:
        m.gate.set()
    assert done.wait(WAIT)
    taker.join(WAIT)
    assert m.calls == ["acqzarr-prefill"]  # take mapped nothing itself
    assert got[0].shape == (4, 4)


def test_a_failed_background_prefill_does_not_leave_take_waiting(
    mapper: Callable[..., CountingMapper], monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    m = mapper(held_thread="acqzarr-prefill", fail=True)
    pool = BufferPool((4, 4), np.dtype("uint16"))
    pool.prefill(1, background=True)
    assert m.entered.wait(WAIT)
    done = threading.Event()
    taker = threading.Thread(target=lambda: (pool.take(), done.set()), daemon=True)
    taker.start()
    m.gate.set()
    assert done.wait(WAIT)  # the failed prefill released the waiter, which mapped its own
    taker.join(WAIT)
    prefill_threads = [t for t in threading.enumerate() if t.name == "acqzarr-prefill"]
    for t in prefill_threads:
        t.join(WAIT)
    assert m.calls[0] == "acqzarr-prefill"
    assert len(m.calls) == 2
    assert len(errors) == 1
    assert isinstance(errors[0], MemoryError)


def test_clear_drops_the_free_buffers(mapper: Callable[..., CountingMapper]) -> None:
    m = mapper()
    pool = BufferPool((4, 4), np.dtype("uint16"))
    a = pool.take()
    pool.give(a)
    pool.prefill(2)
    pool.clear()
    b = pool.take()
    assert b is not a
    assert len(m.calls) == 4  # one, two prefilled, and a new one after the clear


def test_arrays_of_one_shape_share_a_pool_and_its_buffers(mapper: Callable[..., CountingMapper]) -> None:
    """Two cameras of one model: a buffer one gives back is the next the other takes, so what stays
    mapped is the most in flight at once, not the sum of each array's peak."""
    m = mapper()
    pools = BufferPools()
    cam0 = pools.get((4, 4), np.dtype("uint16"))
    cam1 = pools.get((4, 4), np.dtype("uint16"))
    a = cam0.take()
    cam0.give(a)
    assert cam1.take() is a
    assert len(m.calls) == 1
    # Another shape, dtype or populating mode is another pool.
    others = [
        pools.get((4, 5), np.dtype("uint16")),
        pools.get((4, 4), np.dtype("int16")),
        pools.get((4, 4), np.dtype("uint16"), populate=False),
    ]
    assert len({id(p) for p in [cam0, *others]}) == 4
    cam1.give(a)
    pools.clear()
    assert cam0.take() is not a and len(m.calls) == 2


def test_mapped_counts_what_the_pools_keep() -> None:
    """``MemoryUsage.mapped``: every buffer mapped (taken, prefilled or returned) until a clear drops
    the free ones; buffers still out stay counted."""
    pools = BufferPools()
    band = pools.get((4, 4), np.dtype("uint16"))
    out = pools.get((100,), np.dtype("uint8"), populate=False)
    assert pools.mapped_nbytes() == 0
    a, b = band.take(), band.take()
    band.prefill(1)
    out.take()
    assert pools.mapped_nbytes() == 3 * 32 + 100
    band.give(a)
    assert band.take() is a and pools.mapped_nbytes() == 3 * 32 + 100  # reused: nothing new
    band.give(a)
    pools.clear()  # drops a and the prefilled one; b and the output buffer are still out
    assert pools.mapped_nbytes() == 32 + 100
    band.give(b)
    assert pools.mapped_nbytes() == 32 + 100


def test_pools_keep_no_more_mapped_together_than_the_limit(mapper: Callable[..., CountingMapper]) -> None:
    """Bands waiting for compression, then outputs waiting for the disk: each pool's peak comes at
    its own time. Under a limit, a pool that must map another buffer first has the other pools unmap
    free ones, so what stays mapped follows the most in flight at once, not the two peaks added."""
    m = mapper()
    pools = BufferPools(limit=6 * 32)
    band = pools.get((4, 4), np.dtype("uint16"))  # 32 bytes a buffer
    out = pools.get((4, 8), np.dtype("uint8"), populate=False)  # 32 bytes too
    bands = [band.take() for _ in range(5)]
    for b in bands:
        band.give(b)  # five free band buffers, none in flight
    outs = [out.take() for _ in range(4)]
    assert pools.mapped_nbytes() == 6 * 32  # three free band buffers made room for the outputs
    assert len(m.calls) == 9
    kept = {id(band.take()), id(band.take())}
    assert kept <= {id(b) for b in bands} and len(m.calls) == 9  # the two left are reused
    # Buffers in flight are never dropped: past the limit with nothing free, a pool still maps.
    outs.append(out.take())
    assert pools.mapped_nbytes() == 7 * 32
    for o in outs:
        out.give(o)
    band.take()  # maps: two free outputs go first, to end at the limit again
    assert pools.mapped_nbytes() == 6 * 32 and len(m.calls) == 11
    unlimited = BufferPools()
    free = unlimited.get((4, 4), np.dtype("uint16"))
    taken = [free.take() for _ in range(3)]
    for t in taken:
        free.give(t)
    [unlimited.get((4, 8), np.dtype("uint8")).take() for _ in range(3)]
    assert unlimited.mapped_nbytes() == 6 * 32  # no limit: every free buffer kept
