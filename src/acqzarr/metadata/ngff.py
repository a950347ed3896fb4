"""OME-NGFF image metadata: 0.4 for Zarr v2 stores, 0.5 for Zarr v3 stores.

Both versions describe the same thing (axes with types and units, one dataset
per resolution level with its scale); they differ only in where the block
lives and whether ``version`` sits inside each multiscale or beside them.
"""

from __future__ import annotations

from typing import Any

from ..settings import ArraySettings

__all__ = ["axes", "multiscale", "ngff_04_attrs", "ngff_05_attrs"]


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


def multiscale(settings: ArraySettings, paths: list[str]) -> dict[str, Any]:
    """One multiscale entry; level ``i`` (path ``paths[i]``) is downsampled 2**i in space."""
    datasets = []
    for level, path in enumerate(paths):
        scale = [d.scale * (2**level if d.kind == "space" and level else 1) for d in settings.dimensions]
        datasets.append({"path": path, "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    return {"name": settings.key or "image", "axes": axes(settings), "datasets": datasets}


def ngff_04_attrs(settings: ArraySettings, paths: list[str]) -> dict[str, Any]:
    return {"multiscales": [{"version": "0.4", **multiscale(settings, paths)}]}


def ngff_05_attrs(settings: ArraySettings, paths: list[str]) -> dict[str, Any]:
    return {"ome": {"version": "0.5", "multiscales": [multiscale(settings, paths)]}}
