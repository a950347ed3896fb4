"""pymmcore-plus frame metadata (``FrameMetaV1``) -> acqzarr per-frame metadata.

The numbers a user plots against time (runner time, exposure, stage x/y/z)
go to acqzarr's typed columns; everything else the frame carries (camera
device and metadata, pixel size, property values, the event) goes to the
frame's JSON entry, so nothing pymmcore-plus reports is lost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["event_index", "frame_metadata", "jsonable"]

# FrameMetaV1 keys that become typed columns (and are therefore left out of the JSON entry).
_TYPED = {"runner_time_ms": "elapsed_ms", "exposure_ms": "exposure_ms"}
# Restated by the event index / image, or bulky and constant.
_DROPPED = {"format", "version", "mda_event"}


def event_index(index: Mapping[Any, Any]) -> dict[str, int]:
    """An event's index as plain names and ints (useq's keys may be ``Axis`` enums)."""
    return {str(getattr(k, "value", k)): int(v) for k, v in index.items()}


def frame_metadata(
    meta: Mapping[str, Any] | None, event: Any, index: dict[str, int] | None = None
) -> dict[str, Any]:
    """The acqzarr metadata of one frame: typed values plus the JSON-able rest of ``meta``, and
    the event's own fields that say where the frame was taken (``event``: index, position name).
    ``index``: the event's index already made plain (``event_index``), so it is not made twice."""
    out: dict[str, Any] = {}
    meta = meta or {}
    for key, column in _TYPED.items():
        value = _number(meta.get(key))
        if value is not None:
            out[column] = value
    position = meta.get("position")
    if isinstance(position, Mapping):
        for axis in "xyz":
            value = _number(position.get(axis))
            if value is not None:
                out[f"stage_{axis}_um"] = value
    for key, value in meta.items():
        if key in _TYPED or key in _DROPPED or key == "position":
            continue
        out[key] = jsonable(value)
    if "meta_version" not in out and "version" in meta:
        out["meta_version"] = f"{meta.get('format', 'frame-dict')}/{meta['version']}"
    if index is None and getattr(event, "index", None) is not None:
        index = event_index(event.index)
    if index is not None:
        out["mda_index"] = index
    name = getattr(event, "pos_name", None)
    if name is not None:
        out["pos_name"] = name
    return out


def _number(value: Any) -> float | None:
    """A finite float, also from pymmcore-plus's string-typed values ('10' for exposure)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def jsonable(value: Any) -> Any:
    """Plain JSON data (no NaN) of pymmcore-plus metadata: pydantic models, tuples, numpy."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return jsonable(dump(mode="json", exclude_unset=True))
    if isinstance(value, Mapping):
        return {str(getattr(k, "value", k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return jsonable(tolist())
    return str(value)
