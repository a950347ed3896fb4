"""One array level's write path: band assembly -> encoding -> object writing -> reporting.

The appending thread fills bands (``bands.py``).  A complete band is cut into
tasks for the compression pool (``encode.py``) and its buffer goes back to
the pool once they (and the pyramid, which reads it) are done.  A job on the
ordered I/O thread hands the encoded groups to the object writer
(``chunk.py`` for v2, ``shard.py`` for v3), which stores them and says which
bands are now readable; the image's publisher (``publish.py``) decides when
readers may see them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from ..buffers import BufferPools
from ..codecs import BloscCodec
from ..layout import ArrayLayout, Index
from ..pipeline import Pipeline
from .bands import OUTSIDE, Band, BandAssembler
from .encode import Encoded, Encoder
from .objects import ObjectWriter

__all__ = ["LevelWriter"]


class LevelWriter:
    """Streams one array (one pyramid level) of an image into the store."""

    def __init__(
        self,
        *,
        layout: ArrayLayout,
        codec: BloscCodec | None,
        objects: ObjectWriter,
        pipeline: Pipeline,
        name: str,
        append_timeout: float | None,
        on_stored: Callable[[LevelWriter, list[Index]], None],
        observe: Callable[[Index, np.ndarray[Any, Any]], None] | None = None,
        pools: BufferPools,
        waits_for_budget: bool = True,
    ) -> None:
        self.layout = layout
        self.codec = codec
        self.objects = objects
        self.pipeline = pipeline
        self.budget = pipeline.budget
        self._on_stored = on_stored
        self.on_band: Callable[[Band], None] | None = None  # the pyramid, fed with complete bands
        chunks_per_task = max(len(t) for t in objects.tasks)
        self.encoder = Encoder(layout, codec, chunks_per_task, objects.trailer, pools, observe)
        self.reservation = type(objects).reservation(layout)
        self._in_flight = 0  # bands submitted whose I/O job has not finished
        self._count_lock = threading.Lock()
        self.assembler = BandAssembler(
            layout,
            name,
            self.budget,
            self.reservation,
            append_timeout,
            # A pyramid level (fed by the downsampling thread) never waits on its own output:
            # with nothing of its own in flight it may exceed the cap, so levels cannot deadlock.
            may_exceed=(lambda: False) if waits_for_budget else (lambda: self._in_flight == 0),
            on_complete=self._submit,
            pool=pools.get(layout.band_shape, layout.dtype),
        )
        # The first band buffer now, the second while the first fills: the acquisition loop
        # never pays for mapping memory.
        self.assembler.pool.prefill(1)
        self.assembler.pool.prefill(1, background=True)
        self.lock = threading.RLock()  # one appender at a time (the caller's thread, or the pyramid's)
        self.bytes_written = 0
        self.raw_bytes_written = 0  # uncompressed bytes of the bands stored (slots inside the array)
        self.objects.written = self._count_written
        self.objects.release = self._release

    # -- appending thread ------------------------------------------------
    def put(
        self,
        positions: Sequence[Index],
        frames: np.ndarray[Any, Any],
        checked: Callable[[], None] | None = None,
    ) -> None:
        self.assembler.put(positions, frames, checked)

    def skip(self, positions: Sequence[Index]) -> None:
        self.assembler.skip(positions)

    def finish(self, extent: int) -> None:
        """Close every band up to ``extent`` and flush what the object writer holds back."""
        self.objects.final_extent = extent
        self.assembler.finish(extent)
        self.pipeline.submit_io(self._finish_job)

    def _submit(self, band: Band) -> None:
        with self._count_lock:
            self._in_flight += 1
        futures: list[Future[Encoded]] = []
        if band.buffer is not None:
            self.budget.submitted(self.reservation)
            band.refs = len(self.objects.tasks) + (self.on_band is not None)
            futures = [self.pipeline.compress(self._encode, band, t) for t in self.objects.tasks]
        self.pipeline.submit_io(lambda failed: self._io_job(band, futures, failed))
        if self.on_band is not None:
            # Only after this band's write is queued: the pyramid's writes for it queue behind it.
            self.on_band(band)

    # -- compression threads ---------------------------------------------
    def _encode(self, band: Band, coords: Sequence[tuple[int, ...] | None]) -> Encoded:
        try:
            assert band.buffer is not None
            return self.encoder.encode(band.buffer, band.coords, coords)
        finally:
            self.band_done(band)

    def band_done(self, band: Band) -> None:
        """One reader of ``band``'s buffer is done; the last one returns it to the pool."""
        with band.lock:
            band.refs -= 1
            last = band.refs == 0
        if last and band.buffer is not None:
            self.assembler.pool.give(band.buffer)
            self.budget.release(self.layout.band_nbytes)

    def _release(self, encoded: Encoded) -> None:
        self.encoder.give_back(encoded)
        self.budget.release(self.encoder.output_nbytes)

    def _count_written(self, nbytes: int) -> None:
        self.bytes_written += nbytes

    # -- I/O thread ------------------------------------------------------
    def _io_job(self, band: Band, futures: list[Future[Encoded]], failed: bool) -> None:
        try:
            results = [f.result() for f in futures]
            if failed:
                for r in results:
                    self._release(r)
                return
            stored = self.objects.write(band, results if futures else None)
            inside = int(np.count_nonzero(band.state != OUTSIDE))
            self.raw_bytes_written += self.layout.band_nbytes * inside // band.state.size
            if stored:
                self._on_stored(self, stored)
        finally:
            with self._count_lock:
                self._in_flight -= 1
            self.budget.notify()

    def _finish_job(self, failed: bool) -> None:
        if failed:
            self.objects.abort()
            return
        stored = self.objects.finish()
        if stored:
            self._on_stored(self, stored)
