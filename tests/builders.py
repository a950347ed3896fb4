"""What the tests build as input: stream settings (as models or as the plain mappings a YAML file or a
series message carries) and frames.

One place for the common case (a (t, y, x) uint16 camera sharded the usual way on Zarr v3), so a test
spells out only what it is about; a test whose point is an unusual setting still writes it in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import acqzarr as az

SHAPE = (0, 37, 50)  # an unbounded time axis and a frame that no chunk divides evenly
CHUNKS = (3, 16, 16)
UNSHARDED: tuple[int, ...] = ()  # as ``shards``: one chunk a shard on every axis, in Zarr v3 too

_NAMES = {2: "yx", 3: "tyx", 4: "tcyx", 5: "tczyx"}  # NGFF order: time, channel, then space
_KIND_OF_NAME = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def dims(
    shape: Sequence[int],
    chunks: Sequence[int],
    shards: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> list[az.Dimension]:
    """Dimensions from shapes.  Names default to yx, tyx, tcyx or tczyx by the number of axes; kinds
    follow the names (t time, c channel, z, y and x space, any other name 'other'); no shards by
    default (one chunk a shard on every axis)."""
    n = len(shape)
    names = _NAMES[n] if names is None else names
    kinds = [_KIND_OF_NAME.get(name, "other") for name in names] if kinds is None else kinds
    shards = shards or [1] * n
    return [
        az.Dimension(name=nm, kind=k, size=s, chunk=c, shard=sh)  # type: ignore[arg-type]
        for nm, k, s, c, sh in zip(names, kinds, shape, chunks, shards, strict=True)
    ]


def array_settings(
    version: int,
    shape: Sequence[int] = SHAPE,
    chunks: Sequence[int] = CHUNKS,
    *,
    shards: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    key: str = "cam0",
    dtype: str = "uint16",
    **fields: Any,
) -> az.ArraySettings:
    """One array of a stream in Zarr ``version``.

    ``shards`` are the Zarr v3 chunks per shard, by default 1 on the append axis and 2 on every other
    (so a shard holds several chunks of a frame), or UNSHARDED; Zarr v2 has no shards, so they are
    dropped there.
    ``fields`` are the other ArraySettings fields (compression, multiscale, channels, ...).
    """
    if version == 2:
        shards = None
    elif shards is None:
        shards = [1] + [2] * (len(shape) - 1)
    return az.ArraySettings(
        key=key,
        dtype=dtype,  # type: ignore[arg-type]
        dimensions=dims(shape, chunks, shards, kinds, names),
        **fields,
    )


def stream_settings(
    store: Path | str,
    version: int = 3,
    shape: Sequence[int] = SHAPE,
    chunks: Sequence[int] = CHUNKS,
    *,
    shards: Sequence[int] | None = None,
    kinds: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    key: str = "cam0",
    dtype: str = "uint16",
    **fields: Any,
) -> az.StreamSettings:
    """A stream of one array (see ``array_settings``) at ``store``.

    ``fields`` are fields of either model: ArraySettings' (compression, multiscale, frame_columns, ...)
    go to the array, the rest (overwrite, s3, positions, ...) to the stream.  The two models share no
    field name, and a name neither has is refused by StreamSettings.
    """
    array = {name: fields.pop(name) for name in list(fields) if name in az.ArraySettings.model_fields}
    return az.StreamSettings(
        store=str(store),
        version=version,
        arrays=[
            array_settings(
                version, shape, chunks, shards=shards, kinds=kinds, names=names, key=key, dtype=dtype, **array
            )
        ],
        **fields,
    )


def pyramid_settings(
    store: Path | str, version: int, names: str = "zyx", *, shards: Sequence[int] = (2, 1, 2), **fields: Any
) -> az.StreamSettings:
    """A 3-level mean pyramid of 20x24 frames appended along ``names[0]`` (zyx: the pyramid halves
    the append axis too; tyx: it does not), 2 planes a chunk, a Zarr v3 shard 2 chunks deep."""
    return stream_settings(
        store,
        version,
        (0, 20, 24),
        (2, 16, 16),
        shards=shards,
        names=names,
        multiscale=az.Multiscale(levels=3, method="mean"),
        **fields,
    )


def array_document(
    version: int,
    shape: Sequence[int] = SHAPE,
    chunks: Sequence[int] = CHUNKS,
    **options: Any,
) -> dict[str, Any]:
    """``array_settings(...)`` as the plain mapping a YAML file or a series message carries: JSON
    types, and only the keys a person would write (those that differ from the defaults)."""
    settings = array_settings(version, shape, chunks, **options)
    return settings.model_dump(mode="json", exclude_defaults=True)


def frames_for(layout_shape: Sequence[int], n: int, dtype: str, seed: int = 0) -> np.ndarray[Any, Any]:
    """n frames of the given frame shape with values spread over the dtype's range."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    shape = (n, *layout_shape)
    if dt.kind == "f":
        return rng.normal(0, 1000, shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
