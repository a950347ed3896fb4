"""What the tests build as input: stream settings and frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import acqzarr as az


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
