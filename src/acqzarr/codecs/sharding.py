"""The ``sharding_indexed`` codec's shard layout (Zarr v3 extension spec).

A shard is the encoded inner chunks back to back, followed (index_location
"end") by the index: for every inner chunk in C order an (offset, nbytes)
pair of little-endian uint64, both 2**64-1 for a chunk that is absent
(all fill value), then the crc32c of those index bytes as 4 little-endian
bytes (index codecs ``bytes`` + ``crc32c``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import google_crc32c
import numpy as np

__all__ = ["ShardIndex", "ShardLayout", "index_nbytes"]

_EMPTY = 2**64 - 1  # offset and nbytes of an absent chunk


def index_nbytes(n_chunks: int) -> int:
    """Bytes of the encoded index of a shard of ``n_chunks`` chunks: 16 per chunk and the crc32c."""
    return n_chunks * 16 + 4


class ShardIndex:
    """Where each inner chunk of one shard lies: (offset, nbytes) per chunk in C order, or nothing
    for a chunk that is absent (all fill value).  The only code that knows the encoding."""

    def __init__(self, entries: np.ndarray[Any, np.dtype[np.uint64]]) -> None:
        self._entries = entries  # (n_chunks, 2) uint64; _EMPTY twice for an absent chunk

    @classmethod
    def empty(cls, n_chunks: int) -> ShardIndex:
        return cls(np.full((n_chunks, 2), _EMPTY, np.uint64))

    def copy(self) -> ShardIndex:
        return ShardIndex(self._entries.copy())

    @classmethod
    def packed(cls, sizes: Sequence[int | None]) -> ShardIndex:
        """The index of chunks of these sizes stored back to back from offset 0 (None = absent)."""
        index = cls.empty(len(sizes))
        offset = 0
        for i, n in enumerate(sizes):
            if n is not None:
                index.set(i, offset, n)
                offset += n
        return index

    @classmethod
    def decode(cls, shard: bytes, n_chunks: int) -> ShardIndex:
        """The index at the end of ``shard``; ValueError if it is cut short or its checksum does
        not match."""
        nbytes = index_nbytes(n_chunks)
        if len(shard) < nbytes:
            raise ValueError(f"{len(shard)} bytes cannot hold the {nbytes}-byte index")
        body, checksum = shard[-nbytes:-4], shard[-4:]
        if google_crc32c.value(body) != int.from_bytes(checksum, "little"):
            raise ValueError("shard index crc32c does not match")
        return cls(np.frombuffer(body, "<u8").reshape(n_chunks, 2))

    @property
    def n_chunks(self) -> int:
        return len(self._entries)

    def set(self, i: int, offset: int, nbytes: int) -> None:
        self._entries[i] = (offset, nbytes)

    def chunk(self, i: int) -> tuple[int, int] | None:
        """(offset, nbytes) of chunk ``i``, or None if it is absent."""
        offset, nbytes = (int(v) for v in self._entries[i])
        return None if offset == _EMPTY and nbytes == _EMPTY else (offset, nbytes)

    def present(self) -> list[tuple[int, int]]:
        """(offset, nbytes) of every chunk that is there, in chunk order."""
        return [(int(o), int(n)) for o, n in self._entries.tolist() if not (o == _EMPTY and n == _EMPTY)]

    def encode(self) -> bytes:
        """The index as stored: little-endian uint64 pairs, then their crc32c (4 bytes, LE)."""
        body = np.ascontiguousarray(self._entries, dtype="<u8").tobytes()
        checksum: int = google_crc32c.value(body)
        return body + checksum.to_bytes(4, "little")


class ShardLayout:
    """The shape of one shard's chunk grid, and what its index costs and is encoded with."""

    def __init__(self, chunks_per_shard: Sequence[int]) -> None:
        self.chunks_per_shard = tuple(chunks_per_shard)
        self.n_chunks = math.prod(self.chunks_per_shard)

    @property
    def index_nbytes(self) -> int:
        return index_nbytes(self.n_chunks)

    def index(self, sizes: Sequence[int | None]) -> bytes:
        """The encoded index for chunks of these sizes stored back to back in C order (None = absent)."""
        if len(sizes) != self.n_chunks:
            raise ValueError(f"expected {self.n_chunks} chunks, got {len(sizes)}")
        return ShardIndex.packed(sizes).encode()

    def index_config(self) -> list[dict[str, Any]]:
        return [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
