"""The bytes a DECTRIS detector puts on the wire: compressed payloads, Stream V2 and Stream V1 messages.

Written from the public specs (``dectris/documentation``: ``stream_v2/README.md`` and
``cbor/dectris-compression-tag.md``) and, for the legacy Stream V1, from its public descriptions:
the simulator (``dectris.py``) sends what a detector sends, so that ``acqzarr serve`` can be
tried and tested without one.  Nothing here decodes: the tests decode with a decoder of their own
and DECTRIS's ``dectris-compression``, so a misreading of the spec shared by sender and receiver
does not go unnoticed.

Compression (tag 56500, and V1's ``encoding``):

- ``bslz4``: bitshuffle + LZ4 with the bitshuffle HDF5 filter's framing: the uncompressed size
  (8 bytes, big-endian), the block size in bytes (4 bytes, big-endian), then the blocks as the
  ``bitshuffle`` package writes them (each: its compressed size, 4 bytes big-endian, and LZ4).
- ``lz4`` (V2): the HDF5 LZ4 filter's framing: the uncompressed size (8 bytes), the block size
  (4 bytes), then per block its compressed size (4 bytes) and the LZ4 block (a block that does
  not shrink is stored as is, its size then equal to the block's).  V1's ``lz4<`` is one bare
  LZ4 block of the whole frame.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = [
    "COMPRESSIONS",
    "SeriesInfo",
    "bslz4",
    "lz4_block",
    "lz4_hdf5",
    "stream1_end",
    "stream1_header",
    "stream1_image",
    "stream2_end",
    "stream2_image",
    "stream2_start",
]

COMPRESSIONS = ("bslz4", "lz4", "none")
# Bitshuffle's target block: 8 KiB of elements, the filter's default for every element size.
_BS_BLOCK_BYTES = 8192
# One LZ4 block per frame up to this size (the HDF5 LZ4 filter's default block is 1 GiB).
_LZ4_BLOCK_BYTES = 1 << 30
# RFC 8746 typed-array tags for unsigned integers: (element size, big-endian) -> tag.
_TYPED_TAGS = {(1, False): 64, (1, True): 64, (2, True): 65, (4, True): 66, (2, False): 69, (4, False): 70}
_FLOAT32_LE = 85
MULTI_DIM = 40
COMPRESSED = 56500


def bslz4(data: np.ndarray[Any, Any]) -> bytes:
    """``data`` bitshuffled and LZ4-compressed in the bitshuffle HDF5 filter's framing."""
    import bitshuffle

    flat = np.ascontiguousarray(data).reshape(-1)
    elements = _BS_BLOCK_BYTES // flat.itemsize
    blocks: np.ndarray[Any, Any] = bitshuffle.compress_lz4(flat, elements)
    return struct.pack(">QI", flat.nbytes, elements * flat.itemsize) + blocks.tobytes()


def lz4_block(raw: bytes | memoryview) -> bytes:
    """One bare LZ4 block of ``raw`` (numcodecs' LZ4 without its 4-byte size prefix)."""
    from numcodecs import LZ4

    encoded: bytes = LZ4(acceleration=1).encode(raw)
    return encoded[4:]


def lz4_hdf5(raw: bytes | memoryview) -> bytes:
    """``raw`` in the HDF5 LZ4 filter's framing (tag 56500 ``lz4``)."""
    view = memoryview(raw).cast("B")
    size = len(view)
    block = min(_LZ4_BLOCK_BYTES, max(size, 1))
    out = [struct.pack(">QI", size, block)]
    for start in range(0, size, block):
        chunk = view[start : start + block]
        packed = lz4_block(chunk)
        if len(packed) >= len(chunk):  # incompressible: stored as is, its length says so
            packed = bytes(chunk)
        out.append(struct.pack(">I", len(packed)))
        out.append(packed)
    return b"".join(out)


@dataclass(frozen=True)
class SeriesInfo:
    """What the start of one series says: the detector's configuration at arm."""

    series_id: int
    series_unique_id: str
    height: int
    width: int
    dtype: np.dtype[Any]  # of the pixels, byte order included
    channels: tuple[str, ...]
    number_of_images: int
    frame_time: float  # seconds
    count_time: float  # seconds
    arm_date: dt.datetime
    pixel_mask: np.ndarray[Any, Any]  # (height, width) uint32, the same for every channel
    flatfield: np.ndarray[Any, Any]  # (height, width) float32
    countrate_table: np.ndarray[Any, Any]  # V1's dcountrate_table: (2, n) float32, true rate -> measured rate
    countrate_lut: np.ndarray[Any, Any]  # V2's lookup table: 1-D uint32, measured count -> corrected count
    threshold_energy: Mapping[str, float] = field(default_factory=dict)  # eV per channel
    saturation_value: int = 0
    header_detail: str = "all"  # all: with masks, flatfields, count-rate table; basic / none: without
    user_data: Any = None
    time_base: int = 10_000_000  # ticks per second of start_time, stop_time, real_time
    incident_energy: float = 12_398.4  # eV (1 angstrom)
    pixel_size: float = 75e-6  # meters
    beam_center: tuple[float, float] = (0.0, 0.0)  # (x, y) pixels
    description: str = "Dectris EIGER2 Si 1M (simulated)"
    serial_number: str = "E-SIM-0001"
    sensor_material: str = "Si"
    sensor_thickness: float = 450e-6  # meters
    detector_distance: float = 0.12  # meters
    goniometer: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: {"omega": {"start": 0.0, "increment": 0.1}}
    )

    def times(self, image_id: int) -> tuple[int, int, int]:
        """(start, stop, real) of an image in ticks of ``time_base`` after the series' start."""
        start = round(image_id * self.frame_time * self.time_base)
        real = round(self.count_time * self.time_base)
        return start, start + real, real

    @property
    def wavelength(self) -> float:
        """Angstrom, from the incident energy (12398.42 eV angstrom)."""
        return 12398.419843320026 / self.incident_energy


