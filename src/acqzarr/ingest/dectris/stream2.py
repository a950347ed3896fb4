"""DECTRIS Stream V2 (``stream_v2/README.md``): one CBOR map per ZeroMQ message, decoded with cbor2.

Tags decoded (everything else is kept as metadata, see ``values.jsonable``):

- RFC 8746 typed arrays, tags 64-87 (both byte orders; the float128 tags 83/87 are refused:
  numpy has no IEEE binary128), as numpy arrays over cbor2's bytes (no copy);
- tag 40 (row-major multi-dimensional array) and tag 1040 (column-major, made C-ordered);
- tag 56500 (DECTRIS compression, ``compression.py``), kept compressed while the message is
  parsed and decompressed once its type and series are known: an image of the series the server
  announced with ``expect`` may not declare more than one channel of that series' frame, an
  image's channels together not more than ``MAX_PAYLOAD_BYTES``, a start's arrays not more than
  8 bytes a pixel of its frame, everything else (metadata) together not more than 4 MiB, and
  none more than LZ4 could expand it to;
- tag 55799 (self-described CBOR) around a message, as real detectors send it; the value-sharing
  and string-reference tags (25, 28, 29, 256) are refused;
- DateTime (tag 0) by cbor2 itself, stored as RFC 3339 text; Rationals ([num, den]) as Fractions.

Image data is delivered as little-endian, C-ordered (y, x) arrays whatever the sender used.
Rejections (``DetectorMessageError.reason``): ``malformed`` (not CBOR, not a map, a field of the
wrong type, a bad tag), ``unknown_type``, ``bad_compression``, ``bad_start`` (missing or absurd
geometry: more than 65536 pixels a side or 4 GiB an image), ``bad_image``.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from ...errors import ConfigError
from .compression import MAX_PAYLOAD_BYTES, decompress_tag
from .messages import (
    DetectorEnd,
    DetectorImage,
    DetectorMessage,
    DetectorMessageError,
    DetectorStart,
)
from .values import (
    MAX_NESTING,
    check_geometry,
    frame_cap,
    jsonable,
    little_endian,
    optional_float,
    optional_int,
    start_array_cap,
)

__all__ = ["START_ARRAYS", "Stream2Decoder"]

# RFC 8746 section 2.1: tag -> numpy dtype of the elements.
_TYPED_ARRAY_DTYPES: dict[int, str] = {
    64: "u1", 65: ">u2", 66: ">u4", 67: ">u8", 68: "u1",  # 68: uint8, clamped arithmetic
    69: "<u2", 70: "<u4", 71: "<u8",
    72: "i1", 73: ">i2", 74: ">i4", 75: ">i8", 77: "<i2", 78: "<i4", 79: "<i8",
    80: ">f2", 81: ">f4", 82: ">f8", 84: "<f2", 85: "<f4", 86: "<f8",
}  # fmt: skip
_UNSUPPORTED_TYPED_ARRAYS = {76: "reserved", 83: "float128 big-endian", 87: "float128 little-endian"}

# The start's large arrays: DetectorStart.arrays keys, "<field>/<channel>" for the per-channel maps.
START_ARRAYS = ("pixel_mask", "flatfield", "countrate_correction_lookup_table")

# Start fields that become DetectorStart attributes of their own rather than ``fields`` entries.
_START_TYPED = frozenset(
    {
        "type", "series_id", "series_unique_id", "image_size_x", "image_size_y", "image_dtype",
        "channels", "number_of_images", "ntrigger", "pixel_size_x", "pixel_size_y", "frame_time",
        "threshold_energy", "user_data", *START_ARRAYS,
    }
)  # fmt: skip
_IMAGE_FIELDS = frozenset(
    {"type", "series_id", "series_unique_id", "image_id", "data", "real_time", "start_time",
     "stop_time", "series_date", "user_data"}
)  # fmt: skip

_END_IDS = frozenset({"type", "series_id", "series_unique_id"})

_DEFAULT_CHANNEL = "threshold_1"  # a start that names no channels: DECTRIS's first channel name

_loads: Callable[..., Any] | None = None
_decode_error: type[Exception] = Exception
_tag_type: type[Any] = object


# CBOR value sharing (tags 28/29) and string references (25/256) let a small message stand for
# one array or string many times over (and a decompressed payload be decompressed many times):
# Stream V2 uses neither, so they are refused.
_REFERENCE_TAGS = (25, 28, 29, 256)


def _refuse_references(*_args: Any) -> Any:
    raise DetectorMessageError("malformed", "CBOR shared values / string references (tags 25, 28, 29, 256)")


def _cbor_loads() -> Callable[..., Any]:
    """``cbor2.loads`` refusing the reference tags, imported on first use (the ``dectris``
    extra; cbor2 >= 6.1: the Rust decoder, iterative and memory-safe, with ``semantic_decoders``)."""
    global _loads, _decode_error, _tag_type
    if _loads is None:
        try:
            import cbor2
        except ImportError as exc:  # pragma: no cover - the test env has it
            raise ConfigError("Stream V2 inputs need cbor2: pip install 'acqzarr[dectris]'") from exc
        _decode_error = cbor2.CBORDecodeError
        _tag_type = cbor2.CBORTag
        _loads = functools.partial(
            cbor2.loads, semantic_decoders=dict.fromkeys(_REFERENCE_TAGS, _refuse_references)
        )
    return _loads


def _malformed(message: str) -> DetectorMessageError:
    return DetectorMessageError("malformed", message)


class _Compressed:
    """Tag 56500's content while the message is parsed: how large it may decompress to is known
    only once the message's type and series are."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _LazyArray:
    """A typed array over a compressed byte string, and its shape once tag 40/1040 gives one."""

    __slots__ = ("compressed", "dims", "dtype", "order", "tag")

    def __init__(self, compressed: _Compressed, dtype: np.dtype[Any], tag: int) -> None:
        self.compressed = compressed
        self.dtype = dtype
        self.tag = tag
        self.dims: tuple[int, ...] | None = None
        self.order = "C"

    def materialize(self, cap: int) -> np.ndarray[Any, Any]:
        raw = decompress_tag(self.compressed.value, max_bytes=cap, what=f"typed array tag {self.tag}")
        if len(raw) % self.dtype.itemsize:
            raise _malformed(
                f"typed array tag {self.tag}: {len(raw)} bytes, not whole {self.dtype.itemsize}-byte items"
            )
        array = np.frombuffer(raw, self.dtype)
        if self.dims is None:
            return array
        if math.prod(self.dims) != array.size:
            raise _malformed(
                f"dimensions {list(self.dims)} hold {math.prod(self.dims)} items, not {array.size}"
            )
        if self.order == "C":
            return array.reshape(self.dims)
        return np.ascontiguousarray(array.reshape(self.dims, order="F"))


