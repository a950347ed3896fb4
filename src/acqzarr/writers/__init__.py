"""The write path of one array level: bands -> encoding -> objects (ChunkWriter v2 | ShardWriter v3)."""

from ..metadata.zarr_spec import ZarrSpec
from ..stores import Store
from .chunk import ChunkWriter
from .layout import ArrayLayout
from .level import LevelWriter
from .objects import ObjectWriter
from .shard import ShardWriter

__all__ = [
    "ChunkWriter",
    "LevelWriter",
    "ObjectWriter",
    "ShardWriter",
    "object_writer",
    "object_writer_class",
]


def object_writer_class(spec: ZarrSpec) -> type[ObjectWriter]:
    """Shards for a version that shards (v3), one object per chunk otherwise (v2)."""
    return ShardWriter if spec.sharded else ChunkWriter


def object_writer(spec: ZarrSpec, layout: ArrayLayout, store: Store, array_path: str) -> ObjectWriter:
    """The object writer of array ``array_path`` in ``spec``'s format."""
    return object_writer_class(spec)(layout=layout, store=store, array_path=array_path, keys=spec.keys)