def _tag(tag: int, value: Any) -> Any:
    import cbor2

    return cbor2.CBORTag(tag, value)


def _typed(array: np.ndarray[Any, Any], compression: str = "none") -> Any:
    """``array`` as an RFC 8746 multi-dimensional typed array (tag 40), its bytes compressed
    with tag 56500 unless ``compression`` is ``none``."""
    if array.dtype.kind == "f":
        tag = _FLOAT32_LE
        array = array.astype("<f4", copy=False)
    else:
        tag = _TYPED_TAGS[(array.dtype.itemsize, array.dtype.byteorder == ">")]
    raw = np.ascontiguousarray(array)
    payload: Any
    if compression == "bslz4":
        payload = _tag(COMPRESSED, ["bslz4", raw.itemsize, bslz4(raw)])
    elif compression == "lz4":
        payload = _tag(COMPRESSED, ["lz4", 0, lz4_hdf5(raw.data)])
    else:
        payload = raw.tobytes()
    return _tag(MULTI_DIM, [list(raw.shape), _tag(tag, payload)])


def encode_payload(frame: np.ndarray[Any, Any], compression: str) -> Any:
    """One channel's pixels as the image message carries them; made once per frame of the
    simulator's pool, so sending at full speed costs no compression."""
    return _typed(frame, compression)


def _cbor(message: Mapping[str, Any]) -> bytes:
    import cbor2

    return cbor2.dumps(message)


def stream2_start(s: SeriesInfo) -> bytes:
    """The start (arm) message: every field of the spec's table."""
    channels = list(s.channels)
    message: dict[str, Any] = {
        "type": "start",
        "arm_date": s.arm_date,
        "beam_center_x": s.beam_center[0],
        "beam_center_y": s.beam_center[1],
        "channels": channels,
        "count_time": s.count_time,
        "countrate_correction_enabled": s.header_detail == "all",
        "detector_description": s.description,
        "detector_serial_number": s.serial_number,
        "detector_translation": [0.0, 0.0, s.detector_distance],
        "flatfield_enabled": s.header_detail == "all",
        "frame_time": s.frame_time,
        "goniometer": {axis: dict(v) for axis, v in s.goniometer.items()},
        "image_dtype": s.dtype.name,
        "image_size_x": s.width,
        "image_size_y": s.height,
        "incident_energy": s.incident_energy,
        "incident_wavelength": s.wavelength,
        "number_of_images": s.number_of_images,
        "pixel_mask_enabled": True,
        "pixel_size_x": s.pixel_size,
        "pixel_size_y": s.pixel_size,
        "saturation_value": s.saturation_value,
        "sensor_material": s.sensor_material,
        "sensor_thickness": s.sensor_thickness,
        "series_id": s.series_id,
        "series_unique_id": s.series_unique_id,
        "threshold_energy": {c: float(s.threshold_energy[c]) for c in channels},
        "user_data": s.user_data,
        "virtual_pixel_interpolation_enabled": False,
    }
    if s.header_detail == "all":  # "basic" leaves out the tables, flatfields and pixel masks
        message["countrate_correction_lookup_table"] = _tag(  # a TypedArray: one dimension, no tag 40
            _TYPED_TAGS[(4, False)], np.ascontiguousarray(s.countrate_lut, "<u4").tobytes()
        )
        message["flatfield"] = {c: _typed(s.flatfield) for c in channels}
        message["pixel_mask"] = {c: _typed(s.pixel_mask) for c in channels}
    return _cbor(message)


def stream2_image(
    s: SeriesInfo, image_id: int, payloads: Sequence[Any], series_date: dt.datetime, user_data: Any = None
) -> bytes:
    """One exposure: every channel's (already encoded) pixels, its id and its times."""
    start, stop, real = s.times(image_id)
    message: dict[str, Any] = {
        "type": "image",
        "series_id": s.series_id,
        "series_unique_id": s.series_unique_id,
        "image_id": image_id,
        "real_time": [real, s.time_base],
        "series_date": series_date,
        "start_time": [start, s.time_base],
        "stop_time": [stop, s.time_base],
        "data": dict(zip(s.channels, payloads, strict=True)),
    }
    if user_data is not None:
        message["user_data"] = user_data
    return _cbor(message)


