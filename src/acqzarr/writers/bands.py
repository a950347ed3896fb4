"""Band assembly: a frame index -> a slot of an open band; holes; when a band is complete.

The appending thread first ``locate``s the slots of a call's frames (every
check, nothing changed), then ``fill``s them: one strided numpy copy per frame
into the buffer of its band.  A band is complete once every slot inside the array is
filled or skipped; it is then handed on (``on_complete``) and never opened
again, so a frame for it later is an error, not a silent overwrite.  Buffers
are taken from the in-flight budget when a band receives its first frame: a
band that only ever sees skips costs no memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BackpressureTimeout, FrameError
from .budget import InflightBudget
from .buffers import BufferPool
from .layout import ArrayLayout, Index

__all__ = ["KEPT", "Band", "BandAssembler", "FrameCounts", "Slot"]

# KEPT: a slot a resumed stream found written in the store (read back into the band, not counted
# again as appended or flushed).
OPEN, FILLED, SKIPPED, OUTSIDE, KEPT = 0, 1, 2, 3, 4

Slot = tuple[Index, Index]  # (band coords, position inside the band)


@dataclass
class FrameCounts:
    """Frames one level accepted and slots it left empty: written by the appending thread, read
    by the image's documents on the I/O thread (plain ints: a reader sees the old or the new value)."""

    filled: int = 0
    skipped: int = 0


@dataclass(eq=False)
class Band:
    """One band on its way from frames to storage."""

    coords: Index  # chunk index along every index axis
    state: np.ndarray[Any, Any]  # per slot (index chunk shape): OPEN, FILLED, SKIPPED or OUTSIDE
    todo: int  # slots still OPEN
    buffer: np.ndarray[Any, Any] | None = None  # taken with the first frame
    frames: int = 0  # slots FILLED, counted when the band completes
    refs: int = 0  # readers of the buffer: encoding tasks, the pyramid, a checkpoint copying it
    submitted: bool = False  # complete and handed on: the last reader gives the buffer back
    extra: bool = False  # a checkpoint's copy: its memory was taken beside the cap
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hold(self, readers: int) -> None:
        """``readers`` more readers of the buffer (each calls its level's ``band_done``)."""
        with self.lock:
            self.refs += readers

    def slots(self, states: Sequence[int]) -> list[Index]:
        """Positions inside the band whose state is one of ``states``."""
        mask = self.state == states[0]
        for state in states[1:]:
            mask |= self.state == state
        return [tuple(int(i) for i in w) for w in np.argwhere(mask)]


