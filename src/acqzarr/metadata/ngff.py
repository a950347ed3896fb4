"""OME-NGFF image metadata: 0.4 for Zarr v2 stores, 0.5 for Zarr v3 stores.

Both versions describe the same thing (axes with types and units, one dataset
per resolution level with its transformations, an ``omero`` rendering hint);
they differ only in where the block lives and whether ``version`` sits inside
each multiscale or beside them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..settings import ArraySettings

__all__ = ["RESERVED_KEYS", "axes", "multiscale", "ngff_04_attrs", "ngff_05_attrs", "omero"]

# Group attributes acqzarr owns; user metadata may not replace them.
RESERVED_KEYS = frozenset({"ome", "multiscales", "omero", "_ARRAY_DIMENSIONS"})

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
    method = settings.multiscale.method if settings.multiscale is not None and levels > 1 else None
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
    if method is not None:
        entry["type"] = method
        entry["metadata"] = {"method": f"acqzarr.multiscale.{method}", "description": _DESCRIPTIONS[method]}
    return entry


def omero(settings: ArraySettings, windows: Windows) -> dict[str, Any]:
    """Rendering hints so viewers open with a sensible contrast: one channel per channel index.

    ``windows`` holds the (min, max) seen per channel; the window spans that,
    within the dtype's range (channels with no data yet get the full range).
    """
    dims = settings.dimensions
    channel = next((d for d in dims[1:] if d.kind == "channel"), None)
    count = channel.size if channel is not None else 1
    dtype = np.dtype(settings.dtype)
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    lo_range, hi_range = float(info.min), float(info.max)
    channels = []
    for c in range(count):
        start, end = windows.get(c, (lo_range, hi_range))
        if dtype.kind == "f":
            lo_range, hi_range = start, end  # a float type's own range is no use to a viewer
        channels.append(
            {
                "label": f"{settings.key or 'image'}"
                + (f" {channel.name}{c}" if channel is not None else ""),
                "color": _COLORS[c % len(_COLORS)] if count > 1 else "FFFFFF",
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
