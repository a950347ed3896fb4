"""What every writer does: tile frames into layers and move layers through the pipeline.

The appending thread only copies frames into a preallocated layer buffer (one
strided numpy copy per frame).  A full layer is cut into tasks (the chunks of
one object: a chunk in v2, a shard's slice of the layer in v3).  Each task
encodes its chunks back to back into a reused, page-aligned output buffer
that has room for the worst case; then the layer buffer goes back to its pool
at once.  A job on the ordered I/O thread hands the encoded groups to the
concrete writer, which stores them and reports how many frames are readable,
so the stream can publish the new shape.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..budget import InflightBudget
from ..buffers import LayerPool
from ..codecs import BloscCodec
from ..codecs.blosc import BLOSC_MAX_OVERHEAD
from ..errors import BackpressureTimeout
from ..layout import ArrayLayout
from ..pipeline import Pipeline
from ..stores import Store

__all__ = ["Encoded", "Layer", "Writer"]


def _channel_axis(layout: ArrayLayout) -> int | None:
    """Index of the channel axis among the array's axes, if it has one after the append axis."""
    kinds = [d.kind for d in layout.settings.dimensions]
    return kinds.index("channel") if "channel" in kinds[1:] else None


_ALIGN = 4096


@dataclass
class Encoded:
    """One task's output: its chunks stored back to back from the start of ``buffer``.

    ``sizes[i]`` is chunk i's encoded size, None where the chunk is all fill
    value (or outside the array) and so is not stored.
    """

    buffer: np.ndarray[Any, Any]
    sizes: list[int | None]
    used: int

    def chunk(self, i: int) -> memoryview | None:
        n = self.sizes[i]
        if n is None:
            return None
        start = sum(s for s in self.sizes[:i] if s is not None)
        return self.buffer.data[start : start + n]

    @property
    def empty(self) -> bool:
        return self.used == 0


