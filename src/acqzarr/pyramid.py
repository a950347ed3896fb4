"""Feeding the lower-resolution levels of one image from the complete bands of the level above.

A level's writer hands each complete band here before its buffer may be
reused.  On the pipeline's downsampling thread (ordered) the band's frames
are read back from the tiles, halved along the frame's space axes, and
written to the next level *by index*, like any index-addressed append.  A
space axis among the index axes (z in t-z-y-x, or an appended z) halves too:
planes 2j and 2j+1 make plane j of the next level.  When a pair straddles two
bands, the first plane waits here for its partner; the last plane of an odd
extent pairs with itself (replicate-edge).  Levels are ordinary level
writers: they assemble bands, compress and store them; the image's
publisher shows all levels together.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layout import Index
from .multiscale import reduce_block
from .pipeline import Pipeline
from .writers.bands import FILLED, SKIPPED, Band
from .writers.level import LevelWriter

__all__ = ["Pyramid"]


class Pyramid:
    def __init__(self, writers: list[LevelWriter], method: str, pipeline: Pipeline) -> None:
        self.writers = writers
        self.method = method
        self.pipeline = pipeline
        lay0 = writers[0].layout
        spaces = [i for i, k in enumerate(lay0.kinds[: lay0.index_ndim]) if k == "space"]
        self.halved = spaces[0] if spaces else None  # at most one: a frame holds two space axes
        # Planes waiting for their partner, per target level: target index -> (plane, source plane index).
        self._held: list[dict[Index, tuple[np.ndarray[Any, Any] | None, int]]] = [{} for _ in writers]
        self._scratch = [np.zeros(w.layout.frame_shape, w.layout.dtype) for w in writers[:-1]]
        self._frame_axes = tuple(range(lay0.frame_ndim))
        for level, writer in enumerate(writers[:-1]):
            writer.on_band = lambda band, level=level: self._on_band(level, band)

    # -- feeding --------------------------------------------------------------
    def _on_band(self, level: int, band: Band) -> None:
        """The submitting thread: queue the band for downsampling (it holds the buffer until done)."""
        self.pipeline.submit_side(lambda failed: self._process(level, band, failed))

    def _process(self, level: int, band: Band, failed: bool) -> None:
        source = self.writers[level]
        try:
            if not failed:
                self._reduce_band(level, band)
        finally:
            if band.buffer is not None:
                source.band_done(band)

    def _reduce_band(self, level: int, band: Band) -> None:
        lay = self.writers[level].layout
        target = level + 1
        for within in band.slots((FILLED, SKIPPED)):
            index = tuple(b * c + w for b, c, w in zip(band.coords, lay.index_chunks, within, strict=True))
            plane = None
            if band.buffer is not None:
                plane = self._scratch[level]
                lay.read_frame(band.buffer, within, plane)
            if self.halved is None:
                self._emit(target, index, [plane])
                continue
            h = self.halved
            t_index = (*index[:h], index[h] // 2, *index[h + 1 :])
            size = lay.index_shape[h]
            if size and (index[h] ^ 1) >= size:
                self._emit(target, t_index, [plane, plane])  # the odd last plane pairs with itself
                continue
            held = self._held[target].pop(t_index, None)
            if held is None:
                self._held[target][t_index] = (None if plane is None else plane.copy(), index[h])
                continue
            other, other_at = held
            self._emit(target, t_index, [other, plane] if other_at < index[h] else [plane, other])

    def _emit(self, level: int, index: Index, planes: list[np.ndarray[Any, Any] | None]) -> None:
        """Write the reduction of one plane, or of a pair of planes along the halved index axis, to
        ``level`` at ``index``; None is a plane that holds no frame (a hole of a band never opened)."""
        writer = self.writers[level]
        real = [p for p in planes if p is not None]
        if not real:
            with writer.lock:
                writer.skip([index])
            return
        if len(planes) == 1:
            out = reduce_block(real[0], self._frame_axes, self.method)
        else:
            pair = np.stack([p if p is not None else np.zeros_like(real[0]) for p in planes])
            out = np.asarray(reduce_block(pair, (0, *(a + 1 for a in self._frame_axes)), self.method)[0])
        with writer.lock:
            writer.put([index], out[np.newaxis])

    # -- closing ----------------------------------------------------------------
    def finish(self, extents: list[int]) -> None:
        """After level 0 finished: flush each level's waiting planes, then finish it, top down."""
        self.pipeline.submit_side(lambda failed: self._finish_level(1, extents, failed))

    def _finish_level(self, level: int, extents: list[int], failed: bool) -> None:
        if failed:
            return
        writer = self.writers[level]
        for t_index, (plane, _at) in sorted(self._held[level].items()):
            self._emit(level, t_index, [plane, plane])  # its partner is past the end: replicate-edge
        self._held[level].clear()
        with writer.lock:
            writer.finish(extents[level])
        if level + 1 < len(self.writers):
            self.pipeline.submit_side(lambda failed: self._finish_level(level + 1, extents, failed))

