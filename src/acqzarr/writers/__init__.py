"""The write path of one array level: bands -> encoding -> objects (ChunkWriter v2 | ShardWriter v3)."""

from .chunk import ChunkWriter
from .level import LevelWriter
from .objects import ObjectWriter
from .shard import ShardWriter

__all__ = ["ChunkWriter", "LevelWriter", "ObjectWriter", "ShardWriter"]
