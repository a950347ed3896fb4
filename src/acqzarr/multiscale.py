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
from typing import Any

import numpy as np

from .layout import ArrayLayout
from .settings import ArraySettings, Dimension

__all__ = ["Downsampler", "level_count", "level_settings", "reduce_block"]

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
        acc = views[0].astype(np.float64)
        for v in views[1:]:
            np.add(acc, v, out=acc)
        acc /= n
        return acc.astype(dtype)
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


class Downsampler:
    """Turns the append steps of one level into the append steps of the next.

    A *step* is everything at one index of the append axis: shape
    inner + frame.  When the append axis is space, two consecutive steps are
    paired (an odd last one with itself at ``flush``).
    """

    def __init__(self, layout: ArrayLayout, method: str) -> None:
        self.method = method
        dims = layout.settings.dimensions
        self.pair_append = dims[0].kind == "space"
        self.step_axes = tuple(i for i, d in enumerate(dims[1:]) if d.kind == "space")
        self._held: np.ndarray[Any, Any] | None = None

    def push(self, step: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
        if not self.pair_append:
            return reduce_block(step, self.step_axes, self.method)
        if self._held is None:
            self._held = step.copy()
            return None
        pair = np.stack([self._held, step])
        self._held = None
        return self._reduce_pair(pair)

    def flush(self) -> np.ndarray[Any, Any] | None:
        """The unpaired last step, paired with itself (replicate-edge); None if there is none."""
        if self._held is None:
            return None
        held, self._held = self._held, None
        return self._reduce_pair(np.stack([held, held]))

    def _reduce_pair(self, pair: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        axes = (0, *(a + 1 for a in self.step_axes))
        return np.asarray(reduce_block(pair, axes, self.method)[0])


def gather_step(layout: ArrayLayout, layer: np.ndarray[Any, Any], t_in: int) -> np.ndarray[Any, Any]:
    """Step ``t_in`` of a chunk-major layer buffer, back in array order (shape inner + frame)."""
    g = len(layout.grid_rest)
    tiles = layer[(slice(None),) * g + (t_in,)]  # (grid..., chunk_rest...)
    order = [ax for i in range(g) for ax in (i, g + i)]
    padded = tiles.transpose(order).reshape(
        [a * b for a, b in zip(layout.grid_rest, layout.chunks[1:], strict=True)]
    )
    crop = tuple(slice(0, s) for s in layout.shape_rest)
    return np.asarray(padded[crop])
