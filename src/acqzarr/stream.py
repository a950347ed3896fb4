"""A stream: validated frames in, a live-readable OME-Zarr store out.

The stream owns the store, the pipeline threads and one writer per array.
It validates and routes frames, and it is the only place that writes
metadata, so the rule "a reader never sees a shape that points at missing
data" is enforced here: an array's shape is republished only after the
writer reports the frames behind it are on storage.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from .budget import InflightBudget
from .codecs import BloscCodec
from .errors import ConfigError, FrameError, StateError, StoreError
from .formats import format_for
from .layout import ArrayLayout
from .metadata.ngff import RESERVED_KEYS
from .multiscale import level_count, level_settings
from .pipeline import Pipeline
from .pyramid import Pyramid
from .settings import ArraySettings, StreamSettings
from .stores import Store, open_store
from .writers import Writer

__all__ = ["ArrayStats", "Stream", "open_stream"]

_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


@dataclass(frozen=True)
class ArrayStats:
    """Progress of one array: what was accepted and what readers can see."""

    key: str
    frames_appended: int
    frames_flushed: int
    bytes_written: int


class _Array:
    """An image: its level writers (level 0 takes the frames), the pyramid feeding the rest,
    and the user attributes of its group."""

    def __init__(self, settings: ArraySettings, writers: list[Writer], pyramid: Pyramid | None) -> None:
        self.settings = settings
        self.writers = writers
        self.writer = writers[0]
        self.layout = self.writer.layout
        self.pyramid = pyramid
        self.group_path = settings.key
        self.user_attrs: dict[str, Any] = {}


class Stream:
    """Write frames from one or more cameras into one Zarr store.

    Use ``open_stream(settings)`` as a context manager, call ``append`` for
    every frame, and let the ``with`` block (or ``close``) flush the rest.
    """

    def __init__(self, settings: StreamSettings, store: Store | None = None) -> None:
        self.settings = settings
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
        cap = settings.max_inflight_bytes or self.format.default_inflight_bytes()
        self.pipeline = Pipeline(settings.threads, InflightBudget(cap))
        self._arrays: dict[str, _Array] = {}
        try:
            for arr in settings.arrays:
                self._arrays[arr.key] = self._create_array(arr)
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
        if not any(self.store.exists(m) for m in _ZARR_MARKERS):
            raise StoreError(
                f"{where}: exists and is not a Zarr store; refusing to delete it for overwrite=True"
            )
        self.store.clear()

    def _create_array(self, settings: ArraySettings) -> _Array:
        levels = level_settings(settings, level_count(settings))
        codec = (
            None
            if settings.compression is None
            else BloscCodec(settings.compression, np.dtype(settings.dtype))
        )
        writers = []
        for level, level_settings_ in enumerate(levels):
            layout = ArrayLayout(level_settings_, sharded=self.format.sharded)
            writer = self.format.make_writer(
                layout=layout,
                codec=codec,
                store=self.store,
                array_path="/".join(p for p in (settings.key, str(level)) if p),
                pipeline=self.pipeline,
                append_timeout=self.settings.append_timeout,
                on_flushed=functools.partial(self._publish, settings.key),
                track_window=level == 0,
            )
            self._write_array_meta(writer, 0)
            writers.append(writer)
        pyramid = None
        if len(writers) > 1:
            assert settings.multiscale is not None
            pyramid = Pyramid(writers, settings.multiscale.method, self.pipeline)
        return _Array(settings, writers, pyramid)

    def _write_groups(self) -> None:
        """Root and intermediate groups first, then each image group with its NGFF block."""
        plain: set[str] = {""}
        for key in self._arrays:
            parts = key.split("/")[:-1] if key else []
            plain.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for path in sorted(plain - set(self._arrays)):
            self.put_documents(self.format.group_documents(path, {}))
        for array in self._arrays.values():
            self._write_image_group(array)

    def _write_image_group(self, array: _Array) -> None:
        attrs = self.format.image_attributes(array.settings, len(array.writers), array.writer.windows)
        with self._meta_lock:
            self.put_documents(self.format.group_documents(array.group_path, {**array.user_attrs, **attrs}))

    def _write_array_meta(self, writer: Writer, frames: int) -> None:
        shape = writer.layout.shape_for(frames)
        self.put_documents(self.format.array_documents(writer.array_path, writer.layout, shape, writer.codec))

    def put_documents(self, docs: dict[str, dict[str, Any]]) -> None:
        """Write JSON documents (each atomically) into the stream's store."""
        for key, doc in docs.items():
            self.store.put(key, [json.dumps(doc, indent=2).encode()])

    def _publish(self, key: str, writer: Writer, frames: int) -> None:
        """Called on the I/O thread once ``frames`` frames of ``writer`` (a level of ``key``) are stored."""
        with self._meta_lock:
            self._write_array_meta(writer, frames)

    def write_metadata(self, attributes: dict[str, Any], key: str | None = None) -> None:
        """Merge user attributes into an image group, beside (never over) the OME-NGFF block.

        Raises ConfigError for values that are not JSON (NaN, infinities,
        arbitrary objects) or for keys acqzarr owns; nothing is written then.
        """
        if self._closed:
            raise StateError("write_metadata on a closed stream")
        array = self._route(key)
        if not isinstance(attributes, dict):
            raise ConfigError(f"attributes must be a dict, got {type(attributes).__name__}")
        clash = sorted(RESERVED_KEYS.intersection(attributes))
        if clash:
            raise ConfigError(f"attributes {clash} are written by acqzarr and cannot be set")
        try:
            json.dumps(attributes, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"attributes are not valid JSON: {exc}") from None
        array.user_attrs.update(attributes)
        self._write_image_group(array)

    # -- appending ----------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return list(self._arrays)

    def append(self, frames: Any, key: str | None = None) -> None:
        """Accept one frame (e.g. (y, x)) or a stack of frames (n, y, x) for array ``key``.

        Raises FrameError for a wrong key, dtype or shape, or frames past a
        bounded append axis (nothing of that call is accepted); WriterError if
        a writer thread failed earlier; BackpressureTimeout when the pipeline
        stayed full past ``append_timeout``.
        """
        if self._closed:
            raise StateError("append on a closed stream")
        array = self._route(key)
        self.pipeline.check()
        stack = self._validate(array, frames)
        writer = array.writer
        with writer.lock:
            if self._closed:
                raise StateError("append on a closed stream")
            writer.append(stack)

    def _route(self, key: str | None) -> _Array:
        if key is None:
            if len(self._arrays) != 1:
                raise FrameError(f"this stream has several arrays; pass key= one of {self.keys}")
            return next(iter(self._arrays.values()))
        try:
            return self._arrays[key]
        except KeyError:
            raise FrameError(f"unknown array key {key!r}; expected one of {self.keys}") from None

    def _validate(self, array: _Array, frames: Any) -> np.ndarray[Any, Any]:
        layout = array.layout
        arr = frames if isinstance(frames, np.ndarray) else np.asarray(frames)
        name = array.settings.key or "(root)"
        if arr.dtype != layout.dtype:
            raise FrameError(f"array {name}: expected dtype {layout.dtype}, got {arr.dtype}")
        fs = layout.frame_shape
        if arr.shape == fs:
            arr = arr[np.newaxis]
        elif arr.ndim != len(fs) + 1 or arr.shape[1:] != fs:
            raise FrameError(
                f"array {name}: expected a frame of shape {fs} or a stack (n, {', '.join(map(str, fs))}), "
                f"got shape {arr.shape}"
            )
        limit = layout.max_frames()
        done = array.writer.frames_appended
        if limit is not None and done + arr.shape[0] > limit:
            raise FrameError(
                f"array {name}: the append axis holds {limit} frames; {done} already appended, "
                f"{arr.shape[0]} more do not fit"
            )
        return arr

    # -- progress and shutdown ----------------------------------------------
    def stats(self, key: str | None = None) -> ArrayStats:
        array = self._route(key)
        w = array.writer
        return ArrayStats(array.settings.key, w.frames_appended, w.frames_flushed, w.bytes_written)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Flush every partial layer and pyramid level, publish exact final shapes and the
        final OME-NGFF block, stop the threads.

        Raises the first writer failure, if any; the store is then valid up to
        the last good flush.
        """
        with self._close_lock:
            if self._closed:
                return
            # Closed first: an append waiting on a writer lock then sees it and
            # raises instead of landing in a finished writer.
            self._closed = True
            for array in self._arrays.values():
                with array.writer.lock:
                    array.writer.finish()
                if array.pyramid is not None:
                    array.pyramid.finish()
            self.pipeline.drain()
            self.pipeline.close()
            for array in self._arrays.values():
                for writer in array.writers:
                    writer.release_buffers()
            self.pipeline.check()
            for array in self._arrays.values():
                self._write_image_group(array)  # the contrast windows of everything seen

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


def open_stream(settings: StreamSettings, store: Store | None = None) -> Stream:
    """Create the store and start the writer threads; returns a context-managed Stream."""
    return Stream(settings, store)