def stream2_end(s: SeriesInfo) -> bytes:
    return _cbor({"type": "end", "series_id": s.series_id, "series_unique_id": s.series_unique_id})


# -- Stream V1: multipart, JSON + binary ---------------------------------------------------------
V1_ENCODINGS = {"bslz4": "bs{bits}-lz4<", "lz4": "lz4<", "none": "<"}


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def stream1_config(s: SeriesInfo) -> dict[str, Any]:
    """The header's second part: the detector's SIMPLON configuration, under its SIMPLON names."""
    omega = s.goniometer.get("omega", {})
    return {
        "beam_center_x": s.beam_center[0],
        "beam_center_y": s.beam_center[1],
        "bit_depth_image": s.dtype.itemsize * 8,
        "count_time": s.count_time,
        "countrate_correction_applied": s.header_detail == "all",
        "data_collection_date": s.arm_date.isoformat(),
        "description": s.description,
        "detector_distance": s.detector_distance,
        "detector_number": s.serial_number,
        "flatfield_correction_applied": s.header_detail == "all",
        "frame_time": s.frame_time,
        "nimages": s.number_of_images,
        "ntrigger": 1,
        "omega_increment": omega.get("increment", 0.0),
        "omega_start": omega.get("start", 0.0),
        "photon_energy": s.incident_energy,
        "pixel_mask_applied": True,
        "saturation_value": s.saturation_value,
        "sensor_material": s.sensor_material,
        "sensor_thickness": s.sensor_thickness,
        "threshold_energy": float(s.threshold_energy[s.channels[0]]),
        "wavelength": s.wavelength,
        "x_pixel_size": s.pixel_size,
        "x_pixels_in_detector": s.width,
        "y_pixel_size": s.pixel_size,
        "y_pixels_in_detector": s.height,
    }


def stream1_header(s: SeriesInfo) -> list[bytes]:
    """The header (arm): ``dheader-1.0``; with detail basic/all the configuration; with all the
    flatfield, pixel mask and count-rate table (a JSON part then the array's bytes, each); the
    header appendix last, when there is one."""
    parts = [_json({"htype": "dheader-1.0", "series": s.series_id, "header_detail": s.header_detail})]
    if s.header_detail in ("basic", "all"):
        parts.append(_json(stream1_config(s)))
    if s.header_detail == "all":
        for htype, array in (
            ("dflatfield-1.0", np.ascontiguousarray(s.flatfield, "<f4")),
            ("dpixelmask-1.0", np.ascontiguousarray(s.pixel_mask, "<u4")),
            ("dcountrate_table-1.0", np.ascontiguousarray(s.countrate_table, "<f4")),
        ):
            # V1 lists shapes x first: [width, height] for an image, [columns, rows] for the table.
            parts.append(_json({"htype": htype, "shape": list(array.shape[::-1]), "type": array.dtype.name}))
            parts.append(array.tobytes())
    if s.user_data is not None:
        parts.append(_json(s.user_data))
    return parts


def stream1_payload(frame: np.ndarray[Any, Any], compression: str) -> tuple[bytes, str]:
    """One frame's data part and its ``encoding``."""
    raw = np.ascontiguousarray(frame, frame.dtype.newbyteorder("<"))
    if compression == "bslz4":
        data = bslz4(raw)
    elif compression == "lz4":
        data = lz4_block(raw.data)
    else:
        data = raw.tobytes()
    return data, V1_ENCODINGS[compression].format(bits=raw.itemsize * 8)


def stream1_image(
    s: SeriesInfo, image_id: int, data: bytes, encoding: str, user_data: Any = None
) -> list[bytes]:
    """One image: ``dimage-1.0`` (its number and the MD5 of its data part), ``dimage_d-1.0``
    (shape x first, type, encoding, size of the data part), the data, ``dconfig-1.0`` (times in
    nanoseconds), and the image appendix when there is one."""
    start, stop, real = (int(Fraction(t, s.time_base) * 10**9) for t in s.times(image_id))
    parts = [
        _json(
            {
                "htype": "dimage-1.0",
                "series": s.series_id,
                "frame": image_id,
                "hash": hashlib.md5(data).hexdigest(),
            }
        ),
        _json(
            {
                "htype": "dimage_d-1.0",
                "shape": [s.width, s.height],
                "type": s.dtype.name,
                "encoding": encoding,
                "size": len(data),
            }
        ),
        data,
        _json({"htype": "dconfig-1.0", "start_time": start, "stop_time": stop, "real_time": real}),
    ]
    if user_data is not None:
        parts.append(_json(user_data))
    return parts


def stream1_end(s: SeriesInfo) -> list[bytes]:
    return [_json({"htype": "dseries_end-1.0", "series": s.series_id})]
