"""Encoding: a band's chunks -> compressed bytes, back to back in a reused output buffer.

Runs on the compression pool (Blosc releases the GIL).  A task encodes the
chunks that end up in one object (a chunk in v2, a shard's part of the band
in v3) into one page-aligned output buffer with room for the worst case, so
the object can be written straight from it.  Chunks that are entirely fill
value are not stored at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codecs import BloscCodec
from ..codecs.blosc import BLOSC_MAX_OVERHEAD
from .buffers import BufferPools
from .layout import ArrayLayout

__all__ = ["Encoded", "Encoder", "output_nbytes"]

_ALIGN = 4096

# Frame-grid coordinates of a chunk inside a band; None where the chunk lies outside the array.
ChunkCoords = tuple[int, ...] | None


@dataclass
class Encoded:
    """One task's output: its chunks stored back to back from the start of ``buffer``.

    ``sizes[i]`` is chunk i's encoded size, None where the chunk is all fill
    value (or outside the array) and so is not stored.
    """

    buffer: np.ndarray[Any, Any]
    sizes: list[int | None]
    used: int

    def offsets(self) -> list[int | None]:
        """Where each stored chunk starts in ``buffer``."""
        out: list[int | None] = []
        at = 0
        for n in self.sizes:
            out.append(None if n is None else at)
            at += n or 0
        return out

    @property
    def empty(self) -> bool:
        return self.used == 0


def output_nbytes(layout: ArrayLayout, chunks_per_task: int, trailer: int) -> int:
    """One task's output buffer: room for its chunks at worst (incompressible) plus the trailer."""
    nbytes = chunks_per_task * (layout.chunk_nbytes + BLOSC_MAX_OVERHEAD) + trailer
    return -(-nbytes // _ALIGN) * _ALIGN


class Encoder:
    """Encodes groups of one array level's chunks; owns the pool of output buffers."""

    def __init__(
        self,
        layout: ArrayLayout,
        codec: BloscCodec | None,
        chunks_per_task: int,
        trailer: int,
        pools: BufferPools,
        observe: Callable[[tuple[int, ...], np.ndarray[Any, Any]], None] | None = None,
    ) -> None:
        self.layout = layout
        self.codec = codec
        self.observe = observe  # sees every stored chunk (the contrast window)
        self.output_nbytes = output_nbytes(layout, chunks_per_task, trailer)
        # Output buffers fault in lazily: resident memory follows the compressed size.
        self.pool = pools.get((self.output_nbytes,), np.dtype(np.uint8), populate=False)
        self._bits_dtype = np.dtype(f"u{layout.dtype.itemsize}")

    def encode(
        self,
        band: np.ndarray[Any, Any],
        band_coords: tuple[int, ...],
        coords: Sequence[ChunkCoords],
        observe: bool = True,
    ) -> Encoded:
        """``observe``: show the chunks to ``self.observe`` (a checkpoint's copy of a band that is
        still filling does not: its frames are shown once, when the band is complete)."""
        out = self.pool.take()  # reserved with the band
        sizes: list[int | None] = []
        offset = 0
        try:
            for c in coords:
                chunk = None if c is None else band[c]
                if chunk is None or self._is_fill(chunk):
                    sizes.append(None)
                    continue
                if observe and self.observe is not None:
                    self.observe(band_coords, chunk)
                if self.codec is not None:
                    n = self.codec.encode_into(chunk, out, offset)
                else:
                    n = chunk.nbytes
                    out[offset : offset + n] = chunk.reshape(-1).view(np.uint8)
                sizes.append(n)
                offset += n
        except BaseException:
            self.pool.give(out)  # its reservation is released by whoever sees the failure
            raise
        return Encoded(out, sizes, offset)

    def give_back(self, encoded: Encoded) -> None:
        self.pool.give(encoded.buffer)

    def _is_fill(self, chunk: np.ndarray[Any, Any]) -> bool:
        """All-zero bits?  Checks the ends first so real data costs almost nothing."""
        bits = chunk.reshape(-1).view(self._bits_dtype)
        return bool(bits[0] == 0 and bits[-1] == 0 and not bits.any())
