"""``settings_from_sequence``: a useq ``MDASequence`` and the camera's image info -> ``StreamSettings``.

Storage is always OME-NGFF order (t, c, z, y, x, with c and z only when the
sequence uses them); the sequence's ``axis_order`` becomes the array's
``acquisition_order``, so frames arrive in any order while the stream holds
only the bands that order keeps open.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import useq

from ..errors import ConfigError
from ..metadata.zarr_versions import spec_for
from ..settings import ArraySettings, Blosc, Channel, Dimension, Multiscale, Plate, Position, StreamSettings
from ._sequence import SequenceLayout, read_sequence

__all__ = ["settings_from_sequence"]

_KINDS = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_DEFAULT = Blosc()


def settings_from_sequence(
    sequence: useq.MDASequence,
    image_info: Mapping[str, Any],
    store: str | Path,
    *,
    version: int = 3,
    compression: Blosc | None = _DEFAULT,
    chunks: Mapping[str, int] | None = None,
    shards: Mapping[str, int] | None = None,
    pyramid: Multiscale | int | None = None,
    overwrite: bool = False,
    **stream: Any,
) -> StreamSettings:
    """Stream settings that store ``sequence`` as OME-NGFF images.

    Parameters
    ----------
    sequence
        The useq sequence.  t/c/z sizes come from its plans (time without end
        when the time plan has none: the array then grows along t), channel
        config names become channel labels (with colours for common dyes), z
        step and pixel size become scales in micrometer, stage positions and
        grid tiles become positions (``<name>/``), a ``WellPlatePlan`` an
        OME-NGFF plate (``<row>/<column>/<field>``).
    image_info
        The camera's image: ``plane_shape`` (or ``height``/``width``),
        ``dtype`` and optionally ``pixel_size_um``; pymmcore-plus's summary
        metadata carries it as ``summary_meta["image_infos"][0]``.
    store
        Where the Zarr store goes.
    version, compression, overwrite
        As in ``StreamSettings`` / ``ArraySettings``.
    chunks, shards
        Per-axis overrides (axis name -> samples per chunk, chunks per shard).
        Default: one plane per chunk, y/x chunks of up to 512 (whole frames up
        to 1024); a Zarr v3 shard holds a whole plane in y/x and up to 8 planes
        along z, then along t for series faster than a timepoint per second
        (one object per plane halved the rate of a 512x512 MDA).  Where the
        chunks open at once fit in 64 MiB (images x channels x 8 planes), a
        z stack taken within a timepoint gets one chunk of up to 8 planes, and
        a fast series without z stacks 8 timepoints per chunk (the writer's
        cost is per chunk: 0.2-0.3 ms less a 512x512 frame); a viewer then
        reads a chunk's planes to show one.
    pyramid
        ``Multiscale`` settings, or a number of levels; None writes level 0 only.
    **stream
        Further ``StreamSettings`` fields (``threads``, ``max_inflight_bytes``, ...).
    """
    layout = read_sequence(sequence)
    return build_settings(
        layout,
        image_info,
        store,
        version=version,
        compression=compression,
        chunks=chunks,
        shards=shards,
        pyramid=pyramid,
        overwrite=overwrite,
        **stream,
    )


def build_settings(
    layout: SequenceLayout,
    image_info: Mapping[str, Any],
    store: str | Path,
    *,
    version: int = 3,
    compression: Blosc | None = _DEFAULT,
    chunks: Mapping[str, int] | None = None,
    shards: Mapping[str, int] | None = None,
    pyramid: Multiscale | int | None = None,
    overwrite: bool = False,
    **stream: Any,
) -> StreamSettings:
    """``settings_from_sequence`` for a sequence already read (the writer keeps the layout)."""
    height, width, dtype, pixel = _image(image_info)
    chunks = dict(chunks or {})
    shards = dict(shards or {})
    for name in {**chunks, **shards}:
        if name not in (*layout.sizes, "y", "x"):
            raise ConfigError(
                f"chunks/shards: {name!r} is not an axis; expected one of {[*layout.sizes, 'y', 'x']}"
            )
    sizes = {**layout.sizes, "y": height, "x": width}
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        itemsize = 2  # not a dtype: ArraySettings refuses it below, with the reason
    plane_nbytes = height * width * itemsize
    deep = {"t": _deep_time_chunks(layout, plane_nbytes), "z": _deep_z_chunks(layout, plane_nbytes)}
    dims = []
    for name, size in sizes.items():
        chunk = chunks.get(name, _default_chunk(size) if name in "yx" else deep.get(name, 1))
        default_shard = _default_shard(name, size, chunk, layout) if spec_for(version).sharded else 1
        unit, scale = _unit_scale(name, layout, pixel)
        dims.append(
            Dimension(
                name=name,
                kind=_KINDS[name],
                size=size,
                chunk=min(chunk, size) if size else chunk,
                shard=shards.get(name, default_shard),
                unit=unit,
                scale=scale,
            )
        )
    channels = None
    if "c" in layout.sizes:
        channels = [
            Channel(label=name, color=color)
            for name, color in zip(layout.channel_names, layout.channel_colors, strict=True)
        ]
    multiscale = Multiscale(levels=pyramid) if isinstance(pyramid, int) else pyramid
    array = ArraySettings(
        key="",
        dtype=dtype,
        dimensions=dims,
        acquisition_order=layout.acquisition_order,
        channels=channels,
        compression=compression,
        multiscale=multiscale,
    )
    placement: dict[str, Any] = {}
    if layout.plate is not None:
        plate = layout.plate
        placement["plate"] = Plate(
            name=plate.name, rows=plate.rows, columns=plate.columns, wells=plate.wells, fields=plate.fields
        )
    elif layout.position_names:
        placement["positions"] = [
            Position(name=name, x=x, y=y, z=z if "z" in layout.sizes else None)
            for name, (x, y, z) in zip(layout.position_names, layout.position_xyz, strict=True)
        ]
    return StreamSettings(
        store=str(store),
        version=version,
        overwrite=overwrite,
        arrays=[array],
        **placement,
        **stream,
    )


def _image(info: Mapping[str, Any]) -> tuple[int, int, str, float | None]:
    """(height, width, dtype, pixel size in micrometer or None) of the camera's image info."""
    shape: Any = info.get("plane_shape") or (info.get("height"), info.get("width"))
    if len(shape) != 2 or not all(isinstance(n, int) and n > 0 for n in shape):
        raise ConfigError(
            f"image_info: expected a 2-D plane_shape (height, width) of a monochrome camera, got {shape!r}"
        )
    if "dtype" not in info:
        raise ConfigError(f"image_info: no 'dtype' in {sorted(info)}")
    pixel = info.get("pixel_size_um")
    pixel = float(pixel) if isinstance(pixel, int | float) and pixel > 0 else None
    height, width = shape
    return int(height), int(width), str(info["dtype"]), pixel


