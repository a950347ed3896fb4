"""ChunkWriter: Zarr v2, one object per chunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..stores import Buffer
from .base import Encoded, Layer, Writer

__all__ = ["ChunkWriter"]


class ChunkWriter(Writer):
    """Writes each non-empty chunk of a layer as its own object, key '<t>.<y>.<x>'."""

    def __init__(self, *, separator: str = ".", **kwargs: Any) -> None:
        self.separator = separator
        super().__init__(**kwargs)
        self._coords = self.layout.chunk_grid_coords()

    def _task_groups(self) -> Sequence[Sequence[tuple[int, ...] | None]]:
        return [[c] for c in self._coords]

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        return f"{self.array_path}/{self.separator.join(map(str, coords))}"

    def _write(self, layer: Layer, results: list[Encoded]) -> int | None:
        for coord, (enc,) in zip(self._coords, results, strict=True):
            if enc is None:
                continue
            parts: list[Buffer] = [enc]
            self._put(self.chunk_key((layer.index, *coord)), parts)
            if not self._holds_buffer:
                self.budget.release(len(enc))
        return layer.frames_end