# Compressed payloads in metadata (anywhere but image data and the start's arrays) turn into JSON:
# together they may not decompress to more than this, so a small message cannot expand into a
# huge attribute.
METADATA_PAYLOAD_BYTES = 4 << 20

# The top-level fields whose payloads are pixels (capped by the geometry), not metadata.
_PIXEL_FIELDS = frozenset({"data", *START_ARRAYS})


class _Budget:
    """What is left of the bytes one message's payloads may decompress to, together."""

    __slots__ = ("left",)

    def __init__(self, total: int) -> None:
        self.left = total


def _materialize(value: Any, cap: int, budget: _Budget | None, depth: int = 0) -> Any:
    """``value`` with every compressed byte string and array decompressed (at most ``cap`` bytes
    each, and, with a ``budget``, at most what is left of it); maps become dicts, arrays lists."""
    if depth > MAX_NESTING:
        raise _malformed(f"the message nests deeper than {MAX_NESTING} levels")
    if isinstance(value, _LazyArray | _Compressed):
        limit = cap if budget is None else min(cap, budget.left)
        out = (
            value.materialize(limit)
            if isinstance(value, _LazyArray)
            else decompress_tag(value.value, max_bytes=limit)
        )
        if budget is not None:
            budget.left -= out.nbytes if isinstance(out, np.ndarray) else len(out)
        return out
    if isinstance(value, Mapping):
        return {k: _materialize(v, cap, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_materialize(v, cap, budget, depth + 1) for v in value]
    return value


def _materialize_message(msg: Mapping[str, Any], cap: int, default_cap: int) -> dict[str, Any]:
    """The message with its payloads decompressed: pixels (image data, the start's arrays) up to
    ``cap`` each, the start's arrays up to 8 bytes a pixel of its frame, everything else within
    one METADATA_PAYLOAD_BYTES budget."""
    budget = _Budget(METADATA_PAYLOAD_BYTES)
    array_cap = min(default_cap, start_array_cap(msg.get("image_size_x"), msg.get("image_size_y")))
    out: dict[str, Any] = {}
    for key, value in msg.items():
        if key == "data":  # every channel of the image together, like a start's frame
            out[key] = _materialize(value, cap, _Budget(default_cap), 1)
        elif key in _PIXEL_FIELDS:
            out[key] = _materialize(value, array_cap, None, 1)
        else:
            out[key] = _materialize(value, default_cap, budget, 1)
    return out


def _typed_array(tag: int, value: Any) -> np.ndarray[Any, Any] | _LazyArray:
    if tag in _UNSUPPORTED_TYPED_ARRAYS:
        raise _malformed(f"typed array tag {tag} ({_UNSUPPORTED_TYPED_ARRAYS[tag]}) is not supported")
    if isinstance(value, _Compressed):
        return _LazyArray(value, np.dtype(_TYPED_ARRAY_DTYPES[tag]), tag)
    if not isinstance(value, bytes):
        raise _malformed(f"typed array tag {tag} holds {type(value).__name__}, not a byte string")
    dtype = np.dtype(_TYPED_ARRAY_DTYPES[tag])
    if len(value) % dtype.itemsize:
        raise _malformed(f"typed array tag {tag}: {len(value)} bytes, not whole {dtype.itemsize}-byte items")
    return np.frombuffer(value, dtype)


def _multidim(tag: int, value: Any) -> np.ndarray[Any, Any] | _LazyArray:
    if not isinstance(value, list | tuple) or len(value) != 2:  # cbor2 6: tuples inside a tag
        raise _malformed(f"tag {tag}: expected [dimensions, array]")
    dims, data = value
    if not isinstance(dims, list | tuple) or not dims or not all(type(d) is int and d >= 0 for d in dims):
        raise _malformed(f"tag {tag}: dimensions {dims!r} are not a list of unsigned integers")
    if isinstance(data, _LazyArray) and data.dims is None:
        data.dims = tuple(dims)
        data.order = "C" if tag == 40 else "F"
        return data
    if isinstance(data, list | tuple):
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in data):
            raise _malformed(f"tag {tag}: a plain array of non-numbers")
        try:
            data = np.array(data)
        except OverflowError:
            raise _malformed(f"tag {tag}: numbers out of range") from None
    if not isinstance(data, np.ndarray) or data.ndim != 1:
        raise _malformed(f"tag {tag}: the elements are {type(data).__name__}, not an array")
    if math.prod(dims) != data.size:
        raise _malformed(f"tag {tag}: dimensions {list(dims)} hold {math.prod(dims)} items, not {data.size}")
    if tag == 40:
        return data.reshape(dims)
    return np.ascontiguousarray(data.reshape(dims, order="F"))  # 1040: column-major


