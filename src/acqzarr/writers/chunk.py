"""ChunkWriter: Zarr v2, one object per chunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .bands import Band
from .encode import ChunkCoords, Encoded
from .layout import ArrayLayout, Index
from .objects import ObjectWriter, Stored, StoredBand

__all__ = ["ChunkWriter"]


class ChunkWriter(ObjectWriter):
    """Writes each non-empty chunk of a band as its own object, key '<t>.<c>.<z>.<y>.<x>'."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._coords = self.layout.chunk_grid_coords()

    @classmethod
    def task_groups(cls, layout: ArrayLayout) -> list[list[ChunkCoords]]:
        return [[c] for c in layout.chunk_grid_coords()]

    def store_band(self, band: Band, results: Sequence[Encoded]) -> Stored:
        return Stored([StoredBand(band.coords, band.frames)], self._put_band(band, results))

    def write_partial(self, parts: Sequence[tuple[Band, Sequence[Encoded]]]) -> Stored:
        return Stored(nbytes=sum(self._put_band(band, results) for band, results in parts))

    def _put_band(self, band: Band, results: Sequence[Encoded]) -> int:
        return self._put_many(
            [
                (self.object_key((*band.coords, *coord)), enc, enc.used)
                for coord, enc in zip(self._coords, results, strict=False)
            ]
        )

    def read_band(self, coords: Index) -> list[tuple[tuple[int, ...], bytes]]:
        out = []
        for coord in self._coords:
            try:
                out.append((coord, self.store.get(self.object_key((*coords, *coord)))))
            except KeyError:
                continue  # all fill value: never stored
        return out
