"""Checks and conversions both wire formats share: JSON-able metadata, geometry caps, pixel arrays.

A detector's start carries dozens of fields the store keeps as JSON attributes; the wire gives
them as CBOR (datetimes, tags, typed arrays, byte strings) or JSON (already plain).  ``jsonable``
turns any of them into plain JSON values without losing what they said.  The geometry checks run
before anything is allocated for a series, so a start claiming a 10^9 x 10^9 frame is refused as
``bad_start`` rather than tried.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from .compression import MAX_PAYLOAD_BYTES
from .messages import DETECTOR_DTYPES, DetectorMessageError

__all__ = [
    "MAX_IMAGE_SIDE",
    "MAX_JSON_ARRAY",
    "MAX_NESTING",
    "check_geometry",
    "frame_cap",
    "jsonable",
    "little_endian",
    "optional_float",
    "optional_int",
    "start_array_cap",
]

# The largest frame side any start may declare (pixels).  The largest DECTRIS detectors are about
# 4000 pixels a side; 65536 leaves room for any future one and keeps x*y*channels*itemsize in range.
MAX_IMAGE_SIDE = 65536


# How deep metadata may nest (maps in lists in maps ...): deeper is refused as ``malformed`` rather
# than recursed into (a JSON or CBOR parser accepts several hundred levels; nothing a detector sends
# needs more than a few).
MAX_NESTING = 64

# The most items an array kept in the JSON metadata may have (a start's large arrays go to Zarr
# arrays instead; anything larger nested in metadata is refused rather than listed).
MAX_JSON_ARRAY = 1 << 16


def jsonable(value: Any, where: str = "value", depth: int = 0) -> Any:
    """``value`` as plain JSON: datetimes as RFC 3339 strings, rationals as [num, den], byte
    strings as base64 text, numpy scalars and arrays as numbers and lists, unknown CBOR tags as
    ``{"cbor_tag": n, "value": ...}``, non-finite floats as their names ("nan", "inf")."""
    if depth > MAX_NESTING:
        raise DetectorMessageError("malformed", f"{where} nests deeper than {MAX_NESTING} levels")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return jsonable(value.item(), where, depth)
    if isinstance(value, np.ndarray):
        if value.size > MAX_JSON_ARRAY:
            raise DetectorMessageError(
                "malformed", f"{where}: an array of {value.size} items is too large for metadata"
            )
        return jsonable(value.tolist(), where, depth)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Fraction):
        return [value.numerator, value.denominator]
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{where}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, where, depth + 1) for v in value]
    tag = getattr(value, "tag", None)
    if isinstance(tag, int) and hasattr(value, "value"):  # a CBORTag no hook decoded
        return {"cbor_tag": tag, "value": jsonable(value.value, where, depth + 1)}
    simple = getattr(value, "value", None)
    if isinstance(simple, int):  # CBORSimpleValue
        return simple
    return str(value)  # cbor2's ``undefined`` and anything else: its text, never dropped


def optional_int(value: Any, name: str, reason: str, *, minimum: int = 0) -> int | None:
    """An unsigned integer field, or None when absent."""
    if value is None:
        return None
    if type(value) is not int or value < minimum:
        raise DetectorMessageError(reason, f"{name} is {value!r}, not an integer >= {minimum}")
    return value


def optional_float(value: Any, name: str, reason: str, *, positive: bool = False) -> float | None:
    """A finite float field (integers taken), or None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DetectorMessageError(reason, f"{name} is {value!r}, not a finite number")
    if positive and value <= 0:
        raise DetectorMessageError(reason, f"{name} is {value!r}, not > 0")
    return float(value)


def check_geometry(
    x: Any, y: Any, dtype_name: Any, channels: int
) -> tuple[tuple[int, int], np.dtype[Any] | None]:
    """The (y, x) size and little-endian dtype of a start's frames, or ``bad_start`` when they
    are missing, not allowed, or larger than ``MAX_IMAGE_SIDE`` a side or ``MAX_PAYLOAD_BYTES``
    an image (every channel): checked before the server allocates anything for the series.
    A missing ``dtype_name`` (None) is allowed: the dtype is None and the cap assumes 4 bytes."""
    for name, side in (("image_size_x", x), ("image_size_y", y)):
        if type(side) is not int or not 1 <= side <= MAX_IMAGE_SIDE:
            raise DetectorMessageError("bad_start", f"{name} is {side!r}, not 1..{MAX_IMAGE_SIDE}")
    if dtype_name is not None and dtype_name not in DETECTOR_DTYPES:
        raise DetectorMessageError(
            "bad_start", f"image_dtype is {dtype_name!r}, not one of {sorted(DETECTOR_DTYPES)}"
        )
    dtype = None if dtype_name is None else np.dtype(str(dtype_name)).newbyteorder("<")
    nbytes = x * y * channels * (4 if dtype is None else dtype.itemsize)
    if nbytes > MAX_PAYLOAD_BYTES:
        raise DetectorMessageError(
            "bad_start",
            f"{x}x{y} {dtype_name} x {channels} channels is {nbytes} bytes an image, "
            f"more than the {MAX_PAYLOAD_BYTES} allowed",
        )
    return (y, x), dtype


def frame_cap(start: Any, default: int) -> int:
    """The most bytes one channel of ``start``'s frames can take (4 bytes a pixel when the start
    gives no dtype), never more than ``default``."""
    y, x = start.image_size
    return int(min(default, y * x * (4 if start.dtype is None else start.dtype.itemsize)))


def start_array_cap(x: Any, y: Any) -> int:
    """The most bytes one of a start's arrays (pixel mask, flatfield, count-rate table) may take:
    8 bytes a pixel of the start's frame, at least 1 MiB (the count-rate table is not
    frame-sized); ``MAX_PAYLOAD_BYTES`` when the start has no valid size (it is refused anyway)."""
    if type(x) is int and type(y) is int and 1 <= x <= MAX_IMAGE_SIDE and 1 <= y <= MAX_IMAGE_SIDE:
        return min(MAX_PAYLOAD_BYTES, max(1 << 20, 8 * x * y))
    return MAX_PAYLOAD_BYTES


def little_endian(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``array`` in little-endian byte order and C order (a copy only when it is not already):
    images reach the series in one byte order whatever order the detector sent them in."""
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array)
