"""Zarr v2 documents: ``.zgroup``, ``.zattrs`` and ``.zarray`` (one file each)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["array_doc", "group_doc", "v2_dtype"]


def v2_dtype(dtype: np.dtype[Any]) -> str:
    """The numpy typestr with explicit little-endian order ('|' for single bytes)."""
    return dtype.newbyteorder("<").str


def group_doc() -> dict[str, Any]:
    return {"zarr_format": 2}


def array_doc(
    *,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype[Any],
    compressor: dict[str, Any] | None,
    separator: str,
    fill_value: Any = 0,
    filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An array document; ``dtype`` object ('|O') is a string array (with a ``vlen-utf8`` filter)."""
    return {
        "zarr_format": 2,
        "shape": list(shape),
        "chunks": list(chunks),
        "dtype": "|O" if dtype.kind == "O" else v2_dtype(dtype),
        "compressor": compressor,
        "fill_value": fill_value,
        "order": "C",
        "filters": filters,
        "dimension_separator": separator,
    }
