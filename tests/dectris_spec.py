"""An independent DECTRIS sender, written from the specs alone, for the decoders' tests.

It shares no code with acqzarr: CBOR is built by hand with ``cbor2.CBORTag`` from
``stream_v2/README.md``, RFC 8746 (typed arrays: tag = 64 + 16*float + 8*signed + 4*little-endian
+ log2(item bytes); tag 40 row-major, tag 1040 column-major: the same dimensions, the data in
column-major order) and ``cbor/dectris-compression-tag.md`` (tag 56500 ``[algorithm, modifier,
bytes]``).  Compression uses the ``bitshuffle`` package's LZ4 blocks and ``numcodecs``' raw LZ4
with the HDF5 filters' framing written here: an 8-byte big-endian decompressed size, a 4-byte
big-endian block size in bytes, then (bslz4) bitshuffle's blocks or (lz4) per block a 4-byte
big-endian compressed length and the LZ4 block (a block that does not shrink is stored as is, its
length equal to the block size).  Stream V1 messages are lists of bytes parts as the SIMPLON
manual describes them (``dheader-1.0`` + config + flatfield/pixel-mask/count-rate parts for
``header_detail: all`` + appendix; ``dimage-1.0``, ``dimage_d-1.0`` with ``shape: [x, y]``, the
data, ``dconfig-1.0`` times in ns, appendix; ``dseries_end-1.0``).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import bitshuffle
import cbor2
import numpy as np
from numcodecs import lz4 as numcodecs_lz4

CBORTag = cbor2.CBORTag


# -- compression ------------------------------------------------------------------------------


def bslz4(data: np.ndarray, elem_size: int | None = None, block_bytes: int = 8192) -> bytes:
    """Bitshuffle + LZ4 with the HDF5 bitshuffle filter's 12-byte header."""
    elem = elem_size or data.dtype.itemsize
    flat = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=f"u{elem}")
    block = block_bytes // elem
    blocks = bitshuffle.compress_lz4(flat, block).tobytes()
    return struct.pack(">QI", flat.nbytes, block * elem) + blocks


def raw_lz4(data: bytes) -> bytes:
    """One raw LZ4 block (numcodecs puts a 4-byte size in front: dropped)."""
    return bytes(numcodecs_lz4.compress(data))[4:]


def hdf5_lz4(data: bytes, block_bytes: int = 8192) -> bytes:
    """LZ4 in the HDF5 LZ4 filter's framing."""
    out = [struct.pack(">QI", len(data), block_bytes)]
    for start in range(0, len(data), block_bytes):
        block = data[start : start + block_bytes]
        packed = raw_lz4(block)
        if len(packed) >= len(block):
            packed = block  # stored as is: its length equals the block's
        out.append(struct.pack(">I", len(packed)) + packed)
    return b"".join(out)


# -- Stream V2 ----------------------------------------------------------------------------------


def typed_array_tag(dtype: np.dtype, byteorder: str) -> int:
    """RFC 8746 section 2.1."""
    float_bit = 1 if dtype.kind == "f" else 0
    signed_bit = 1 if dtype.kind == "i" else 0
    little_bit = 1 if byteorder == "<" else 0
    if dtype.itemsize == 1 and not float_bit:
        little_bit = 0  # 68 is the clamped uint8
    ll = {1: 0, 2: 1, 4: 2, 8: 3}[dtype.itemsize]
    if float_bit:
        ll = {2: 0, 4: 1, 8: 2}[dtype.itemsize]
    return 64 + 16 * float_bit + 8 * signed_bit + 4 * little_bit + ll


def typed_array(
    array: np.ndarray, byteorder: str = "<", compression: str | None = None, *, order: str = "C"
) -> CBORTag:
    """A typed array of ``array``'s items (flattened in ``order``), optionally compressed."""
    swapped = array.astype(array.dtype.newbyteorder(byteorder))
    raw = swapped.tobytes(order=order)
    content: Any = raw
    if compression == "bslz4":
        content = CBORTag(
            56500,
            ["bslz4", array.dtype.itemsize, bslz4(np.frombuffer(raw, swapped.dtype))],
        )
    elif compression == "lz4":
        content = CBORTag(56500, ["lz4", 0, hdf5_lz4(raw)])
    return CBORTag(typed_array_tag(array.dtype, byteorder), content)


