"""An image: one OME-NGFF image group, from the frames it accepts to the documents readers see.

The image owns everything one camera (at one position) writes: where each
frame goes (``order.py``), its level writers (level 0 takes the frames; each
lower level is written by the ``PyramidLevel`` that level above hands its
complete bands to), the publisher that shows all levels together, the
per-frame metadata columns, the live contrast window, the session record and
the documents they end up in.  The stream routes frames to images and never
reaches inside one.

Built from the bottom up, so that every collaborator is handed to the
constructor of the object that uses it: the documents, then the publisher
(which writes them), then the levels from the lowest resolution up (each
writer is given the publisher to report stored bands to, and the pyramid
level that feeds the writer below it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codecs import BloscCodec
from ..errors import FrameError, StateError, WriterError
from ..metadata.levels import level_count, level_settings
from ..metadata.zarr_spec import ZarrSpec
from ..settings import ArraySettings
from ..settings.locations import join_key
from ..stores import Store
from ..writers import object_writer
from ..writers.bands import FrameCounts
from ..writers.buffers import BufferPools
from ..writers.layout import ArrayLayout, Index
from ..writers.level import BandSink, Checkpoint, LevelWriter
from ..writers.pipeline import Pipeline
from .contrast import ContrastWindows
from .documents import ImageDocuments
from .frame_columns import FrameColumns
from .order import FrameOrder
from .publish import ImagePublisher, PublishPacer
from .pyramid import PyramidLevel, halved_axis
from .resume import ResumePoint
from .session_record import SessionRecord

__all__ = ["ArrayStats", "Image"]


@dataclass(frozen=True)
class ArrayStats:
    """Progress of one array: what was accepted and what readers can see.  A stream that resumed a
    store counts its own frames (the session record keeps the totals across runs)."""

    key: str
    frames_appended: int  # frames accepted by append
    frames_flushed: int  # of those, frames inside the shape readers see (stored and published)
    bytes_written: int  # bytes of chunk and shard objects stored, all levels
    frames_skipped: int = 0  # frame slots left as fill value: skip(), and holes closed at close()
    raw_bytes_written: int = 0  # uncompressed size of what bytes_written holds: its ratio
    resumed_at: int = 0  # the append axis's extent the store showed when this stream resumed it
    checkpoints: int = 0  # times the durability deadline wrote bands that were not complete yet


class Image:
    """One image group: its levels, pyramid, publisher, columns, contrast and session record."""

    def __init__(
        self,
        settings: ArraySettings,
        *,
        spec: ZarrSpec,
        store: Store,
        pipeline: Pipeline,
        pools: BufferPools,
        pacer: PublishPacer,
        append_timeout: float | None,
        session: SessionRecord,
        resume: ResumePoint | None = None,
    ) -> None:
        """``resume``: where the store's image stops, for a stream that continues it (``resume.py``);
        the session record then carries the image's earlier segments."""
        self.settings = settings
        self.name = settings.key or "(root)"
        layouts = [
            ArrayLayout(s, sharded=spec.sharded) for s in level_settings(settings, level_count(settings))
        ]
        self.layout = layouts[0]
        compression = settings.compression
        codec = None if compression is None else BloscCodec(compression, np.dtype(settings.dtype))
        start = self._start = 0 if resume is None else resume.extent
        self.order = FrameOrder(self.layout, settings.acquisition_axes, self.name)
        # A resumed image goes on at the first slot of the first step it does not show yet.
        self.order.cursor = self.order.sequence((start,) + (0,) * (self.layout.index_ndim - 1))
        self.columns = FrameColumns(self.layout, settings.frame_columns, spec, store, settings.key)
        if resume is not None:
            self.columns.resume(start, resume.columns)
        contrast = ContrastWindows(self.layout, None if resume is None else resume.windows)
        self.counts = FrameCounts()  # level 0's: frames accepted and slots skipped
        if resume is not None:
            # Slots below the extent that hold no frame and that no run counted as skipped (a run
            # killed after skipping them, before its next publish): they stay holes, counted as
            # skipped by this stream.
            slots = start * math.prod(self.layout.index_shape[1:])
            seen = int(resume.record.get("frames_on_disk") or 0) + int(
                resume.record.get("frames_skipped") or 0
            )
            self.counts.skipped = max(0, slots - seen)
        self.documents = ImageDocuments(
            settings=settings,
            spec=spec,
            store=store,
            lock=pacer.lock,
            layouts=layouts,
            codec=codec,
            columns=self.columns,
            contrast=contrast,
            session=session,
            counts=self.counts,
        )
        self.publisher = ImagePublisher(
            self.documents, layouts, halved_append=halved_axis(settings) == 0, pacer=pacer, start=start
        )
        # The image exists from the start (empty, or as the resumed store shows it, its record now
        # saying that a new segment runs).
        self.documents.publish([self.publisher.level_extent(k, start) for k in range(len(layouts))], 0)
        self.levels: list[LevelWriter] = []
        sinks: dict[int, PyramidLevel] = {}  # the level each one makes (k >= 1), made from level k - 1
        sink: BandSink | None = None
        for level in reversed(range(len(layouts))):
            writer = LevelWriter(
                level=level,
                layout=layouts[level],
                codec=codec,
                objects=object_writer(spec, layouts[level], store, join_key(settings.key, str(level))),
                pipeline=pipeline,
                name=self.name if level == 0 else f"{self.name} level {level}",
                append_timeout=append_timeout,
                readable=self.publisher,
                counts=self.counts if level == 0 else FrameCounts(),
                pools=pools,
                sink=sink,
                observe=contrast.observe if level == 0 else None,
                waits_for_budget=level == 0,
            )
            self.levels.insert(0, writer)
            if level > 0 and settings.multiscale is not None:
                sink = sinks[level] = PyramidLevel(
                    layouts[level - 1], writer, settings.multiscale.method, pipeline
                )
        self._top = self.levels[0]
        if start:
            for k, writer in enumerate(self.levels):
                extent = self.publisher.resume_extent(k, start)
                writer.resume(extent)
                if k + 1 in sinks:
                    sinks[k + 1].resume(extent, writer)
        self.lock = self._top.lock  # one appender at a time
        self._closed = False
        self.checkpoints = 0

    # -- the caller's thread -------------------------------------------------
    def append(self, stack: np.ndarray[Any, Any], index: Mapping[str, int] | None, metadata: Any) -> None:
        """Accept ``stack`` (n frames) from ``index`` (or the cursor) on in acquisition order."""
        frame_meta = None if metadata is None else self.columns.check(metadata, len(stack))
        if not len(stack):
            return
        with self.lock:
            self._check_open("append")
            positions = self._positions(index, len(stack))
            slots = self._top.locate(positions)
            if frame_meta is not None:
                # The slots are free (never over a written frame) and the frames not yet copied:
                # a band they complete may be published at once, with its frames' metadata.
                self.columns.put(positions, frame_meta)
            before = self.counts.filled
            try:
                self._top.fill(positions, slots, stack)
            finally:
                accepted = self.counts.filled - before
                if accepted:
                    self.order.moved_past(positions[accepted - 1])
                if frame_meta is not None and accepted < len(positions):
                    self.columns.forget(positions[accepted:])  # frames of the call not accepted after all

    def skip(self, n: int) -> None:
        """Leave the next ``n`` slots in acquisition order as holes."""
        with self.lock:
            self._check_open("skip")
            positions = self._positions(None, n)
            self._top.skip(positions)
            self.order.moved_past(positions[-1])

    def _positions(self, index: Mapping[str, int] | None, n: int) -> list[Index]:
        """Where ``n`` frames go: from the cursor, or from ``index``, on in acquisition order."""
        order = self.order
        cap = order.capacity()
        start = None if index is None else order.resolve(index)
        first = order.cursor if start is None else order.sequence(start)
        if cap is not None and first + n > cap:
            what = (
                f"{first} already appended, {n} more do not fit"
                if start is None
                else f"{n} frames from index {self.layout.describe(start)} (frame {first} of the "
                "acquisition) do not fit"
            )
            raise FrameError(f"array {self.name}: the array holds {cap} frames; {what}")
        return order.advance(order.position(first) if start is None else start, n)

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise StateError(f"{what} on a closed stream")

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Merge (checked) user attributes into the group and write it."""
        self.documents.user_attrs.update(attributes)
        self.documents.write_group()

    def update_session(self, values: Mapping[str, Any], *, write: bool = True) -> None:
        """Merge fields into the session record; ConfigError-worthy values raise ValueError/TypeError."""
        json.dumps(dict(values), allow_nan=False)
        self.documents.session.update(values)
        if write:
            self.documents.write_group()

    def session_record(self) -> dict[str, Any]:
        return self.documents.session_record()

    def stats(self) -> ArrayStats:
        return ArrayStats(
            self.settings.key,
            frames_appended=self.counts.filled,
            frames_flushed=self.publisher.frames_flushed,
            bytes_written=sum(w.bytes_written for w in self.levels),
            frames_skipped=self.counts.skipped,
            raw_bytes_written=sum(w.raw_bytes_written for w in self.levels),
            resumed_at=self._start,
            checkpoints=self.checkpoints,
        )

    # -- the durability deadline ----------------------------------------------
    def checkpoint(self) -> bool:
        """Make readable every frame of the steps of the append axis that are settled (each slot
        filled or skipped) although their bands are not complete: copies of the open bands are
        written as they are, on every level, and the image is then published up to those steps
        (``durability.py`` decides when).  A step still waiting for a frame is shown once it is
        settled, so nothing shown ever changes.  False when there is nothing to show, the image is
        closed or a checkpoint is still on its way.  The copies' memory is taken beside the
        in-flight cap: the appender never waits for a checkpoint, nor a checkpoint for it."""
        top = self._top
        with self.lock:  # only what must see the bands as they are now: no frame copied here
            if self._closed or self.publisher.checkpoints_pending:
                return False
            assembler = top.assembler
            extent = assembler.settled_extent()
            if self.publisher.halves_append:
                # A lower level's plane is final only once all the planes it is made of are.
                whole = 2 ** (len(self.levels) - 1)
                extent = extent // whole * whole
            if extent <= self.publisher.published:
                return False
            pairs = assembler.snapshot()
            counts = {step: n for step, n in assembler.filled_at.items() if step < extent}
            checkpoint = Checkpoint(extent, assembler.open_from, counts)
            self.publisher.begin(checkpoint)
            parts = top.checkpoint(checkpoint)
            self.checkpoints += 1
        try:
            for band, copy in pairs:
                assembler.copy_frames(band, copy)
                top.band_done(band)
        except BaseException as exc:
            parts.set_exception(exc)  # the queued write raises it: the stream's next call sees it
            raise
        top.write_copies([copy for _band, copy in pairs], parts, checkpoint)
        return True

    # -- closing ---------------------------------------------------------------
    def catch_up(self, *, now: bool = False) -> float | None:
        """Publish whatever is stored and not yet shown, at most every publish interval and within
        the stream's publishing share (``publish.py``) unless ``now``; the seconds until the next
        may, if something waits."""
        return self.publisher.catch_up(now=now)

    def finish(self) -> None:
        """No more frames: every band closes (open slots become holes) and every level finishes,
        level 0 first, each telling the next through its pyramid level."""
        with self.lock:
            self._closed = True
            extent = self._top.assembler.extent
            self.publisher.set_final(extent)
            self._top.finish(extent)

    def write_final(self) -> None:
        """After a clean drain: check that every level published the full extent, then write the
        final group (the contrast of everything seen, the session record's end)."""
        final = self._top.assembler.extent
        if self.publisher.published != final:  # never a silent short store
            raise WriterError(
                f"array {self.name}: {final} steps of the append axis were written but only "
                f"{self.publisher.published} could be published on every level"
            )
        self.documents.final = True
        self.documents.write_group()


def images_catch_up(images: Sequence[Image], *, now: bool = False) -> float | None:
    """Publish every image's stored, unpublished bands (the I/O thread's idle work, paced as
    ``Image.catch_up`` says unless ``now``); the seconds until one of them may publish next."""
    waits = [w for w in (image.catch_up(now=now) for image in images) if w is not None]
    return min(waits) if waits else None
