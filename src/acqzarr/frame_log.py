"""Per-frame metadata beside the image, published live as the image flushes.

Each field (frame id, camera timestamp, receive time, frames dropped before)
is a 1-D int64 Zarr array at ``<key>/acqzarr_frames/<field>``, chunked by
``chunk`` entries, so any Zarr reader loads it with the image.  ``publish(n)``
writes the chunks covering the first ``n`` entries and then the metadata
giving the arrays length ``n``; called with the image's flushed frame count,
a live reader (or a reader after a crash) sees metadata for exactly the frames
it can read, never for frames that are not on disk yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .stream import Stream

__all__ = ["FIELDS", "GROUP", "FrameLog"]

FIELDS = ("frame_id", "timestamp_ns", "receive_ns", "dropped_before")
GROUP = "acqzarr_frames"


class FrameLog:
    """Collects one row of int64 values per frame; only unpublished chunks stay in memory."""

    def __init__(self, stream: Stream, key: str, fields: Sequence[str] = FIELDS, chunk: int = 4096) -> None:
        self._stream = stream
        self._fields = tuple(fields)
        self._chunk = chunk
        self._base = "/".join(p for p in (key, GROUP) if p)
        self._pending: dict[int, np.ndarray[Any, Any]] = {}  # chunk index -> (fields, chunk)
        self._length = 0
        self._published = -1  # nothing written yet, not even the empty arrays

    def __len__(self) -> int:
        return self._length

    def add(self, *values: int) -> None:
        """Record the next frame's values (in ``fields`` order): O(1), no I/O."""
        index, offset = divmod(self._length, self._chunk)
        block = self._pending.get(index)
        if block is None:
            block = self._pending[index] = np.zeros((len(self._fields), self._chunk), "<i8")
        block[:, offset] = values
        self._length += 1

    def publish(self, upto: int | None = None) -> None:
        """Make the first ``upto`` entries (default: all) readable, chunks first, then metadata."""
        n = self._length if upto is None else min(upto, self._length)
        if n == self._published:
            return
        fmt = self._stream.format
        store = self._stream.store
        for index in sorted(self._pending):
            start = index * self._chunk
            if start >= n:
                break
            block = self._pending[index]
            for f, name in enumerate(self._fields):
                store.put(fmt.vector_chunk_key(f"{self._base}/{name}", index), [block[f].data])
            if n - start >= self._chunk:  # complete and on disk: never needed again
                del self._pending[index]
        docs = {}
        if self._published < 0:
            docs.update(fmt.group_documents(self._base, {"fields": list(self._fields), "version": 1}))
        for name in self._fields:
            docs.update(fmt.vector_documents(f"{self._base}/{name}", n, np.dtype("<i8"), self._chunk))
        self._stream.put_documents(docs)
        self._published = n
