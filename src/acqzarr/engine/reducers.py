"""Resolution pyramids built while frames stream in, never by reading storage back.

Every ``space`` axis halves from one level to the next: the frame axes, a
space axis between the append axis and the frame (z in t-z-y-x), and the
append axis itself when it is space (z appended plane by plane: consecutive
planes are paired).  Time, channel and other axes never downsample.

Odd sizes replicate the edge: the last row (column, plane) pairs with itself,
so a level has ceil(n / 2) samples along a halved axis and nothing is dropped.

Methods (each reduces a 2 x 2 (x 2) block of the level above):

- ``decimate``: the first sample of the block (even indices); sample centres
  do not move, so the levels carry no translation.
- ``mean``: the average.  Integers round half up, exactly:
  ``floor(sum / n + 1/2)``; computed without overflow in any integer type.
  Floats average in float64 and are cast back (summation order, and so
  the last bit, is unspecified).
- ``min`` / ``max``: the extreme of the block.

For mean, min and max a level-L sample summarises 2**L samples of level 0
along each halved axis, so its centre sits (2**L - 1) / 2 level-0 samples
from the origin: the metadata records that as a translation.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["downsample", "reduce_block"]


def downsample(array: Any, method: str, axes: Sequence[int]) -> np.ndarray[Any, Any]:
    """The next pyramid level of a whole level: ``array`` halved along ``axes`` by ``method``.

    The stream builds its levels band by band with this same rule (``reduce_block``), so a reader
    can check a stored pyramid, or rebuild a level, from the OME-NGFF multiscale ``metadata``,
    which names this function and its keyword arguments.
    """
    return reduce_block(np.asarray(array), tuple(int(a) for a in axes), method)


def _pad_edge(block: np.ndarray[Any, Any], axes: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """Replicate the last sample of every odd-sized axis in ``axes``."""
    for ax in axes:
        if block.shape[ax] % 2:
            edge = np.take(block, [-1], axis=ax)
            block = np.concatenate([block, edge], axis=ax)
    return block


# Output rows per pass of the strip loop: the input strip of a 2048-wide uint16 frame (2 x 64 rows,
# 512 KiB) and its wide sums stay in cache, where a whole-frame pass streams through memory.
_STRIP = 64


def reduce_block(
    block: np.ndarray[Any, Any],
    axes: tuple[int, ...],
    method: str,
    out: np.ndarray[Any, Any] | None = None,
) -> np.ndarray[Any, Any]:
    """Halve ``block`` along ``axes`` with ``method`` (see the module docstring), into ``out`` if
    given (of the halved shape; it may be a strided view, e.g. part of a frame).

    Halves one axis at a time (``a[0::2] + a[1::2]`` and the like: elementwise ufuncs on strided
    views, which numpy runs several times faster than reductions over size-2 axes), strip by strip
    along the longest halved axis so every pass works in cache, with per-thread work arrays.
    Runs in pool threads: numpy releases the GIL in its ufunc loops.
    """
    if not axes:
        return block
    shape = [-(-n // 2) if a in axes else n for a, n in enumerate(block.shape)]
    out = np.empty(shape, block.dtype) if out is None else out
    if method == "decimate":
        out[...] = block[tuple(slice(None, None, 2) if i in axes else slice(None) for i in range(block.ndim))]
        return out
    block = _pad_edge(block, axes)
    along = max(axes, key=lambda a: block.shape[a])
    for start in range(0, out.shape[along], _STRIP):
        rows = slice(start, start + _STRIP)
        source = block[(slice(None),) * along + (slice(2 * start, 2 * (start + _STRIP)),)]
        _reduce(source, axes, method, out[(slice(None),) * along + (rows,)])
    return out


# Work arrays up to this size are kept per thread and reused: a strip's temporaries, freed and
# allocated again, would go back to the system and be touched afresh each time, which costs more
# here than the arithmetic (first touch of memory is slow on these VMs).  Larger ones (a reader
# downsampling a whole array at once) are allocated as needed.
_KEEP_NBYTES = 4 << 20
_work = threading.local()


def _scratch(slot: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """Work array ``slot`` of this thread, of ``shape`` and ``dtype``."""
    size = math.prod(shape)
    if size * dtype.itemsize > _KEEP_NBYTES:
        return np.empty(shape, dtype)
    kept: dict[int, np.ndarray[Any, Any]] = _work.__dict__.setdefault("arrays", {})
    flat = kept.get(slot)
    if flat is None or flat.dtype != dtype or flat.size < size:
        flat = kept[slot] = np.empty(_KEEP_NBYTES // dtype.itemsize, dtype)
    return flat[:size].reshape(shape)


def _halves(a: np.ndarray[Any, Any], axis: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The even and the odd samples of ``a`` along ``axis`` (its length is even)."""
    lead = (slice(None),) * axis
    return a[(*lead, slice(0, None, 2))], a[(*lead, slice(1, None, 2))]


