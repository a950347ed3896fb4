"""Geometry of one array: frames, layers, chunk grid and shard grid.

A *frame* is what a camera delivers: the last two axes (the last one for a
2-D array, e.g. a line-scan camera).  Frames fill the axes between the append
axis and the frame in C order, as acquire-zarr does, so a (t, c, y, x) array
takes frames c0, c1, c0, c1, ...  A *layer* is one chunk thick along the
append axis and spans everything else: the unit the writers flush.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .settings import ArraySettings

__all__ = ["ArrayLayout", "CopyRegion"]


@dataclass(frozen=True)
class CopyRegion:
    """One rectangular piece of a frame that maps onto whole grid tiles of the layer buffer.

    Splitting a frame into "full tiles" and "edge remainder" pieces per axis
    lets each piece be copied with a single strided numpy assignment, even
    when the frame size is not a multiple of the chunk size.
    """

    grid: tuple[slice, ...]  # which tiles, per frame axis
    within: tuple[slice, ...]  # which samples inside each tile, per frame axis
    source: tuple[slice, ...]  # the frame samples, per frame axis
    tiled_shape: tuple[int, ...]  # source reshaped as (tiles_0, len_0, tiles_1, len_1, ...)


class ArrayLayout:
    """Derived shapes for one ``ArraySettings``; immutable and cheap to query."""

    def __init__(self, settings: ArraySettings, sharded: bool) -> None:
        dims = settings.dimensions
        self.settings = settings
        self.dtype: np.dtype[Any] = np.dtype(settings.dtype)
        self.ndim = len(dims)
        self.names = tuple(d.name for d in dims)
        self.append_size = dims[0].size  # 0 = unbounded
        self.shape_rest = tuple(d.size for d in dims[1:])
        self.chunks = tuple(d.chunk for d in dims)
        self.chunks_per_shard = tuple(d.shard for d in dims) if sharded else (1,) * self.ndim
        self.shard_shape = tuple(c * s for c, s in zip(self.chunks, self.chunks_per_shard, strict=True))

        self.frame_ndim = min(2, self.ndim - 1)
        self.frame_shape = self.shape_rest[len(self.shape_rest) - self.frame_ndim :]
        self.inner_shape = self.shape_rest[: len(self.shape_rest) - self.frame_ndim]
        self.frames_per_index = math.prod(self.inner_shape)  # frames per step of the append axis
        self.layer_frames = self.chunks[0] * self.frames_per_index

        # Chunk grid of the non-append axes; the layer buffer is (grid..., chunk...).
        self.grid_rest = tuple(-(-s // c) for s, c in zip(self.shape_rest, self.chunks[1:], strict=True))
        self.layer_shape = (*self.grid_rest, *self.chunks)
        self.layer_nbytes: int = math.prod(self.layer_shape) * int(self.dtype.itemsize)
        self.chunk_nbytes: int = math.prod(self.chunks) * int(self.dtype.itemsize)
        self.shard_grid_rest = tuple(
            -(-g // s) for g, s in zip(self.grid_rest, self.chunks_per_shard[1:], strict=True)
        )
        self.regions = self._frame_regions()
        self._n_inner = len(self.inner_shape)
        self._inner_chunks = self.chunks[1 : 1 + self._n_inner]
        # Axis order that interleaves (tile, within) per frame axis for the copy.
        f = self.frame_ndim
        self._interleave = tuple(itertools.chain.from_iterable((i, f + i) for i in range(f)))

    # -- shapes -----------------------------------------------------------
    def shape_for(self, frames: int) -> tuple[int, ...]:
        """Array shape once ``frames`` frames are in (partial append steps round up)."""
        return (-(-frames // self.frames_per_index), *self.shape_rest)

    def max_frames(self) -> int | None:
        return None if self.append_size == 0 else self.append_size * self.frames_per_index

    # -- frame -> tile copies ---------------------------------------------
    def _frame_regions(self) -> list[CopyRegion]:
        per_axis: list[list[tuple[slice, slice, slice, int, int]]] = []
        for size, chunk in zip(self.frame_shape, self.chunks[-self.frame_ndim :], strict=True):
            full, rem = divmod(size, chunk)
            pieces = []
            if full:
                pieces.append((slice(0, full), slice(0, chunk), slice(0, full * chunk), full, chunk))
            if rem:
                pieces.append((slice(full, full + 1), slice(0, rem), slice(full * chunk, size), 1, rem))
            per_axis.append(pieces)
        regions = []
        for combo in itertools.product(*per_axis):
            regions.append(
                CopyRegion(
                    grid=tuple(p[0] for p in combo),
                    within=tuple(p[1] for p in combo),
                    source=tuple(p[2] for p in combo),
                    tiled_shape=tuple(itertools.chain.from_iterable((p[3], p[4]) for p in combo)),
                )
            )
        return regions

    def slot_index(self, slot: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(inner tile indices, (t_in, inner within-tile indices)) for frame ``slot`` of a layer."""
        t_in, inner = divmod(slot, self.frames_per_index)
        coords = np.unravel_index(inner, self.inner_shape) if self._n_inner else ()
        tiles = tuple(int(c) // k for c, k in zip(coords, self._inner_chunks, strict=True))
        within = tuple(int(c) % k for c, k in zip(coords, self._inner_chunks, strict=True))
        return tiles, (t_in, *within)

    def copy_frame(self, layer: np.ndarray[Any, Any], slot: int, frame: np.ndarray[Any, Any] | int) -> None:
        """Tile ``frame`` into ``layer`` at ``slot`` with one strided copy per region.

        ``frame`` may be a scalar (used to clear a slot back to the fill value).
        """
        tiles, lead = self.slot_index(slot)
        for r in self.regions:
            index: tuple[int | slice, ...] = (*tiles, *r.grid, *lead, *r.within)
            dest = layer[index]
            dest = dest.transpose(self._interleave)
            if isinstance(frame, np.ndarray):
                dest[...] = frame[r.source].reshape(r.tiled_shape)
            else:
                dest[...] = frame

    def chunk_grid_coords(self) -> list[tuple[int, ...]]:
        """Chunk coordinates (non-append axes) of a layer in C order."""
        return list(np.ndindex(*self.grid_rest))
