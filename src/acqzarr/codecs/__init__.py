"""Byte formats: Blosc chunk compression and the sharding index."""

from .blosc import BloscCodec
from .sharding import ShardIndex, ShardLayout

__all__ = ["BloscCodec", "ShardIndex", "ShardLayout"]
