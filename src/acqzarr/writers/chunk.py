"""ChunkWriter: Zarr v2, one object per chunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..layout import ArrayLayout
from .base import Encoded, Layer, Writer

__all__ = ["ChunkWriter"]


class ChunkWriter(Writer):
    """Writes each non-empty chunk of a layer as its own object, key '<t>.<y>.<x>'."""

    def __init__(self, *, separator: str = ".", **kwargs: Any) -> None:
        self.separator = separator
        self._coords = kwargs["layout"].chunk_grid_coords()
        super().__init__(**kwargs)

    def _task_groups(self) -> Sequence[Sequence[tuple[int, ...] | None]]:
        return [[c] for c in self._coords]

    @classmethod
    def output_geometry(cls, layout: ArrayLayout) -> tuple[int, int, int]:
        return len(layout.chunk_grid_coords()), 1, 0

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        return f"{self.array_path}/{self.separator.join(map(str, coords))}"

    def _write(self, layer: Layer, results: list[Encoded]) -> int | None:
        try:
            self._put_padded_many(
                [
                    (self.chunk_key((layer.index, *coord)), enc.buffer, enc.used)
                    for coord, enc in zip(self._coords, results, strict=True)
                    if not enc.empty
                ]
            )
        finally:
            for enc in results:
                self._release(enc)
        return layer.frames_end