def _find_detector_error(exc: BaseException) -> DetectorMessageError | None:
    """The DetectorMessageError a tag hook raised, which cbor2 wraps in its own error."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 10:
        if isinstance(cause, DetectorMessageError):
            return cause
        cause = cause.__cause__ or cause.__context__
        seen += 1
    return None


def _rational(value: Any, name: str) -> Fraction | None:
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(type(v) is int and v >= 0 for v in value)
        or value[1] == 0
    ):
        raise DetectorMessageError("bad_image", f"{name} is {value!r}, not a rational [num, den > 0]")
    return Fraction(value[0], value[1])


def _series_ids(msg: Mapping[str, Any]) -> tuple[int | None, str | None]:
    series_id = optional_int(msg.get("series_id"), "series_id", "malformed")
    unique = msg.get("series_unique_id")
    if unique is not None and not isinstance(unique, str):
        raise _malformed(f"series_unique_id is {type(unique).__name__}, not text")
    return series_id, unique


def _date(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str):
        return value
    raise DetectorMessageError("bad_image", f"{name} is {type(value).__name__}, not a DateTime")


def _channel_arrays(value: Any, field: str) -> dict[str, np.ndarray[Any, Any]] | None:
    """A start's map channel -> array (pixel_mask, flatfield) as ``"<field>/<channel>"`` arrays;
    None when it is not such a map (the caller keeps it as metadata: a start is not refused for
    an auxiliary field some senders fill with placeholders)."""
    if not isinstance(value, Mapping):
        return None
    out: dict[str, np.ndarray[Any, Any]] = {}
    for channel, array in value.items():
        if not isinstance(channel, str) or "/" in channel or not channel:
            return None
        if not isinstance(array, np.ndarray) or array.dtype.kind not in "uif":
            return None
        out[f"{field}/{channel}"] = little_endian(array)
    return out


def _numeric(array: Any, name: str, reason: str) -> np.ndarray[Any, Any]:
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uif":
        raise DetectorMessageError(reason, f"{name} is {type(array).__name__}, not a numeric array")
    return little_endian(array)


class Stream2Decoder:
    """A ``WireDecoder`` for Stream V2.  Thread-safe: decoding shares nothing between calls except
    what ``expect`` set (one tuple, read once per message)."""

    protocol = "dectris-stream2"

    def __init__(self, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self._default_cap = max_payload_bytes
        self._expected: tuple[int | None, str | None, int] | None = None

    def expect(self, start: DetectorStart | None) -> None:
        """Cap every compressed payload of ``start``'s series' images at one channel of its frame
        (None: no series expected).  The server calls it when a series starts; images of any
        other series (say the next one, decoded on another thread before its start was taken)
        keep the default cap, so a late ``expect`` never rejects a good image.  Without it the
        decoder is as correct, with a looser cap."""
        if start is None:
            self._expected = None
        else:
            self._expected = (start.series_id, start.series_unique_id, frame_cap(start, self._default_cap))

    def _cap_for(self, msg: Mapping[str, Any]) -> int:
        expected = self._expected
        if expected is None or msg.get("type") != "image":
            return self._default_cap
        series_id, unique, cap = expected
        if unique is not None:
            return cap if msg.get("series_unique_id") == unique else self._default_cap
        if series_id is not None and msg.get("series_id") == series_id:
            return cap
        return self._default_cap

    def decode(self, parts: Sequence[bytes | memoryview]) -> DetectorMessage:
        if len(parts) != 1:
            raise _malformed(f"a Stream V2 message is one part, this one has {len(parts)}")
        loads = _cbor_loads()

        def tag_hook(first: Any, second: Any) -> Any:
            # cbor2 6 calls tag_hook(tag, immutable), cbor2 5 tag_hook(decoder, tag).
            tag = first if isinstance(first, _tag_type) else second
            number = tag.tag
            if number == 56500:
                return _Compressed(tag.value)
            if number in _TYPED_ARRAY_DTYPES or number in _UNSUPPORTED_TYPED_ARRAYS:
                return _typed_array(number, tag.value)
            if number in (40, 1040):
                return _multidim(number, tag.value)
            return tag

        try:
            msg = loads(bytes(parts[0]), tag_hook=tag_hook)
        except DetectorMessageError:
            raise
        except _decode_error as exc:
            found = _find_detector_error(exc)
            if found is not None:
                raise found from None
            raise _malformed(f"not valid CBOR: {exc}") from None
        except (ValueError, TypeError, OverflowError, RecursionError, MemoryError, UnicodeError) as exc:
            raise _malformed(f"not valid CBOR: {type(exc).__name__}: {exc}") from None
        # Mapping, not dict: inside tag 55799 (self-described CBOR, which real detectors put
        # around every message) cbor2 6 gives frozen maps and tuples.
        if not isinstance(msg, Mapping):
            raise _malformed(f"a Stream V2 message is a CBOR map, this one is {type(msg).__name__}")
        msg = _materialize_message(msg, self._cap_for(msg), self._default_cap)
        kind = msg.get("type")
        if kind == "image":
            return self._image(msg)
        if kind == "start":
            return self._start(msg)
        if kind == "end":
            series_id, unique = _series_ids(msg)
            rest = {str(k): jsonable(v, str(k)) for k, v in msg.items() if k not in _END_IDS}
            return DetectorEnd(series_id, unique, rest)
        raise DetectorMessageError("unknown_type", f"message type {kind!r} (start, image, end)")

    def _start(self, msg: Mapping[str, Any]) -> DetectorStart:
        series_id, unique = _series_ids(msg)
        raw_channels = msg.get("channels")
        if raw_channels is None:
            channels: tuple[str, ...] = (_DEFAULT_CHANNEL,)
        elif (
            isinstance(raw_channels, list | tuple)
            and raw_channels
            and all(isinstance(c, str) and c and "/" not in c for c in raw_channels)
            and len(set(raw_channels)) == len(raw_channels)
        ):
            channels = tuple(raw_channels)
        else:
            raise DetectorMessageError("bad_start", f"channels {raw_channels!r}: not distinct channel names")
        size, dtype = check_geometry(
            msg.get("image_size_x"), msg.get("image_size_y"), msg.get("image_dtype"), len(channels)
        )
        number = optional_int(msg.get("number_of_images"), "number_of_images", "bad_start")
        triggers = optional_int(msg.get("ntrigger"), "ntrigger", "bad_start", minimum=1)
        if number is not None and triggers is not None:
            number *= triggers
        px = optional_float(msg.get("pixel_size_x"), "pixel_size_x", "bad_start", positive=True)
        py = optional_float(msg.get("pixel_size_y"), "pixel_size_y", "bad_start", positive=True)
        frame_time = optional_float(msg.get("frame_time"), "frame_time", "bad_start", positive=True)
        energies: dict[str, float] = {}
        raw_energy = msg.get("threshold_energy")
        if raw_energy is not None:
            if not isinstance(raw_energy, Mapping):
                raise DetectorMessageError("bad_start", "threshold_energy is not a map channel -> eV")
            for channel, energy in raw_energy.items():
                value = optional_float(energy, f"threshold_energy/{channel}", "bad_start")
                if value is not None:
                    energies[str(channel)] = value
        arrays: dict[str, np.ndarray[Any, Any]] = {}
        fields: dict[str, Any] = {}
        for field in ("pixel_mask", "flatfield"):
            if msg.get(field) is not None:
                per_channel = _channel_arrays(msg[field], field)
                if per_channel is None:
                    fields[field] = jsonable(msg[field], field)
                else:
                    arrays.update(per_channel)
        table = msg.get("countrate_correction_lookup_table")
        if isinstance(table, np.ndarray) and table.dtype.kind in "uif":
            arrays["countrate_correction_lookup_table"] = little_endian(table)
        elif table is not None:
            fields["countrate_correction_lookup_table"] = jsonable(table, "countrate_correction_lookup_table")
        for key, value in msg.items():
            name = str(key)
            if name in _START_TYPED:
                continue
            if isinstance(value, np.ndarray) and value.size > 64:
                arrays[name] = _numeric(value, name, "bad_start")  # a large array never goes in JSON
            else:
                fields[name] = jsonable(value, name)
        return DetectorStart(
            series_id=series_id,
            series_unique_id=unique,
            image_size=size,
            dtype=dtype,
            channels=channels,
            number_of_images=number,
            pixel_size_m=(py, px) if px is not None and py is not None else None,
            frame_time_s=frame_time,
            threshold_energy_ev=energies,
            fields=fields,
            arrays=arrays,
            user_data=jsonable(msg.get("user_data"), "user_data"),
        )

    def _image(self, msg: Mapping[str, Any]) -> DetectorImage:
        series_id, unique = _series_ids(msg)
        image_id = msg.get("image_id")
        if type(image_id) is not int or image_id < 0:
            raise DetectorMessageError("bad_image", f"image_id is {image_id!r}, not an unsigned integer")
        raw = msg.get("data")
        if not isinstance(raw, Mapping) or not raw:
            raise DetectorMessageError("bad_image", "data is not a non-empty map channel -> array")
        data: dict[str, np.ndarray[Any, Any]] = {}
        for channel, array in raw.items():
            if not isinstance(channel, str):
                raise DetectorMessageError("bad_image", f"data channel {channel!r} is not text")
            if not isinstance(array, np.ndarray) or array.ndim != 2 or array.dtype.kind not in "uif":
                what = (
                    f"{array.ndim}-D {array.dtype}" if isinstance(array, np.ndarray) else type(array).__name__
                )
                raise DetectorMessageError("bad_image", f"data/{channel} is {what}, not a 2-D numeric array")
            data[channel] = little_endian(array)
        return DetectorImage(
            series_id=series_id,
            series_unique_id=unique,
            image_id=image_id,
            data=data,
            real_time=_rational(msg.get("real_time"), "real_time"),
            start_time=_rational(msg.get("start_time"), "start_time"),
            stop_time=_rational(msg.get("stop_time"), "stop_time"),
            series_date=_date(msg.get("series_date"), "series_date"),
            user_data=jsonable(msg.get("user_data"), "user_data"),
            fields={str(k): jsonable(v, str(k)) for k, v in msg.items() if k not in _IMAGE_FIELDS},
        )
