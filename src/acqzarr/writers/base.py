"""What every writer does: tile frames into layers and move layers through the pipeline.

The appending thread only copies frames into a preallocated layer buffer (one
strided numpy copy per frame).  A full layer is cut into tasks that the
compression pool encodes in parallel; a job on the ordered I/O thread then
hands the encoded chunks to the concrete writer (`ChunkWriter`, one object per
chunk; `ShardWriter`, one object per shard), and reports how many frames are
now readable so the stream can publish the new shape.
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
from ..errors import BackpressureTimeout
from ..layout import ArrayLayout
from ..pipeline import Pipeline
from ..stores import Buffer, Store

__all__ = ["Encoded", "Layer", "Writer"]

# One task's output: an encoded chunk per requested position, None where the
# chunk is all fill value (or outside the array) and so is not stored.
Encoded = list[Buffer | None]


@dataclass
class Layer:
    """A filled (or final, partially filled) layer on its way to storage."""

    index: int  # chunk index along the append axis
    buffer: np.ndarray[Any, Any]
    frames_end: int  # frames appended up to and including this layer
    final: bool
    pending_tasks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Writer(ABC):
    """Streams one array into a store.  Subclasses decide how encoded chunks become objects."""

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
    ) -> None:
        self.layout = layout
        self.codec = codec
        self.store = store
        self.array_path = array_path
        self.pipeline = pipeline
        self.budget: InflightBudget = pipeline.budget
        self.append_timeout = append_timeout
        self._on_flushed = on_flushed
        self._pool = LayerPool(layout.layer_shape, layout.dtype)
        self._pool.prefill(2)
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
        # Zero-fill views must stay backed by their layer until written;
        # otherwise encoded bytes are copies and the buffer returns right after encoding.
        self._holds_buffer = codec is None and not self._keeps_encoded_across_layers()
        uint = np.dtype(f"u{layout.dtype.itemsize}")
        self._bits_dtype = uint

    # -- hooks -------------------------------------------------------------
    @abstractmethod
    def _task_groups(self) -> Sequence[Sequence[tuple[int, ...] | None]]:
        """Chunk grid coordinates (non-append axes) per encoding task; None = outside the array."""

    @abstractmethod
    def _write(self, layer: Layer, results: list[Encoded]) -> int | None:
        """Store one layer's encoded chunks; return the frames now readable, or None if unchanged."""

    def _keeps_encoded_across_layers(self) -> bool:
        return False

    def _flush_pending(self) -> int | None:
        """Write anything held back across layers (shards still open at the end)."""
        return None

    # -- appending thread ----------------------------------------------------
    def append(self, frames: np.ndarray[Any, Any]) -> None:
        """Copy validated frames (n, *frame_shape) into layers, submitting each full layer."""
        layout = self.layout
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
            if self._slot == layout.layer_frames or self.frames_appended == layout.max_frames():
                self._submit(final=self.frames_appended == layout.max_frames())

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
        self._layer = None

    def _take_buffer(self) -> np.ndarray[Any, Any]:
        self.budget.acquire(
            self.layout.layer_nbytes,
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
        layer = Layer(self._layer_index, buf, self.frames_appended, final)
        with self._count_lock:
            self._layers_in_flight += 1
        groups = self._task_groups()
        layer.pending_tasks = len(groups)
        futures: list[Future[Encoded]] = [self.pipeline.compress(self._encode, layer, g) for g in groups]
        self.pipeline.submit_io(lambda failed: self._io_job(layer, futures, failed))
        self._layer = None
        self._slot = 0
        self._layer_index += 1
        if final:
            self._finished = True

    # -- compression threads -------------------------------------------------
    def _encode(self, layer: Layer, coords: Sequence[tuple[int, ...] | None]) -> Encoded:
        out: Encoded = []
        copied = 0
        try:
            for c in coords:
                if c is None:
                    out.append(None)
                    continue
                chunk = layer.buffer[c]
                if self._is_fill(chunk):
                    out.append(None)
                elif self.codec is not None:
                    enc = self.codec.encode(chunk)
                    copied += len(enc)
                    out.append(enc)
                elif self._holds_buffer:
                    out.append(memoryview(chunk).cast("B"))
                else:
                    enc = chunk.tobytes()
                    copied += len(enc)
                    out.append(enc)
            self.budget.add(copied)
            return out
        finally:
            if not self._holds_buffer:
                self._task_done(layer)

    def _is_fill(self, chunk: np.ndarray[Any, Any]) -> bool:
        """All-zero bits?  Checks the ends first so real data costs almost nothing."""
        bits = chunk.reshape(-1).view(self._bits_dtype)
        return bool(bits[0] == 0 and bits[-1] == 0 and not bits.any())

    def _task_done(self, layer: Layer) -> None:
        with layer.lock:
            layer.pending_tasks -= 1
            last = layer.pending_tasks == 0
        if last:
            self._return_buffer(layer)

    def _return_buffer(self, layer: Layer) -> None:
        self._pool.give(layer.buffer)
        self.budget.release(self.layout.layer_nbytes)

    # -- I/O thread ----------------------------------------------------------
    def _io_job(self, layer: Layer, futures: list[Future[Encoded]], failed: bool) -> None:
        try:
            results = [f.result() for f in futures]
            if failed:
                return
            visible = self._write(layer, results)
            if visible is not None:
                self._published(visible)
        finally:
            if self._holds_buffer:
                self._return_buffer(layer)
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

    def _put(self, key: str, parts: list[Buffer]) -> None:
        self.store.put(key, parts)
        self.bytes_written += sum(memoryview(p).nbytes for p in parts)
