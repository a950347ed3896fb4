"""A stream: validated frames in, a live-readable OME-Zarr store out.

The stream is the public face: it opens the store, starts the pipeline
threads, builds one ``Image`` per image group (``image.py``: levels, pyramid,
publisher, columns, session record), routes each call to its image by key
(and stage position), validates frames, and closes everything in order.  It
never reaches inside an image.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numcodecs
import numpy as np

from ..errors import ConfigError, FrameError, StateError, StoreError
from ..metadata.collection import collection_files, collection_groups
from ..metadata.ngff import RESERVED_KEYS
from ..metadata.zarr_spec import COLUMN_ZSTD_LEVEL
from ..metadata.zarr_versions import SPECS, spec_for
from ..settings import MAX_CHUNK_BYTES, POSITION_AXIS, StreamSettings, is_key_path
from ..settings.locations import join_key
from ..stores import Store, open_store
from ..writers.budget import InflightBudget
from ..writers.buffers import BufferPools
from ..writers.pipeline import Pipeline
from .durability import DurabilityDeadline
from .frame_columns import GROUP as FRAMES_GROUP
from .image import ArrayStats, Image, images_catch_up
from .memory import MemoryUsage, plan_memory
from .publish import PUBLISH_MAX_WAIT, PublishPacer
from .resume import ResumePoint, discard_past, resume_points
from .session_record import SESSION_KEY, SessionRecord

__all__ = ["ArrayStats", "Stream", "open_stream"]

# Image group attributes the stream writes itself: user metadata may not replace them.
_OWN_ATTRIBUTES = RESERVED_KEYS | {SESSION_KEY}


class Stream:
    """Write frames from one or more cameras into one Zarr store.

    Use ``open_stream(settings)`` as a context manager, call ``append`` for
    every frame, and let the ``with`` block (or ``close``) flush the rest.
    A stream left unclosed is closed when it is garbage-collected or at
    interpreter exit, with its session record marked incomplete.
    """

    def __init__(
        self, settings: StreamSettings, store: Store | None = None, *, source: Mapping[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self._plan = plan_memory(settings)
        cap = self._plan.cap(settings)
        if cap < self._plan.required:
            raise ConfigError(_too_little_memory(settings, cap, self._plan.per_array))
        self._store = (
            store
            if store is not None
            else open_store(
                settings.store, fsync=settings.fsync, direct_io=settings.direct_io, s3=settings.s3
            )
        )
        self._spec = spec_for(settings.version, settings.dimension_separator)
        resumed = self._prepare_store()
        self._closed = False
        self._close_lock = threading.Lock()
        # Looked up by every append with a position index: settings are immutable, so read once.
        self._paths = settings.position_paths
        self._array_keys = [a.key for a in settings.arrays]
        # The images' publishes: one at a time, a bounded share of a core, and never held back past
        # an eighth of the durability deadline (its checkpoints start at a quarter).
        seconds = settings.max_unflushed_seconds
        max_wait = PUBLISH_MAX_WAIT if seconds is None else min(PUBLISH_MAX_WAIT, seconds / 8)
        self._pacer = PublishPacer(max_wait)
        self._images: dict[str, Image] = {}
        # The idle hook gets the images, not the stream: the threads must not keep it alive.
        self._pipeline = Pipeline(
            settings.threads,
            InflightBudget(cap),
            on_io_idle=functools.partial(_catch_up, self._images),
        )
        self._pools = BufferPools(cap)  # band and output buffers, shared by arrays of one shape
        try:
            record_settings = json.loads(settings.model_dump_json())
            for image_settings in settings.images:
                self._images[image_settings.key] = Image(
                    image_settings,
                    spec=self._spec,
                    store=self._store,
                    pipeline=self._pipeline,
                    pools=self._pools,
                    pacer=self._pacer,
                    append_timeout=settings.append_timeout,
                    session=SessionRecord(
                        record_settings, source, previous=_record_of(resumed, image_settings.key)
                    ),
                    resume=resumed.get(image_settings.key),
                )
            self._write_groups()
        except BaseException:
            self._pipeline.close()
            raise
        self._deadline = (
            None
            if seconds is None
            else DurabilityDeadline(seconds, list(self._images.values()), self._pipeline.fail)
        )
        self._parts = _Parts(
            self._images, self._pipeline, self._pools, self._store, self._pacer.lock, self._deadline
        )
        self._finalizer = weakref.finalize(self, self._parts.close_abandoned)

    # -- set-up --------------------------------------------------------------
    def _prepare_store(self) -> dict[str, ResumePoint]:
        """Make the store ready: empty (started, or cleared for ``overwrite``), or, to resume it,
        checked (nothing written when it is not compatible) and cleared past what it published.
        Returns each image's resume point (none for a store started afresh)."""
        where = self._store.describe()
        if self._store.is_empty():
            return {}
        mode = self.settings.on_existing
        if mode == "resume":
            points = resume_points(self.settings, self._store, self._spec)
            discard_past(self.settings, self._store, self._spec, points)
            return points
        if mode != "overwrite":
            raise StoreError(
                f"{where}: already exists; pass overwrite=True to replace it (or existing='resume' to "
                "continue it)"
            )
        if not any(self._store.exists(m) for spec in SPECS for m in spec.node_names):
            raise StoreError(
                f"{where}: exists and is not a Zarr store; refusing to delete it for overwrite=True"
            )
        self._store.clear()
        return {}

    def _write_groups(self) -> None:
        """Root and intermediate groups, with their plate, well or series metadata (each image
        group was written with its first publish)."""
        collection = collection_groups(self.settings)
        plain: set[str] = {"", *collection}
        for key in self._images:
            parts = key.split("/")[:-1] if key else []
            plain.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for path in sorted(plain - set(self._images)):
            attrs = self._spec.collection_attributes(collection.get(path, {}))
            self._put_documents(self._spec.group_documents(path, attrs))
        for key, data in collection_files(self.settings).items():
            self._store.put(key, [data])

    def _put_documents(self, docs: dict[str, dict[str, Any]]) -> None:
        """Write JSON documents (each atomically) into the stream's store."""
        for key, doc in docs.items():
            self._store.put(key, [json.dumps(doc, indent=2).encode()])

    def write_metadata(self, attributes: dict[str, Any], key: str | None = None) -> None:
        """Merge user attributes into an image group, beside (never over) the OME-NGFF block.

        Raises ConfigError for values that are not JSON (NaN, infinities,
        arbitrary objects) or for keys acqzarr owns; nothing is written then.
        """
        self._check_open("write_metadata")
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
        image.set_attributes(attributes)

    def write_array(
        self,
        name: str,
        data: Any,
        key: str | None = None,
        *,
        dimension_names: tuple[str, ...] | None = None,
    ) -> None:
        """Store ``data`` whole as a Zarr array at ``<image>/<name>`` (e.g. a detector's pixel mask
        at ``dectris/pixel_mask/threshold_1``): one chunk, zstd-compressed, in the stream's Zarr
        version, with a group document for each folder of ``name`` on the way.

        For what belongs beside the frames but is not one (masks, flat fields, calibration
        tables): readers open it like any Zarr array, where a JSON attribute would hold a blob.
        Raises ConfigError for a name that is not a plain relative path, that would land on the
        image's own arrays (its levels, ``acqzarr_frames``), or for data that is not a numeric or
        boolean array of at most 2 GiB; nothing is written then.
        """
        self._check_open("write_array")
        image, _ = self._route(key)
        if not isinstance(name, str) or not name or not is_key_path(name):
            raise ConfigError(
                "write_array: name must be '/'-separated names of letters, digits, '_', '.', '-', "
                f"got {name!r}"
            )
        first = name.split("/")[0]
        if first.isdigit() or first == FRAMES_GROUP:
            raise ConfigError(f"write_array: {name!r} would land on the image's own arrays ({first!r})")
        arr = np.asarray(data)
        if arr.dtype.kind not in "biuf" or arr.ndim == 0:
            raise ConfigError(
                f"write_array: {name!r} takes a numeric array, got {arr.dtype} of shape {arr.shape}"
            )
        if arr.nbytes > MAX_CHUNK_BYTES:
            raise ConfigError(f"write_array: {name!r} is {arr.nbytes} bytes, over one chunk's limit")
        names = dimension_names or tuple(f"dim_{i}" for i in range(arr.ndim))
        if len(names) != arr.ndim:
            raise ConfigError(f"write_array: {arr.ndim} axes but dimension_names {list(names)}")
        path = join_key(image.settings.key, name)
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        chunk = numcodecs.Zstd(level=COLUMN_ZSTD_LEVEL).encode(np.ascontiguousarray(little).tobytes())
        docs: dict[str, dict[str, Any]] = {}
        folders = name.split("/")[:-1]
        for i in range(len(folders)):
            docs.update(
                self._spec.group_documents(join_key(image.settings.key, "/".join(folders[: i + 1])), {})
            )
        docs.update(
            self._spec.whole_array_documents(path, shape=arr.shape, dtype=arr.dtype, dimension_names=names)
        )
        self._store.put(self._spec.chunk_key(path, (0,) * arr.ndim), [bytes(chunk)])
        with self._pacer.lock:  # the chunk first: a reader never finds the array without it
            self._store.put_group({k: json.dumps(doc, indent=2).encode() for k, doc in docs.items()})

    # -- appending ----------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return list(self._images)

    def update_session(
        self, values: Mapping[str, Any], key: str | None = None, *, write: bool = True
    ) -> None:
        """Merge fields into the session record (``engine/session_record.py``) of image ``key``, e.g.
        ``{"frames_dropped": 3}`` or ``{"completed": False}`` (the close then leaves it false).

        ``write=False`` leaves the store alone: the next publish of the image carries the change.
        """
        self._check_open("update_session")
        image, _ = self._route(key)
        try:
            image.update_session(values, write=write)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"session fields: {exc}") from None

    def session(self, key: str | None = None) -> dict[str, Any]:
        """The session record of image ``key`` as last written (after close: the final one)."""
        image, _ = self._route(key)
        return image.session_record()

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
        self._check_open("append")
        image, index = self._route(key, index)
        self._pipeline.check()
        image.append(self._validate(image, frames), index, metadata)

    def skip(self, n: int = 1, key: str | None = None) -> None:
        """Leave the next ``n`` frame slots (in acquisition order) as fill value.

        Skipped slots are holes: they read as 0 and are counted in
        ``stats().frames_skipped``.  Raises FrameError past a bounded array or
        onto a slot already written (nothing is skipped then).
        """
        self._check_open("skip")
        image, _ = self._route(key)
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise FrameError(f"array {image.name}: skip takes a count of frames >= 0, got {n!r}")
        if n == 0:
            return
        self._pipeline.check()
        image.skip(int(n))

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise StateError(f"{what} on a closed stream")

    def _route(
        self, key: str | None, index: Mapping[str, int] | None = None
    ) -> tuple[Image, Mapping[str, int] | None]:
        """The image ``key`` names, or with ``index["p"]`` array ``key``'s image at that position;
        and the index left for the image's own axes."""
        paths = self._paths
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
        arrays = self._array_keys
        if key is None and len(arrays) != 1:
            raise FrameError(f"this stream has several arrays; pass key= one of {arrays}")
        if key not in arrays and key is not None:
            raise FrameError(
                f"unknown array key {key!r} with index {POSITION_AXIS!r}; expected one of {arrays}"
            )
        return join_key(paths[int(p)], arrays[0] if key is None else key)

    @staticmethod
    def _validate(image: Image, frames: Any) -> np.ndarray[Any, Any]:
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
        return image.stats()

    def memory(self) -> MemoryUsage:
        """The stream's in-flight memory: cap, bytes reserved now, the peak, the minimum the
        acquisition orders need (all arrays and pyramid levels), and the buffers mapped for reuse."""
        budget = self._pipeline.budget
        return MemoryUsage(
            cap=budget.cap,
            used=budget.used + budget.extra,
            peak=budget.peak,
            required=self._plan.required,
            mapped=self._pools.mapped_nbytes(),
        )

    def flush(self) -> None:
        """Wait until everything submitted so far is stored and published (complete bands only:
        frames of bands still waiting for frames stay buffered).  Raises a writer failure."""
        self._pipeline.drain()
        self._pipeline.check()
        images_catch_up(list(self._images.values()), now=True)

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
            # Closed first: an append waiting on an image's lock then sees it and
            # raises instead of landing in a finished writer.
            self._closed = True
            self._finalizer.detach()
            self._parts.close()

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
        # The block failed (or was interrupted): what was written stays readable, but the record
        # says the recording did not complete, and why.
        failure = {"type": type(exc).__name__, "message": str(exc)}
        for image in self._images.values():
            image.update_session({"completed": False, "failure": failure}, write=False)
        try:
            self.close()
        except Exception as close_exc:  # the original error matters more; keep both visible
            exc.add_note(f"while closing the stream after it: {close_exc!r}")


