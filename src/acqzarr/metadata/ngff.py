"""OME-NGFF image metadata: 0.4 for Zarr v2 stores, 0.5 for Zarr v3 stores.

Both versions describe the same thing (axes with types and units, one dataset
per resolution level with its transformations, an ``omero`` rendering hint);
they differ only in where the block lives and whether ``version`` sits inside
each multiscale or beside them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._version import __version__
from ..settings import ArraySettings
from .levels import space_axes

__all__ = [
    "RESERVED_KEYS",
    "axes",
    "method_metadata",
    "multiscale",
    "ngff_04_attrs",
    "ngff_04_group",
    "ngff_05_attrs",
    "ngff_05_group",
    "omero",
]

# Group attributes acqzarr owns; user metadata may not replace them.
RESERVED_KEYS = frozenset({"ome", "multiscales", "omero", "_ARRAY_DIMENSIONS"})
# The callable the multiscale metadata names: evaluated on level k, it gives level k + 1
# (engine/reducers.py; tests/test_multiscale.py checks that it exists and is that function).
DOWNSAMPLE = "acqzarr.engine.reducers.downsample"

Windows = dict[int, tuple[float, float]]

_COLORS = ["00FF00", "FF00FF", "00FFFF", "FF0000", "0000FF", "FFFF00", "FFFFFF"]
_DESCRIPTIONS = {
    "decimate": "every second sample along each space axis (even indices; centres unchanged)",
    "mean": "mean of each 2x2(x2) block, integers rounded half up exactly; odd edges replicated",
    "min": "minimum of each 2x2(x2) block; odd edges replicated",
    "max": "maximum of each 2x2(x2) block; odd edges replicated",
}


def axes(settings: ArraySettings) -> list[dict[str, Any]]:
    out = []
    for d in settings.dimensions:
        axis: dict[str, Any] = {"name": d.name}
        if d.kind != "other":  # NGFF allows a custom or absent type; absent is safest for readers
            axis["type"] = d.kind
        if d.unit is not None:
            axis["unit"] = d.unit
        out.append(axis)
    return out


def multiscale(settings: ArraySettings, levels: int) -> dict[str, Any]:
    """One multiscale entry with datasets "0".."levels-1"; each level halves every space axis.

    A level-L sample of mean/min/max summarises 2**L level-0 samples per halved
    axis, so its centre is shifted by (2**L - 1) / 2 samples: a translation.
    Decimation keeps the even samples, whose centres do not move.
    """
    method = settings.multiscale.method if settings.multiscale is not None else None
    datasets = []
    for level in range(levels):
        factor = [2**level if d.kind == "space" else 1 for d in settings.dimensions]
        transforms: list[dict[str, Any]] = [
            {
                "type": "scale",
                "scale": [d.scale * f for d, f in zip(settings.dimensions, factor, strict=True)],
            }
        ]
        if level and method in ("mean", "min", "max"):
            shift = [(f - 1) / 2 * d.scale for d, f in zip(settings.dimensions, factor, strict=True)]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    entry: dict[str, Any] = {"name": settings.key or "image", "axes": axes(settings), "datasets": datasets}
    stage = _stage_transforms(settings)
    if stage:
        entry["coordinateTransformations"] = stage
    if method is not None:
        entry["type"] = method
        entry["metadata"] = method_metadata(settings)
    return entry


def method_metadata(settings: ArraySettings) -> dict[str, Any]:
    """How the pyramid was made, as a callable a reader can run: ``method`` names an importable
    function, ``args`` and ``kwargs`` hold its arguments after the level as Python literals (the
    acquire-zarr convention, read with ``ast.literal_eval``), so that ``method(level_k, *args,
    **kwargs)`` equals level k + 1.  Written also when there is a single level (``levels: auto``
    on a small image): it says how more levels would be made.
    """
    assert settings.multiscale is not None
    method = settings.multiscale.method
    return {
        "description": _DESCRIPTIONS[method],
        "method": DOWNSAMPLE,
        "version": __version__,
        "args": [],
        "kwargs": {"method": repr(method), "axes": repr(space_axes(settings))},
    }


def _stage_transforms(settings: ArraySettings) -> list[dict[str, Any]]:
    """The image's stage position as a multiscale-level translation (after a unit scale, as
    NGFF requires a scale first), on the space axes named x, y and z; [] without a position."""
    position = settings.position
    offsets = position.translation if position is not None else {}
    if not offsets:
        return []
    dims = settings.dimensions
    return [
        {"type": "scale", "scale": [1.0] * len(dims)},
        {
            "type": "translation",
            "translation": [offsets.get(d.name, 0.0) if d.kind == "space" else 0.0 for d in dims],
        },
    ]


def omero(settings: ArraySettings, windows: Windows) -> dict[str, Any]:
    """Rendering hints so viewers open with a sensible contrast: one channel per channel index.

    ``windows`` holds the (min, max) seen per channel; the window spans that,
    within the dtype's range (channels with no data yet get the full range),
    unless the channel's settings give a window, which always wins.
    """
    axis = settings.channel_axis
    count = settings.channel_count
    given = settings.channels
    dtype = np.dtype(settings.dtype)
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    full = (float(info.min), float(info.max))
    channels = []
    for c in range(count):
        channel = given[c] if given is not None else None
        observed = windows.get(c)
        start, end = channel.window if channel and channel.window else (observed or full)
        lo_range, hi_range = full
        if dtype.kind == "f":  # a float type's own range is no use to a viewer
            seen = [start, end, *(observed or ())]
            lo_range, hi_range = min(seen), max(seen)
        label = f"{settings.key or 'image'}" + (f" {axis.name}{c}" if axis is not None else "")
        color = _COLORS[c % len(_COLORS)] if count > 1 else "FFFFFF"
        channels.append(
            {
                "label": channel.label if channel else label,
                "color": channel.color if channel and channel.color else color,
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
                "window": {"min": lo_range, "max": hi_range, "start": start, "end": end},
            }
        )
    return {
        "channels": channels,
        "rdefs": {"model": "color" if count > 1 else "greyscale", "defaultT": 0, "defaultZ": 0},
    }


def ngff_04_attrs(settings: ArraySettings, levels: int, windows: Windows) -> dict[str, Any]:
    return {
        "multiscales": [{"version": "0.4", **multiscale(settings, levels)}],
        "omero": {"version": "0.4", **omero(settings, windows)},
    }


def ngff_05_attrs(settings: ArraySettings, levels: int, windows: Windows) -> dict[str, Any]:
    return {
        "ome": {
            "version": "0.5",
            "multiscales": [multiscale(settings, levels)],
            "omero": omero(settings, windows),
        }
    }


def _versioned(fields: dict[str, Any], version: str) -> dict[str, Any]:
    """Collection fields with ``version`` inside the plate and well blocks (both NGFF versions
    put it there; 0.5 also puts it beside them, under "ome")."""
    return {k: {**v, "version": version} if k in ("plate", "well") else v for k, v in fields.items()}


def ngff_04_group(fields: dict[str, Any]) -> dict[str, Any]:
    """Attributes of a group above the images (plate, well, bioformats2raw.layout, series):
    NGFF 0.4 keeps them at the top level of ``.zattrs``."""
    return _versioned(fields, "0.4") if fields else {}


def ngff_05_group(fields: dict[str, Any]) -> dict[str, Any]:
    """The same for NGFF 0.5: under ``attributes.ome`` beside ``version``."""
    return {"ome": {"version": "0.5", **_versioned(fields, "0.5")}} if fields else {}