def multidim(
    array: np.ndarray, byteorder: str = "<", compression: str | None = None, column_major: bool = False
) -> CBORTag:
    """Tag 40 (row-major) or 1040 (column-major) around a typed array."""
    order = "F" if column_major else "C"
    return CBORTag(
        1040 if column_major else 40,
        [list(array.shape), typed_array(array, byteorder, compression, order=order)],
    )


def rational(num: int, den: int) -> list[int]:
    return [num, den]


def start_message(**fields: Any) -> bytes:
    return cbor2.dumps({"type": "start", **fields})


def image_message(**fields: Any) -> bytes:
    return cbor2.dumps({"type": "image", **fields})


def end_message(**fields: Any) -> bytes:
    return cbor2.dumps({"type": "end", **fields})


def eiger_start(
    x: int = 64,
    y: int = 48,
    dtype: str = "uint32",
    channels: tuple[str, ...] = ("threshold_1",),
    *,
    series_id: int = 7,
    unique: str = "6b0b8f4e-series-7",
    header_all: bool = True,
    **extra: Any,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A start as an EIGER2 sends it (the spec's fields), and the arrays it carries."""
    rng = np.random.default_rng(3)
    arrays: dict[str, np.ndarray] = {}
    fields: dict[str, Any] = {
        "series_id": series_id,
        "series_unique_id": unique,
        "arm_date": CBORTag(0, "2026-12-07T06:00:00.125+00:00"),
        "beam_center_x": 31.5,
        "beam_center_y": 22.25,
        "channels": list(channels),
        "count_time": 0.0099,
        "countrate_correction_enabled": True,
        "detector_description": "Dectris EIGER2 Si 1M",
        "detector_serial_number": "E-32-0100",
        "detector_translation": [0.0, 0.0, 0.12],
        "flatfield_enabled": True,
        "frame_time": 0.01,
        "goniometer": {"omega": {"increment": 0.1, "start": 10.0}, "phi": {"increment": 0.0, "start": 0.0}},
        "image_dtype": dtype,
        "image_size_x": x,
        "image_size_y": y,
        "incident_energy": 12398.4,
        "incident_wavelength": 1.0,
        "number_of_images": 5,
        "pixel_mask_enabled": True,
        "pixel_size_x": 7.5e-05,
        "pixel_size_y": 7.5e-05,
        "saturation_value": 1048575,
        "sensor_material": "Si",
        "sensor_thickness": 0.00045,
        "threshold_energy": {c: 6200.0 + 1000 * i for i, c in enumerate(channels)},
        "user_data": {"sample": "lysozyme", "run": 3},
        "virtual_pixel_interpolation_enabled": False,
    }
    if header_all:
        for c in channels:
            mask = (rng.random((y, x)) < 0.01).astype(np.uint32) * np.uint32(1 << rng.integers(0, 5))
            flat = rng.uniform(0.9, 1.1, (y, x)).astype(np.float32)
            arrays[f"pixel_mask/{c}"] = mask
            arrays[f"flatfield/{c}"] = flat
        table = np.arange(1000, dtype=np.uint32) * 3
        arrays["countrate_correction_lookup_table"] = table
        fields["pixel_mask"] = {c: multidim(arrays[f"pixel_mask/{c}"], "<", "bslz4") for c in channels}
        fields["flatfield"] = {c: multidim(arrays[f"flatfield/{c}"], ">") for c in channels}
        fields["countrate_correction_lookup_table"] = typed_array(table, "<", "lz4")
    fields.update(extra)
    return fields, arrays


def poisson_frame(shape: tuple[int, int], dtype: str, mean: float = 0.3, seed: int = 0) -> np.ndarray:
    """Counting statistics as a diffraction frame has between spots, plus a few hot pixels."""
    rng = np.random.default_rng(seed)
    frame = rng.poisson(mean, shape).astype(dtype)
    frame.flat[rng.integers(0, frame.size, 5)] = np.iinfo(dtype).max
    return frame


# -- Stream V1 ----------------------------------------------------------------------------------


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def v1_config(x: int = 64, y: int = 48, bit_depth: int = 32, **extra: Any) -> dict[str, Any]:
    """The detector configuration part of a ``basic``/``all`` header (SIMPLON config names)."""
    return {
        "x_pixels_in_detector": x,
        "y_pixels_in_detector": y,
        "bit_depth_image": bit_depth,
        "nimages": 4,
        "ntrigger": 2,
        "x_pixel_size": 7.5e-05,
        "y_pixel_size": 7.5e-05,
        "frame_time": 0.01,
        "count_time": 0.0099,
        "photon_energy": 8041.0,
        "wavelength": 1.5419,
        "threshold_energy": 4020.5,
        "beam_center_x": 30.0,
        "beam_center_y": 20.0,
        "detector_distance": 0.12,
        "description": "Dectris EIGER 1M",
        "detector_number": "E-18-0101",
        "sensor_material": "Si",
        "sensor_thickness": 0.00045,
        "data_collection_date": "2026-12-07T06:00:00.000+00:00",
        **extra,
    }


def v1_header(
    series: int,
    detail: str = "basic",
    config: dict[str, Any] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    appendix: Any = None,
) -> list[bytes]:
    """``dheader-1.0`` and its parts: config (basic, all), then (all) flatfield, pixel mask and
    count-rate table, each a JSON part with ``shape: [x, y]`` and ``type`` and a raw data part;
    the header appendix (when the user set one) last."""
    parts = [_json({"htype": "dheader-1.0", "series": series, "header_detail": detail})]
    if detail in ("basic", "all"):
        parts.append(_json(config if config is not None else v1_config()))
    if detail == "all":
        assert arrays is not None
        for htype, key in (
            ("dflatfield-1.0", "flatfield"),
            ("dpixelmask-1.0", "pixel_mask"),
            ("dcountrate_table-1.0", "countrate_table"),
        ):
            array = arrays[key]
            shape = list(array.shape[::-1])  # [x, y]: the manual's order
            parts.append(_json({"htype": htype, "shape": shape, "type": str(array.dtype)}))
            parts.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
    if appendix is not None:
        parts.append(appendix if isinstance(appendix, bytes) else _json(appendix))
    return parts


def v1_image(
    series: int,
    frame: int,
    array: np.ndarray,
    encoding: str = "bs32-lz4<",
    times: tuple[int, int, int] = (1_000_000, 11_000_000, 9_900_000),
    appendix: Any = None,
) -> list[bytes]:
    """``dimage-1.0``, ``dimage_d-1.0`` (``shape: [x, y]``), the data, ``dconfig-1.0``, appendix."""
    byteorder = encoding[-1]
    raw = array.astype(array.dtype.newbyteorder(byteorder)).tobytes()
    if encoding.startswith("bs"):
        bits = int(encoding[2:].split("-")[0])
        data = bslz4(np.frombuffer(raw, f"u{bits // 8}"), bits // 8)
    elif encoding.startswith("lz4"):
        data = raw_lz4(raw)
    else:
        data = raw
    y, x = array.shape
    parts = [
        _json({"htype": "dimage-1.0", "series": series, "frame": frame, "hash": ""}),
        _json({"htype": "dimage_d-1.0", "shape": [x, y], "type": str(array.dtype), "encoding": encoding,
               "size": len(data)}),
        data,
        _json({"htype": "dconfig-1.0", "start_time": times[0], "stop_time": times[1], "real_time": times[2]}),
    ]  # fmt: skip
    if appendix is not None:
        parts.append(appendix if isinstance(appendix, bytes) else _json(appendix))
    return parts


def v1_end(series: int) -> list[bytes]:
    return [_json({"htype": "dseries_end-1.0", "series": series})]
