"""The two writers: ChunkWriter (Zarr v2) and ShardWriter (Zarr v3)."""

from .base import Writer
from .chunk import ChunkWriter
from .shard import ShardWriter

__all__ = ["ChunkWriter", "ShardWriter", "Writer"]
