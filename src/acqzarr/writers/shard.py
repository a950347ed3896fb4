"""ShardWriter: Zarr v3 with the ``sharding_indexed`` codec, one object per shard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..codecs import ShardLayout
from ..stores import Buffer
from .base import Encoded, Layer, Writer

__all__ = ["ShardWriter"]


class ShardWriter(Writer):
    """Packs a layer's chunks into shards; a shard spanning several layers waits for all of them.

    While a shard is open along the append axis its encoded chunks stay in
    memory (counted in the in-flight budget) and its frames are not yet
    published: readers only ever see complete shards.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        lay = self.layout
        self._shard_t = lay.chunks_per_shard[0]
        self._shard_layout = ShardLayout(lay.chunks_per_shard)
        self._per_layer = int(np.prod(lay.chunks_per_shard[1:], dtype=np.int64))
        self._shard_coords = list(np.ndindex(*lay.shard_grid_rest))
        groups: list[list[tuple[int, ...] | None]] = []
        for s in self._shard_coords:
            group: list[tuple[int, ...] | None] = []
            for w in np.ndindex(*lay.chunks_per_shard[1:]):
                c = tuple(si * n + wi for si, n, wi in zip(s, lay.chunks_per_shard[1:], w, strict=True))
                inside = all(ci < g for ci, g in zip(c, lay.grid_rest, strict=True))
                group.append(c if inside else None)
            groups.append(group)
        self._groups = groups
        self._open: dict[tuple[int, ...], list[Buffer | None]] = {}
        self._open_bytes = 0
        self._open_row = 0
        self._open_frames = 0

    def _keeps_encoded_across_layers(self) -> bool:
        return self.layout.chunks_per_shard[0] > 1

    def _task_groups(self) -> Sequence[Sequence[tuple[int, ...] | None]]:
        return self._groups

    def shard_key(self, coords: tuple[int, ...]) -> str:
        return f"{self.array_path}/c/{'/'.join(map(str, coords))}"

    def _write(self, layer: Layer, results: list[Encoded]) -> int | None:
        t_in = layer.index % self._shard_t
        self._open_row = layer.index // self._shard_t
        base = t_in * self._per_layer
        for s, encoded in zip(self._shard_coords, results, strict=True):
            slots = self._open.get(s)
            if slots is None:
                slots = self._open[s] = [None] * self._shard_layout.n_chunks
            slots[base : base + self._per_layer] = encoded
            if not self._holds_buffer:
                self._open_bytes += sum(len(e) for e in encoded if e is not None)
        self._open_frames = layer.frames_end
        if t_in == self._shard_t - 1 or layer.final:
            return self._flush_pending()
        return None

    def _flush_pending(self) -> int | None:
        if not self._open:
            return None
        for s, slots in self._open.items():
            if any(e is not None for e in slots):
                self._put(self.shard_key((self._open_row, *s)), self._shard_layout.pack(slots))
        self._open.clear()
        self.budget.release(self._open_bytes)
        self._open_bytes = 0
        return self._open_frames
