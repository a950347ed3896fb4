"""Geometry of one array: frames, index axes, bands, chunk grid and shard grid.

A *frame* is what a camera delivers: the last two axes (the last one for a
2-axis array, e.g. a line-scan camera).  Every other axis is an *index axis*
(t, c, z, ...): a frame's position is one value per index axis.

A *band* is one chunk deep along every index axis and spans the whole frame:
for ``(t, c, z, y, x)`` with chunks ``(1, 1, 64, 256, 256)`` it is 64 planes
of one channel of one timepoint.  It is the unit the writers buffer, encode
and store, so memory follows the chunk shape, never the depth of a volume.
A band buffer is laid out chunk-major, ``(frame grid..., chunk...)``, so each
of its chunks is contiguous when it is compressed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..settings import ArraySettings

__all__ = ["ArrayLayout", "CopyRegion"]

Index = tuple[int, ...]


@dataclass(frozen=True)
class CopyRegion:
    """One rectangular piece of a frame that maps onto whole grid tiles of the band buffer.

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
        self.kinds = tuple(d.kind for d in dims)
        self.append_size = dims[0].size  # 0 = unbounded
        self.shape_rest = tuple(d.size for d in dims[1:])
        self.chunks = tuple(d.chunk for d in dims)
        self.chunks_per_shard = tuple(d.shard for d in dims) if sharded else (1,) * self.ndim
        self.shard_shape = tuple(c * s for c, s in zip(self.chunks, self.chunks_per_shard, strict=True))

        self.frame_ndim = len(settings.frame_names)
        self.index_ndim = self.ndim - self.frame_ndim
        self.frame_shape = settings.frame_shape
        self.index_names = settings.index_names
        self.index_shape = tuple(d.size for d in dims[: self.index_ndim])  # [0] may be 0: unbounded
        self.index_chunks = self.chunks[: self.index_ndim]
        self.frame_chunks = self.chunks[self.index_ndim :]
        self.frame_bytes = math.prod(self.frame_shape) * int(self.dtype.itemsize)

        # Bands: one chunk deep along every index axis.
        self.band_slots = math.prod(self.index_chunks)
        self.frame_grid = tuple(-(-s // c) for s, c in zip(self.frame_shape, self.frame_chunks, strict=True))
        self.band_shape = (*self.frame_grid, *self.chunks)
        self.band_nbytes: int = math.prod(self.band_shape) * int(self.dtype.itemsize)
        self.chunk_nbytes: int = math.prod(self.chunks) * int(self.dtype.itemsize)
        # Bands per step of the append axis's chunk grid (a "row" of bands).
        self.band_grid_rest = tuple(
            -(-s // c) for s, c in zip(self.index_shape[1:], self.index_chunks[1:], strict=True)
        )
        self.bands_per_row = math.prod(self.band_grid_rest)
        self._row_rest = list(np.ndindex(*self.band_grid_rest))  # a row's bands but for the row
        # Shards, split into their index part (bands) and their frame part (chunks of one band).
        self.index_chunks_per_shard = self.chunks_per_shard[: self.index_ndim]
        self.frame_chunks_per_shard = self.chunks_per_shard[self.index_ndim :]
        self.frame_shard_grid = tuple(
            -(-g // s) for g, s in zip(self.frame_grid, self.frame_chunks_per_shard, strict=True)
        )
        self.regions = self._frame_regions()
        # Axis order that interleaves (tile, within) per frame axis for the copy.
        f = self.frame_ndim
        self._interleave = tuple(itertools.chain.from_iterable((i, f + i) for i in range(f)))
        # The same for a run of slots (``copy_frames``): the run's axis first, the samples after it.
        self._run_interleave = (f, *itertools.chain.from_iterable((i, f + 1 + i) for i in range(f)))

    # -- shapes -----------------------------------------------------------
    def shape_for(self, extent: int) -> tuple[int, ...]:
        """Array shape with ``extent`` samples along the append axis."""
        return (extent, *self.shape_rest)

    def describe(self, index: Index) -> str:
        """An index as error messages show it: ``{t: 3, c: 1, z: 17}``."""
        return "{" + ", ".join(f"{a}: {v}" for a, v in zip(self.index_names, index, strict=True)) + "}"

    # -- bands ------------------------------------------------------------
    def band_of(self, index: Index) -> tuple[Index, Index]:
        """(band coordinates, position inside the band) of the frame at ``index``."""
        band = tuple(i // c for i, c in zip(index, self.index_chunks, strict=True))
        within = tuple(i % c for i, c in zip(index, self.index_chunks, strict=True))
        return band, within

    def band_extent(self, band: Index, append_extent: int | None) -> Index:
        """Slots of ``band`` inside the array along each index axis (edge bands are shorter).

        ``append_extent`` bounds the append axis where it is known (at close); None keeps a
        full chunk for an unbounded axis.
        """
        sizes: list[int | None] = list(self.index_shape)
        if append_extent is not None:
            sizes[0] = append_extent
        elif self.append_size == 0:
            sizes[0] = None  # unbounded and not closed yet: the whole chunk
        out = []
        for b, c, s in zip(band, self.index_chunks, sizes, strict=True):
            out.append(c if s is None else max(0, min(c, s - b * c)))
        return tuple(out)

    def row_bands(self, row: int) -> list[Index]:
        """Every band of one step of the append axis's chunk grid, in C order."""
        return [(row, *rest) for rest in self._row_rest]

    def chunk_grid_coords(self) -> list[tuple[int, ...]]:
        """Frame-axis chunk coordinates of a band in C order."""
        return list(np.ndindex(*self.frame_grid))

    # -- frame -> tile copies ---------------------------------------------
    def _frame_regions(self) -> list[CopyRegion]:
        per_axis: list[list[tuple[slice, slice, slice, int, int]]] = []
        for size, chunk in zip(self.frame_shape, self.frame_chunks, strict=True):
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

    def copy_frame(
        self, band: np.ndarray[Any, Any], within: Index, frame: np.ndarray[Any, Any] | int
    ) -> None:
        """Tile ``frame`` into ``band`` at slot ``within`` with one strided copy per region.

        ``frame`` may be a scalar (used to clear a slot back to the fill value).
        """
        for r in self.regions:
            at: tuple[int | slice, ...] = (*r.grid, *within, *r.within)
            dest = band[at].transpose(self._interleave)
            if isinstance(frame, np.ndarray):
                dest[...] = frame[r.source].reshape(r.tiled_shape)
            else:
                dest[...] = frame

    def copy_frames(self, band: np.ndarray[Any, Any], within: Index, frames: np.ndarray[Any, Any]) -> None:
        """Tile ``frames`` (n, *frame) into the n consecutive slots of ``band`` that start at
        ``within`` along the last index axis: one strided copy per region for all of them (a
        stack appended in one call is one numpy copy, not one per frame)."""
        n = len(frames)
        run = slice(within[-1], within[-1] + n)
        for r in self.regions:
            at: tuple[int | slice, ...] = (*r.grid, *within[:-1], run, *r.within)
            dest = band[at].transpose(self._run_interleave)
            dest[...] = frames[(slice(None), *r.source)].reshape((n, *r.tiled_shape))

    def read_frame(self, band: np.ndarray[Any, Any], within: Index, out: np.ndarray[Any, Any]) -> None:
        """Copy the frame at slot ``within`` of ``band`` into ``out`` (frame shape): the inverse copy."""
        for r in self.regions:
            at: tuple[int | slice, ...] = (*r.grid, *within, *r.within)
            src = band[at].transpose(self._interleave)
            out[r.source] = src.reshape(out[r.source].shape)