def _default_chunk(size: int) -> int:
    """Whole frames up to 1024 samples, 512-sample tiles beyond (viewers and pyramids fetch less)."""
    return size if size <= 1024 else 512


# Planes a v3 shard gathers by default along t and z: one object per plane costs a file (or PUT) per
# frame, which halved a 512x512 MDA's rate (benchmarks/mda.py); 8 planes made it ~2x faster.
_SHARD_PLANES = 8
# Shards span timepoints only for fast series: a shard is published when it is complete, so a slow
# time-lapse would show (and keep safe) its frames late.
_FAST_INTERVAL_S = 1.0


# The most the chunks open at once may hold when a chunk gathers planes along t or z (up to
# ``_SHARD_PLANES``, so a shard is then one chunk: the same planes an object): one band, the unit
# the engine copies, compresses, writes and accounts for, per chunk instead of per frame; a
# 512x512 MDA's writer spent 0.2-0.3 ms a frame less (benchmarks/mda_loop.py, mda.py).
_OPEN_CHUNK_BYTES = 64 << 20


def _deep_time_chunks(layout: SequenceLayout, plane_nbytes: int) -> int:
    """Planes per chunk along t: 8 for a fast series without z stacks whose open chunks (one per
    channel and image, 8 planes each) fit in 64 MiB; else 1.  A viewer reading one plane then
    decompresses its chunk's 8 (4 MiB at 512x512); a series with z, a slow one (a chunk would wait
    seconds for its planes) or a large one keeps one plane per chunk."""
    fast = layout.t_interval_s is None or layout.t_interval_s < _FAST_INTERVAL_S
    if "t" not in layout.sizes or layout.sizes.get("z", 1) > 1 or not fast:
        return 1
    return _if_open_chunks_fit(layout, _SHARD_PLANES, plane_nbytes)


def _deep_z_chunks(layout: SequenceLayout, plane_nbytes: int) -> int:
    """Planes per chunk along z: a whole stack of up to 8 planes (8-plane chunks for deeper ones)
    when the stack is taken within a timepoint (z after t in the acquisition order) and the
    chunks open at once (at most one per channel and image) fit in 64 MiB; else 1.  A stack is
    taken in well under a second whatever the interval, so its chunk is not held back."""
    z = layout.sizes.get("z", 1)
    order = layout.acquisition_order
    if z <= 1 or ("t" in order and order.index("t") > order.index("z")):
        return 1
    return _if_open_chunks_fit(layout, min(z, _SHARD_PLANES), plane_nbytes)


def _if_open_chunks_fit(layout: SequenceLayout, planes: int, plane_nbytes: int) -> int:
    """``planes`` if a chunk of them open for every channel of every image fits in
    ``_OPEN_CHUNK_BYTES``, else 1."""
    images = max(1, len(layout.position_names))
    open_bytes = images * layout.sizes.get("c", 1) * planes * plane_nbytes
    return planes if open_bytes <= _OPEN_CHUNK_BYTES else 1


def _default_shard(name: str, size: int, chunk: int, layout: SequenceLayout) -> int:
    """Chunks per v3 shard: a whole plane in y/x; up to 8 planes along z, then along t for series
    faster than one timepoint a second; one along c."""
    if name in "yx":
        return -(-size // chunk)
    planes_z = min(layout.sizes.get("z", 1), _SHARD_PLANES)
    if name == "z":
        return max(1, planes_z // chunk)
    fast = layout.t_interval_s is None or layout.t_interval_s < _FAST_INTERVAL_S
    if name == "t" and fast and planes_z < _SHARD_PLANES:
        return max(1, -(-_SHARD_PLANES // planes_z) // chunk)
    return 1


def _unit_scale(name: str, layout: SequenceLayout, pixel: float | None) -> tuple[str | None, float]:
    if name in "yx" and pixel is not None:
        return "micrometer", pixel
    if name == "z" and layout.z_step_um is not None:
        return "micrometer", layout.z_step_um
    if name == "t" and layout.t_interval_s is not None:
        return "second", layout.t_interval_s
    return None, 1.0
