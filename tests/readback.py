"""The independent readers the tests use as oracles: what zarr-python and tensorstore find in a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts
import zarr


def read_zarr(path: Path | str) -> np.ndarray[Any, Any]:
    return np.asarray(zarr.open_array(str(path), mode="r")[...])


def read_tensorstore(path: Path | str, version: int) -> np.ndarray[Any, Any]:
    spec = {
        "driver": "zarr3" if version == 3 else "zarr",
        "kvstore": {"driver": "file", "path": str(path)},
        "recheck_cached_metadata": True,
        "recheck_cached_data": True,
    }
    return np.asarray(ts.open(spec, read=True).result().read().result())


def assert_reads_back(path: Path | str, version: int, expected: np.ndarray[Any, Any]) -> None:
    """Both independent readers return exactly ``expected`` (shape, dtype and bytes)."""
    for reader in (read_zarr(path), read_tensorstore(path, version)):
        assert reader.shape == expected.shape
        assert reader.dtype == expected.dtype
        np.testing.assert_array_equal(reader, expected)
