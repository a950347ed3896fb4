"""An in-process store: the reference implementation for tests and fault injection."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence

from .base import Buffer, Store

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """A dict of bytes behind a lock; ``put`` is atomic by construction."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def describe(self, key: str = "") -> str:
        return f"memory://{key}"

    def put(self, key: str, parts: Sequence[Buffer]) -> None:
        blob = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
        with self._lock:
            self._data[self.check_key(key)] = blob

    def put_group(self, items: Mapping[str, bytes]) -> None:
        """Atomic across keys: every item is stored under one hold of the lock readers take too."""
        blobs = {self.check_key(key): bytes(blob) for key, blob in items.items()}
        with self._lock:
            self._data.update(blobs)

    def get(self, key: str) -> bytes:
        with self._lock:
            return self._data[key]

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def list(self, prefix: str = "") -> Iterator[str]:
        with self._lock:
            keys = [k for k in self._data if k.startswith(prefix)]
        yield from keys
