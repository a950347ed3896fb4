"""Byte formats: Blosc chunk compression and the sharding index."""

from .blosc import BloscCodec
from .sharding import ShardLayout, encode_index

__all__ = ["BloscCodec", "ShardLayout", "encode_index"]
