"""Shared fixtures: settings builders and the independent readers used as oracles."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts
import zarr
from hypothesis import HealthCheck, settings

import acqzarr as az

settings.register_profile("ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=10, deadline=None)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def dims(
    shape: Sequence[int],
    chunks: Sequence[int],
    shards: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> list[az.Dimension]:
    """Dimensions from shapes; default kinds put time/channel first and space last (NGFF order)."""
    n = len(shape)
    if kinds is None:
        kinds = {
            2: ["space"] * 2,
            3: ["time", "space", "space"],
            4: ["time", "channel", "space", "space"],
            5: ["time", "channel", "space", "space", "space"],
        }[n]
    if names is None:
        names = {2: "yx", 3: "tyx", 4: "tcyx", 5: "tczyx"}[n]
    shards = shards or [1] * n
    return [
        az.Dimension(name=nm, kind=k, size=s, chunk=c, shard=sh)  # type: ignore[arg-type]
        for nm, k, s, c, sh in zip(names, kinds, shape, chunks, shards, strict=True)
    ]


def stream_settings(
    path: Path | str,
    version: int,
    *,
    dtype: str = "uint16",
    shape: Sequence[int] = (0, 37, 50),
    chunks: Sequence[int] = (3, 16, 16),
    shards: Sequence[int] | None = None,
    compression: az.Blosc | None = az.Blosc(),
    key: str = "cam0",
    **kwargs: Any,
) -> az.StreamSettings:
    if version == 2:
        shards = None
    elif shards is None:
        shards = [1] + [2] * (len(shape) - 1)
    return az.StreamSettings(
        store=str(path),
        version=version,
        arrays=[
            az.ArraySettings(
                key=key,
                dtype=dtype,  # type: ignore[arg-type]
                dimensions=dims(shape, chunks, shards),
                compression=compression,
            )
        ],
        **kwargs,
    )


def frames_for(layout_shape: Sequence[int], n: int, dtype: str, seed: int = 0) -> np.ndarray[Any, Any]:
    """n frames of the given frame shape with values spread over the dtype's range."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    shape = (n, *layout_shape)
    if dt.kind == "f":
        return rng.normal(0, 1000, shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)


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


@pytest.fixture(params=[2, 3], ids=["v2", "v3"])
def version(request: pytest.FixtureRequest) -> int:
    return int(request.param)
