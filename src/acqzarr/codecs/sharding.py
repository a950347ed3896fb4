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

__all__ = ["EMPTY", "ShardLayout", "decode_index", "encode_index", "index_nbytes"]

EMPTY = np.uint64(2**64 - 1)


def index_nbytes(n_chunks: int) -> int:
    """Bytes of the encoded index of a shard of ``n_chunks`` chunks: 16 per chunk and the crc32c."""
    return n_chunks * 16 + 4


def decode_index(shard: bytes, n_chunks: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """The (n_chunks, 2) (offset, nbytes) index at the end of ``shard``; ValueError if it is cut
    short or its checksum does not match."""
    nbytes = index_nbytes(n_chunks)
    if len(shard) < nbytes:
        raise ValueError(f"{len(shard)} bytes cannot hold the {nbytes}-byte index")
    body, checksum = shard[-nbytes:-4], shard[-4:]
    if google_crc32c.value(body) != int.from_bytes(checksum, "little"):
        raise ValueError("shard index crc32c does not match")
    return np.frombuffer(body, "<u8").reshape(n_chunks, 2)


def encode_index(index: np.ndarray[Any, np.dtype[np.uint64]]) -> bytes:
    """Serialise an (..., 2) uint64 index and append its crc32c checksum."""
    body = np.ascontiguousarray(index, dtype="<u8").tobytes()
    checksum: int = google_crc32c.value(body)
    return body + checksum.to_bytes(4, "little")


class ShardLayout:
    """The shape of one shard's index: its chunk grid, its size and its encoding."""

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
        index = np.full((self.n_chunks, 2), EMPTY, dtype=np.uint64)
        offset = 0
        for i, n in enumerate(sizes):
            if n is not None:
                index[i] = (offset, n)
                offset += n
        return encode_index(index.reshape(*self.chunks_per_shard, 2))

    def index_config(self) -> list[dict[str, Any]]:
        return [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
