"""The server's config (``acqzarr serve CONFIG``): where to listen, where to write, how much to trust.

Validated like session configs (pydantic, ``extra="forbid"``, ConfigError
naming the key path) before a socket is bound.  Network exposure is opt-in:
every endpoint is loopback or ipc unless ``allow_remote`` is set or CURVE
authentication is configured.  Detector inputs (``detectors``) are the
exception by nature: the detector binds and acqzarr connects to it, usually
across a detector network, so their ``connect`` may be any address
(``DetectorInput``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..engine.memory import plan_memory
from ..errors import ConfigError
from ..settings import Blosc, S3Settings, StreamSettings, format_validation_error, load_mapping
from ..settings.locations import is_s3, split_s3
from ..settings.names import KEY_SEGMENT
from ..settings.overrides import apply_overrides
from .protocol import SERVER_FIELDS

__all__ = [
    "DETECTOR_PROTOCOLS",
    "STORE_FIELDS",
    "CurveServer",
    "DetectorInput",
    "ServeConfig",
    "endpoint_is_local",
    "load_serve_config",
    "series_memory",
    "series_settings",
]

DETECTOR_PROTOCOLS = ("dectris-stream2", "dectris-stream1")
# The names a detector's store template may use (``DetectorInput.store``).
STORE_FIELDS = ("detector", "series", "series_id", "series_unique_id", "date")
_DEFAULT_ENDPOINTS = ["tcp://127.0.0.1:5555"]

_TCP = re.compile(r"tcp://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>\d+|\*)")


def endpoint_is_local(endpoint: str) -> bool:
    """True for ipc endpoints and tcp endpoints on a loopback address (``localhost``, 127.0.0.0/8, ::1)."""
    if endpoint.startswith("ipc://"):
        return True
    m = _TCP.fullmatch(endpoint)
    if m is None:
        return False
    host = m["host"].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: not provably loopback


def _check_endpoint(value: str) -> str:
    if value.startswith("ipc://"):
        if len(value) <= len("ipc://"):
            raise ValueError("ipc endpoint needs a path, e.g. ipc:///tmp/acqzarr.sock")
        return value
    if not _TCP.fullmatch(value):
        raise ValueError(f"expected tcp://HOST:PORT or ipc://PATH, got {value!r}")
    return value


def series_settings(
    data: Mapping[str, Any],
    store: str,
    overwrite: bool,
    origin: str,
    s3: S3Settings | None = None,
    *,
    resume: bool = False,
) -> StreamSettings:
    """StreamSettings for one series: the sender's or a preset's fields plus the server's store.

    ``protocol.SERVER_FIELDS`` (``store``, ``overwrite``, ``existing``, the
    ``s3`` connection) are the server's decisions; carrying them is an error,
    so a sender cannot point a series elsewhere.  ``resume`` (the series_start
    asked to continue its store) wins over the server's ``overwrite``: a
    series asking to continue its data never has it replaced.
    """
    forbidden = [name for name in SERVER_FIELDS if name in data]
    if forbidden:
        raise ConfigError(f"{origin}: invalid settings\n  {forbidden[0]}: set by the server, not the series")
    fields = {
        **data,
        "store": store,
        "overwrite": overwrite and not resume,
        "existing": "resume" if resume else "error",
        "s3": s3 or S3Settings(),
    }
    return StreamSettings.from_mapping(fields, source=origin)


def series_memory(settings: StreamSettings) -> int:
    """Bytes a series' stream may reserve: its in-flight cap (a stream refuses a cap below what its
    acquisition orders need)."""
    return plan_memory(settings).cap(settings)


class CurveServer(BaseModel):
    """CURVE authentication and encryption of the data sockets (ZeroMQ's ZAP, with key files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_key_file: str = Field(
        description="The server's certificate with its secret key (a '.key_secret' file written by "
        "zmq.auth.create_certificates)."
    )
    authorized_keys_dir: str = Field(
        description="Directory of the public certificates ('.key' files) of the senders allowed in; "
        "any other sender fails the handshake and none of its messages arrive."
    )

    @model_validator(mode="after")
    def _files_exist(self) -> CurveServer:
        if not Path(self.secret_key_file).is_file():
            raise ValueError(f"secret_key_file {self.secret_key_file!r}: no such file")
        if not Path(self.authorized_keys_dir).is_dir():
            raise ValueError(f"authorized_keys_dir {self.authorized_keys_dir!r}: no such directory")
        return self