def _pairwise(
    ufunc: np.ufunc, acc: np.ndarray[Any, Any], axes: Sequence[int], slot: int = 2
) -> np.ndarray[Any, Any]:
    """``acc`` combined pairwise along each of ``axes`` in turn, in work arrays from ``slot`` on."""
    for i, ax in enumerate(axes):
        even, odd = _halves(acc, ax)
        acc = ufunc(even, odd, out=_scratch(slot + i, even.shape, acc.dtype))
    return acc


def _reduce(
    block: np.ndarray[Any, Any], axes: tuple[int, ...], method: str, out: np.ndarray[Any, Any]
) -> None:
    """``reduce_block`` of one strip (even lengths along ``axes``) into ``out``."""
    if method in ("min", "max"):
        out[...] = _pairwise(np.minimum if method == "min" else np.maximum, block, axes)
        return
    dtype = block.dtype
    n = 2 ** len(axes)
    if dtype.kind == "f":
        if dtype.itemsize < 8:  # float64 holds any sum of a few float32s
            acc = np.add(*_halves(block, axes[0]), dtype=np.float64)
            np.divide(_pairwise(np.add, acc, axes[1:]), n, out=out, casting="unsafe")
        else:  # float64: divide first, so the mean of values near the largest float stays finite
            out[...] = _pairwise(np.add, block / n, axes)
        return
    if dtype.itemsize > 4:
        out[...] = _mean_64(block, axes, n)
        return
    # Sums of at most 8 values fit exactly in twice the width (32 bits for 8/16-bit types, 64 for
    # 32-bit ones); the narrowest that fits keeps memory traffic down.  n is a power of two, so
    # floor((sum + n/2) / n) is a shift (arithmetic for signed types: floor, like //).
    last = block.ndim - 1
    if _pairs_in_words(block, axes):
        # A camera's uint8/uint16 rows: each pair along the row, read as one word of twice the
        # width, sums as low half + high half (whichever sample is which: the sum is the same),
        # with contiguous whole-word ufuncs instead of stride-2 ones: ~2.5x faster.
        bits = 8 * dtype.itemsize
        words = block.view(f"u{2 * dtype.itemsize}")
        acc = np.bitwise_and(words, (1 << bits) - 1, out=_scratch(0, words.shape, words.dtype))
        acc += np.right_shift(words, bits, out=_scratch(1, words.shape, words.dtype))
        rest = [ax for ax in axes if ax != last]
    else:
        even, odd = _halves(block, axes[0])
        wide = np.dtype(f"{dtype.kind}{max(4, 2 * dtype.itemsize)}")
        acc = np.add(even, odd, out=_scratch(0, even.shape, wide), dtype=wide)
        rest = list(axes[1:])
    acc = _pairwise(np.add, acc, rest)
    acc += n // 2
    np.right_shift(acc, len(axes), out=out, casting="unsafe")


def _pairs_in_words(block: np.ndarray[Any, Any], axes: tuple[int, ...]) -> bool:
    """Whether the pairs along ``block``'s last axis can be read as words of twice the width:
    unsigned 8 or 16 bits in native order, the last axis halved, contiguous and of even length."""
    dtype = block.dtype
    last = block.ndim - 1
    return (
        dtype.kind == "u"
        and dtype.itemsize <= 2
        and dtype.isnative
        and last in axes
        and block.strides[last] == dtype.itemsize
        and block.shape[last] % 2 == 0
    )


def _mean_64(block: np.ndarray[Any, Any], axes: tuple[int, ...], n: int) -> np.ndarray[Any, Any]:
    """The rounded mean of 64-bit integers, with no intermediate larger than the type.

    x = q*n + r, so floor((sum x + n/2) / n) = sum q + floor((sum r + n/2) / n): q <= max / n and
    there are n of them; the remainders are small.
    """
    dtype = block.dtype
    q = block // n
    r = (block - q * n).astype(np.int64)
    for ax in axes:
        q = np.add(*_halves(q, ax))
        r = np.add(*_halves(r, ax))
    r += n // 2
    r //= n
    return np.asarray(q + r.astype(dtype))
