"""When readers may see more of an image: one extent for all its levels, published together.

A band is readable once its objects are stored, but a reader sees an array
through its shape, and the shape can only grow along the append axis.  So
an image may show ``n`` steps of the append axis once every band of those
steps is stored, on level 0 and on every pyramid level (``ceil(n / 2**k)``
steps on level k when the append axis halves).  The publisher counts stored
bands per step of the append axis's chunk grid (a *row*) for every level and
publishes the extent all levels agree on, all level shapes at once, so a
reader (or a reader after a kill) never sees one level cover a different
time range than another.

A publish is one atomic metadata change (level shapes, per-frame metadata
columns, the image group: ``documents.py`` renders and writes it), so they
are coalesced: an image publishes when
``interval`` has passed since its last publish, when the I/O thread has
nothing else queued and ``interval`` has passed (``catch_up``: the I/O thread
comes back when it has), at the final extent, and on ``flush``.
A stream of small frames then pays for ~10 metadata changes a second, not
one per band.  A publish costs a few ms (every level's document, every
column's, the group: each a new file), and a stream of many images publishes
each of them, so a stream's images share one ``PublishPacer``: after a publish
that took ``d`` seconds of CPU, the next paced publish of any of them waits
until ``d / PUBLISH_SHARE`` has passed, which keeps publishing within that
share of one core whatever the number of images and the frame rate, up to
``PUBLISH_MAX_WAIT`` (or an eighth of the durability deadline).  A reader
is then at most ``max(interval, min(images x d / PUBLISH_SHARE, max wait))`` behind a busy
writer (0.1 s for one image; ~0.2 s for the two positions of an MDA with
per-frame metadata here).  Publishes that must happen (the final extent, a
flush, a durability checkpoint) are never held back, and are counted.

A durability checkpoint (``durability.py``) shows more than whole rows: once
every level has written its open bands and open shards as they are, the
image shows the steps of the append axis that were *settled* (every slot
filled or skipped) when the copies were taken.  Nothing a reader sees below
that extent changes afterwards: the objects are written again as their bands
fill, but only slots past it change, on every level, and the columns' values
below it are final.  Its frames are counted from level 0's per-step counts;
the row-by-row count takes over once the rows are complete.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

from ..writers.layout import ArrayLayout
from ..writers.level import Checkpoint
from ..writers.objects import StoredBand
from .pyramid import level_extent, resume_extent

__all__ = [
    "PUBLISH_INTERVAL",
    "PUBLISH_MAX_WAIT",
    "PUBLISH_SHARE",
    "ImagePublisher",
    "PublishPacer",
    "Publishes",
]

PUBLISH_INTERVAL = 0.1  # seconds: the most a reader lags a busy writer of one image
PUBLISH_SHARE = 0.05  # of one core: the most a stream's paced publishes take, whatever its images
PUBLISH_MAX_WAIT = 0.5  # seconds: the most pacing holds a publish back (a stream with a deadline: 1/8 of it)


class PublishPacer:
    """The publishes of one stream's images: one metadata change at a time (``lock``), and
    paced ones spaced so that they take at most ``PUBLISH_SHARE`` of a core, but never held
    back more than ``max_wait`` seconds: a publish that cost more (a stalled disk, a busy
    machine) would otherwise keep frames unreadable long enough for the durability deadline to
    write a checkpoint, which costs far more than the publish it waited for."""

    def __init__(self, max_wait: float = PUBLISH_MAX_WAIT) -> None:
        self.lock = threading.Lock()  # one metadata change at a time in the store
        self.max_wait = max_wait
        self._next = 0.0  # time.monotonic() before which a paced publish waits

    def wait(self) -> float:
        """Seconds until a paced publish may run (<= 0: now)."""
        return self._next - time.monotonic()

    def spent(self, cpu: float) -> None:
        """A publish (paced or not) just took ``cpu`` seconds of its thread's CPU."""
        if PUBLISH_SHARE < 1:
            hold = min(cpu * (1 / PUBLISH_SHARE - 1), self.max_wait)
            self._next = max(self._next, time.monotonic() + hold)


class Publishes(Protocol):
    """What a publish writes: every level's shape, the columns and the image group, atomically."""

    def publish(self, extents: list[int], frames: int) -> None: ...


class _Rows:
    """Stored bands per row of one level; the rows complete from the start."""

    def __init__(self, layout: ArrayLayout) -> None:
        self.layout = layout
        self.counts: dict[int, int] = {}
        self.done = 0
        self.final: int | None = None  # the append axis's extent, once known (at close)

    def add(self, bands: Sequence[StoredBand]) -> None:
        for b in bands:
            row = b.coords[0]
            self.counts[row] = self.counts.get(row, 0) + 1
        while self.counts.get(self.done) == self.layout.bands_per_row:
            del self.counts[self.done]
            self.done += 1

    def extent(self) -> int:
        e = self.done * self.layout.index_chunks[0]
        if self.final is not None:
            return min(e, self.final)
        return min(e, self.layout.append_size) if self.layout.append_size else e