class DetectorInput(BaseModel):
    """One detector streaming its series to the server (DECTRIS SIMPLON Stream V2 or V1).

    The detector binds a PUSH socket and acqzarr *connects* a PULL socket to
    it, the reverse of acqzarr's own protocol; ZeroMQ reconnects by itself,
    so a detector that is off, restarts or goes away is connected to again
    when it is back.  ``connect`` may be any address: acqzarr opens no port
    for it, but what arrives is neither authenticated nor encrypted (the
    SIMPLON streams have no CURVE), so whoever answers at that address
    writes series under ``root``; keep detectors on a network of their own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="The detector's name: in status, logs, the session record and the store template."
    )
    protocol: Literal["dectris-stream2", "dectris-stream1"] = Field(
        description="dectris-stream2: SIMPLON Stream V2 (CBOR, port 31001); dectris-stream1: the "
        "legacy Stream V1 (multipart JSON + binary, port 9999)."
    )
    connect: str = Field(
        description="The detector's PUSH endpoint, tcp://HOST:PORT (or ipc://PATH): acqzarr connects "
        "a PULL socket there and reconnects whenever the detector comes back."
    )
    store: str = Field(
        default="{detector}/{series}.zarr",
        description="Where each series' store goes under root: a template of {detector} (name), "
        "{series_unique_id} and {series_id} (as the detector sends them; 'none' when it does not) and "
        "{series} (series_unique_id, else series_id), and {date} (when the start arrived, UTC, "
        "20261207T060000). Path characters in the ids are replaced by '_'; an existing store is never "
        "overwritten (the series is refused, 'series_exists'). Stream V1 has no series_unique_id and "
        "its series ids start again when the detector is initialized, so its default is "
        "'{detector}/{date}_{series_id}.zarr'.",
    )
    version: Literal[2, 3] = Field(default=3, description="Zarr format of the series' stores.")
    frames_per_chunk: int = Field(
        default=1,
        ge=1,
        description="Images per chunk along t: 1 keeps each image its own chunk (any image readable "
        "alone, images may arrive in any order within a shard).",
    )
    chunks_per_shard: int = Field(
        default=16,
        ge=1,
        description="Chunks per shard along t (Zarr v3; ignored for v2): fewer, larger files.",
    )
    compression: Blosc | None = Field(
        default_factory=lambda: Blosc(cname="lz4", clevel=1, shuffle="bit"),
        description="Chunk compression; bit-shuffle + LZ4 (what the detectors use themselves) suits "
        "counting data. null stores raw chunks.",
    )
    idle_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds without a message for an open series before it is finalized as incomplete "
        "(its end was lost). Set it above the longest pause between triggers.",
    )
    rcvhwm: int = Field(
        default=4,
        ge=1,
        description="Receive high-water mark of the PULL socket, in messages. What it may hold, a "
        "frame a message, comes out of each series' in-flight cap, with the decode queue's share "
        "(docs/detectors.md, Memory): 4 frames of an EIGER2 4M are 34 MiB.",
    )
    decode_threads: int = Field(
        default=2, ge=1, le=64, description="Threads decoding this detector's messages in parallel."
    )
    max_id_jump: int = Field(
        default=100_000,
        ge=1,
        description="An image_id more than this past the highest one taken so far (or past 0 for the "
        "first) is refused ('bad_image'): every id jumped over is a hole the close writes, so a corrupt "
        "id of 10**9 would keep a finalize thread busy for hours.",
    )
    tile: tuple[int, int] | None = Field(
        default=None,
        description="Chunk (y, x) of a frame, for viewers that read a region of large frames; null "
        "keeps each frame whole in its chunk. With Zarr v3 a shard still holds whole frames.",
    )
    threads: int | None = Field(
        default=None, ge=1, description="Compression threads of each series' stream; null: one per core."
    )
    fsync: bool = Field(
        default=False,
        description="fsync every chunk and document written (survives a power cut, not only a crash).",
    )

    @field_validator("tile")
    @classmethod
    def _tile_is_positive(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and min(v) < 1:
            raise ValueError(f"tile sizes must be at least 1, got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _stream1_stores_are_dated(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("protocol") == "dectris-stream1" and "store" not in data:
            return {**data, "store": "{detector}/{date}_{series_id}.zarr"}
        return data

    @field_validator("name")
    @classmethod
    def _name_is_a_segment(cls, v: str) -> str:
        if not KEY_SEGMENT.fullmatch(v):
            raise ValueError(
                f"a detector name is letters, digits, '_', '.', '-' (no leading '.' or '-'), got {v!r}"
            )
        return v

    @field_validator("connect")
    @classmethod
    def _connect_parses(cls, v: str) -> str:
        _check_endpoint(v)
        if v.startswith("tcp://") and v.rsplit(":", 1)[1] == "*":
            raise ValueError(f"{v!r}: connect needs the detector's port, not '*'")
        return v

    @field_validator("store")
    @classmethod
    def _store_template(cls, v: str) -> str:
        try:
            path = v.format(**dict.fromkeys(STORE_FIELDS, "x"))
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"{v!r}: a template of {{{'}, {'.join(STORE_FIELDS)}}} only ({exc})") from None
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{v!r}: a relative path under root, without '.', '..' or empty parts")
        if "{series" not in v:
            raise ValueError(
                f"{v!r}: name each series' store with {{series}}, {{series_id}} or {{series_unique_id}}"
            )
        return v


class ServeConfig(BaseModel):
    """`acqzarr serve` settings: endpoints, socket pattern, store root, limits, security, status."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str = Field(
        description="Where the series' stores are created, one per series_id: a directory, or "
        "s3://bucket/prefix (connection in `s3`)."
    )
    s3: S3Settings = Field(
        default_factory=S3Settings,
        description="Object storage connection when root is s3://bucket/prefix (ignored otherwise).",
    )
    endpoints: list[str] = Field(
        default=_DEFAULT_ENDPOINTS,
        description="Where the data socket for acqzarr senders binds: tcp://HOST:PORT and/or "
        "ipc://PATH. Loopback by default; other addresses need allow_remote or curve. With detectors "
        "and no endpoints given, none is bound ([] binds none either).",
    )
    detectors: list[DetectorInput] = Field(
        default_factory=list,
        description="Detectors whose series the server writes (it connects to each); see DetectorInput.",
    )
    socket: Literal["pull", "sub"] = Field(
        default="pull",
        description="pull: senders PUSH and block when the writer is behind (lossless). sub: senders "
        "PUB; a slow writer makes them drop, and the holes in msg_number are counted as gaps.",
    )
    rcvhwm: int = Field(
        default=4,
        ge=1,
        description="Receive high-water mark in messages. Small on purpose: 4 frames of 2048x2048 "
        "uint16 is 32 MiB (ZeroMQ's default of 1000 would be 8 GiB).",
    )
    presets: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named stream settings (StreamSettings fields without "
        f"{'/'.join(SERVER_FIELDS)}) a series_start may name instead of carrying its own.",
    )
    allow_sender_settings: bool = Field(
        default=True,
        description="Accept settings carried in series_start; false allows presets only (the server "
        "then decides every array size and memory budget).",
    )
    overwrite: bool = Field(
        default=False,
        description="Replace a series' existing store; without it a repeated series_id is rejected.",
    )
    idle_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds without a message for an open series before it is finalized with what "
        "arrived and marked incomplete (the sender vanished).",
    )
    max_open_series: int = Field(
        default=1,
        ge=1,
        description="Series held at once, open, opening or still being finalized; each holds a stream "
        "and its band buffers. Another series_start is rejected ('busy') while this many are open or "
        "starting, and waits (its messages held, see max_waiting_bytes) while some of them are "
        "finalizing.",
    )
    max_waiting_bytes: int = Field(
        default=256 * 2**20,
        ge=1,
        description="Bytes of messages held for series that are not open yet (waiting for a "
        "finalizing series' slot, or for their store to open), in arrival order, while the socket "
        "goes on serving the other series; at this many the socket is left unread until one opens.",
    )
    max_series_memory: int = Field(
        default=8 * 2**30,
        ge=1,
        description="Largest memory reservation a series may ask for (its max_inflight_bytes, or two "
        "layers per array by default), in bytes; a series_start needing more is rejected ('settings'), "
        "so a sender cannot make the server allocate what the machine does not have.",
    )
    max_header_bytes: int = Field(default=65536, ge=256, description="Longest header accepted, in bytes.")
    max_message_bytes: int = Field(
        default=2**30,
        ge=1024,
        description="ZeroMQ's MAXMSGSIZE: a peer sending a larger message part is disconnected.",
    )
    max_user_data_bytes: int = Field(
        default=2**20,
        ge=0,
        description="Per-frame user_data kept per series (JSON bytes); beyond it, frames still land "
        "and the user_data left out is counted in the session record.",
    )
    allow_remote: bool = Field(
        default=False,
        description="Allow binding non-loopback tcp addresses without CURVE (anyone who can reach the "
        "port can write series).",
    )
    curve: CurveServer | None = Field(
        default=None, description="CURVE authentication and encryption of the data socket."
    )
    status_endpoint: str | None = Field(
        default=None,
        description="REP socket answering any request with the live counters as JSON "
        "(`acqzarr status ENDPOINT`); never CURVE, so loopback or ipc unless allow_remote.",
    )
    status_interval: float = Field(
        default=1.0, gt=0, description="Seconds between console status lines (and fps averaging)."
    )
    drain_timeout: float = Field(
        default=2.0,
        ge=0,
        description="On SIGTERM/SIGINT, seconds to keep taking frames already queued before the open "
        "series are finalized.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_default_endpoint_for_detectors(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("detectors") and "endpoints" not in data:
            return {**data, "endpoints": []}
        return data

    @model_validator(mode="after")
    def _inputs_are_distinct(self) -> ServeConfig:
        if not self.endpoints and not self.detectors:
            raise ValueError("nothing to serve: give endpoints (acqzarr senders) or detectors")
        seen: dict[str, int] = {}
        for i, d in enumerate(self.detectors):
            if d.name in seen:
                raise ValueError(f"detectors.{i}.name: {d.name!r} is also detectors.{seen[d.name]}'s")
            seen[d.name] = i
        connects = [d.connect for d in self.detectors]
        for i, c in enumerate(connects):
            if c in connects[:i]:
                raise ValueError(f"detectors.{i}.connect: {c!r} is another detector's too")
        return self

    @field_validator("endpoints")
    @classmethod
    def _endpoints_parse(cls, v: list[str]) -> list[str]:
        for e in v:
            _check_endpoint(e)
        return v

    @field_validator("status_endpoint")
    @classmethod
    def _status_parses(cls, v: str | None) -> str | None:
        return None if v is None else _check_endpoint(v)

    @field_validator("root")
    @classmethod
    def _root_is_a_directory_or_s3(cls, v: str) -> str:
        if "://" in v and not is_s3(v):
            raise ValueError(f"{v!r}: use a directory or s3://bucket/prefix")
        if is_s3(v):
            split_s3(v)  # a bucket and a prefix, or a ValueError saying so
        return v.rstrip("/") if is_s3(v) else v

    @field_validator("presets")
    @classmethod
    def _presets_are_settings(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, data in v.items():
            try:
                series_settings(data, "preset-check", False, f"presets.{name}")
            except ConfigError as exc:
                raise ValueError(str(exc).replace("\n ", "")) from None
        return v

    @model_validator(mode="after")
    def _exposure_is_explicit(self) -> ServeConfig:
        if self.allow_remote:
            return self
        remote = [e for e in self.endpoints if not endpoint_is_local(e)]
        if remote and self.curve is None:
            raise ValueError(
                f"endpoints {remote} are not loopback: set curve (authenticated senders only) or "
                "allow_remote: true (anyone who reaches the port)"
            )
        if self.status_endpoint is not None and not endpoint_is_local(self.status_endpoint):
            raise ValueError(
                f"status_endpoint {self.status_endpoint!r} is not loopback (and never CURVE): "
                "set allow_remote: true"
            )
        return self


def load_serve_config(
    path: str | Path, sets: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> ServeConfig:
    """Read and validate a server config; --set overrides apply first. Raises ConfigError naming the key."""
    data = load_mapping(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data = apply_overrides(data, sets, {} if environ is None else environ, ServeConfig.model_fields)
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