class BandAssembler:
    """Open bands of one array level and the slots they still wait for."""

    def __init__(
        self,
        layout: ArrayLayout,
        name: str,
        budget: InflightBudget,
        reservation: int,
        append_timeout: float | None,
        may_exceed: Callable[[], bool],
        on_complete: Callable[[Band], None],
        pool: BufferPool,
        counts: FrameCounts,
    ) -> None:
        self.layout = layout
        self.name = name
        self.budget = budget
        self.reservation = reservation
        self.append_timeout = append_timeout
        self.may_exceed = may_exceed
        self.on_complete = on_complete
        self.pool = pool  # band buffers, shared with the stream's other arrays of this band shape
        self.open: dict[Index, Band] = {}
        # Bands complete and handed on: every band of the rows below ``_rows_closed`` (a row is one
        # step of the append axis's chunk grid), and those in ``_closed`` above it.  Kept compact
        # so a stream that runs for days does not grow a set of every band it wrote.
        self._rows_closed = 0
        self._closed: set[Index] = set()
        self._closed_per_row: dict[int, int] = {}
        self.extent = 0  # 1 + the largest append-axis index filled or skipped so far
        self.counts = counts
        # Frames filled per step of the append axis in rows not closed yet, for a durability
        # checkpoint's count (a closed row's frames are its bands' count; see ``_close``).
        self.filled_at: dict[int, int] = {}
        # A new band's slot states and open count, by its extent (edge bands differ): a copy per
        # band instead of building them again for every band (a frame per band in an MDA).
        self._templates: dict[Index, tuple[np.ndarray[Any, Any], int]] = {}

    # -- checks (nothing changes before they all pass) ----------------------
    def locate(self, positions: Sequence[Index]) -> list[Slot]:
        """(band, slot) of each position; FrameError for a band already stored or a slot already used."""
        out = []
        for index in positions:
            band, within = self.layout.band_of(index)
            if self.is_closed(band):
                raise FrameError(
                    f"array {self.name}: index {self.layout.describe(index)} falls in band "
                    f"{self._band_text(band)}, which is already complete and stored; a frame cannot be "
                    "written there any more"
                )
            open_band = self.open.get(band)
            if open_band is not None and open_band.state[within] != OPEN:
                what = {FILLED: "filled", SKIPPED: "skipped"}.get(
                    int(open_band.state[within]), "written before the stream resumed"
                )
                raise FrameError(f"array {self.name}: index {self.layout.describe(index)} was already {what}")
            out.append((band, within))
        if len(set(out)) != len(out):
            raise FrameError(f"array {self.name}: the same index appears twice in one call")
        return out

    # -- filling ---------------------------------------------------------
    def fill(self, positions: Sequence[Index], slots: Sequence[Slot], frames: np.ndarray[Any, Any]) -> None:
        """Copy ``frames[k]`` to ``positions[k]``, whose ``slots`` ``locate`` found free; completes
        bands as they fill.  Frames that follow each other in one band along its last index axis
        (a stack appended in one call) are copied and counted as one run.  A BackpressureTimeout or
        FrameError part-way leaves the frames before it accepted (the note says how many)."""
        k, n = 0, len(positions)
        while k < n:
            band_coords, within = slots[k]
            end = _run_end(slots, k)
            band = self.open.get(band_coords)
            if band is None or band.buffer is None:
                try:
                    buffer = self._take_buffer(positions[k], band_coords)
                except BackpressureTimeout as exc:
                    raise BackpressureTimeout(
                        f"{exc}; {k} of {n} frames of this call were accepted"
                    ) from None
                except FrameError as exc:
                    if k:
                        exc.add_note(f"{k} of {n} frames of this call were accepted")
                    raise
                band = self._band(band_coords)
                band.buffer = buffer
            count = end - k
            if count == 1:
                self.layout.copy_frame(band.buffer, within, frames[k])
                band.state[within] = FILLED
            else:
                self.layout.copy_frames(band.buffer, within, frames[k:end])
                run: tuple[int | slice, ...] = (*within[:-1], slice(within[-1], within[-1] + count))
                band.state[run] = FILLED
            self.counts.filled += count
            filled_at = self.filled_at
            for index in positions[k:end]:
                filled_at[index[0]] = filled_at.get(index[0], 0) + 1
            self._slots_done(band, max(positions[k][0], positions[end - 1][0]), count)
            k = end

    def skip(self, positions: Sequence[Index]) -> None:
        """Leave ``positions`` as holes (fill value); checked first, counted in ``frames_skipped``."""
        slots = self.locate(positions)
        for index, (band_coords, within) in zip(positions, slots, strict=True):
            band = self._band(band_coords)
            band.state[within] = SKIPPED
            self.counts.skipped += 1
            self._slots_done(band, index[0], 1)

    def finish(self, extent: int) -> None:
        """Close every band inside ``extent`` along the append axis: open slots become holes
        (counted as skipped), bands never opened are complete and empty."""
        rows = -(-extent // self.layout.index_chunks[0])
        bands = [b for r in range(self._rows_closed, rows) for b in self.layout.row_bands(r)]
        wanted = [b for b in bands if not self.is_closed(b)]
        for coords in wanted:
            band = self.open.get(coords) or self._new_band(coords, extent)
            inside = self.layout.band_extent(coords, extent)
            outside = np.ones(band.state.shape, bool)
            outside[tuple(slice(0, n) for n in inside)] = False
            band.state[outside & (band.state == OPEN)] = OUTSIDE
            holes = band.state == OPEN
            self.counts.skipped += int(holes.sum())
            band.state[holes] = SKIPPED
            band.todo = 0
            self._complete(band)
        # Bands past the extent hold nothing: every slot was checked against it.
        assert not self.open, f"bands left open past the extent: {list(self.open)}"

    # -- durability checkpoints -----------------------------------------
    @property
    def open_from(self) -> int:
        """The first step of the append axis in a row not closed yet (``filled_at`` counts from it)."""
        return self._rows_closed * self.layout.index_chunks[0]

    def settled_extent(self) -> int:
        """Steps of the append axis from the start whose every slot is filled or skipped: a band
        not complete holds back the first step where it still waits, a band of an open row never
        opened holds back its first step."""
        chunk = self.layout.index_chunks[0]
        extent = self.extent
        for row in range(self._rows_closed, -(-extent // chunk)):
            for coords in self.layout.row_bands(row):
                if self.is_closed(coords):
                    continue
                band = self.open.get(coords)
                if band is None:
                    return row * chunk
                waiting = (band.state == OPEN).reshape(chunk, -1).any(axis=1).nonzero()[0]
                if waiting.size:
                    extent = min(extent, row * chunk + int(waiting[0]))
            if extent <= (row + 1) * chunk:
                break
        return extent

    def snapshot(self) -> list[tuple[Band, Band]]:
        """(open band, its copy) for every open band that holds frames: the copy has the band's
        slot states now (its memory taken beside the cap: a checkpoint neither waits for the
        appender nor makes it wait), the band is held (``Band.hold``) so its buffer outlives its
        completion.  Cheap, for the appending lock: ``copy_frames`` takes the copy's buffer and
        copies the frames after it, while the band goes on filling.  [] when no band holds any."""
        holding = [b for b in self.open.values() if b.buffer is not None]
        if not holding:
            return []
        self.budget.take_extra(self.reservation * len(holding))
        pairs = []
        for band in holding:
            band.hold(1)
            copy = Band(band.coords, band.state.copy(), band.todo, extra=True)
            copy.frames = int(np.count_nonzero(copy.state == FILLED))
            pairs.append((band, copy))
        return pairs

    def copy_frames(self, band: Band, copy: Band) -> None:
        """Copy the frames ``copy``'s states say ``band`` held into a buffer from the pool (any
        thread: a slot once filled never changes, and the band is held), every other slot as fill
        value."""
        assert band.buffer is not None
        if copy.buffer is None:
            copy.buffer = self.pool.take()  # outside the appending lock: it may map fresh memory
        np.copyto(copy.buffer, band.buffer)  # slots being filled meanwhile are cleared next
        for within in copy.slots((OPEN, SKIPPED, OUTSIDE)):
            self.layout.copy_frame(copy.buffer, within, 0)

    def provisional(self, coords: Index) -> Band:
        """A band for a checkpoint of a level fed by another (a pyramid level): a copy of the open
        band ``coords`` if there is one, else an empty one; its buffer from the pool, its memory
        taken beside the cap like ``snapshot``'s."""
        self.budget.take_extra(self.reservation)
        buffer = self.pool.take()
        band = self.open.get(coords)
        if band is not None and band.buffer is not None:
            copy = Band(coords, band.state.copy(), band.todo, buffer, extra=True)
            self.copy_frames(band, copy)
            return copy
        buffer[...] = 0
        state = self._new_band(coords, None).state if band is None else band.state.copy()
        return Band(coords, state, int((state == OPEN).sum()), buffer, extra=True)

    # -- resuming --------------------------------------------------------
    def resume(self, extent: int) -> list[tuple[Band, np.ndarray[Any, Any]]]:
        """Continue a store whose append axis is ``extent`` long: the rows below it are complete
        and stored (closed here); the bands of the row it ends in, when it ends mid-row, are opened
        again with every slot below ``extent`` KEPT and a buffer taken, for the caller to read their
        stored chunks into.  Returns those bands (none when ``extent`` is a row boundary)."""
        chunk = self.layout.index_chunks[0]
        self._rows_closed = extent // chunk
        self.extent = extent
        if extent % chunk == 0:
            return []
        reopened = []
        for coords in self.layout.row_bands(extent // chunk):
            band = self._new_band(coords, None)
            band.state[: extent % chunk][band.state[: extent % chunk] == OPEN] = KEPT
            band.todo = int((band.state == OPEN).sum())
            if band.todo == 0:  # a bounded array that was full: nothing more can come
                self._close(coords)
                continue
            first = (extent, *(b * c for b, c in zip(coords[1:], self.layout.index_chunks[1:], strict=True)))
            buffer = band.buffer = self._take_buffer(first, coords)
            buffer[...] = 0  # a reused buffer: chunks never stored are fill value
            self.open[coords] = band
            reopened.append((band, buffer))
        return reopened

    # -- internals -------------------------------------------------------
    def _band(self, coords: Index) -> Band:
        band = self.open.get(coords)
        if band is None:
            band = self.open[coords] = self._new_band(coords, None)
        return band

    def _new_band(self, coords: Index, extent: int | None) -> Band:
        inside = self.layout.band_extent(coords, extent)
        template = self._templates.get(inside)
        if template is None:
            state = np.full(self.layout.index_chunks, OUTSIDE, np.uint8)
            state[tuple(slice(0, n) for n in inside)] = OPEN
            template = self._templates[inside] = (state, int((state == OPEN).sum()))
        return Band(coords, template[0].copy(), template[1])

    def _slots_done(self, band: Band, last_step: int, count: int) -> None:
        """``count`` slots of ``band`` filled or skipped, the furthest at step ``last_step`` of the
        append axis; the band completes with its last one."""
        self.extent = max(self.extent, last_step + 1)
        band.todo -= count
        if band.todo == 0:
            self._complete(band)

    def _complete(self, band: Band) -> None:
        self.open.pop(band.coords, None)
        band.frames = int(np.count_nonzero(band.state == FILLED))
        self._close(band.coords)
        if band.buffer is not None and band.frames < band.state.size:
            for within in band.slots((SKIPPED, OUTSIDE)):  # a reused buffer: clear what was not filled
                self.layout.copy_frame(band.buffer, within, 0)
        self.on_complete(band)

    def _take_buffer(self, index: Index, band: Index) -> np.ndarray[Any, Any]:
        def stuck() -> FrameError:
            return FrameError(
                f"array {self.name}: index {self.layout.describe(index)} needs band {self._band_text(band)} "
                f"opened, but {sum(b.buffer is not None for b in self.open.values())} open bands already "
                f"fill the in-flight cap "
                f"({self.budget.cap} bytes) and none of them is complete: append or skip the frames "
                "of the open bands first, follow the acquisition_order, or raise max_inflight_bytes"
            )

        self.budget.acquire(
            self.reservation, timeout=self.append_timeout, may_exceed=self.may_exceed, stuck=stuck
        )
        return self.pool.take()

    def is_closed(self, band: Index) -> bool:
        return band[0] < self._rows_closed or band in self._closed

    def _close(self, band: Index) -> None:
        self._closed.add(band)
        row = band[0]
        self._closed_per_row[row] = self._closed_per_row.get(row, 0) + 1
        while self._closed_per_row.get(self._rows_closed) == self.layout.bands_per_row:
            del self._closed_per_row[self._rows_closed]
            self._closed.difference_update(self.layout.row_bands(self._rows_closed))
            chunk = self.layout.index_chunks[0]
            for step in range(self._rows_closed * chunk, (self._rows_closed + 1) * chunk):
                self.filled_at.pop(step, None)
            self._rows_closed += 1

    def _band_text(self, band: Index) -> str:
        parts = []
        for a, b, c in zip(self.layout.index_names, band, self.layout.index_chunks, strict=True):
            parts.append(f"{a}: {b * c}" if c == 1 else f"{a}: {b * c}-{b * c + c - 1}")
        return "{" + ", ".join(parts) + "}"


def _run_end(slots: Sequence[Slot], k: int) -> int:
    """One past the last of the slots from ``k`` that lie in one band, one after the other along
    its last index axis (the same place on every other)."""
    band, within = slots[k]
    head, last = within[:-1], within[-1]
    end = k + 1
    while end < len(slots):
        b, w = slots[end]
        if b != band or w[-1] != last + (end - k) or w[:-1] != head:
            break
        end += 1
    return end
