"""A stream: validated frames in, a live-readable OME-Zarr store out.

The stream owns the store, the pipeline threads and, per image, one level
writer per pyramid level and the publisher that shows them together.  It
validates frames, resolves where each goes (acquisition order, ``index``,
``skip``), and it is the only place that writes metadata, so the rule "a
reader never sees a shape that points at missing data" is enforced here: an
image's shapes are republished only after every level has stored the bands
behind them.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from .budget import InflightBudget
from .buffers import BufferPools
from .codecs import BloscCodec
from .contrast import ContrastWindows
from .errors import ConfigError, FrameError, StateError, StoreError, WriterError
from .formats import format_for
from .frame_columns import FrameColumns
from .layout import ArrayLayout, Index
from .locations import join_key
from .memory import MemoryUsage, plan_memory
from .metadata.collection import collection_groups
from .metadata.ngff import RESERVED_KEYS
from .metadata.zarr_versions import SPECS
from .multiscale import level_count, level_settings
from .order import FrameOrder
from .pipeline import Pipeline
from .publish import ImagePublisher
from .pyramid import Pyramid
from .session_record import SESSION_KEY, Counters, SessionRecord
from .settings import POSITION_AXIS, ArraySettings, StreamSettings
from .stores import Store, open_store
from .writers import LevelWriter

__all__ = ["ArrayStats", "Stream", "open_stream"]

# Image group attributes the stream writes itself: user metadata may not replace them.
_OWN_ATTRIBUTES = RESERVED_KEYS | {SESSION_KEY}


@dataclass(frozen=True)
class ArrayStats:
    """Progress of one array: what was accepted and what readers can see."""

    key: str
    frames_appended: int  # frames accepted by append
    frames_flushed: int  # of those, frames inside the shape readers see (stored and published)
    bytes_written: int  # bytes of chunk and shard objects stored, all levels
    frames_skipped: int = 0  # frame slots left as fill value: skip(), and holes closed at close()
    raw_bytes_written: int = 0  # uncompressed size of what bytes_written holds: its ratio


class _Image:
    """An image: its level writers (level 0 takes the frames), the pyramid feeding the rest, the
    publisher showing them together, where frames go, and the user attributes of its group."""

    def __init__(
        self,
        settings: ArraySettings,
        writers: list[LevelWriter],
        order: FrameOrder,
        contrast: ContrastWindows,
        frames: FrameColumns,
        session: SessionRecord,
    ) -> None:
        self.settings = settings
        self.writers = writers
        self.writer = writers[0]
        self.layout = self.writer.layout
        self.order = order
        self.contrast = contrast
        self.frames = frames  # per-frame metadata
        self.session = session
        self.counters = Counters()  # as last published
        self.final = False  # the session record says how it ended
        self.pyramid: Pyramid | None = None
        self.publisher: ImagePublisher | None = None
        self.group_path = settings.key
        self.name = settings.key or "(root)"
        self.user_attrs: dict[str, Any] = {}


class Stream:
    """Write frames from one or more cameras into one Zarr store.

    Use ``open_stream(settings)`` as a context manager, call ``append`` for
    every frame, and let the ``with`` block (or ``close``) flush the rest.
    """

    def __init__(
        self, settings: StreamSettings, store: Store | None = None, *, source: Mapping[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self._source = source
        self.plan = plan_memory(settings)
        cap = self.plan.cap(settings)
        if cap < self.plan.required:
            raise ConfigError(_too_little_memory(settings, cap, self.plan.per_array))
        self.store = (
            store
            if store is not None
            else open_store(
                settings.store, fsync=settings.fsync, direct_io=settings.direct_io, s3=settings.s3
            )
        )
        self.format = format_for(settings)
        self._prepare_store()
        self._closed = False
        self._close_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self.pipeline = Pipeline(settings.threads, InflightBudget(cap))
        self._pools = BufferPools()  # band and output buffers, shared by arrays of one shape
        self.pipeline.when_io_idle(self._catch_up)
        self._images: dict[str, _Image] = {}
        try:
            for image_settings in settings.images:
                self._images[image_settings.key] = self._create_image(image_settings)
            self._write_groups()
        except BaseException:
            self.pipeline.close()
            raise

    # -- set-up --------------------------------------------------------------
    def _prepare_store(self) -> None:
        where = self.store.describe()
        if self.store.is_empty():
            return
        if not self.settings.overwrite:
            raise StoreError(f"{where}: already exists; pass overwrite=True to replace it")
        if not any(self.store.exists(m) for spec in SPECS for m in spec.node_names):
            raise StoreError(
                f"{where}: exists and is not a Zarr store; refusing to delete it for overwrite=True"
            )
        self.store.clear()

    def _create_image(self, settings: ArraySettings) -> _Image:
        levels = level_settings(settings, level_count(settings))
        codec = (
            None
            if settings.compression is None
            else BloscCodec(settings.compression, np.dtype(settings.dtype))
        )
        layout0 = ArrayLayout(settings, sharded=self.format.sharded)
        contrast = ContrastWindows(layout0)
        name = settings.key or "(root)"
        writers: list[LevelWriter] = []
        for level, level_settings_ in enumerate(levels):
            layout = layout0 if level == 0 else ArrayLayout(level_settings_, sharded=self.format.sharded)
            path = join_key(settings.key, str(level))
            writers.append(
                LevelWriter(
                    layout=layout,
                    codec=codec,
                    objects=self.format.make_writer(layout, self.store, path),
                    pipeline=self.pipeline,
                    name=name if level == 0 else f"{name} level {level}",
                    append_timeout=self.settings.append_timeout,
                    on_stored=functools.partial(self._stored, settings.key, level),
                    observe=contrast.observe if level == 0 else None,
                    waits_for_budget=level == 0,
                    pools=self._pools,
                )
            )
        order = FrameOrder(layout0, settings.acquisition_axes, name)
        frames = FrameColumns(layout0, settings.frame_columns, self.format, self.store, settings.key)
        session = SessionRecord(json.loads(self.settings.model_dump_json()), self._source)
        image = _Image(settings, writers, order, contrast, frames, session)
        image.publisher = ImagePublisher(
            [w.layout for w in writers],
            halved_append=layout0.kinds[0] == "space",
            publish=lambda extents, frames: self._publish(image, extents, frames),
            row_frames=image.writer.assembler.row_frames,
        )
        self._publish(image, [0] * len(writers), 0)
        if len(writers) > 1:
            assert settings.multiscale is not None
            image.pyramid = Pyramid(writers, settings.multiscale.method, self.pipeline)
        return image

    def _write_groups(self) -> None:
        """Root and intermediate groups, with their plate, well or series metadata (each image
        group was written with its first publish)."""
        collection = collection_groups(self.settings)
        plain: set[str] = {"", *collection}
        for key in self._images:
            parts = key.split("/")[:-1] if key else []
            plain.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for path in sorted(plain - set(self._images)):
            attrs = self.format.collection_attributes(collection.get(path, {}))
            self.put_documents(self.format.group_documents(path, attrs))

    def _image_group(self, image: _Image) -> dict[str, bytes]:
        """The image group's documents: user attributes, the OME-NGFF block with the contrast seen
        so far, and the session record with the counters of the published extent."""
        attrs = self.format.image_attributes(image.settings, len(image.writers), image.contrast.windows)
        record = image.session.render(image.counters, final=image.final)
        docs = self.format.group_documents(
            image.group_path, {**image.user_attrs, **attrs, SESSION_KEY: record}
        )
        return {key: json.dumps(doc, indent=2).encode() for key, doc in docs.items()}

    def _write_image_group(self, image: _Image) -> None:
        with self._meta_lock:
            self.store.put_group(self._image_group(image))

    def put_documents(self, docs: dict[str, dict[str, Any]]) -> None:
        """Write JSON documents (each atomically) into the stream's store."""
        for key, doc in docs.items():
            self.store.put(key, [json.dumps(doc, indent=2).encode()])

    def _publish(self, image: _Image, extents: list[int], frames: int) -> None:
        """Show ``extents[k]`` steps of the append axis on level k, holding ``frames`` frames: the
        shapes of all levels, the per-frame metadata columns (their chunks stored first) and the
        image group (contrast so far, session record) as one atomic change (``Store.put_group``),
        so that no reader, and no reader after a kill, sees them disagree."""
        docs: dict[str, bytes] = {}
        for writer, extent in zip(image.writers, extents, strict=True):
            for key, doc in self.format.array_documents(
                writer.objects.array_path, writer.layout, writer.layout.shape_for(extent), writer.codec
            ).items():
                docs[key] = json.dumps(doc, indent=2).encode()
        for key, doc in image.frames.publish(extents[0]).items():
            docs[key] = json.dumps(doc, indent=2).encode()
        assembler = image.writer.assembler
        image.counters = Counters(frames, assembler.frames_filled, assembler.frames_skipped)
        with self._meta_lock:
            self.store.put_group({**docs, **self._image_group(image)})

    def _catch_up(self) -> None:
        """Publish every image's stored, unpublished bands (``publish.py`` coalesces publishes)."""
        for image in list(self._images.values()):
            if image.publisher is not None:
                image.publisher.catch_up()

    def _stored(self, key: str, level: int, writer: LevelWriter, bands: list[Index]) -> None:
        """I/O thread: ``bands`` of level ``level`` of image ``key`` are on storage."""
        publisher = self._images[key].publisher
        assert publisher is not None
        publisher.stored(level, bands)

    def write_metadata(self, attributes: dict[str, Any], key: str | None = None) -> None:
        """Merge user attributes into an image group, beside (never over) the OME-NGFF block.

        Raises ConfigError for values that are not JSON (NaN, infinities,
        arbitrary objects) or for keys acqzarr owns; nothing is written then.
        """
        if self._closed:
            raise StateError("write_metadata on a closed stream")
        image, _ = self._route(key)
        if not isinstance(attributes, dict):
            raise ConfigError(f"attributes must be a dict, got {type(attributes).__name__}")
        clash = sorted(_OWN_ATTRIBUTES.intersection(attributes))
        if clash:
            raise ConfigError(f"attributes {clash} are written by acqzarr and cannot be set")
        try:
            json.dumps(attributes, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"attributes are not valid JSON: {exc}") from None
        image.user_attrs.update(attributes)
        self._write_image_group(image)

    # -- appending ----------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return list(self._images)

    def update_session(
        self, values: Mapping[str, Any], key: str | None = None, *, write: bool = True
    ) -> None:
        """Merge fields into the session record (``session_record.py``) of image ``key``, e.g.
        ``{"frames_dropped": 3}`` or ``{"completed": False}`` (the close then leaves it false).

        ``write=False`` leaves the store alone: the next publish of the image carries the change.
        """
        if self._closed:
            raise StateError("update_session on a closed stream")
        image, _ = self._route(key)
        try:
            json.dumps(dict(values), allow_nan=False)
            image.session.update(values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"session fields: {exc}") from None
        if write:
            self._write_image_group(image)

    def session(self, key: str | None = None) -> dict[str, Any]:
        """The session record of image ``key`` as last written (after close: the final one)."""
        image, _ = self._route(key)
        return image.session.render(image.counters, final=image.final)

    def append(
        self,
        frames: Any,
        key: str | None = None,
        *,
        index: Mapping[str, int] | None = None,
        metadata: Any = None,
    ) -> None:
        """Accept one frame (e.g. (y, x)) or any array whose trailing axes are a frame (a stack
        (n, y, x), a volume (c, z, y, x), ...) for array ``key``.

        Frames go where the acquisition order puts them next, or, with ``index``
        (axis name -> position, e.g. ``{"t": 3, "c": 1, "z": 17}``), to that
        position (axes left out follow on from the last frame); the frames of
        a stack follow each other in acquisition order from there.  With stage
        positions (or a plate), ``index["p"]`` picks the position's image of
        array ``key``, so an MDA event's index passes straight in; ``key`` may
        also be an image's full path ("p1/cam0").

        ``metadata`` is a mapping per frame (a list of them, or of None, for a
        stack): numbers of a typed column (built-in or declared in
        ``ArraySettings.frame_columns``) go to that column, everything else
        to the frame's JSON entry (``frame_columns.py``), at the frame's index.

        Raises FrameError for a wrong key, dtype or shape, an index outside the
        array, a position already written or whose band is already stored, or
        frames past a bounded array (nothing of that call is accepted);
        WriterError if a writer thread failed earlier; BackpressureTimeout when
        the pipeline stayed full past ``append_timeout``.
        """
        if self._closed:
            raise StateError("append on a closed stream")
        image, index = self._route(key, index)
        self.pipeline.check()
        stack = self._validate(image, frames)
        records = None if metadata is None else image.frames.check(metadata, len(stack))
        if not len(stack):
            return
        with image.writer.lock:
            if self._closed:
                raise StateError("append on a closed stream")
            positions = self._positions(image, index, len(stack))
            assembler = image.writer.assembler
            recorded = False

            def record() -> None:
                # Once the positions are checked free (never over a written slot) and before the
                # frames: a band they complete may be published at once.
                nonlocal recorded
                if records is not None:
                    image.frames.record(positions, records)
                    recorded = True

            before = assembler.frames_filled
            try:
                image.writer.put(positions, stack, record)
            finally:
                accepted = assembler.frames_filled - before
                if accepted:
                    image.order.moved_past(positions[accepted - 1])
                if recorded and accepted < len(positions):
                    image.frames.forget(positions[accepted:])  # frames of the call not accepted after all

    def skip(self, n: int = 1, key: str | None = None) -> None:
        """Leave the next ``n`` frame slots (in acquisition order) as fill value.

        Skipped slots are holes: they read as 0 and are counted in
        ``stats().frames_skipped``.  Raises FrameError past a bounded array or
        onto a slot already written (nothing is skipped then).
        """
        if self._closed:
            raise StateError("skip on a closed stream")
        image, _ = self._route(key)
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise FrameError(f"array {image.name}: skip takes a count of frames >= 0, got {n!r}")
        if n == 0:
            return
        self.pipeline.check()
        with image.writer.lock:
            if self._closed:
                raise StateError("skip on a closed stream")
            positions = self._positions(image, None, int(n))
            image.writer.skip(positions)
            image.order.moved_past(positions[-1])

    def _positions(self, image: _Image, index: Mapping[str, int] | None, n: int) -> list[Index]:
        """Where ``n`` frames go: from the cursor, or from ``index``, on in acquisition order."""
        order = image.order
        cap = order.capacity()
        start = None if index is None else order.resolve(index)
        first = order.cursor if start is None else order.sequence(start)
        if cap is not None and first + n > cap:
            what = (
                f"{first} already appended, {n} more do not fit"
                if start is None
                else f"{n} frames from index {image.layout.describe(start)} (frame {first} of the "
                "acquisition) do not fit"
            )
            raise FrameError(f"array {image.name}: the array holds {cap} frames; {what}")
        return order.advance(order.position(first) if start is None else start, n)

    def _route(
        self, key: str | None, index: Mapping[str, int] | None = None
    ) -> tuple[_Image, Mapping[str, int] | None]:
        """The image ``key`` names, or with ``index["p"]`` array ``key``'s image at that position;
        and the index left for the image's own axes."""
        paths = self.settings.position_paths
        if paths is not None and index is not None and POSITION_AXIS in index:
            key = self._position_key(paths, index[POSITION_AXIS], key)
            index = {k: v for k, v in index.items() if k != POSITION_AXIS}
        if key is None:
            if len(self._images) != 1:
                raise FrameError(f"this stream has several arrays; pass key= one of {self.keys}")
            return next(iter(self._images.values())), index
        try:
            return self._images[key], index
        except KeyError:
            raise FrameError(f"unknown array key {key!r}; expected one of {self.keys}") from None

    def _position_key(self, paths: list[str], p: object, key: str | None) -> str:
        """The image path of array ``key`` (of the only array when None) at position ``p``."""
        if isinstance(p, bool) or not isinstance(p, int | np.integer) or not 0 <= p < len(paths):
            raise FrameError(f"index {POSITION_AXIS!r}: expected a position 0 to {len(paths) - 1}, got {p!r}")
        arrays = [a.key for a in self.settings.arrays]
        if key is None and len(arrays) != 1:
            raise FrameError(f"this stream has several arrays; pass key= one of {arrays}")
        if key not in arrays and key is not None:
            raise FrameError(
                f"unknown array key {key!r} with index {POSITION_AXIS!r}; expected one of {arrays}"
            )
        return join_key(paths[int(p)], arrays[0] if key is None else key)

    def _validate(self, image: _Image, frames: Any) -> np.ndarray[Any, Any]:
        """Frames as an (n, *frame_shape) array (a view where numpy can make one)."""
        layout = image.layout
        arr = frames if isinstance(frames, np.ndarray) else np.asarray(frames)
        if arr.dtype != layout.dtype:
            raise FrameError(f"array {image.name}: expected dtype {layout.dtype}, got {arr.dtype}")
        fs = layout.frame_shape
        if arr.ndim < len(fs) or arr.shape[arr.ndim - len(fs) :] != fs:
            raise FrameError(
                f"array {image.name}: expected a frame of shape {fs} or an array ending in it "
                f"((n, {', '.join(map(str, fs))}), (c, z, {', '.join(map(str, fs))}), ...), "
                f"got shape {arr.shape}"
            )
        return arr.reshape(math.prod(arr.shape[: arr.ndim - len(fs)]), *fs)

    # -- progress and shutdown ----------------------------------------------
    def stats(self, key: str | None = None) -> ArrayStats:
        image, _ = self._route(key)
        assembler = image.writer.assembler
        assert image.publisher is not None
        return ArrayStats(
            image.settings.key,
            frames_appended=assembler.frames_filled,
            frames_flushed=image.publisher.frames_flushed,
            bytes_written=sum(w.bytes_written for w in image.writers),
            frames_skipped=assembler.frames_skipped,
            raw_bytes_written=sum(w.raw_bytes_written for w in image.writers),
        )

    def memory(self) -> MemoryUsage:
        """The stream's in-flight memory: cap, bytes reserved now, the peak, the minimum the
        acquisition orders need (all arrays and pyramid levels), and the buffers mapped for reuse."""
        budget = self.pipeline.budget
        return MemoryUsage(
            cap=budget.cap,
            used=budget.used,
            peak=budget.peak,
            required=self.plan.required,
            mapped=self._pools.mapped_nbytes(),
        )

    def flush(self) -> None:
        """Wait until everything submitted so far is stored and published (complete bands only:
        frames of bands still waiting for frames stay buffered).  Raises a writer failure."""
        self.pipeline.drain()
        self.pipeline.check()
        self._catch_up()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close every band (open slots become holes), flush the pyramid, publish exact final
        shapes and the final OME-NGFF block, stop the threads.

        Raises the first writer failure, if any; the store is then valid up to
        the last good publish.
        """
        with self._close_lock:
            if self._closed:
                return
            # Closed first: an append waiting on a writer lock then sees it and
            # raises instead of landing in a finished writer.
            self._closed = True
            for image in self._images.values():
                assert image.publisher is not None
                with image.writer.lock:
                    extent = image.writer.assembler.extent
                    image.publisher.set_final(extent)
                    image.writer.finish(extent)
                if image.pyramid is not None:
                    image.pyramid.finish(
                        [image.publisher.level_extent(k, extent) for k in range(len(image.writers))]
                    )
            self.pipeline.drain()
            self.pipeline.close()
            self._pools.clear()
            self._settle(self._finish_images)

    def _finish_images(self) -> None:
        """After a clean drain: check every image published its full extent, then write its final
        group (the contrast of everything seen, the session record's end)."""
        for image in self._images.values():
            assert image.publisher is not None
            final = image.writer.assembler.extent
            if image.publisher.published != final:  # never a silent short store
                raise WriterError(
                    f"array {image.name}: {final} steps of the append axis were written but only "
                    f"{image.publisher.published} could be published on every level"
                )
        for image in self._images.values():
            image.final = True
            self._write_image_group(image)

    def _settle(self, finish: Callable[[], None]) -> None:
        """``finish`` if no writer failed, then raise the first failure, after turning the store's
        grouped documents into plain ones (``Store.settle``) whatever happened: the store is left
        as any Zarr reader expects."""
        error: BaseException | None = None
        try:
            self.pipeline.check()
            finish()
        except BaseException as exc:
            error = exc
        try:
            with self._meta_lock:
                self.store.settle()
        except StoreError as exc:
            if error is None:
                raise
            error.add_note(f"settling the grouped metadata documents failed too: {exc}")
        if error is not None:
            raise error

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as close_exc:  # the original error matters more; keep both visible
            exc.add_note(f"while closing the stream after it: {close_exc!r}")


def _too_little_memory(settings: StreamSettings, cap: int, per_array: dict[str, int]) -> str:
    need = sum(per_array.values())
    parts = ", ".join(f"{k or '(root)'}: {v / 2**20:.1f} MiB" for k, v in per_array.items())
    return (
        f"max_inflight_bytes {cap} ({cap / 2**20:.1f} MiB) is less than the acquisition orders need: "
        f"{need} bytes ({need / 2**20:.1f} MiB; {parts}) to hold every band that is open at once, at "
        "its worst-case size; raise max_inflight_bytes (or leave it unset for twice that), or choose "
        "chunks or an acquisition_order that keep fewer bands open"
    )


def open_stream(
    settings: StreamSettings, store: Store | None = None, *, source: Mapping[str, Any] | None = None
) -> Stream:
    """Create the store and start the writer threads; returns a context-managed Stream.

    ``source`` describes who writes (the session record's ``source``; default ``{"kind": "python"}``).
    """
    return Stream(settings, store, source=source)
