"""DECTRIS Stream V1 (the legacy SIMPLON stream, port 9999): multipart JSON + binary messages.

What each multipart message holds (the SIMPLON manual, as public readers implement it):

- start, ``{"htype": "dheader-1.0", "series", "header_detail"}`` then, for ``header_detail``
  ``basic`` or ``all``, the detector configuration as JSON (``x_pixels_in_detector``,
  ``y_pixels_in_detector``, ``bit_depth_image``, ``nimages``, ``ntrigger``, ``x_pixel_size``,
  ``frame_time``, ``threshold_energy``, ...); for ``all`` three more pairs of a JSON header
  (``dflatfield-1.0``, ``dpixelmask-1.0``, ``dcountrate_table-1.0`` with ``shape: [x, y]`` and
  ``type``) and the raw little-endian array; then the header appendix if the user set one.
  ``header_detail: none`` sends no configuration, so no geometry: such a start is refused
  (``bad_start``) with a message saying to set ``header_detail`` to ``basic``;
- image, ``{"htype": "dimage-1.0", "series", "frame", "hash"}``, ``{"htype": "dimage_d-1.0",
  "shape": [x, y], "type", "encoding"}``, the data, ``{"htype": "dconfig-1.0", "start_time",
  "stop_time", "real_time"}`` (nanoseconds), then the image appendix if set.  ``frame`` counts
  from 0 like Stream V2's ``image_id`` and is used as it;
- end, ``{"htype": "dseries_end-1.0", "series"}``.

V1 has one channel; it is named ``threshold_1``, the name Stream V2 gives the first threshold,
so one detector's stores look alike whichever stream it used.  The start's arrays take the
Stream V2 names (``pixel_mask/threshold_1``, ``flatfield/threshold_1``,
``countrate_correction_lookup_table``), each (y, x) for a shape of [x, y].  Appendices are kept
as JSON when they parse as JSON, as text otherwise.  The image ``hash`` is kept in the image's
fields, not checked (the manual does not say which bytes it covers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from .compression import MAX_PAYLOAD_BYTES, decompress_v1, parse_v1_encoding
from .messages import (
    DetectorEnd,
    DetectorImage,
    DetectorMessage,
    DetectorMessageError,
    DetectorStart,
)
from .values import (
    MAX_IMAGE_SIDE,
    check_geometry,
    frame_cap,
    jsonable,
    little_endian,
    optional_float,
    optional_int,
    start_array_cap,
)

__all__ = ["V1_CHANNEL", "Stream1Decoder"]

V1_CHANNEL = "threshold_1"

# Configuration keys that become DetectorStart attributes rather than ``fields`` entries.
_CONFIG_TYPED = frozenset(
    {"x_pixels_in_detector", "y_pixels_in_detector", "bit_depth_image", "nimages", "ntrigger",
     "x_pixel_size", "y_pixel_size", "frame_time", "threshold_energy"}
)  # fmt: skip
_START_ARRAY_PARTS = {
    "dflatfield": "flatfield/" + V1_CHANNEL,
    "dpixelmask": "pixel_mask/" + V1_CHANNEL,
    "dcountrate_table": "countrate_correction_lookup_table",
}


def _malformed(message: str) -> DetectorMessageError:
    return DetectorMessageError("malformed", message)


def _json_part(part: bytes | memoryview, what: str) -> dict[str, Any]:
    try:
        value = json.loads(bytes(part))
    except (ValueError, RecursionError) as exc:
        raise _malformed(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _malformed(f"{what} is a JSON {type(value).__name__}, not an object")
    return value


def _appendix(part: bytes | memoryview) -> Any:
    """An appendix the user configured: JSON when it parses, else text, else base64 bytes."""
    raw = bytes(part)
    try:
        return jsonable(json.loads(raw), "appendix")
    except (ValueError, RecursionError):
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return jsonable(raw, "appendix")


def _htype(header: dict[str, Any]) -> str:
    """The message kind, ``dheader`` / ``dimage`` / ``dseries_end``, of any 1.x version."""
    htype = header.get("htype")
    if not isinstance(htype, str):
        raise DetectorMessageError("unknown_type", f"htype {htype!r}")
    name, _, version = htype.rpartition("-")
    if name not in ("dheader", "dimage", "dseries_end") or not version.startswith("1."):
        raise DetectorMessageError(
            "unknown_type", f"htype {htype!r} (dheader-1.0, dimage-1.0, dseries_end-1.0)"
        )
    return name


def _array_part(
    header: dict[str, Any], data: bytes | memoryview, what: str, reason: str, cap: int
) -> np.ndarray[Any, Any]:
    """A ``[x, y]``-shaped typed part (image or start array) as a little-endian (y, x) array."""
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(type(s) is int and 1 <= s <= MAX_IMAGE_SIDE for s in shape)
    ):
        raise DetectorMessageError(reason, f"{what}: shape {shape!r} is not [x, y] of 1..{MAX_IMAGE_SIDE}")
    type_name = header.get("type")
    try:
        dtype = np.dtype(type_name) if isinstance(type_name, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "uif" or dtype.itemsize > 8 or type_name != dtype.name:
        raise DetectorMessageError(reason, f"{what}: type {type_name!r} is not a numeric type name")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > cap:
        raise DetectorMessageError(reason, f"{what}: {shape} {type_name} is {nbytes} bytes, more than {cap}")
    encoding = parse_v1_encoding(header.get("encoding", "<"))
    raw = decompress_v1(encoding, data, nbytes, what)
    array = np.frombuffer(raw, dtype.newbyteorder("<" if encoding.byteorder == "<" else ">")).reshape(
        shape[::-1]
    )
    return little_endian(array)


class Stream1Decoder:
    """A ``WireDecoder`` for Stream V1.  Every V1 image carries its own shape, type and encoding,
    so the decoder keeps no state between messages; ``expect`` narrows the size cap of that
    series' images to one frame, as for Stream V2 (other series' images keep the default cap)."""

    protocol = "dectris-stream1"

    def __init__(self, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self._default_cap = max_payload_bytes
        self._expected: tuple[int | None, int] | None = None

    def expect(self, start: DetectorStart | None) -> None:
        """See ``Stream2Decoder.expect``; V1 series are told apart by ``series``."""
        self._expected = None if start is None else (start.series_id, frame_cap(start, self._default_cap))

    def _cap_for(self, series: int | None) -> int:
        expected = self._expected
        if expected is not None and series is not None and series == expected[0]:
            return expected[1]
        return self._default_cap

    def decode(self, parts: Sequence[bytes | memoryview]) -> DetectorMessage:
        if not parts:
            raise _malformed("an empty message")
        header = _json_part(parts[0], "part 1")
        kind = _htype(header)
        series = optional_int(header.get("series"), "series", "malformed")
        if kind == "dimage":
            return self._image(header, parts, series)
        if kind == "dheader":
            return self._start(header, parts, series)
        if len(parts) != 1:
            raise _malformed(f"dseries_end has {len(parts)} parts, not 1")
        rest = {str(k): jsonable(v, str(k)) for k, v in header.items() if k not in ("htype", "series")}
        return DetectorEnd(series, None, rest)

    def _start(
        self, header: dict[str, Any], parts: Sequence[bytes | memoryview], series: int | None
    ) -> DetectorStart:
        detail = header.get("header_detail")
        if detail == "none":
            raise DetectorMessageError(
                "bad_start",
                "header_detail 'none' sends no configuration, so no image size or type: "
                "set the detector's stream header_detail to 'basic' (or 'all' for the pixel mask)",
            )
        expected = {"basic": 2, "all": 8}.get(detail) if isinstance(detail, str) else None
        if expected is None:
            raise _malformed(f"header_detail {detail!r} (all, basic, none)")
        if len(parts) not in (expected, expected + 1):
            raise _malformed(f"a '{detail}' dheader has {len(parts)} parts, not {expected} (+1 appendix)")
        config = _json_part(parts[1], "the detector configuration")
        bits = config.get("bit_depth_image")
        dtype_name = f"uint{bits}" if type(bits) is int else bits
        size, dtype = check_geometry(
            config.get("x_pixels_in_detector"), config.get("y_pixels_in_detector"), dtype_name, 1
        )
        number = optional_int(config.get("nimages"), "nimages", "bad_start")
        triggers = optional_int(config.get("ntrigger"), "ntrigger", "bad_start", minimum=1)
        if number is not None and triggers is not None:
            number *= triggers
        px = optional_float(config.get("x_pixel_size"), "x_pixel_size", "bad_start", positive=True)
        py = optional_float(config.get("y_pixel_size"), "y_pixel_size", "bad_start", positive=True)
        energy = optional_float(config.get("threshold_energy"), "threshold_energy", "bad_start")
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        if detail == "all":
            array_cap = start_array_cap(size[1], size[0])
            for index in (2, 4, 6):
                part_header = _json_part(parts[index], f"part {index + 1}")
                htype = part_header.get("htype")
                name = _START_ARRAY_PARTS.get(htype.rpartition("-")[0]) if isinstance(htype, str) else None
                if name is None:
                    raise _malformed(
                        f"part {index + 1}: htype {htype!r}, not a flatfield/pixel mask/count-rate header"
                    )
                arrays[name] = _array_part(part_header, parts[index + 1], name, "bad_start", array_cap)
        fields = {str(k): jsonable(v, str(k)) for k, v in config.items() if k not in _CONFIG_TYPED}
        fields["header_detail"] = detail
        return DetectorStart(
            series_id=series,
            series_unique_id=None,
            image_size=size,
            dtype=dtype,
            channels=(V1_CHANNEL,),
            number_of_images=number,
            pixel_size_m=(py, px) if px is not None and py is not None else None,
            frame_time_s=optional_float(config.get("frame_time"), "frame_time", "bad_start", positive=True),
            threshold_energy_ev={V1_CHANNEL: energy} if energy is not None else {},
            fields=fields,
            arrays=arrays,
            user_data=_appendix(parts[expected]) if len(parts) > expected else None,
        )

    def _image(
        self, header: dict[str, Any], parts: Sequence[bytes | memoryview], series: int | None
    ) -> DetectorImage:
        if len(parts) not in (4, 5):
            raise _malformed(f"a dimage message has {len(parts)} parts, not 4 (+1 appendix)")
        frame = header.get("frame")
        if type(frame) is not int or frame < 0:
            raise DetectorMessageError("bad_image", f"frame is {frame!r}, not an unsigned integer")
        info = _json_part(parts[1], "dimage_d")
        if info.get("htype", "dimage_d-1.0") != "dimage_d-1.0":
            raise _malformed(f"part 2 htype {info.get('htype')!r}, not dimage_d-1.0")
        pixels = _array_part(info, parts[2], f"image {frame}", "bad_image", self._cap_for(series))
        if pixels.ndim != 2:
            raise DetectorMessageError(
                "bad_image", f"image {frame}: shape {info.get('shape')!r} is not [x, y]"
            )
        times = _json_part(parts[3], "dconfig")
        fields = {
            str(k): jsonable(v, str(k)) for k, v in header.items() if k not in ("htype", "series", "frame")
        }
        return DetectorImage(
            series_id=series,
            series_unique_id=None,
            image_id=frame,
            data={V1_CHANNEL: pixels},
            real_time=_nanoseconds(times.get("real_time"), "real_time"),
            start_time=_nanoseconds(times.get("start_time"), "start_time"),
            stop_time=_nanoseconds(times.get("stop_time"), "stop_time"),
            user_data=_appendix(parts[4]) if len(parts) == 5 else None,
            fields=fields,
        )


def _nanoseconds(value: Any, name: str) -> Fraction | None:
    ns = optional_int(value, name, "bad_image")
    return None if ns is None else Fraction(ns, 1_000_000_000)
