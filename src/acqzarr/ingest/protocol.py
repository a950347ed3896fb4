"""The acqzarr ingest wire protocol, version 1.1 (docs/protocol.md is the prose version).

Every message is two ZeroMQ frames, ``[header, payload]``: a small JSON
header validated here, then the bytes.  The design follows the DECTRIS
Stream and slsDetector formats (a typed header per message, start and end
of series messages around the data), with a per-series message counter
(``msg_number``) so a receiver can count what a lossy transport dropped.

Versions: every header carries ``version``, the *major* version (1); a
server refuses any other.  A *minor* version adds optional header fields
whose default keeps the older meaning (``MINOR_FIELDS``, the one place that
says which): a sender leaves such a field out while it holds its default, so
what it sends an older server is byte for byte what that server knows, and
sends it only to ask for the newer behaviour.  An older server refuses a
header carrying a field it does not know (``header``, unknown field): a
request it cannot honour is never taken for an older one.  The status answer
says the server's minor version (``protocol_minor``), so a sender can tell
such a refusal from silence.

Parsing never trusts the sender: every failure is a ``ProtocolError`` whose
``reason`` is one of ``REASONS``, the names the server counts rejections
under.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Final, Literal

import blosc2
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ProtocolError
from ..settings import DTYPES, is_key_path, is_key_segment

__all__ = [
    "MINOR_FIELDS",
    "PROTOCOL_MINOR",
    "PROTOCOL_VERSION",
    "REASONS",
    "SERVER_FIELDS",
    "Frame",
    "Header",
    "SeriesEnd",
    "SeriesStart",
    "decode_payload",
    "encode_header",
    "encode_payload",
    "frame_nbytes",
    "minor_needed",
    "parse_header",
    "protocol_text",
    "valid_key",
    "valid_series_id",
]

PROTOCOL_VERSION: Final = 1  # the major version, in every header's ``version``
PROTOCOL_MINOR: Final = 1  # 1.1: series_start's ``resume``
# The optional header fields each minor version added, with the minor version that added it.  Such a
# field is left out of a header while it holds its default (``encode_header``), and a header that
# sets it needs a server of that minor version (``minor_needed``).
MINOR_FIELDS: Final[dict[str, int]] = {"resume": 1}

# Why a message was rejected; the server counts each under exactly one of these.
REASONS: dict[str, str] = {
    "parts": "not exactly two message parts [header, payload]",
    "header_size": "header longer than the server's max_header_bytes",
    "json": "header is not a UTF-8 JSON object",
    "version": "unsupported protocol version",
    "header": "header does not match its schema (unknown htype, missing or unknown field, wrong type)",
    "bad_path": "series_id or key is not a safe relative name (path traversal, separators, odd characters)",
    "unknown_series": "frame or series_end for a series that was never started",
    "series_ended": "message for a series that is already finalized",
    "series_open": "series_start for a series that is already open",
    "busy": "series_start while the server already has max_open_series open",
    "series_exists": "series_start whose store already exists (the server does not overwrite, and the "
    "series did not ask to resume)",
    "resume": "series_start asking to resume a store the server cannot continue: written with other "
    "settings (each mismatch named), not written by acqzarr, with a pyramid, or where a detector input "
    "writes; the store is unchanged",
    "settings": "series_start with invalid, forbidden or unknown (preset) stream settings",
    "store": "the series' store could not be created",
    "out_of_order": "msg_number not above the last one seen in the series (duplicate or reordered)",
    "unknown_key": "frame for an array key the series does not have",
    "frame_mismatch": "frame shape or dtype differs from the array's frame",
    "payload_size": "payload length differs from what the header implies",
    "decode": "blosc2 payload that does not decompress",
    "append": "the stream refused the frame (e.g. past a bounded append axis) or its writer failed",
    "shutdown": "message of a series still waiting for a slot, or a detector's message received but not "
    "applied, when the server shut down",
    "internal": "an unexpected error while handling the message (a bug; logged with its traceback)",
    # Detector inputs (``detectors.py``, ``dectris/``; docs/detectors.md).  They also count bad_path
    # (a store template resolving outside root), series_exists, store, shutdown and internal.
    "malformed": "detector: a message the decoder cannot read (not CBOR or JSON, a field of the wrong type)",
    "unknown_type": "detector: a message type that is not start, image or end",
    "bad_compression": "detector: a compressed payload that is corrupt, truncated or declares too much",
    "bad_start": "detector: a start that opens no series (a field out of range, a geometry no store takes, "
    "more memory than max_series_memory)",
    "bad_image": "detector: an image of the wrong size, dtype or channels, or an image_id out of range",
    "duplicate_image": "detector: an image_id that arrived already in its series",
    "image_without_start": "detector: an image while no series is open",
    "image_after_end": "detector: an image of a series that has ended",
    "series_refused": "detector: an image of a series whose start was refused",
    "wrong_series": "detector: an image or end whose ids are not the open series'",
    "end_without_start": "detector: an end while no series is open",
    "empty_series": "detector: a series without a dtype that ended before its first image (no store)",
    "start_while_open": "detector: a start while a series was open (that one is finalized as incomplete)",
    "write_error": "detector: the series' writer failed (the series is finalized with what is stored)",
}

# StreamSettings fields that are the server's decision, never the series': where the store goes
# (``store``, under the server's root), whether it may replace or continue one (``overwrite``,
# ``existing``) and the object store's connection (``s3``).  The server refuses a series_start (or
# preset) carrying any of them, ``Sender`` leaves them out of a StreamSettings it sends, and the
# SeriesStart reference names them, all from this one tuple.
SERVER_FIELDS: Final = ("store", "overwrite", "existing", "s3")
_SERVER_FIELDS_TEXT = ", ".join(f"`{name}`" for name in SERVER_FIELDS)

MAX_SERIES_ID = 128


def valid_series_id(value: str) -> bool:
    """series_id names a directory under the server's root: one key segment (``settings``' rule),
    with no '..' anywhere, at most 128 characters."""
    return len(value) <= MAX_SERIES_ID and is_key_segment(value) and ".." not in value


def valid_key(value: str) -> bool:
    """An array key as ArraySettings allows it (``settings.is_key_path``)."""
    return is_key_path(value)


class _Header(BaseModel):
    # Strict: a wire format says what a value is; "3", 3.0 and true are not the integer 3.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Literal[1] = Field(
        description="Protocol major version: 1. A minor version adds optional fields only (1.1: "
        "series_start's `resume`), so every 1.x header says 1."
    )
    series_id: str = Field(
        description="Names the series and its store directory under the server's root: 1-128 of "
        "letters, digits, '_', '.', '-', not starting with '.', no '..'."
    )
    msg_number: int = Field(
        ge=0,
        description="The sender's counter over every message of the series (0 is series_start), "
        "incremented also for messages it had to drop: the receiver counts the holes as gaps.",
    )


class SeriesStart(_Header):
    """Opens a series: the stream settings its store is written with (carried, or a named preset)."""

    htype: Literal["series_start"] = Field(description="Message type.")
    settings: dict[str, Any] | None = Field(
        default=None,
        description=f"StreamSettings fields except {_SERVER_FIELDS_TEXT} (the server's: where the "
        "store goes, whether it may replace one, the object store's connection; a series carrying "
        "one is rejected, reason `settings`); exactly one of settings and preset.",
    )
    preset: str | None = Field(default=None, description="Name of settings in the server's config `presets`.")
    timestamp_ns: int | None = Field(default=None, description="Sender clock, nanoseconds.")
    user_data: Any = Field(default=None, description="Any JSON; stored in the session record.")
    resume: bool = Field(
        default=False,
        description="Protocol 1.1. Continue the store `root/<series_id>` if it exists (at the extent it "
        "published, with the same arrays; its session record gains a segment) instead of being "
        "rejected (`series_exists`); a store that does not exist is started. A store written with "
        "other settings is rejected (`resume`) naming every mismatch, untouched. A 1.0 server rejects "
        "a series_start carrying it (`header`: unknown field), so it never starts a new store instead.",
    )

    @model_validator(mode="after")
    def _settings_or_preset(self) -> SeriesStart:
        if (self.settings is None) == (self.preset is None):
            raise ValueError("exactly one of settings and preset is required")
        return self


class Frame(_Header):
    """One frame for array ``key``: its identity, geometry and encoding; the payload holds the samples."""

    htype: Literal["frame"] = Field(description="Message type.")
    key: str = Field(description="Array (camera) the frame belongs to, one of the series' array keys.")
    frame_id: int = Field(ge=0, description="The camera's frame counter (stored per frame).")
    shape: tuple[int, ...] = Field(
        min_length=1,
        max_length=4,
        description="Frame shape, the array's last axes (usually (y, x)), each >= 1.",
    )
    dtype: Literal[DTYPES] = Field(description="Sample type; samples are little-endian, C order.")  # type: ignore[valid-type]
    encoding: Literal["raw", "blosc2"] = Field(
        default="raw",
        description="Payload encoding: raw samples, or one blosc2 chunk (transport compression only).",
    )
    timestamp_ns: int = Field(description="Acquisition time on the sender's clock, nanoseconds.")
    dropped_before: int = Field(
        default=0, ge=0, description="Frames the camera lost before this one (stored per frame)."
    )
    user_data: Any = Field(default=None, description="Any JSON; kept per frame, within the server's cap.")

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 1 for n in v):
            raise ValueError(f"every frame axis must be >= 1, got {v}")
        return v


class SeriesEnd(_Header):
    """Closes a series: the server flushes, writes the session record and finalizes the store."""

    htype: Literal["series_end"] = Field(description="Message type.")
    timestamp_ns: int | None = Field(default=None, description="Sender clock, nanoseconds.")
    user_data: Any = Field(default=None, description="Any JSON; stored in the session record.")


Header = Annotated[SeriesStart | Frame | SeriesEnd, Field(discriminator="htype")]
_HEADER: TypeAdapter[SeriesStart | Frame | SeriesEnd] = TypeAdapter(Header)


def protocol_text(minor: int = PROTOCOL_MINOR) -> str:
    """The protocol version as people write it, e.g. '1.1'."""
    return f"{PROTOCOL_VERSION}.{minor}"


def _at_default(header: BaseModel, name: str) -> bool:
    field = type(header).model_fields.get(name)
    return field is None or getattr(header, name) == field.default


def minor_needed(header: SeriesStart | Frame | SeriesEnd) -> int:
    """The minor version a server needs to honour ``header``: the newest of the minor-version
    fields it sets (0 when it sets none, which every 1.x server reads)."""
    return max((minor for name, minor in MINOR_FIELDS.items() if not _at_default(header, name)), default=0)


def encode_header(header: SeriesStart | Frame | SeriesEnd) -> bytes:
    """The header's JSON: None fields and minor-version fields at their default left out, so a
    header that asks for nothing newer is one any 1.x server takes."""
    skip = {name for name in MINOR_FIELDS if name in type(header).model_fields and _at_default(header, name)}
    return header.model_dump_json(exclude_none=True, exclude=skip).encode()


def parse_header(raw: bytes, max_bytes: int) -> SeriesStart | Frame | SeriesEnd:
    """Validate a header; raises ProtocolError with the reason the server counts it under."""
    if len(raw) > max_bytes:
        raise ProtocolError("header_size", f"{len(raw)} bytes, the limit is {max_bytes}")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("json", f"not UTF-8 JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ProtocolError("json", f"expected a JSON object, got {type(doc).__name__}")
    version = doc.get("version")
    if isinstance(version, bool):  # JSON true would otherwise pass as the integer 1
        raise ProtocolError("header", f"version: expected an integer, got {version!r}")
    if isinstance(version, int) and version != PROTOCOL_VERSION:
        raise ProtocolError("version", f"this server speaks version {PROTOCOL_VERSION}, got {version}")
    series_id = doc.get("series_id")
    if isinstance(series_id, str) and not valid_series_id(series_id):
        raise ProtocolError("bad_path", f"series_id {series_id!r} is not a plain directory name")
    key = doc.get("key")
    if doc.get("htype") == "frame" and isinstance(key, str) and not valid_key(key):
        raise ProtocolError("bad_path", f"key {key!r} is not a relative array path")
    try:
        return _HEADER.validate_json(raw)  # JSON mode: arrays are tuples, nothing else is coerced
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise ProtocolError("header", problems) from None


def frame_nbytes(header: Frame) -> int:
    return int(math.prod(header.shape) * np.dtype(header.dtype).itemsize)


def decode_payload(
    header: Frame, payload: memoryview, out: np.ndarray[Any, Any] | None
) -> np.ndarray[Any, Any]:
    """The frame's samples: a view of ``payload`` (raw), or decompressed into ``out`` (blosc2).

    Sizes are checked against the header before anything is read, so a
    short, long or lying payload is a ProtocolError, never a crash.
    """
    expected = frame_nbytes(header)
    dtype = np.dtype(header.dtype).newbyteorder("<")
    if header.encoding == "raw":
        if payload.nbytes != expected:
            raise ProtocolError(
                "payload_size",
                f"{payload.nbytes} bytes for {header.shape} {header.dtype}, expected {expected}",
            )
        return np.frombuffer(payload, dtype=dtype).reshape(header.shape)
    try:
        nbytes, cbytes, _ = blosc2.get_cbuffer_sizes(payload)
    except Exception as exc:  # blosc2 raises several types for garbage
        raise ProtocolError("decode", f"not a blosc2 chunk ({exc})") from None
    if nbytes != expected or cbytes != payload.nbytes:
        raise ProtocolError(
            "payload_size",
            f"blosc2 chunk of {cbytes} bytes ({payload.nbytes} received) decoding to {nbytes}, "
            f"expected {expected} for {header.shape} {header.dtype}",
        )
    if out is None or out.nbytes != expected:
        out = np.empty(header.shape, dtype)
    try:
        blosc2.decompress(payload, dst=out)
    except Exception as exc:
        raise ProtocolError("decode", f"blosc2 chunk does not decompress ({exc})") from None
    decoded: np.ndarray[Any, Any] = out.view(dtype).reshape(header.shape)
    return decoded


def encode_payload(frame: np.ndarray[Any, Any], encoding: str, clevel: int = 1) -> Any:
    """The payload for ``frame``: the array itself (raw, sent without a copy) or a blosc2 chunk.

    blosc2 (lz4, byte shuffle) is transport compression only: the server
    stores frames with the series' own chunk codec.
    """
    if encoding == "raw":
        return frame
    return blosc2.compress(
        frame,
        typesize=frame.dtype.itemsize,
        clevel=clevel,
        filter=blosc2.Filter.SHUFFLE,
        codec=blosc2.Codec.LZ4,
    )