class ImagePublisher:
    """Tracks an image's levels and publishes their shapes together (the ``Readable`` of every
    level writer of the image: ``stored`` runs on the I/O thread, ``catch_up`` there or in flush).
    """

    def __init__(
        self,
        documents: Publishes,
        layouts: Sequence[ArrayLayout],
        halved_append: bool,
        pacer: PublishPacer,
        start: int = 0,
    ) -> None:
        """``start``: the extent a resumed stream's store already shows (every row below it stored)."""
        self._documents = documents
        self._pacer = pacer
        self.halves_append = halved_append
        self._rows = [_Rows(layout) for layout in layouts]
        for k, rows in enumerate(self._rows):
            rows.done = self.resume_extent(k, start) // rows.layout.index_chunks[0]
        self._row_frames: dict[int, int] = {}  # level 0's stored frames per row, until published
        self._chunk = layouts[0].index_chunks[0]
        # Rows below this one are complete, published and counted in ``_counted`` for good.
        self._counted_rows = start // self._chunk
        self._counted = 0  # frames of those rows (frames_flushed adds a checkpoint's steps past them)
        self._checkpoints: dict[Checkpoint, set[int]] = {}  # levels each checkpoint still waits for
        self._interval = PUBLISH_INTERVAL
        self._last = 0.0  # time.monotonic() of the last publish
        self._lock = threading.Lock()  # the I/O thread, and flush() on the caller's
        self.published = start  # level-0 steps of the append axis that readers see
        self.frames_flushed = 0  # frames inside them, written by this stream

    def level_extent(self, level: int, extent: int) -> int:
        """Level ``level``'s extent along the append axis when level 0 has ``extent``."""
        return level_extent(extent, level, self.halves_append)

    def resume_extent(self, level: int, extent: int) -> int:
        """Where level ``level`` goes on when a resumed stream's level 0 goes on at ``extent``."""
        return resume_extent(extent, level, self.halves_append)

    def set_final(self, extent: int) -> None:
        """Level 0's final extent (at close); every level's follows from it."""
        for k, rows in enumerate(self._rows):
            rows.final = self.level_extent(k, extent)

    def stored(self, level: int, bands: Sequence[StoredBand]) -> None:
        """Bands of ``level`` are on storage; publish what every level now covers, if it is time."""
        with self._lock:
            if level == 0:
                for b in bands:
                    row = b.coords[0]
                    self._row_frames[row] = self._row_frames.get(row, 0) + b.frames
            self._rows[level].add(bands)
            extent = self._extent()
            final = self._rows[0].final
            if extent > self.published and (extent == final or self._due() <= 0):
                self._publish_upto(extent)

    def catch_up(self, *, now: bool = False) -> float | None:
        """Publish whatever is stored and not yet shown, if ``interval`` has passed since the last
        publish or ``now`` (a flush); else return the seconds until it will have (the I/O thread,
        idle, comes back then).  A burst of small bands that leaves the I/O thread idle between
        them then pays for one metadata change per interval, not one per band."""
        with self._lock:
            extent = self._extent()
            if extent <= self.published:
                return None
            wait = self._due()
            if now or wait <= 0:
                self._publish_upto(extent)
                return None
            return wait

    # -- durability checkpoints ---------------------------------------------
    def begin(self, checkpoint: Checkpoint) -> None:
        """A checkpoint was taken (the appending thread): it waits for every level."""
        with self._lock:
            self._checkpoints[checkpoint] = set(range(len(self._rows)))

    @property
    def checkpoints_pending(self) -> int:
        return len(self._checkpoints)

    def checkpointed(self, level: int, checkpoint: Checkpoint, held: Sequence[StoredBand]) -> None:
        """``level`` wrote its part of ``checkpoint`` (the I/O thread); after the last level, show
        its extent with the frames below it."""
        with self._lock:
            if level == 0:  # first (queued first): the closed rows' bands are all stored or ``held``
                rows = range(self._counted_rows, checkpoint.open_from // self._chunk)
                counts = {row: self._row_frames.get(row, 0) for row in rows}
                for band in held:
                    if band.coords[0] in counts:
                        counts[band.coords[0]] += band.frames
                checkpoint.closed_rows = counts
            waiting = self._checkpoints[checkpoint]
            waiting.discard(level)
            if waiting:
                return
            del self._checkpoints[checkpoint]
            extent = checkpoint.extent
            if extent <= self.published:
                return  # whole rows published since cover it
            # Rows counted for good, then the rows closed before the copies were taken (stored
            # before the checkpoint's objects), then the steps of the rows still open then.
            first_open_row = checkpoint.open_from // self._chunk
            frames = self._counted + sum(
                checkpoint.closed_rows.get(row, 0) for row in range(self._counted_rows, first_open_row)
            )
            start = max(checkpoint.open_from, self._counted_rows * self._chunk)
            frames += sum(checkpoint.frames.get(step, 0) for step in range(start, extent))
            self._show(extent, frames)

    def _due(self) -> float:
        """Seconds until a paced publish of this image may run (<= 0: now)."""
        return max(self._interval - (time.monotonic() - self._last), self._pacer.wait())

    def _show(self, extent: int, frames: int) -> None:
        """Publish ``extent`` steps on level 0 (and what they make on every level) holding
        ``frames`` frames, and note its cost with the stream's pacer."""
        cpu = time.thread_time()
        self._documents.publish([self.level_extent(k, extent) for k in range(len(self._rows))], frames)
        self._pacer.spent(time.thread_time() - cpu)
        self.frames_flushed = frames
        self.published = extent
        self._last = time.monotonic()

    def _extent(self) -> int:
        extent = self._rows[0].extent()
        for k, rows in enumerate(self._rows[1:], start=1):
            # A level's rows cover 2**k times their extent of level 0 when the append axis halves.
            extent = min(extent, rows.extent() * 2**k if self.halves_append else rows.extent())
        return extent

    def _publish_upto(self, extent: int) -> None:
        # The extent is whole rows, but for the last one at the end: its frames all lie below it.
        steps = range(self._counted_rows, -(-extent // self._chunk))
        frames = self._counted + sum(self._row_frames.get(row, 0) for row in steps)
        # Metadata first: a caller told "n frames flushed" must find them if killed right after.
        self._show(extent, frames)
        for row in steps:
            self._row_frames.pop(row, None)
        self._counted_rows = max(self._counted_rows, steps.stop)
        self._counted = frames
