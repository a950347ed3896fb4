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

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .settings import ArraySettings, Dimension

__all__ = ["downsample", "level_count", "level_settings", "reduce_block", "space_axes"]

MAX_LEVELS = 16


def _halve(d: Dimension) -> Dimension:
    if d.kind != "space":
        return d
    size = 0 if d.size == 0 else -(-d.size // 2)
    chunk = d.chunk if size == 0 else min(d.chunk, size)
    shard = d.shard if size == 0 else max(1, min(d.shard, -(-size // chunk)))
    return d.model_copy(update={"size": size, "chunk": chunk, "shard": shard})


def level_settings(settings: ArraySettings, levels: int) -> list[ArraySettings]:
    """Settings of levels 0..levels-1; chunk and shard shapes kept, clamped where a level is smaller."""
    out = [settings]
    for _ in range(levels - 1):
        prev = out[-1]
        out.append(prev.model_copy(update={"dimensions": [_halve(d) for d in prev.dimensions]}))
    return out


def level_count(settings: ArraySettings) -> int:
    """Levels for ``multiscale.levels`` ("auto": until a level fits one chunk in every halved axis)."""
    ms = settings.multiscale
    if ms is None:
        return 1
    if ms.levels != "auto":
        return int(ms.levels)
    dims = settings.dimensions
    for n in range(1, MAX_LEVELS + 1):
        top = level_settings(settings, n)[-1].dimensions
        if all(d.size <= d0.chunk for d, d0 in zip(top, dims, strict=True) if d.kind == "space" and d.size):
            return n
    return MAX_LEVELS


def space_axes(settings: ArraySettings) -> tuple[int, ...]:
    """The indices of the axes that halve from one level to the next."""
    return tuple(i for i, d in enumerate(settings.dimensions) if d.kind == "space")


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


def reduce_block(block: np.ndarray[Any, Any], axes: tuple[int, ...], method: str) -> np.ndarray[Any, Any]:
    """Halve ``block`` along ``axes`` with ``method`` (see the module docstring).

    Works on the 2**k strided views ``block[d0::2, d1::2, ...]`` with
    elementwise ufuncs: numpy is several times faster at that than at
    reducing over size-2 axes of a reshaped array.
    """
    if not axes:
        return block
    if method == "decimate":
        every_other = tuple(slice(None, None, 2) if i in axes else slice(None) for i in range(block.ndim))
        return np.ascontiguousarray(block[every_other])
    block = _pad_edge(block, axes)
    views = []
    for offsets in itertools.product((0, 1), repeat=len(axes)):
        index: list[slice] = [slice(None)] * block.ndim
        for ax, d in zip(axes, offsets, strict=True):
            index[ax] = slice(d, None, 2)
        views.append(block[tuple(index)])
    if method in ("min", "max"):
        ufunc = np.minimum if method == "min" else np.maximum
        out = views[0].copy()
        for v in views[1:]:
            ufunc(out, v, out=out)
        return out
    return _mean(views)


def _mean(views: list[np.ndarray[Any, Any]]) -> np.ndarray[Any, Any]:
    dtype = views[0].dtype
    n = len(views)
    if dtype.kind == "f":
        if dtype.itemsize < 8:  # float64 holds any sum of a few float32s
            acc = views[0].astype(np.float64)
            for v in views[1:]:
                np.add(acc, v, out=acc)
            acc /= n
            return acc.astype(dtype)
        # float64: divide first, so the mean of values near the largest float stays finite
        acc = views[0] / n
        for v in views[1:]:
            np.add(acc, v / n, out=acc)
        return acc
    if dtype.itemsize <= 4:
        # Sums of at most 8 values fit exactly in twice the width (32 bits for 8/16-bit types,
        # 64 for 32-bit ones); the narrowest that fits keeps memory traffic down.
        bits = 32 if dtype.itemsize <= 2 else 64
        wide = np.dtype(f"{'i' if dtype.kind == 'i' else 'u'}{bits // 8}")
        acc = views[0].astype(wide)
        for v in views[1:]:
            np.add(acc, v, out=acc, casting="unsafe")
        acc += n // 2
        acc //= n
        return acc.astype(dtype)
    # 64-bit: x = q*n + r, so floor((sum x + n/2) / n) = sum q + floor((sum r + n/2) / n) with no
    # intermediate larger than the type (q <= max / n, and there are n of them).
    q_sum = np.zeros(views[0].shape, dtype)
    r_sum = np.zeros(views[0].shape, np.int64)
    for v in views:
        q = v // n
        np.add(q_sum, q, out=q_sum)
        np.add(r_sum, (v - q * n).astype(np.int64), out=r_sum)
    r_sum += n // 2
    r_sum //= n
    return np.asarray(q_sum + r_sum.astype(dtype))
