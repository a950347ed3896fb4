"""Feeding the lower-resolution levels of one image from the complete bands of the level above.

Each ``PyramidLevel`` makes level k+1 from level k: level k's writer hands it
each complete band before the band's buffer may be reused (``BandSink``), and
it writes into level k+1's writer, which it was built with.  The band's frames
are read back from the tiles and halved along the frame's space axes on the
compression pool (a pyramid costs about as much CPU as compressing, so it
needs every core); the pipeline's downsampling
thread (ordered) pairs the planes up and writes the results to the next
level *by index*, in order, like any index-addressed append.  A
space axis among the index axes (z in t-z-y-x, or an appended z) halves too:
planes 2j and 2j+1 make plane j of the next level.  When a pair straddles two
bands, the first plane waits here for its partner; the last plane of an odd
extent pairs with itself (replicate-edge).  Levels are ordinary level
writers: they assemble bands, compress and store them; the image's
publisher shows all levels together.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, wait
from typing import Any

import numpy as np

from ..settings import ArraySettings
from ..writers.bands import FILLED, SKIPPED, Band
from ..writers.layout import ArrayLayout, Index
from ..writers.level import BandSource, Checkpoint, LevelWriter
from ..writers.pipeline import Pipeline
from .reducers import reduce_block

__all__ = ["PyramidLevel"]

# Where a plane of a pair comes from: its slot in the band being reduced, a copy kept from an
# earlier band, or None for a plane that holds no frame.
Source = Index | np.ndarray[Any, Any] | None


def halved_axis(settings: ArraySettings) -> int | None:
    """The index axis each level halves besides the frame's own: the first space axis among the
    index axes (a z stack's z), or None.  At most one: a frame holds two space axes.  0 when the
    append axis itself halves (z appended): each level then shows half the planes of the one above
    (``level_extent``), and a resumed level goes on from its whole pairs (``resume_extent``)."""
    index = settings.dimensions[: len(settings.dimensions) - len(settings.frame_names)]
    spaces = [i for i, d in enumerate(index) if d.kind == "space"]
    return spaces[0] if spaces else None


def level_extent(extent: int, level: int, halves_append: bool) -> int:
    """Level ``level``'s extent along the append axis when level 0 has ``extent``: halved per level
    when the append axis is the halved one (z appended), else the same."""
    return -(-extent // 2**level) if halves_append else extent


def resume_extent(extent: int, level: int, halves_append: bool) -> int:
    """Where level ``level`` goes on when level 0 resumes at ``extent``: after its planes made of
    whole pairs.  When the append axis halves, a plane an earlier run made of one plane at its
    close (``extent // 2**level`` on) is made again once the partner comes."""
    return extent // 2**level if halves_append else extent


class PyramidLevel:
    """Level k+1 of an image, made from level k's complete bands (a ``BandSink`` of level k)."""

    def __init__(self, source: ArrayLayout, target: LevelWriter, method: str, pipeline: Pipeline) -> None:
        self.source = source
        self.target = target
        self.method = method
        self.pipeline = pipeline
        self.halved = halved_axis(source.settings)
        # Planes waiting for their partner: target index -> (plane, source plane index).
        self._held: dict[Index, tuple[np.ndarray[Any, Any] | None, int]] = {}
        # Planes the pool threads read source frames into, and target planes they reduce into;
        # reused, so that the pages are touched once (fresh memory is slow here), and as many as
        # tasks ran at once.
        self._spares: dict[int, list[np.ndarray[Any, Any]]] = {0: [], 1: []}
        self._window = 2 * pipeline.threads  # planes reduced ahead of the one being put
        self._frame_axes = tuple(range(source.frame_ndim))
        # Even chunks along the frame: no pair of samples straddles two tiles, so a plane halves
        # tile by tile in the band buffer, without first being copied out of it.
        self._tiled = all(c % 2 == 0 for c in source.frame_chunks)

    def resume(self, extent: int, source: LevelWriter) -> None:
        """Continue after ``extent`` planes of the source level (a resumed stream, its
        ``resume_extent``): when the append axis halves and ``extent`` is odd, the last of them
        waits again for its partner, read back from ``source``'s store, one for every place along
        the other index axes."""
        if self.halved != 0 or extent % 2 == 0:
            return
        for rest in np.ndindex(*self.source.index_shape[1:]):
            index = (extent - 1, *rest)
            self._held[(index[0] // 2, *rest)] = (source.read_frame(index), index[0])

    def target_extent(self, extent: int) -> int:
        """The target level's extent along the append axis when the source level has ``extent``."""
        return level_extent(extent, 1, self.halved == 0)

    # -- feeding --------------------------------------------------------------
    def take(self, band: Band, source: BandSource) -> None:
        """The submitting thread: queue the band for downsampling (it holds the buffer until done)."""
        self.pipeline.submit_side(lambda failed: self._process(band, source, failed))

    def _process(self, band: Band, source: BandSource, failed: bool) -> None:
        try:
            if not failed:
                self._reduce_band(band)
        finally:
            if band.buffer is not None:
                source.band_done(band)

    def _reduce_band(self, band: Band) -> None:
        """Reduce the band's planes on the compression pool, and put the results in order.

        Pairing happens here, in order (it decides which planes make one target plane); the
        reductions, most of a pyramid's cost, run on the pool beside the compression, a few
        planes ahead of the one being put (which bounds the planes in flight).
        """
        ahead: deque[tuple[Index, Future[np.ndarray[Any, Any]] | None]] = deque()

        def put_next() -> None:
            index, reduced = ahead.popleft()
            self._put(index, None if reduced is None else reduced.result())

        try:
            for index, sources in self._pair_up(band):
                if len(ahead) >= self._window:
                    put_next()
                holes = all(s is None for s in sources)
                ahead.append((index, None if holes else self.pipeline.compress(self._reduce, band, sources)))
            while ahead:
                put_next()
        finally:  # the tasks read the band's buffer: none may still run when it is released
            wait([f for _, f in ahead if f is not None])

    def _pair_up(self, band: Band) -> Iterator[tuple[Index, list[Source]]]:
        """(target index, source planes) for every plane the band completes at the target level."""
        lay = self.source
        for within in band.slots((FILLED, SKIPPED)):
            index = tuple(b * c + w for b, c, w in zip(band.coords, lay.index_chunks, within, strict=True))
            plane: Source = None if band.buffer is None else within
            if self.halved is None:
                yield index, [plane]
                continue
            h = self.halved
            t_index = (*index[:h], index[h] // 2, *index[h + 1 :])
            size = lay.index_shape[h]
            if size and (index[h] ^ 1) >= size:
                yield t_index, [plane, plane]  # the odd last plane pairs with itself
                continue
            held = self._held.pop(t_index, None)
            if held is None:  # its partner is in a later band: keep a copy, this buffer goes back
                copy = None
                if band.buffer is not None:
                    copy = np.empty(lay.frame_shape, lay.dtype)
                    lay.read_frame(band.buffer, within, copy)
                self._held[t_index] = (copy, index[h])
                continue
            other, other_at = held
            yield t_index, [other, plane] if other_at < index[h] else [plane, other]

    def _reduce(self, band: Band, sources: list[Source]) -> np.ndarray[Any, Any]:
        """A pool thread: the target level's plane made of ``sources``, reduced tile by tile where
        they lie in the band when that is exact, otherwise read out of the band first."""
        lay = self.source
        out = self._plane(1)
        if len(sources) == 1 and isinstance(sources[0], tuple) and self._tiled:
            assert band.buffer is not None
            return _halve_in_tiles(lay, band.buffer, sources[0], self.method, out)
        read: dict[Index, np.ndarray[Any, Any]] = {}
        try:
            planes: list[np.ndarray[Any, Any] | None] = []
            for source in sources:
                if isinstance(source, tuple) and source not in read:
                    assert band.buffer is not None
                    read[source] = self._plane(0)
                    lay.read_frame(band.buffer, source, read[source])
                planes.append(read[source] if isinstance(source, tuple) else source)
            return self._reduce_planes(planes, out)
        finally:
            self._spares[0].extend(read.values())

    def _plane(self, which: int) -> np.ndarray[Any, Any]:
        """A plane of the source (0) or target (1) frame shape to work in: a spare one if there is.

        Planes are reused (their pages are touched once: fresh memory is slow here); there are
        as many as tasks ever held at once, which the window bounds.  list.pop and list.append
        are atomic, so the pool threads need no lock.
        """
        try:
            return self._spares[which].pop()
        except IndexError:
            lay = self.source if which == 0 else self.target.layout
            return np.empty(lay.frame_shape, lay.dtype)

    def _reduce_planes(
        self, planes: list[np.ndarray[Any, Any] | None], out: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        """One plane halved along the frame axes, or a pair also halved along the index axis
        (None is a plane that holds no frame: a hole of a band never opened, read as zeros)."""
        real = [p for p in planes if p is not None]
        if len(planes) == 1:
            return reduce_block(real[0], self._frame_axes, self.method, out)
        pair = np.stack([p if p is not None else np.zeros_like(real[0]) for p in planes])
        reduce_block(pair, (0, *(a + 1 for a in self._frame_axes)), self.method, out[np.newaxis])
        return out

    def _put(self, index: Index, plane: np.ndarray[Any, Any] | None) -> None:
        """Write one reduced plane to the target level at ``index`` (None: leave a hole there)."""
        writer = self.target
        with writer.lock:
            if plane is None:
                writer.skip([index])
            else:
                writer.put([index], plane[np.newaxis])
        if plane is not None:
            self._spares[1].append(plane)  # put copied it

    # -- durability checkpoints ------------------------------------------------
    def checkpoint(self, copies: Sequence[Band], checkpoint: Checkpoint, source: BandSource) -> None:
        """The source level took part in ``checkpoint`` with ``copies`` of its open bands: after the
        bands queued before them, make the target level's own copies (its open bands, plus the
        copies' frames reduced into them) and let it take part too.  Bands queued before may have
        completed after the copies were taken (the appender goes on while their frames are copied):
        their planes are then made for good already, and no copy takes them back."""
        self.pipeline.submit_side(lambda failed: self._checkpoint(copies, checkpoint, source, failed))

    def _checkpoint(
        self, copies: Sequence[Band], checkpoint: Checkpoint, source: BandSource, failed: bool
    ) -> None:
        try:
            if failed:
                return
            target = self.target
            with target.lock:
                assembler = target.assembler
                made: dict[Index, Band] = {}
                for band, index, sources in self._provisional_pairs(copies):
                    coords, within = target.layout.band_of(index)
                    if assembler.is_closed(coords) or _filled(assembler.open.get(coords), within):
                        # Made for good since the copies were taken: their band completed meanwhile
                        # and came through here first.  A provisional plane would overwrite it (in a
                        # copy written after the band itself, when the band is complete).
                        continue
                    plane = self._reduce(band, sources)
                    if coords not in made:
                        made[coords] = assembler.provisional(coords)
                    copy = made[coords]
                    assert copy.buffer is not None
                    target.layout.copy_frame(copy.buffer, within, plane)
                    copy.state[within] = FILLED
                    self._spares[1].append(plane)
                for coords, band in assembler.open.items():
                    if band.buffer is not None and coords not in made:
                        made[coords] = assembler.provisional(coords)
                target.write_copies(list(made.values()), target.checkpoint(checkpoint), checkpoint)
        finally:
            for band in copies:
                if band.buffer is not None:
                    source.band_done(band)

    def _provisional_pairs(self, copies: Sequence[Band]) -> Iterator[tuple[Band, Index, list[Source]]]:
        """(copy, target index, source planes) for the frames of the copies of bands still filling:
        pairs made as ``_pair_up`` makes them (a partner skipped is fill value, one in another copy
        or held back from an earlier band is found there), but nothing is held back; a plane whose
        partner has not come yet pairs with itself (its step is not shown yet: only settled steps
        are, and in those every partner is filled or skipped)."""
        lay = self.source
        settled: dict[Index, tuple[Band, Index, bool]] = {}  # index -> (copy, slot, filled)
        for band in copies:
            for within in band.slots((FILLED, SKIPPED)):
                index = tuple(
                    b * c + w for b, c, w in zip(band.coords, lay.index_chunks, within, strict=True)
                )
                settled[index] = (band, within, bool(band.state[within] == FILLED))
        for index, (band, within, filled) in sorted(settled.items()):
            if not filled:
                continue
            if self.halved is None:
                yield band, index, [within]
                continue
            h = self.halved
            t_index = (*index[:h], index[h] // 2, *index[h + 1 :])
            other = (*index[:h], index[h] ^ 1, *index[h + 1 :])
            first = index[h] < other[h]
            size = lay.index_shape[h]
            mate = settled.get(other)
            held = self._held.get(t_index)
            source: Source
            if size and other[h] >= size:
                source = within  # the odd last plane pairs with itself
            elif mate is not None:
                mate_band, mate_within, mate_filled = mate
                if mate_filled and not first:
                    continue  # yielded with its partner, the lower plane
                if mate_band is band:
                    source = mate_within
                else:
                    assert mate_band.buffer is not None
                    source = np.empty(lay.frame_shape, lay.dtype)
                    lay.read_frame(mate_band.buffer, mate_within, source)
            elif held is not None:
                source, first = held[0], held[1] > index[h]
            else:
                source = within  # its partner is still to come
            yield band, t_index, [within, source] if first else [source, within]

    # -- closing ----------------------------------------------------------------
    def finish(self, extent: int) -> None:
        """The source level finished at ``extent``: after its last band, flush the waiting planes
        and finish the target level (which tells its own sink, level by level down)."""
        self.pipeline.submit_side(lambda failed: self._finish(extent, failed))

    def _finish(self, extent: int, failed: bool) -> None:
        if failed:
            return
        for t_index, (plane, _at) in sorted(self._held.items()):
            # its partner is past the end: it pairs with itself (replicate-edge)
            self._put(t_index, None if plane is None else self._reduce_planes([plane, plane], self._plane(1)))
        self._held.clear()
        with self.target.lock:
            self.target.finish(self.target_extent(extent))


def _filled(band: Band | None, within: Index) -> bool:
    return band is not None and bool(band.state[within] == FILLED)


def _halve_in_tiles(
    lay: ArrayLayout, buffer: np.ndarray[Any, Any], within: Index, method: str, out: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """The frame at slot ``within`` of a band buffer, halved along the frame axes into ``out``,
    computed where it lies: one ``reduce_block`` call per copy region (all its tiles at once).

    Exact when the frame chunks are even: every pair of samples then lies in one tile, and a tile
    with an odd number of samples is a remainder at the frame's edge, where replicating the last
    sample is the rule anyway.  One call for all the tiles, not one per row of tiles: each numpy
    call gives the GIL up and takes it back, which the other pool thread and the appender contend
    for, and a row at a time made several times the calls (docs/performance.md has the effect).
    """
    f = lay.frame_ndim
    for r in lay.regions:
        at: tuple[int | slice, ...] = (*r.grid, *within, *r.within)
        tiles = buffer[at]  # grid axes, then sample axes
        grid, samples = tiles.shape[:f], tiles.shape[f:]
        halved = [-(-n // 2) for n in samples]
        dest = out[tuple(slice(s.start // 2, -(-s.stop // 2)) for s in r.source)]
        # ``dest`` seen as (grid 0, sample 0, grid 1, sample 1, ...) and reordered like ``tiles``:
        # splitting the axes of a strided view is always a view, so the results land in ``out``.
        split = dest.reshape([n for k in range(f) for n in (grid[k], halved[k])])
        view = split.transpose([*range(0, 2 * f, 2), *range(1, 2 * f, 2)])
        assert np.may_share_memory(view, out)
        reduce_block(tiles, tuple(range(f, 2 * f)), method, out=view)
    return out
