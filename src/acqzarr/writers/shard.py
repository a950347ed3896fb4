"""ShardWriter: Zarr v3 with the ``sharding_indexed`` codec, one object per shard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..codecs import ShardLayout
from ..layout import ArrayLayout
from ..stores import Buffer
from .base import Encoded, Layer, Writer

__all__ = ["ShardWriter"]


class ShardWriter(Writer):
    """Packs a layer's chunks into shards.

    A shard one layer thick (``shard: 1`` on the append axis, the usual case)
    is written straight from the task's output buffer: the chunks already lie
    back to back there, the index goes in the room left after them, and the
    store writes the whole aligned buffer without another copy.  A shard
    spanning several layers keeps its encoded groups (counted in the in-flight
    budget) until the last layer arrives; its frames are published only then,
    so readers only ever see complete shards.
    """

    def __init__(self, **kwargs: Any) -> None:
        lay = kwargs["layout"]
        self.shard_layout = ShardLayout(lay.chunks_per_shard)
        self._shard_t = lay.chunks_per_shard[0]
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
        super().__init__(**kwargs)
        self._open: dict[tuple[int, ...], list[Encoded | None]] = {}
        self._open_row = 0
        self._open_frames = 0

    @classmethod
    def output_geometry(cls, layout: ArrayLayout) -> tuple[int, int, int]:
        tasks = int(np.prod(layout.shard_grid_rest, dtype=np.int64))
        per_layer = int(np.prod(layout.chunks_per_shard[1:], dtype=np.int64))
        return tasks, per_layer, ShardLayout(layout.chunks_per_shard).index_nbytes

    def _task_groups(self) -> Sequence[Sequence[tuple[int, ...] | None]]:
        return self._groups

    def shard_key(self, coords: tuple[int, ...]) -> str:
        return f"{self.array_path}/c/{'/'.join(map(str, coords))}"

    def _write(self, layer: Layer, results: list[Encoded]) -> int | None:
        if self._shard_t == 1:
            try:
                self._put_padded_many(
                    [
                        (self.shard_key((layer.index, *s)), enc.buffer, self._append_index(enc))
                        for s, enc in zip(self._shard_coords, results, strict=True)
                        if not enc.empty
                    ]
                )
            finally:
                for enc in results:
                    self._release(enc)
            return layer.frames_end
        t_in = layer.index % self._shard_t
        self._open_row = layer.index // self._shard_t
        for s, enc in zip(self._shard_coords, results, strict=True):
            self._open.setdefault(s, [None] * self._shard_t)[t_in] = enc
        self._open_frames = layer.frames_end
        if t_in == self._shard_t - 1 or layer.final:
            return self._flush_pending()
        return None

    def _append_index(self, enc: Encoded) -> int:
        """A one-layer shard: put the index in the buffer's spare room; return the shard's length.

        The whole shard then lies in one aligned buffer the store writes without another copy.
        """
        index = self.shard_layout.index(enc.sizes)
        end = enc.used + len(index)
        enc.buffer[enc.used : end] = np.frombuffer(index, np.uint8)
        return end

    def _flush_pending(self) -> int | None:
        if not self._open:
            return None
        try:
            for s, layers in self._open.items():
                chunks: list[Buffer | None] = []
                for enc in layers:
                    if enc is None:
                        chunks.extend([None] * self._per_layer)
                    else:
                        chunks.extend(enc.chunk(i) for i in range(self._per_layer))
                if any(c is not None for c in chunks):
                    parts = self.shard_layout.pack(chunks)
                    self.store.put(self.shard_key((self._open_row, *s)), parts)
                    self.bytes_written += sum(memoryview(p).nbytes for p in parts)
        finally:
            for layers in self._open.values():
                for enc in layers:
                    if enc is not None:
                        self._release(enc)
            self._open.clear()
        return self._open_frames
