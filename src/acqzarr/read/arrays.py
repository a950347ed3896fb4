"""Read an array's frames back without zarr-python: for the replay driver and for checks.

A Zarr v2 or v3 array (sharded or not) whose chunks are raw or compressed
with a numcodecs codec is read frame by frame: a frame is one 2-D plane,
the leading axes flattened in C order.  Each time a frame needs a new row of
chunks along the leading axes, the row is decoded once into a slab and the
following frames are served from it, so replaying a time-chunked array
decodes every chunk once.  Objects or inner chunks that were never written
read as the fill value.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numcodecs
import numpy as np

from ..codecs.sharding import ShardIndex
from ..metadata.zarr_spec import ArrayMeta
from ..metadata.zarr_versions import SPECS
from ..settings.locations import join_key
from ..stores import Store

__all__ = ["ArrayReader"]


class ArrayReader:
    """The frames of the array at ``path`` in ``store``: ``shape`` is (frames, y, x), ``reader[i]``
    frame ``i``.  ValueError if the array is not one this reader can decode (strings, filters)."""

    def __init__(self, store: Store, path: str = "") -> None:
        self.meta = _read_meta(store, path)
        m = self.meta
        if len(m.shape) < 2:
            raise ValueError(f"{store.describe(path)}: needs at least 2 dimensions, has shape {m.shape}")
        self.dtype = m.dtype  # ValueError for a string array
        if m.filters:
            raise ValueError(
                f"{store.describe(path)}: codecs {list(m.filters)} are not supported for reading"
            )
        if m.sharding is not None:
            index = [c.get("name") for c in m.sharding.get("index_codecs", [])]
            if m.sharding.get("index_location", "end") != "end" or index != ["bytes", "crc32c"]:
                raise ValueError(
                    f"{store.describe(path)}: only a shard index at the end with a crc32c checksum is "
                    f"supported for reading, found {index} at {m.sharding.get('index_location')!r}"
                )
        self._store = store
        self._path = path
        self._codec = numcodecs.get_codec(m.compressor) if m.compressor is not None else None
        self._lead = m.shape[:-2]
        self.shape = (math.prod(self._lead), *m.shape[-2:])
        self.ndim = 3
        fill = 0 if m.fill_value is None else m.fill_value
        self._fill = np.array(fill, dtype=self.dtype)
        self._slab_row: tuple[int, ...] | None = None
        self._slab = np.empty(0, self.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray[Any, Any]:
        if not -self.shape[0] <= i < self.shape[0]:
            raise IndexError(f"frame {i} of {self.shape[0]}")
        index = np.unravel_index(i % self.shape[0], self._lead) if self._lead else ()
        chunk_lead = self.meta.chunks[:-2]
        row = tuple(int(a) // c for a, c in zip(index, chunk_lead, strict=True))
        if row != self._slab_row:
            self._slab = self._decode_row(row)
            self._slab_row = row
        within = tuple(int(a) % c for a, c in zip(index, chunk_lead, strict=True))
        frame: np.ndarray[Any, Any] = self._slab[within]
        return frame

    def _decode_row(self, row: tuple[int, ...]) -> np.ndarray[Any, Any]:
        """Every chunk whose leading-axes chunk coordinates are ``row``, as one slab
        (leading chunk shape, then the whole frame)."""
        m = self.meta
        height, width = m.shape[-2:]
        ch, cw = m.chunks[-2:]
        slab = np.empty((*m.chunks[:-2], height, width), self.dtype)
        shards: dict[tuple[int, ...], bytes | None] = {}
        for cy in range(-(-height // ch)):
            for cx in range(-(-width // cw)):
                coords = (*row, cy, cx)
                chunk = self._chunk(coords, shards)
                y, x = cy * ch, cx * cw
                slab[..., y : y + ch, x : x + cw] = chunk[..., : height - y, : width - x]
        return slab

    def _chunk(
        self, coords: tuple[int, ...], shards: dict[tuple[int, ...], bytes | None]
    ) -> np.ndarray[Any, Any]:
        m = self.meta
        per_object = tuple(g // c for g, c in zip(m.grid, m.chunks, strict=True))
        obj = tuple(c // n for c, n in zip(coords, per_object, strict=True))
        if obj not in shards:
            try:
                shards[obj] = self._store.get(join_key(self._path, m.keys.key(obj)))
            except KeyError:
                shards[obj] = None
        data = shards[obj]
        if data is not None and m.sharding is not None:
            inner = tuple(c % n for c, n in zip(coords, per_object, strict=True))
            where = ShardIndex.decode(data, math.prod(per_object)).chunk(
                int(np.ravel_multi_index(inner, per_object))
            )
            data = None if where is None else data[where[0] : where[0] + where[1]]
        if data is None:
            return np.broadcast_to(self._fill, m.chunks)
        raw = self._codec.decode(data) if self._codec is not None else data
        return np.frombuffer(raw, self.dtype).reshape(m.chunks)


def _read_meta(store: Store, path: str) -> ArrayMeta:
    for spec in SPECS:
        key = spec.document_key(path, "array")
        try:
            doc = json.loads(store.get(key))
        except KeyError:
            continue
        if doc.get("node_type", "array") != "array":
            break
        return spec.parse_array(doc)
    raise ValueError(f"{store.describe(path)}: not a Zarr array (no array metadata)")