def _record_of(points: dict[str, ResumePoint], key: str) -> dict[str, Any] | None:
    """The session record a resumed image carries on (None for an image started afresh)."""
    point = points.get(key)
    return None if point is None else point.record


def _catch_up(images: dict[str, Image]) -> float | None:
    return images_catch_up(list(images.values()))


@dataclass(frozen=True)
class _Parts:
    """What closing a stream takes, without the stream itself (its finalizer must not hold it)."""

    images: dict[str, Image]
    pipeline: Pipeline
    pools: BufferPools
    store: Store
    meta_lock: threading.Lock
    deadline: DurabilityDeadline | None

    def close(self) -> None:
        """Stop the deadline's checkpoints, finish every image, drain and stop the threads, write
        each image's final group; then turn the store's grouped documents into plain ones
        (``Store.settle``) whatever happened, so the store is left as any Zarr reader expects.
        Raises the first failure."""
        images, pipeline = list(self.images.values()), self.pipeline
        error: BaseException | None = None
        if self.deadline is not None:
            self.deadline.stop()
        try:
            for image in images:
                image.finish()
            pipeline.drain()
            if not pipeline.failed:
                images_catch_up(images, now=True)  # what an idle publish still waited for
        finally:
            pipeline.close()
            self.pools.clear()
        try:
            pipeline.check()
            for image in images:
                image.write_final()
        except BaseException as exc:
            error = exc
        try:
            with self.meta_lock:
                self.store.settle()
        except StoreError as exc:
            if error is None:
                raise
            error.add_note(f"settling the grouped metadata documents failed too: {exc}")
        if error is not None:
            raise error

    def close_abandoned(self) -> None:
        """A stream nobody closed (collected, or still open at interpreter exit): close it so the
        store is whole, with every session record saying it did not complete."""
        failure = {"type": "NotClosed", "message": "never closed; closed when collected or at exit"}
        for image in self.images.values():
            image.update_session({"completed": False, "failure": failure}, write=False)
        self.close()


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
