"""The names settings accept: sample types (DTYPES) and store keys (the ZeroMQ protocol's too)."""

from __future__ import annotations

import re
import sys
from contextlib import suppress
from typing import Any

import numpy as np

__all__ = [
    "COLLECTION_GROUP",
    "DTYPES",
    "KEY_SEGMENT",
    "POSITION_AXIS",
    "dtype_name",
    "is_key_path",
    "is_key_segment",
]

DTYPES = (
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float32",
    "float64",
)


KEY_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


# The group bioformats2raw.layout puts beside the images of a collection (its ``series`` list).
COLLECTION_GROUP = "OME"
# The index entry that selects a position in ``Stream.append(..., index={"p": i})``.
POSITION_AXIS = "p"

# An array-protocol type string ('<u2', 'u2', '|u1'); numpy's one-letter codes and C names ('H',
# 'int', 'long') are left out because their width depends on the platform.
_TYPESTR = re.compile(r"^[<>=|]?[uif][0-9]+$")


def is_key_segment(value: str) -> bool:
    """One plain name in a store path: letters, digits, '_', '.', '-', not starting with '.' or '-'."""
    return bool(KEY_SEGMENT.fullmatch(value)) and value not in (".", "..")


def is_key_path(value: str) -> bool:
    """An image key: '' (the store root) or '/'-joined plain names, never '.' or '..'.  The ZeroMQ
    protocol checks keys with this too."""
    return value == "" or all(is_key_segment(seg) for seg in value.split("/"))


def dtype_name(value: object) -> str:
    """The DTYPES name of a sample type given as that name, a type string ('<u2', 'u2'), a numpy
    scalar type (``np.uint16``) or a ``np.dtype``.

    Raises ValueError naming what was given and the allowed names, also for a non-native byte
    order: frames are appended as the camera delivers them, in the machine's byte order.
    """
    allowed = ", ".join(DTYPES)
    dtype: np.dtype[Any] | None = None
    if isinstance(value, type):
        numpy_type = issubclass(value, np.generic)
        shown = f"numpy.{value.__name__}" if numpy_type else value.__name__
        given: Any = value if numpy_type else None
    else:
        shown = repr(value)
        named = isinstance(value, str) and (value in DTYPES or _TYPESTR.match(value))
        given = value if named or isinstance(value, np.dtype) else None
    if given is not None:
        with suppress(TypeError):  # 'u3', or an abstract type such as np.integer
            dtype = np.dtype(given)
    if dtype is None:
        raise ValueError(
            f"expected one of {allowed}, or a numpy type, dtype or type string of one "
            f"(np.uint16, '<u2'); got {shown}"
        )
    if dtype.name not in DTYPES:
        raise ValueError(f"{shown} ({dtype.name}) is not a supported sample type; expected one of {allowed}")
    if not dtype.isnative:
        order = {">": "big", "<": "little"}[dtype.byteorder]
        native = dtype.newbyteorder("=").name
        raise ValueError(
            f"{shown} is {order}-endian; frames must be in this machine's byte order ({sys.byteorder}-"
            f"endian), e.g. {native!r}"
        )
    return str(dtype.name)
