"""What a detector series says, whatever the wire format: a start, images, an end.

Stream V2 (``stream2.py``) and Stream V1 (``stream1.py``) decode into these
values, so the rest of the server (where a series' store goes, which fields
become which metadata) is written once.  Everything here is plain data,
checked on decoding: a value that breaks a rule of the specs raises
``DetectorMessageError`` with the reason the server counts it under.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from ...errors import ProtocolError

__all__ = [
    "DETECTOR_DTYPES",
    "DetectorEnd",
    "DetectorImage",
    "DetectorMessage",
    "DetectorMessageError",
    "DetectorStart",
    "WireDecoder",
]

# The pixel types the SIMPLON specs allow for image data (``image_dtype``).
DETECTOR_DTYPES = frozenset({"uint8", "uint16", "uint32"})


class DetectorMessageError(ProtocolError):
    """A detector message that cannot be taken: ``reason`` is the counter it is rejected under
    (``malformed``, ``unknown_type``, ``bad_image``, ``bad_start``, ...)."""


@dataclass(frozen=True)
class DetectorStart:
    """A series' start (arm): its geometry and everything else the detector says about it."""

    series_id: int | None
    series_unique_id: str | None
    image_size: tuple[int, int]  # (y, x) pixels
    # Of the image data, little-endian: decoders deliver every image in that byte order.  None when
    # the start does not say (Stream V2 before DECTRIS firmware 2023.x has no ``image_dtype``):
    # the series' first image decides.
    dtype: np.dtype[Any] | None
    channels: tuple[str, ...]  # channel (threshold) names, in the order image data lists them
    number_of_images: int | None  # images of the series (times triggers); None: unknown
    pixel_size_m: tuple[float, float] | None  # (y, x) meters
    frame_time_s: float | None
    threshold_energy_ev: Mapping[str, float] = field(default_factory=dict)  # channel -> eV
    fields: Mapping[str, Any] = field(default_factory=dict)  # every other scalar field, JSON-able
    arrays: Mapping[str, np.ndarray[Any, Any]] = field(default_factory=dict)  # "pixel_mask/<ch>", ...
    user_data: Any = None  # header_appendix (V1) / user_data (V2), JSON-able


@dataclass(frozen=True)
class DetectorImage:
    """One exposure: every channel's pixels, and its times."""

    series_id: int | None
    series_unique_id: str | None
    image_id: int  # the index along t (0-based)
    data: Mapping[str, np.ndarray[Any, Any]]  # channel -> (y, x) pixels, decoded, little-endian, C order
    real_time: Fraction | None = None  # seconds
    start_time: Fraction | None = None  # seconds after series_date
    stop_time: Fraction | None = None
    series_date: str | None = None  # RFC 3339
    user_data: Any = None  # image_appendix (V1) / user_data (V2), JSON-able
    fields: Mapping[str, Any] = field(default_factory=dict)  # any other field the image had, JSON-able


@dataclass(frozen=True)
class DetectorEnd:
    """A series' end (disarm)."""

    series_id: int | None
    series_unique_id: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)


DetectorMessage = DetectorStart | DetectorImage | DetectorEnd


class WireDecoder(Protocol):
    """Turns one ZeroMQ message (its parts: one for Stream V2, several for Stream V1) into a
    detector message; raises DetectorMessageError for anything the spec does not allow.  Runs on
    decoding threads, several at once: it keeps no state between messages, except what a
    protocol needs to know of its series (V1 sends the geometry only in the start)."""

    def decode(self, parts: Sequence[bytes | memoryview]) -> DetectorMessage: ...
