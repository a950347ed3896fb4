"""Zarr v3 ``zarr.json`` documents for groups and sharded arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["array_doc", "group_doc", "plain_array_doc"]


def group_doc(attributes: dict[str, Any]) -> dict[str, Any]:
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes}


def array_doc(
    *,
    shape: tuple[int, ...],
    shard_shape: tuple[int, ...],
    chunk_shape: tuple[int, ...],
    dtype: np.dtype[Any],
    inner_codecs: list[dict[str, Any]],
    index_codecs: list[dict[str, Any]],
    dimension_names: tuple[str, ...],
) -> dict[str, Any]:
    """An array whose storage chunks are shards of ``chunk_shape`` inner chunks."""
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": str(dtype),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shard_shape)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(chunk_shape),
                    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, *inner_codecs],
                    "index_codecs": index_codecs,
                    "index_location": "end",
                },
            }
        ],
        "attributes": {},
        "dimension_names": list(dimension_names),
    }


def plain_array_doc(
    *,
    shape: tuple[int, ...],
    chunk: tuple[int, ...],
    data_type: str,
    fill_value: Any,
    codecs: list[dict[str, Any]],
    dimension_names: tuple[str, ...],
) -> dict[str, Any]:
    """An unsharded array (per-frame metadata columns beside an image)."""
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_value,
        "codecs": codecs,
        "attributes": {},
        "dimension_names": list(dimension_names),
    }
