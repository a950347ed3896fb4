"""One array level's write path: band assembly -> encoding -> object writing -> what is readable.

The appending thread fills bands (``bands.py``).  A complete band is cut into
tasks for the compression pool (``encode.py``) and handed to the level's
``BandSink`` (the next pyramid level), which reads its buffer; the buffer goes
back to the pool once both are done.  A job on the ordered I/O thread hands
the encoded groups to the object writer (``chunk.py`` for v2, ``shard.py`` for
v3), which returns what it stored; the level tells its ``Readable`` (the
image's publisher) which bands are now on storage.

The two protocols below are the level's only calls out, and both cross a
thread boundary: ``Readable.stored`` runs on the I/O thread, ``BandSink.take``
on the thread that completed the band (the appending one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import numcodecs
import numpy as np

from ..codecs import BloscCodec
from .bands import OUTSIDE, Band, BandAssembler, FrameCounts, Slot
from .buffers import BufferPools
from .encode import Encoded, Encoder
from .layout import ArrayLayout, Index
from .objects import ObjectWriter, StoredBand
from .pipeline import Pipeline

__all__ = ["BandSink", "BandSource", "Checkpoint", "LevelWriter", "Readable"]


@dataclass(eq=False)
class Checkpoint:
    """One durability checkpoint of an image (``engine/durability.py``).  Every level writes its
    open bands (copies taken at one moment) and open shards as they are, then tells its
    ``Readable``; once all have, the image shows ``extent`` steps of the append axis: steps whose
    every slot was filled or skipped when the copies were taken, so nothing a reader sees below
    it changes afterwards, on any level or in any column."""

    extent: int  # level 0's steps of the append axis to show
    # Level 0's rows from ``open_from`` on were not closed: ``frames`` counts the frames this stream
    # filled in them per step (below ``extent``).  The rows below were: their bands were stored (or
    # staged in an open shard, which the checkpoint shows) before its objects, and ``closed_rows``
    # gets their frames when level 0's part is written.
    open_from: int
    frames: dict[int, int]
    closed_rows: dict[int, int] = field(default_factory=dict)


# What a level's checkpoint write waits for: each copy with its encoding tasks.
CheckpointParts = Future[list[tuple[Band, list[Future[Encoded]]]]]


class Readable(Protocol):
    """Told, on the I/O thread, which bands of a level are now stored (the image's publisher), and
    when a level's part of a checkpoint is stored."""

    def stored(self, level: int, bands: Sequence[StoredBand]) -> None: ...

    def checkpointed(self, level: int, checkpoint: Checkpoint, held: Sequence[StoredBand]) -> None: ...


class BandSource(Protocol):
    """Where a complete band came from: told when a reader of its buffer is done with it."""

    def band_done(self, band: Band) -> None: ...


class BandSink(Protocol):
    """Takes a level's complete bands while their buffers are still held (the next pyramid level),
    and the level's final extent after its last band."""

    def take(self, band: Band, source: BandSource) -> None: ...

    def checkpoint(self, bands: Sequence[Band], checkpoint: Checkpoint, source: BandSource) -> None: ...

    def finish(self, extent: int) -> None: ...


class LevelWriter:
    """Streams one array (one pyramid level) of an image into the store."""

    def __init__(
        self,
        *,
        level: int,
        layout: ArrayLayout,
        codec: BloscCodec | None,
        objects: ObjectWriter,
        pipeline: Pipeline,
        name: str,
        append_timeout: float | None,
        readable: Readable,
        counts: FrameCounts,
        pools: BufferPools,
        sink: BandSink | None = None,
        observe: Callable[[Index, np.ndarray[Any, Any]], None] | None = None,
        waits_for_budget: bool = True,
    ) -> None:
        self.level = level
        self.layout = layout
        self.codec = codec
        self.objects = objects
        self.pipeline = pipeline
        self.budget = pipeline.budget
        self._readable = readable
        self._sink = sink
        chunks_per_task = max(len(t) for t in objects.tasks)
        self.encoder = Encoder(layout, codec, chunks_per_task, objects.trailer, pools, observe)
        self.reservation = type(objects).reservation(layout)
        self._in_flight = 0  # bands submitted whose I/O job has not finished
        self._count_lock = threading.Lock()
        self.counts = counts
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
            counts=counts,
        )
        # The first band buffer now, the second while the first fills: the acquisition loop
        # never pays for mapping memory.
        self.assembler.pool.prefill(1)
        self.assembler.pool.prefill(1, background=True)
        self.lock = threading.RLock()  # one appender at a time (the caller's thread, or the pyramid's)
        self.bytes_written = 0  # the I/O thread's count
        self.raw_bytes_written = 0  # uncompressed bytes of the bands stored (slots inside the array)

    # -- resuming ----------------------------------------------------------
    def resume(self, extent: int) -> None:
        """Continue a store whose append axis this level published ``extent`` long (before any
        frame): what is stored below it stays, the band row it ends inside is read back into band
        buffers (its slots below ``extent`` KEPT) so new frames complete it and it is written again
        whole, and a shard deeper than one band takes over its stored bands (``ObjectWriter.adopt``).
        Reads the objects of that one row, nothing else."""
        self.objects.adopt(extent)
        for band, buffer in self.assembler.resume(extent):
            self._read_band(band.coords, buffer)

    def read_frame(self, index: Index) -> np.ndarray[Any, Any]:
        """The frame stored at ``index`` (zeros where nothing is stored): a resumed pyramid's last
        plane of a pair whose partner is still to come (``PyramidLevel.resume``)."""
        coords, within = self.layout.band_of(index)
        buffer = np.zeros(self.layout.band_shape, self.layout.dtype)
        self._read_band(coords, buffer)
        out = np.empty(self.layout.frame_shape, self.layout.dtype)
        self.layout.read_frame(buffer, within, out)
        return out

    def _read_band(self, coords: Index, buffer: np.ndarray[Any, Any]) -> None:
        """Decode the stored chunks of band ``coords`` into ``buffer`` (chunks never stored are left
        as they are)."""
        decoder = None if self.codec is None else numcodecs.Blosc()
        dtype = self.layout.dtype.newbyteorder("<")
        for coord, data in self.objects.read_band(coords):
            raw = data if decoder is None else decoder.decode(data)
            buffer[coord] = np.frombuffer(raw, dtype).reshape(self.layout.chunks)

    # -- appending thread ------------------------------------------------
    def locate(self, positions: Sequence[Index]) -> list[Slot]:
        """The slot of each position; FrameError (nothing changed) if any is not free."""
        return self.assembler.locate(positions)

    def fill(self, positions: Sequence[Index], slots: Sequence[Slot], frames: np.ndarray[Any, Any]) -> None:
        self.assembler.fill(positions, slots, frames)

    def put(self, positions: Sequence[Index], frames: np.ndarray[Any, Any]) -> None:
        """``locate`` then ``fill``: for a caller with nothing to do between the two."""
        self.fill(positions, self.locate(positions), frames)

    def skip(self, positions: Sequence[Index]) -> None:
        self.assembler.skip(positions)

    def finish(self, extent: int) -> None:
        """Close every band up to ``extent``, flush what the object writer holds back, and tell the
        sink (the next level) that nothing more comes."""
        self.objects.final_extent = extent
        self.assembler.finish(extent)
        self.pipeline.submit_io(self._finish_job)
        if self._sink is not None:
            self._sink.finish(extent)

    def _submit(self, band: Band) -> None:
        with self._count_lock:
            self._in_flight += 1
        futures: list[Future[Encoded]] = []
        if band.buffer is not None:
            self.budget.submitted(self.reservation)
            band.submitted = True
            band.hold(len(self.objects.tasks) + (self._sink is not None))
            futures = [self.pipeline.compress(self._encode, band, t) for t in self.objects.tasks]
        self.pipeline.submit_io(lambda failed: self._io_job(band, futures, failed))
        if self._sink is not None:
            # Only after this band's write is queued: the next level's writes for it queue behind it.
            self._sink.take(band, self)

    # -- durability checkpoints --------------------------------------------
    def checkpoint(self, checkpoint: Checkpoint) -> CheckpointParts:
        """Make readable what this level holds that readers cannot see yet, in two steps.  This one
        runs where the copies of the open bands are taken (under the level's lock): it queues the
        write on the I/O thread, behind every band completed before.  ``write_copies`` follows with
        the copies once their frames are in.  The objects are written again, whole, when their
        bands complete."""
        parts: CheckpointParts = Future()
        self.pipeline.submit_io(lambda failed: self._checkpoint_job(parts, checkpoint, failed))
        return parts

    def write_copies(self, copies: Sequence[Band], parts: CheckpointParts, checkpoint: Checkpoint) -> None:
        """The copies (``BandAssembler.snapshot``/``provisional``, their memory beside the cap) are
        encoded like any band for the queued write, which adds the bands waiting in open shards and
        then tells the publisher this level reached ``checkpoint``; the next level gets the copies
        to make its own.  Whatever goes wrong reaches the queued write, which raises it: it never
        waits on the I/O thread for copies that will not come."""
        try:
            for band in copies:
                band.submitted = True
                band.hold(len(self.objects.tasks) + (self._sink is not None))
            tasks = self.objects.tasks
            parts.set_result(
                [(b, [self.pipeline.compress(self._encode, b, t, False) for t in tasks]) for b in copies]
            )
        except BaseException as exc:
            parts.set_exception(exc)
            raise
        if self._sink is not None:
            self._sink.checkpoint(copies, checkpoint, self)

    # -- compression threads ---------------------------------------------
    def _encode(self, band: Band, coords: Sequence[tuple[int, ...] | None], observe: bool = True) -> Encoded:
        try:
            assert band.buffer is not None
            return self.encoder.encode(band.buffer, band.coords, coords, observe)
        finally:
            self.band_done(band)

    def band_done(self, band: Band) -> None:
        """One reader of ``band``'s buffer is done; the last one returns it to the pool."""
        with band.lock:
            band.refs -= 1
            last = band.refs == 0 and band.submitted  # a checkpoint done copying an open band: not yet
        if last and band.buffer is not None:
            self.assembler.pool.give(band.buffer)
            self.budget.release(self.layout.band_nbytes, extra=band.extra)

    def _release(self, encoded: Encoded, extra: bool = False) -> None:
        self.encoder.give_back(encoded)
        self.budget.release(self.encoder.output_nbytes, extra=extra)

    # -- I/O thread ------------------------------------------------------
    def _io_job(self, band: Band, futures: list[Future[Encoded]], failed: bool) -> None:
        try:
            results, errors = _outcomes(futures)
            try:
                if errors:
                    raise errors[0]
                if failed:
                    return
                stored = self.objects.write(band, results if futures else None)
            finally:
                for r in results:
                    self._release(r)
                for _ in errors:  # a failed task's output was reserved with the band all the same
                    self.budget.release(self.encoder.output_nbytes)
            self.bytes_written += stored.nbytes
            inside = int(np.count_nonzero(band.state != OUTSIDE))
            self.raw_bytes_written += self.layout.band_nbytes * inside // band.state.size
            if stored.bands:
                self._readable.stored(self.level, stored.bands)
        finally:
            with self._count_lock:
                self._in_flight -= 1
            self.budget.notify()

    def _checkpoint_job(self, parts: CheckpointParts, checkpoint: Checkpoint, failed: bool) -> None:
        try:
            # Waits for the copies (the checkpoint's thread copies their frames meanwhile).
            results, errors = [], []
            for band, futures in parts.result():
                encoded, failures = _outcomes(futures)
                results.append((band, encoded))
                errors += failures
            try:
                if errors:
                    raise errors[0]
                if failed:
                    return
                # Not counted in bytes_written: these objects are written again, whole, and the
                # ratio of bytes_written to raw_bytes_written is the compression ratio users see.
                shown = self.objects.write_partial(results)
            finally:
                for _band, encoded in results:
                    for r in encoded:
                        self._release(r, extra=True)
                for _ in errors:
                    self.budget.release(self.encoder.output_nbytes, extra=True)
            self._readable.checkpointed(self.level, checkpoint, shown.bands)
        finally:
            self.budget.notify()

    def _finish_job(self, failed: bool) -> None:
        if failed:
            self.objects.abort()
            return
        stored = self.objects.finish()
        self.bytes_written += stored.nbytes
        if stored.bands:
            self._readable.stored(self.level, stored.bands)


def _outcomes(futures: Sequence[Future[Encoded]]) -> tuple[list[Encoded], list[BaseException]]:
    """Every task's output that was made, and every task's failure: the outputs of a band's other
    tasks go back to the pool and the budget even when one of them failed."""
    results: list[Encoded] = []
    errors: list[BaseException] = []
    for f in futures:
        try:
            results.append(f.result())
        except BaseException as exc:
            errors.append(exc)
    return results, errors