@dataclass
class Layer:
    """A filled (or final, partially filled) layer on its way to storage."""

    index: int  # chunk index along the append axis
    buffer: np.ndarray[Any, Any]
    frames_end: int  # frames appended up to and including this layer
    final: bool
    slots: int  # frame slots filled (the rest of the buffer was cleared to fill value)
    pending_tasks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Writer(ABC):
    """Streams one array into a store.  Subclasses decide how encoded groups become objects."""

    def __init__(
        self,
        *,
        layout: ArrayLayout,
        codec: BloscCodec | None,
        store: Store,
        array_path: str,
        pipeline: Pipeline,
        append_timeout: float | None,
        on_flushed: Callable[[Writer, int], None],
        on_layer: Callable[[Layer], None] | None = None,
        track_window: bool = False,
    ) -> None:
        self.layout = layout
        self.codec = codec
        self.store = store
        self.array_path = array_path
        self.pipeline = pipeline
        self.budget: InflightBudget = pipeline.budget
        self.append_timeout = append_timeout
        self._on_flushed = on_flushed
        self.on_layer = on_layer  # sees each layer before its buffer may be reused (the pyramid)
        # Contrast window per channel, from a 1/256 subsample of every chunk (for the omero block).
        self._window_axis = _channel_axis(layout) if track_window else None
        self._track_window = track_window
        self.windows: dict[int, tuple[float, float]] = {}
        self._window_lock = threading.Lock()
        self._pool = LayerPool(layout.layer_shape, layout.dtype)
        # The first layer buffer now; the second (the default budget's depth) while the first fills.
        self._pool.prefill(1)
        self._pool.prefill(1, background=True)
        # Output buffers fault in lazily: resident memory follows the compressed size.
        self._out_pool = LayerPool((self.output_buffer_nbytes(layout),), np.dtype(np.uint8), populate=False)
        self._layer: np.ndarray[Any, Any] | None = None
        self._slot = 0
        self._layer_index = 0
        self._finished = False
        self._layers_in_flight = 0  # submitted, I/O job not yet finished
        self._count_lock = threading.Lock()
        self.lock = threading.RLock()
        self.frames_appended = 0
        self.frames_flushed = 0  # written and published; updated on the I/O thread
        self.bytes_written = 0
        self._bits_dtype = np.dtype(f"u{layout.dtype.itemsize}")

    # -- hooks -------------------------------------------------------------
    @abstractmethod
    def _task_groups(self) -> Sequence[Sequence[tuple[int, ...] | None]]:
        """Chunk grid coordinates (non-append axes) per encoding task; None = outside the array."""

    @classmethod
    @abstractmethod
    def output_geometry(cls, layout: ArrayLayout) -> tuple[int, int, int]:
        """(encoding tasks per layer, most chunks in one task, bytes to leave after a task's chunks)."""

    @classmethod
    def output_buffer_nbytes(cls, layout: ArrayLayout) -> int:
        """One task's output buffer: room for its chunks at worst (incompressible) plus the trailer."""
        _tasks, chunks, trailer = cls.output_geometry(layout)
        nbytes = chunks * (layout.chunk_nbytes + BLOSC_MAX_OVERHEAD) + trailer
        return -(-nbytes // _ALIGN) * _ALIGN

    @classmethod
    def reservation_for(cls, layout: ArrayLayout) -> int:
        """Bytes one layer may hold at worst: its buffer plus every task's output buffer."""
        tasks, _chunks, _trailer = cls.output_geometry(layout)
        return layout.layer_nbytes + tasks * cls.output_buffer_nbytes(layout)

    @abstractmethod
    def _write(self, layer: Layer, results: list[Encoded]) -> int | None:
        """Store one layer's groups; return the frames now readable, or None if unchanged.

        Must hand every Encoded back with ``_release`` once stored (or kept).
        """

    def _flush_pending(self) -> int | None:
        """Write anything held back across layers (shards still open at the end)."""
        return None

    # -- appending thread ----------------------------------------------------
    def append(self, frames: np.ndarray[Any, Any]) -> None:
        """Copy validated frames (n, *frame_shape) into layers, submitting each full layer."""
        layout = self.layout
        limit = layout.max_frames()
        for i in range(frames.shape[0]):
            if self._layer is None:
                try:
                    self._layer = self._take_buffer()
                except BackpressureTimeout as exc:
                    raise BackpressureTimeout(
                        f"{exc}; {i} of {frames.shape[0]} frames of this call were accepted"
                    ) from None
            layout.copy_frame(self._layer, self._slot, frames[i])
            self._slot += 1
            self.frames_appended += 1
            if self._slot == layout.layer_frames or self.frames_appended == limit:
                self._submit(final=self.frames_appended == limit)

    def finish(self) -> None:
        """Submit the partial last layer (or anything held back); idempotent."""
        if self._finished:
            return
        self._finished = True
        if self._layer is not None and self._slot:
            self._submit(final=True)
        else:
            self.pipeline.submit_io(self._flush_pending_job)

    def release_buffers(self) -> None:
        self._pool.clear()
        self._out_pool.clear()
        self._layer = None

    @property
    def layer_reservation(self) -> int:
        return self.reservation_for(self.layout)

    def _take_buffer(self) -> np.ndarray[Any, Any]:
        """Reserve a layer and its worst-case encoded output at once, so the cap is a true bound."""
        self.budget.acquire(
            self.layer_reservation,
            timeout=self.append_timeout,
            # With nothing of ours in flight, waiting could only deadlock (an open
            # shard needs more layers to close): one layer per array always proceeds.
            exempt=lambda: self._layers_in_flight == 0,
        )
        return self._pool.take()

    def _submit(self, final: bool) -> None:
        buf = self._layer
        assert buf is not None
        for k in range(self._slot, self.layout.layer_frames):
            self.layout.copy_frame(buf, k, 0)  # a reused buffer: clear what this layer did not fill
        layer = Layer(self._layer_index, buf, self.frames_appended, final, self._slot)
        with self._count_lock:
            self._layers_in_flight += 1
        groups = self._task_groups()
        layer.pending_tasks = len(groups) + (self.on_layer is not None)
        futures: list[Future[Encoded]] = [self.pipeline.compress(self._encode, layer, g) for g in groups]
        self.pipeline.submit_io(lambda failed: self._io_job(layer, futures, failed))
        if self.on_layer is not None:
            # Only after this layer's write is queued: the pyramid's writes for it then queue behind
            # it, so no level ever publishes frames level 0 has not.  It calls layer_done(layer).
            self.on_layer(layer)
        self._layer = None
        self._slot = 0
        self._layer_index += 1
        if final:
            self._finished = True

    # -- compression threads -------------------------------------------------
    def _encode(self, layer: Layer, coords: Sequence[tuple[int, ...] | None]) -> Encoded:
        try:
            out = self._out_pool.take()  # reserved with the layer in _take_buffer
            sizes: list[int | None] = []
            offset = 0
            for c in coords:
                chunk = None if c is None else layer.buffer[c]
                if chunk is None or self._is_fill(chunk):
                    sizes.append(None)
                    continue
                if self._track_window:
                    self._observe(c, chunk)
                if self.codec is not None:
                    n = self.codec.encode_into(chunk, out, offset)
                else:
                    n = chunk.nbytes
                    out[offset : offset + n] = chunk.reshape(-1).view(np.uint8)
                sizes.append(n)
                offset += n
            return Encoded(out, sizes, offset)
        finally:
            self.layer_done(layer)

    def _observe(self, coords: tuple[int, ...] | None, chunk: np.ndarray[Any, Any]) -> None:
        """Fold a subsample of ``chunk`` into the per-channel (min, max) window."""
        assert coords is not None
        sub = chunk[..., ::16, ::16]
        ax = self._window_axis
        if ax is None:
            parts = {0: sub}
        else:
            base = coords[ax - 1] * self.layout.chunks[ax]
            limit = self.layout.shape_rest[ax - 1]
            parts = {base + i: sub.take(i, axis=ax) for i in range(min(sub.shape[ax], limit - base))}
        found = {c: (float(p.min()), float(p.max())) for c, p in parts.items() if p.size}
        with self._window_lock:
            for c, (lo, hi) in found.items():
                old = self.windows.get(c)
                self.windows[c] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    def _is_fill(self, chunk: np.ndarray[Any, Any]) -> bool:
        """All-zero bits?  Checks the ends first so real data costs almost nothing."""
        bits = chunk.reshape(-1).view(self._bits_dtype)
        return bool(bits[0] == 0 and bits[-1] == 0 and not bits.any())

    def layer_done(self, layer: Layer) -> None:
        """One reader of ``layer``'s buffer is done; the last one returns it to the pool."""
        with layer.lock:
            layer.pending_tasks -= 1
            last = layer.pending_tasks == 0
        if last:
            self._pool.give(layer.buffer)
            self.budget.release(self.layout.layer_nbytes)

    def _release(self, encoded: Encoded) -> None:
        self._out_pool.give(encoded.buffer)
        self.budget.release(encoded.buffer.nbytes)

    # -- I/O thread ----------------------------------------------------------
    def _io_job(self, layer: Layer, futures: list[Future[Encoded]], failed: bool) -> None:
        try:
            results = [f.result() for f in futures]
            if failed:
                for r in results:
                    self._release(r)
                return
            visible = self._write(layer, results)
            if visible is not None:
                self._published(visible)
        finally:
            with self._count_lock:
                self._layers_in_flight -= 1
            self.budget.notify()

    def _flush_pending_job(self, failed: bool) -> None:
        if failed:
            return
        visible = self._flush_pending()
        if visible is not None:
            self._published(visible)

    def _published(self, frames: int) -> None:
        # Metadata first: a caller told "n frames flushed" must find them if killed right after.
        self._on_flushed(self, frames)
        self.frames_flushed = frames

    def _put_padded_many(self, items: Sequence[tuple[str, np.ndarray[Any, Any], int]]) -> None:
        self.store.put_padded_many(items)
        self.bytes_written += sum(nbytes for _key, _buffer, nbytes in items)
