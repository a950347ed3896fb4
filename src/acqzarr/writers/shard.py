"""ShardWriter: Zarr v3 with the ``sharding_indexed`` codec, one object per shard.

A shard one band thick along every index axis (the usual case for 2-D
frames: ``shard: 1`` on t) is written straight from the task's output
buffer: the chunks already lie back to back there, the index goes in the
room left after them, and the store writes the whole aligned buffer without
another copy.

A shard spanning several bands (``shard: 4`` on z, say) is built as a staged
object: each band's encoded chunks are appended to it as the band is stored
(to a hidden file on a local disk, written with O_DIRECT at aligned offsets;
the shard index may point anywhere, so the padding between bands is simply
unused), and the index is added when the shard's last band arrives, which
makes the shard visible at once.  Memory therefore stays one band deep
whatever the shard depth; readers only ever see complete shards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..codecs import ShardIndex, ShardLayout
from ..stores import Staged
from ..stores.aligned import anonymous_memory
from .bands import Band
from .encode import ChunkCoords, Encoded
from .layout import ArrayLayout, Index
from .objects import ObjectWriter, Stored, StoredBand

__all__ = ["ShardWriter"]


@dataclass
class _OpenShard:
    """A shard spanning several bands, some of them stored."""

    bands: list[StoredBand] = field(default_factory=list)
    staged: dict[int, Staged] = field(default_factory=dict)  # per frame shard
    index: dict[int, ShardIndex] = field(default_factory=dict)  # per frame shard
    adopted: int = 0  # bands taken over from the stored shard when the stream resumed


def _index_chunks(index: ShardIndex, first: int, at: int, enc: Encoded) -> None:
    """Enter ``enc``'s stored chunks in ``index``: entries from ``first`` on, the chunks lying in the
    shard from byte ``at`` on."""
    for j, (n, off) in enumerate(zip(enc.sizes, enc.offsets(), strict=True)):
        if n is not None and off is not None:
            index.set(first + j, at + off, n)


def _one_band_thick(layout: ArrayLayout) -> bool:
    return all(n == 1 for n in layout.index_chunks_per_shard)


class ShardWriter(ObjectWriter):
    """Packs a band's chunks into shards."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        lay = self.layout
        self.shard_layout = ShardLayout(lay.chunks_per_shard)
        self._index_cps = lay.index_chunks_per_shard
        self._single = _one_band_thick(lay)
        self._frame_shards = list(np.ndindex(*lay.frame_shard_grid))
        self._per_band = math.prod(lay.frame_chunks_per_shard)  # chunks of one band in one shard
        self._open: dict[Index, _OpenShard] = {}

    @classmethod
    def task_groups(cls, layout: ArrayLayout) -> list[list[ChunkCoords]]:
        """One task per shard of the frame axes: the band's chunks in that shard, in C order."""
        tasks: list[list[ChunkCoords]] = []
        for s in np.ndindex(*layout.frame_shard_grid):
            group: list[ChunkCoords] = []
            for w in np.ndindex(*layout.frame_chunks_per_shard):
                c = tuple(si * n + wi for si, n, wi in zip(s, layout.frame_chunks_per_shard, w, strict=True))
                inside = all(ci < g for ci, g in zip(c, layout.frame_grid, strict=True))
                group.append(c if inside else None)
            tasks.append(group)
        return tasks

    @classmethod
    def trailer_for(cls, layout: ArrayLayout) -> int:
        return ShardLayout(layout.chunks_per_shard).index_nbytes if _one_band_thick(layout) else 0

    def store_band(self, band: Band, results: Sequence[Encoded]) -> Stored:
        this = StoredBand(band.coords, band.frames)
        if self._single:
            return Stored([this], self._put_single(band, results))
        ishard, first = self._place(band.coords)
        shard = self._open.setdefault(ishard, _OpenShard())
        nbytes = 0
        for f, enc in enumerate(results):
            if enc.empty:
                continue
            staged = shard.staged.get(f)
            if staged is None:
                staged = shard.staged[f] = self.store.open_staged(
                    self.object_key((*ishard, *self._frame_shards[f]))
                )
                shard.index[f] = ShardIndex.empty(self.shard_layout.n_chunks)
            at = staged.append(enc.buffer, enc.used)
            nbytes += enc.used
            _index_chunks(shard.index[f], first, at, enc)
        shard.bands.append(this)
        stored = Stored(nbytes=nbytes)
        if len(shard.bands) + shard.adopted == self._bands_in(ishard):
            stored.add(self._commit(ishard))
        return stored

    def _put_single(self, band: Band, results: Sequence[Encoded]) -> int:
        """A band one shard thick: each of its shards written straight from its task's output."""
        return self._put_many(
            [
                (self.object_key((*band.coords, *s)), enc, self._append_index(enc))
                for s, enc in zip(self._frame_shards, results, strict=False)
            ]
        )

    def _place(self, coords: Index) -> tuple[Index, int]:
        """The shard band ``coords`` lies in, and the index entry of its first chunk there."""
        ishard = tuple(b // n for b, n in zip(coords, self._index_cps, strict=True))
        within = tuple(b % n for b, n in zip(coords, self._index_cps, strict=True))
        return ishard, int(np.ravel_multi_index(within, self._index_cps)) * self._per_band

    def write_partial(self, parts: Sequence[tuple[Band, Sequence[Encoded]]]) -> Stored:
        """One-band shards are written like complete ones.  A deeper shard is shown as it is now:
        the bands staged so far, then the checkpoint's copies of its bands still filling, then an
        index of them all (``Staged.snapshot``; the staging itself goes on)."""
        if self._single:
            return Stored(nbytes=sum(self._put_single(band, results) for band, results in parts))
        partial: dict[Index, list[tuple[int, Sequence[Encoded]]]] = {}
        for band, results in parts:
            ishard, first = self._place(band.coords)
            partial.setdefault(ishard, []).append((first, results))
        shown = Stored()
        for ishard in sorted(set(self._open) | set(partial)):
            shard = self._open.get(ishard)
            if shard is not None:
                shown.bands += shard.bands
            for f in range(len(self._frame_shards)):
                staged = None if shard is None else shard.staged.get(f)
                index = ShardIndex.empty(self.shard_layout.n_chunks)
                if staged is not None and shard is not None:
                    index = shard.index[f].copy()
                at = 0 if staged is None else staged.size
                pieces: list[tuple[np.ndarray[Any, Any], int]] = []
                for first, results in partial.get(ishard, []):
                    enc = results[f]
                    if enc.empty:
                        continue
                    _index_chunks(index, first, at, enc)
                    pieces.append((enc.buffer, enc.used))
                    at += enc.used
                if staged is None and not pieces:
                    continue  # nothing of this shard holds a frame yet
                tail = index.encode()
                if staged is not None:
                    staged.snapshot(pieces, tail)
                else:
                    key = self.object_key((*ishard, *self._frame_shards[f]))
                    self.store.put(key, [*(b.data[:n] for b, n in pieces), tail])
                shown.nbytes += sum(n for _b, n in pieces) + len(tail)
        return shown

    def _append_index(self, enc: Encoded) -> int:
        """A one-band shard: put the index in the buffer's spare room; return the shard's length."""
        if enc.empty:
            return 0
        index = self.shard_layout.index(enc.sizes)
        end = enc.used + len(index)
        enc.buffer[enc.used : end] = np.frombuffer(index, np.uint8)
        return end

    def _bands_in(self, ishard: Index) -> int:
        """Bands of shard ``ishard`` that lie inside the array (edge shards hold fewer)."""
        lay = self.layout
        sizes = list(lay.index_shape)
        if self.final_extent is not None:
            sizes[0] = self.final_extent
        count = 1
        for i, (s, c, n) in enumerate(zip(sizes, lay.index_chunks, self._index_cps, strict=True)):
            if s == 0:
                count *= n  # unbounded and still open: a full shard
                continue
            grid = -(-s // c)
            count *= max(0, min(n, grid - ishard[i] * n))
        return count

    def _commit(self, ishard: Index) -> Stored:
        """The shard's last band is in: add each index, which makes the shard visible."""
        shard = self._open.pop(ishard)
        nbytes = 0
        for f, staged in shard.staged.items():
            tail = shard.index[f].encode()
            staged.commit(tail)
            nbytes += len(tail)
        return Stored(shard.bands, nbytes)

    # -- resuming ---------------------------------------------------------
    def read_band(self, coords: Index) -> list[tuple[tuple[int, ...], bytes]]:
        ishard, first = self._place(coords)
        out = []
        for f, group in enumerate(self.tasks):
            data = self._stored_shard(ishard, f)
            if data is None:
                continue
            index = ShardIndex.decode(data, self.shard_layout.n_chunks)
            for j, coord in enumerate(group):
                where = index.chunk(first + j)
                if coord is not None and where is not None:
                    out.append((coord, data[where[0] : where[0] + where[1]]))
        return out

    def adopt(self, extent: int) -> None:
        """The shards that ``extent`` ends inside (along the append axis) are built again: their
        complete bands below it are copied, still encoded, into the new staged shard, so only the
        bands still to come (and a partial one, read back and rewritten) are encoded."""
        size = self.layout.append_size
        if self._single or (size and extent >= size):  # a full array: no band is written again
            return
        first_new = extent // self.layout.index_chunks[0]  # the first row of bands still to write
        depth = self._index_cps[0]
        start = first_new - first_new % depth  # the first row of the shard it lies in
        if first_new == start:
            return
        rest_grid = [-(-g // n) for g, n in zip(self.layout.band_grid_rest, self._index_cps[1:], strict=True)]
        for rest in np.ndindex(*rest_grid):
            ishard = (start // depth, *rest)
            bands = [
                b
                for row in range(start, first_new)
                for b in self.layout.row_bands(row)
                if tuple(x // n for x, n in zip(b[1:], self._index_cps[1:], strict=True)) == rest
            ]
            shard = self._open[ishard] = _OpenShard(adopted=len(bands))
            for f in range(len(self._frame_shards)):
                self._adopt_shard(shard, ishard, f, bands)

    def _adopt_shard(self, shard: _OpenShard, ishard: Index, f: int, bands: list[Index]) -> None:
        data = self._stored_shard(ishard, f)
        if data is None:
            return
        old = ShardIndex.decode(data, self.shard_layout.n_chunks)
        pieces: list[tuple[int, int, int]] = []  # (chunk, offset in data, nbytes)
        for band in bands:
            _shard, first = self._place(band)
            for j in range(self._per_band):
                where = old.chunk(first + j)
                if where is not None:
                    pieces.append((first + j, *where))
        if not pieces:
            return
        total = sum(n for _c, _o, n in pieces)
        memory = anonymous_memory(-(-total // 4096) * 4096, populate=False)
        buffer = np.frombuffer(memory, np.uint8)
        index = ShardIndex.empty(self.shard_layout.n_chunks)
        at = 0
        offsets = []
        for chunk, offset, n in pieces:
            buffer[at : at + n] = np.frombuffer(data, np.uint8, n, offset)
            offsets.append((chunk, at, n))
            at += n
        staged = self.store.open_staged(self.object_key((*ishard, *self._frame_shards[f])))
        base = staged.append(buffer, total)
        for chunk, offset, n in offsets:
            index.set(chunk, base + offset, n)
        shard.staged[f] = staged
        shard.index[f] = index

    def _stored_shard(self, ishard: Index, f: int) -> bytes | None:
        try:
            return self.store.get(self.object_key((*ishard, *self._frame_shards[f])))
        except KeyError:
            return None

    def finish(self) -> Stored:
        stored = Stored()
        for ishard in list(self._open):
            stored.add(self._commit(ishard))
        return stored

    def abort(self) -> None:
        for shard in self._open.values():
            for staged in shard.staged.values():
                staged.abort()
        self._open.clear()
