"""The storage interface the writers and metadata code talk to.

Writers only ever need five things from storage: put a whole object
atomically, read one back, delete, list, and say where it lives.  Keeping the
interface that small is what lets object storage slot in beside the local
filesystem without the writers knowing.

A sixth, ``put_group``, replaces a few small documents (an image's metadata,
one per pyramid level) as one change where the backend can: each ``put`` is
atomic on its own, but a kill between two of them would leave the levels with
different shapes for good.  ``settle`` undoes whatever bookkeeping that needed
once the writer closes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import StoreError

__all__ = ["Buffer", "Staged", "Store"]

# Anything exposing the buffer protocol: bytes, memoryview, a contiguous ndarray.
Buffer = bytes | bytearray | memoryview


class Staged(ABC):
    """An object written in pieces and made visible whole by ``commit`` (a shard built band by band).

    Until ``commit`` no reader sees anything under its key; ``abort`` drops it.
    """

    @abstractmethod
    def append(self, buffer: np.ndarray[Any, Any], nbytes: int) -> int:
        """Add ``buffer[:nbytes]`` (a page-aligned uint8 array the caller owns; bytes past ``nbytes``
        are scratch) and return the offset where it starts in the object."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Where the next piece would start: the offsets an index may give beyond what is appended."""

    @abstractmethod
    def snapshot(self, pieces: Sequence[tuple[np.ndarray[Any, Any], int]], tail: bytes) -> None:
        """Make the object visible now, atomically, as what is appended so far, then each
        ``buffer[:nbytes]`` of ``pieces`` back to back from ``size``, then ``tail``; the staging goes
        on untouched (a later snapshot or ``commit`` replaces what this showed).  The durability
        deadline shows a shard this way before its last band is in."""

    @abstractmethod
    def commit(self, tail: bytes) -> None:
        """Add ``tail`` at the end and make the object visible atomically."""

    @abstractmethod
    def abort(self) -> None:
        """Drop everything appended; nothing becomes visible."""


class _BufferedStaged(Staged):
    """Collects copies of the pieces and stores them with one ``put`` at commit (any backend)."""

    def __init__(self, store: Store, key: str) -> None:
        self._store = store
        self._key = key
        self._parts: list[bytes] = []
        self._end = 0

    def append(self, buffer: np.ndarray[Any, Any], nbytes: int) -> int:
        at = self._end
        self._parts.append(bytes(buffer.data[:nbytes]))
        self._end += nbytes
        return at

    @property
    def size(self) -> int:
        return self._end

    def snapshot(self, pieces: Sequence[tuple[np.ndarray[Any, Any], int]], tail: bytes) -> None:
        self._store.put(self._key, [*self._parts, *(b.data[:n] for b, n in pieces), tail])

    def commit(self, tail: bytes) -> None:
        self._store.put(self._key, [*self._parts, tail])
        self._parts = []

    def abort(self) -> None:
        self._parts = []


class Store(ABC):
    """A flat key -> bytes namespace with atomic whole-object writes.

    Keys are '/'-separated relative paths ("cam0/0/zarr.json").  ``put`` must be
    atomic: a concurrent reader (or a reader after a crash) sees either the old
    object or the complete new one, never a prefix.  That single guarantee is
    what makes a live, kill-safe Zarr store possible.
    """

    @abstractmethod
    def put(self, key: str, parts: Sequence[Buffer]) -> None:
        """Atomically store the concatenation of ``parts`` under ``key``."""

    def put_padded(self, key: str, buffer: np.ndarray[Any, Any], nbytes: int) -> None:
        """Atomically store ``buffer[:nbytes]``.

        ``buffer`` is a page-aligned uint8 array the caller owns; bytes past
        ``nbytes`` are scratch, so a backend may write whole blocks from it
        (LocalStore's O_DIRECT path) without copying.
        """
        self.put(key, [buffer.data[:nbytes]])

    def put_padded_many(self, items: Sequence[tuple[str, np.ndarray[Any, Any], int]]) -> None:
        """``put_padded`` each ``(key, buffer, nbytes)``; returns once every object is stored.

        A writer hands over all objects of a layer at once so that a backend
        where each request has latency (object storage) can upload them
        concurrently.  On failure every started write has finished (the
        caller reuses the buffers) before the first error is raised.
        """
        for key, buffer, nbytes in items:
            self.put_padded(key, buffer, nbytes)

    def open_staged(self, key: str) -> Staged:
        """A ``Staged`` object for ``key``.  By default the pieces wait in memory (as copies) and go
        out in one ``put``; a backend that can append to a hidden object overrides this."""
        return _BufferedStaged(self, self.check_key(key))

    def put_group(self, items: Mapping[str, bytes]) -> None:
        """Replace the small objects ``items`` as one atomic change, as far as the backend allows.

        Backends that can make it atomic (MemoryStore; LocalStore where the
        filesystem has symlinks) guarantee that a reader, or a reader after a
        kill at any instant, sees either every old or every new object.  This
        default only puts each item in order: every object is replaced
        atomically, the group is not (a kill between two puts leaves a mix).
        Every key is checked before anything is written.
        """
        for key in items:
            self.check_key(key)
        for key, blob in items.items():
            self.put(key, [blob])

    def settle(self) -> None:
        """Turn whatever ``put_group`` left into plain objects; called once when the writer closes.

        Nothing a reader sees changes.  The default has nothing to settle.
        """
        return

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the object at ``key``; raise KeyError when there is none."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield every key starting with ``prefix``, in no particular order."""

    @abstractmethod
    def describe(self, key: str = "") -> str:
        """A human-readable location of ``key`` (a path or URL) for error messages."""

    def size(self, key: str) -> int:
        """Stored size of ``key`` in bytes; KeyError when absent.  Backends override this to avoid
        reading the object (``acqzarr info`` sums it over every chunk)."""
        return len(self.get(key))

    def exists(self, key: str) -> bool:
        try:
            self.get(key)
        except KeyError:
            return False
        return True

    def is_empty(self) -> bool:
        return next(iter(self.list()), None) is None

    def clear(self) -> None:
        """Delete everything in the store (used for ``overwrite=True``)."""
        for key in list(self.list()):
            self.delete(key)

    def children(self, directory: str) -> set[str]:
        """The names one level below ``directory`` (each key's next path segment): objects and the
        "directories" above deeper keys.  This default lists every key below; a backend with real
        directories looks at one."""
        prefix = f"{directory}/" if directory else ""
        return {key[len(prefix) :].split("/", 1)[0] for key in self.list(prefix)}

    def delete_tree(self, key: str) -> None:
        """Delete ``key`` and every key below it (``key/...``)."""
        self.delete(key)
        for below in list(self.list(f"{key}/")):
            self.delete(below)

    def discard_staged(self) -> None:
        """Drop every staged object a writer left uncommitted (killed while building a shard), before
        a writer continues the store.  Backends whose staged objects live in memory have none."""
        return

    def check_key(self, key: str) -> str:
        """Reject keys that could escape the store root."""
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"invalid store key {key!r}")
        return key
