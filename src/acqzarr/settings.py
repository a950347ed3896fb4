"""Settings for a stream, as pydantic models.

Every field carries a description: these models are the config-file reference
(``StreamSettings.from_file``) as well as the Python API, so a typo in a YAML
key fails with the key path instead of being ignored (``extra="forbid"``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .locations import is_s3, join_key, split_s3
from .metadata.zarr_versions import spec_for

__all__ = [
    "DTYPES",
    "Acquisition",
    "ArraySettings",
    "Blosc",
    "Channel",
    "Dimension",
    "Multiscale",
    "Plate",
    "Position",
    "S3Settings",
    "StreamSettings",
    "dtype_name",
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

# UDUNITS-2 names that OME-NGFF 0.4/0.5 lists for space and time axes.
SPACE_UNITS = frozenset(
    [
        "angstrom",
        "attometer",
        "centimeter",
        "decimeter",
        "exameter",
        "femtometer",
        "foot",
        "gigameter",
        "hectometer",
        "inch",
        "kilometer",
        "megameter",
        "meter",
        "micrometer",
        "mile",
        "millimeter",
        "nanometer",
        "parsec",
        "petameter",
        "picometer",
        "terameter",
        "yard",
        "yoctometer",
        "yottameter",
        "zeptometer",
        "zettameter",
    ]
)
TIME_UNITS = frozenset(
    [
        "attosecond",
        "centisecond",
        "day",
        "decisecond",
        "exasecond",
        "femtosecond",
        "gigasecond",
        "hectosecond",
        "hour",
        "kilosecond",
        "megasecond",
        "microsecond",
        "millisecond",
        "minute",
        "nanosecond",
        "petasecond",
        "picosecond",
        "second",
        "terasecond",
        "yoctosecond",
        "yottasecond",
        "zeptosecond",
        "zettasecond",
    ]
)
_UNIT_HINTS = {
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "s": "second",
    "sec": "second",
    "ms": "millisecond",
    "us": "microsecond",
    "µs": "microsecond",
    "ns": "nanosecond",
    "min": "minute",
    "h": "hour",
}

# Blosc1 refuses buffers above BLOSC_MAX_BUFFERSIZE (INT32_MAX - 16 bytes of overhead).
MAX_CHUNK_BYTES = 2**31 - 1 - 16

_KEY_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_COLOR = re.compile(r"^[0-9A-Fa-f]{6}$")

# The group bioformats2raw.layout puts beside the images of a collection (its ``series`` list).
COLLECTION_GROUP = "OME"
# The index entry that selects a position in ``Stream.append(..., index={"p": i})``.
POSITION_AXIS = "p"

# An array-protocol type string ('<u2', 'u2', '|u1'); numpy's one-letter codes and C names ('H',
# 'int', 'long') are left out because their width depends on the platform.
_TYPESTR = re.compile(r"^[<>=|]?[uif][0-9]+$")


def is_key_segment(value: str) -> bool:
    """One plain name in a store path: letters, digits, '_', '.', '-', not starting with '.' or '-'."""
    return bool(_KEY_SEGMENT.fullmatch(value)) and value not in (".", "..")


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


@contextmanager
def _config_errors(source: str, prefix: str = "") -> Iterator[None]:
    """Turn pydantic's ValidationError into a ConfigError, one key-path line per problem."""
    try:
        yield
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, prefix)) from None


class _Model(BaseModel):
    """Base of the settings models: unknown keys are errors, instances are immutable, and every way
    of validating one (constructor, ``model_validate*``, ``from_mapping``, assignment) raises
    ConfigError, never pydantic's ValidationError.

    A model nested in another is validated by pydantic's core in one pass, so its problems appear
    once, under their full key path, in the outer model's error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        with _config_errors(type(self).__name__):
            super().__init__(**data)

    # Marks the override as pydantic's own __init__ (RootModel does the same): otherwise pydantic
    # calls __init__ for every nested model, and a nested problem would arrive as a ConfigError
    # wrapped in the outer model's error instead of as a line with its key path.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        with _config_errors(type(self).__name__):
            super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        with _config_errors(type(self).__name__):
            super().__delattr__(name)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        with _config_errors(cls.__name__):
            return super().model_validate(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        with _config_errors(cls.__name__):
            return super().model_validate_json(json_data, **kwargs)

    @classmethod
    def model_validate_strings(cls, obj: Any, **kwargs: Any) -> Self:
        with _config_errors(cls.__name__):
            return super().model_validate_strings(obj, **kwargs)

    @classmethod
    def from_mapping(cls, data: Any, source: str = "settings", prefix: str = "") -> Self:
        """Validate a mapping, naming ``source`` (e.g. the config file) in the ConfigError.

        ``prefix`` is the mapping's key path inside a larger document (``"s3"`` for the s3 section
        given on its own); it starts every problem's key path.
        """
        with _config_errors(source, prefix):
            return super().model_validate(data)


class Dimension(_Model):
    """One axis of an array, with its chunking and physical meaning."""

    name: str = Field(description="Axis name, e.g. 't', 'c', 'z', 'y', 'x'; unique in the array.")
    kind: Literal["space", "channel", "time", "other"] = Field(
        description="OME-NGFF axis type: space, channel, time or other (written as a custom type)."
    )
    size: int = Field(
        ge=0,
        description="Extent of the axis. 0 means unbounded, which only the first (append) axis may be.",
    )
    chunk: int = Field(ge=1, description="Chunk length along this axis, in samples.")
    shard: int = Field(
        default=1,
        ge=1,
        description="Chunks per shard along this axis (Zarr v3 only; must be 1 for Zarr v2).",
    )
    unit: str | None = Field(
        default=None,
        description="UDUNITS-2 unit name as OME-NGFF requires, e.g. 'micrometer' or 'millisecond'.",
    )
    scale: float = Field(
        default=1.0,
        gt=0,
        description="Physical size of one sample along this axis, in `unit`.",
    )

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, v: str) -> str:
        if not v or not re.fullmatch(r"[A-Za-z0-9_]+", v):
            raise ValueError(f"axis name must be letters, digits or '_', got {v!r}")
        return v

    @field_validator("scale")
    @classmethod
    def _scale_is_finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"scale must be finite, got {v}")
        return v

    @model_validator(mode="after")
    def _unit_fits_kind(self) -> Dimension:
        if self.unit is None:
            return self
        allowed = {"space": SPACE_UNITS, "time": TIME_UNITS}.get(self.kind)
        if allowed is None:
            raise ValueError(f"a {self.kind} axis has no unit in OME-NGFF, got unit={self.unit!r}")
        if self.unit not in allowed:
            hint = _UNIT_HINTS.get(self.unit)
            suggestion = f"; did you mean {hint!r}?" if hint in allowed else ""
            raise ValueError(
                f"unit {self.unit!r} is not a UDUNITS-2 {self.kind} unit that OME-NGFF allows{suggestion}"
            )
        return self


class Blosc(_Model):
    """Blosc1 compression of each chunk: the Zarr ``blosc`` codec, readable by every Zarr reader."""

    cname: Literal["lz4", "lz4hc", "zstd", "blosclz", "zlib"] = Field(
        default="lz4", description="Compressor inside Blosc."
    )
    clevel: int = Field(default=1, ge=0, le=9, description="Compression level, 0 (none) to 9.")
    shuffle: Literal["none", "byte", "bit"] = Field(
        default="byte", description="Shuffle filter applied before compression."
    )


class Multiscale(_Model):
    """A downsampled pyramid written while streaming (every space axis halves per level)."""

    levels: int | Literal["auto"] = Field(
        default="auto",
        description="Number of levels including full resolution (1 = none), or 'auto': add levels "
        "until one fits a single chunk along every downsampled axis.",
    )
    method: Literal["decimate", "mean", "min", "max"] = Field(
        default="mean",
        description="How 2x2(x2) blocks reduce: decimate (first sample), mean (integers round half "
        "up, exactly), min or max. Odd sizes replicate the edge sample.",
    )

    @field_validator("levels")
    @classmethod
    def _levels_in_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 16:
            raise ValueError(f"levels must be 1 to 16 or 'auto', got {v}")
        return v


def _finite(v: float | None, what: str) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v}")
    return v


class Channel(_Model):
    """How viewers name and show one channel index: written into the OME-NGFF ``omero`` block."""

    label: str = Field(min_length=1, description="Channel name shown by viewers, e.g. 'DAPI'.")
    color: str | None = Field(
        default=None,
        description="Display colour as 6 hex digits RRGGBB, e.g. '00FF00'; null takes a distinct "
        "default per channel index (white for a single channel).",
    )
    window: tuple[float, float] | None = Field(
        default=None,
        description="Display contrast (start, end) in sample values; null uses the minimum and "
        "maximum observed while streaming.",
    )

    @field_validator("color")
    @classmethod
    def _color_is_hex(cls, v: str | None) -> str | None:
        if v is not None and not _COLOR.match(v):
            raise ValueError(f"color must be 6 hex digits RRGGBB (e.g. '00FF00'), got {v!r}")
        return None if v is None else v.upper()

    @field_validator("window")
    @classmethod
    def _window_is_ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is None:
            return v
        start, end = v
        _finite(start, "window start")
        _finite(end, "window end")
        if start > end:
            raise ValueError(f"window start must not exceed its end, got ({start}, {end})")
        return v


class ArraySettings(_Model):
    """One array in the stream (typically one camera), written as an OME-NGFF image group."""

    key: str = Field(
        default="",
        description="Path of the image group inside the store; '' puts the image at the store root.",
    )
    dtype: Literal[DTYPES] = Field(  # type: ignore[valid-type]
        description="Sample type of the frames, stored as one of these names; also accepted as a type "
        "string ('<u2', 'u2') or, in Python, a numpy type or dtype (np.uint16, np.dtype('<u2')), "
        "in native byte order."
    )
    dimensions: list[Dimension] = Field(
        min_length=2,
        max_length=5,
        description="Axes from slowest to fastest; the first is the append axis.",
    )
    acquisition_order: list[str] | None = Field(
        default=None,
        description="The index axes (all but the frame axes: the last two, or the last one of a "
        "2-axis array), slowest first, in the order the frames arrive, e.g. [t, z, c] when a "
        "(t, c, z, y, x) array's channels switch for every plane. A plain `append` follows this "
        "order while storage keeps the order of `dimensions`. An unbounded first axis must come "
        "first. null: the storage order.",
    )
    compression: Blosc | None = Field(
        default_factory=Blosc, description="Chunk compression; null stores raw chunks."
    )
    multiscale: Multiscale | None = Field(
        default=None,
        description="Write a resolution pyramid beside full resolution; null writes level 0 only.",
    )
    channels: list[Channel] | None = Field(
        default=None,
        description="Name, colour and contrast of each channel index, as many as the channel axis "
        "holds (exactly one for an array without a channel axis); null labels them '<key> c0', ...",
    )
    # The stage position of an image expanded from ``StreamSettings.positions`` (``images``); not a
    # setting of its own, so private: it travels with the image's settings to its metadata.
    _position: Position | None = PrivateAttr(default=None)
    frame_columns: dict[str, Literal["float64", "int64"]] = Field(
        default_factory=dict,
        description="Per-frame metadata fields stored as typed columns (name -> float64 or int64), "
        "besides the built-in ones (frame_id, timestamp_ns, ..., exposure_ms, stage_x_um, ...; see "
        "the README). Any other field of `append(..., metadata=)` goes to the per-frame JSON column.",
    )

    @field_validator("frame_columns")
    @classmethod
    def _column_names_are_segments(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _KEY_SEGMENT.fullmatch(name) or name == "json":
                raise ValueError(
                    f"a frame column name must be letters, digits, '_', '.', '-' (not starting with "
                    f"'.' or '-') and not 'json' (the JSON column's name), got {name!r}"
                )
        return v

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_is_named(cls, v: object) -> str:
        return dtype_name(v)

    @field_validator("key")
    @classmethod
    def _key_is_relative_path(cls, v: str) -> str:
        if v == "":
            return v
        if not is_key_path(v):
            raise ValueError(
                f"key must be '/'-separated names of letters, digits, '_', '.', '-' "
                f"(no leading '.', no empty, '.' or '..' segments), got {v!r}"
            )
        return v

    @property
    def frame_names(self) -> tuple[str, ...]:
        """The axes of one frame: the last two, or the last one of a 2-axis array."""
        names = tuple(d.name for d in self.dimensions)
        return names[-min(2, len(names) - 1) :]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape of one frame: the sizes of ``frame_names``."""
        return tuple(d.size for d in self.dimensions[len(self.dimensions) - len(self.frame_names) :])

    @property
    def index_names(self) -> tuple[str, ...]:
        """The axes that index frames (every axis but the frame's), in storage order."""
        names = tuple(d.name for d in self.dimensions)
        return names[: len(names) - len(self.frame_names)]

    @property
    def channel_axis(self) -> Dimension | None:
        """The channel axis that indexes the ``omero`` channels: one after the append axis (a channel
        append axis is unbounded or arrives over time, so it is shown as one image)."""
        return next((d for d in self.dimensions[1:] if d.kind == "channel"), None)

    @property
    def channel_count(self) -> int:
        """Channels in the ``omero`` block: the channel axis's size, else one."""
        axis = self.channel_axis
        return 1 if axis is None else axis.size

    @property
    def position(self) -> Position | None:
        """The stage position of this image when it was expanded from ``StreamSettings.positions``."""
        return self._position

    @property
    def acquisition_axes(self) -> tuple[str, ...]:
        """The index axes in the order frames arrive, slowest first (``acquisition_order``, else
        storage order)."""
        return self.index_names if self.acquisition_order is None else tuple(self.acquisition_order)

    @model_validator(mode="after")
    def _dimensions_are_ngff(self) -> ArraySettings:
        dims = self.dimensions
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            raise ValueError(f"dimension names must be unique, got {names}")
        for i, d in enumerate(dims[1:], start=1):
            if d.size == 0:
                raise ValueError(
                    f"dimensions[{i}] ({d.name!r}): size 0 (unbounded) is only allowed on the "
                    "first (append) dimension"
                )
        kinds = [d.kind for d in dims]
        n_space = kinds.count("space")
        if n_space not in (2, 3):
            raise ValueError(f"OME-NGFF needs 2 or 3 space dimensions, got {n_space} in {kinds}")
        if kinds.count("time") > 1:
            raise ValueError(f"at most one time dimension, got {kinds}")
        if kinds.count("channel") + kinds.count("other") > 1:
            raise ValueError(f"at most one channel or other dimension, got {kinds}")
        order = {"time": 0, "channel": 1, "other": 1, "space": 2}
        ranks = [order[k] for k in kinds]
        if ranks != sorted(ranks):
            raise ValueError(f"OME-NGFF orders axes time, then channel/other, then space; got {kinds}")
        itemsize = np.dtype(self.dtype).itemsize
        chunk_bytes = itemsize * math.prod(d.chunk for d in dims)
        if chunk_bytes > MAX_CHUNK_BYTES:
            raise ValueError(
                f"a chunk of {chunk_bytes} bytes exceeds Blosc's limit of {MAX_CHUNK_BYTES} bytes"
            )
        return self

    @model_validator(mode="after")
    def _acquisition_order_is_the_index_axes(self) -> ArraySettings:
        order = self.acquisition_order
        if order is None:
            return self
        index, frame = self.index_names, self.frame_names
        problems = []
        if missing := [n for n in index if n not in order]:
            problems.append(f"missing {missing}")
        if repeated := [n for i, n in enumerate(order) if n in order[:i] and n not in order[i + 1 :]]:
            problems.append(f"repeated {repeated}")
        if framed := [n for i, n in enumerate(order) if n in frame and n not in order[:i]]:
            problems.append(
                f"{framed} {'is a frame axis' if len(framed) == 1 else 'are frame axes'} "
                f"(a frame is {list(frame)}, delivered whole by each append)"
            )
        if unknown := [n for i, n in enumerate(order) if n not in (*index, *frame) and n not in order[:i]]:
            problems.append(f"{unknown} {'is not an axis' if len(unknown) == 1 else 'are not axes'}")
        if problems:
            raise ValueError(
                f"acquisition_order must list each index axis {list(index)} once, in any order; "
                f"got {order}: {'; '.join(problems)}"
            )
        first = self.dimensions[0]
        if first.size == 0 and order[0] != first.name:
            raise ValueError(
                f"acquisition_order: the append axis {first.name!r} is unbounded (size 0), so it must "
                f"come first (no axis can be iterated inside one that never ends); got {order}"
            )
        return self

    @model_validator(mode="after")
    def _channels_match_the_channel_axis(self) -> ArraySettings:
        if self.channels is not None and len(self.channels) != self.channel_count:
            axis = self.channel_axis
            has = f"channel axis {axis.name!r} of size {axis.size}" if axis else "no channel axis"
            raise ValueError(
                f"channels: the array has {has}, so it takes {self.channel_count} channels; "
                f"got {len(self.channels)}"
            )
        return self


class Position(_Model):
    """One stage position: every array of the stream is written once per position."""

    name: str = Field(
        description="Name of the position's group in the store (one path segment, unique), e.g. 'p0'."
    )
    x: float | None = Field(
        default=None, description="Stage x in the x axis's unit; written as a translation of the images."
    )
    y: float | None = Field(default=None, description="Stage y in the y axis's unit.")
    z: float | None = Field(
        default=None,
        description="Stage z in the z axis's unit (ignored for arrays without a space axis named z).",
    )

    @field_validator("name")
    @classmethod
    def _name_is_one_segment(cls, v: str) -> str:
        if not _KEY_SEGMENT.fullmatch(v) or v == COLLECTION_GROUP:
            raise ValueError(
                f"a position name must be one path segment of letters, digits, '_', '.', '-' (not "
                f"starting with '.', not {COLLECTION_GROUP!r}), got {v!r}"
            )
        return v

    @field_validator("x", "y", "z")
    @classmethod
    def _coordinate_is_finite(cls, v: float | None) -> float | None:
        return _finite(v, "a stage coordinate")

    @property
    def translation(self) -> dict[str, float]:
        """The given coordinates by axis name."""
        return {n: v for n, v in (("x", self.x), ("y", self.y), ("z", self.z)) if v is not None}


class Acquisition(_Model):
    """One acquisition (run) of a plate, as OME-NGFF's plate metadata lists it."""

    id: int = Field(ge=0, description="Identifier of the acquisition in the plate, >= 0.")
    name: str | None = Field(default=None, description="Name of the acquisition.")
    description: str | None = Field(default=None, description="Free-text description.")
    maximumfieldcount: int | None = Field(
        default=None, ge=1, description="Most fields of view per well in this acquisition."
    )
    starttime: int | None = Field(default=None, description="Start, as an integer epoch timestamp.")
    endtime: int | None = Field(default=None, description="End, as an integer epoch timestamp.")


class Plate(_Model):
    """A high-content-screening plate: positions laid out as wells in rows and columns, each with
    the same number of fields of view, written as an OME-NGFF plate."""

    name: str | None = Field(default=None, description="Name of the plate.")
    rows: list[str] = Field(
        min_length=1, description="Row names of the physical plate in order, e.g. ['A', 'B', ...]."
    )
    columns: list[str] = Field(
        min_length=1, description="Column names of the physical plate in order, e.g. ['1', '2', ...]."
    )
    wells: list[str] = Field(
        min_length=1,
        description="The wells imaged, as 'row/column' (e.g. 'B/3'), in acquisition order: position "
        "p is field p % fields of well p // fields.",
    )
    fields: int = Field(default=1, ge=1, description="Fields of view per well.")
    acquisitions: list[Acquisition] | None = Field(
        default=None,
        max_length=1,
        description="The acquisition this stream writes (at most one), tagged on every field.",
    )

    @field_validator("rows", "columns")
    @classmethod
    def _names_are_alphanumeric_and_unique(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not (n.isascii() and n.isalnum())]
        if bad:
            raise ValueError(f"row and column names must be letters and digits only, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"names must be unique, got {v}")
        return v

    @model_validator(mode="after")
    def _wells_are_on_the_plate(self) -> Plate:
        if len(set(self.wells)) != len(self.wells):
            raise ValueError(f"wells must be unique, got {self.wells}")
        for well in self.wells:
            row, sep, column = well.partition("/")
            if not sep or row not in self.rows or column not in self.columns:
                raise ValueError(
                    f"well {well!r} must be 'row/column' with a row of {self.rows} and a column of "
                    f"{self.columns}"
                )
        return self

    @property
    def paths(self) -> list[str]:
        """The image path of every position: '<row>/<column>/<field>', well by well."""
        return [f"{well}/{field}" for well in self.wells for field in range(self.fields)]


class S3Settings(_Model):
    """Object storage connection for ``store: s3://bucket/prefix`` (ignored for local paths).

    Credentials are deliberately not settings: they come from the standard AWS
    environment variables or shared credentials profile, so they never end up
    in config files, session records or the store.
    """

    endpoint: str | None = Field(
        default=None,
        description="S3 endpoint URL for S3-compatible servers (MinIO, Ceph, SeaweedFS), e.g. "
        "'http://127.0.0.1:8333'; null uses AWS (or AWS_ENDPOINT_URL if set).",
    )
    region: str | None = Field(
        default=None,
        description="Region to sign requests for; null takes AWS_REGION / AWS_DEFAULT_REGION, "
        "else 'us-east-1' (what most S3-compatible servers expect).",
    )
    path_style: bool = Field(
        default=True,
        description="Path-style addressing (endpoint/bucket/key), which every S3-compatible server "
        "accepts; false uses virtual-hosted style (bucket.endpoint/key).",
    )
    allow_http: bool = Field(
        default=False,
        description="Allow a plain-http endpoint (a server on localhost or a trusted lab network).",
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to wait for a connection.")
    request_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds one request (one object or one multipart part) may take before it is "
        "abandoned and retried.",
    )
    max_retries: int = Field(
        default=10,
        ge=0,
        description="Retries of a request that failed transiently (connection error, timeout, 5xx "
        "including 503 SlowDown throttling), with exponential backoff and jitter.",
    )
    retry_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds after a request's first attempt past which it is not retried again; "
        "the failure then surfaces at the next append or close.",
    )
    initial_backoff: float = Field(
        default=0.1, gt=0, description="Seconds before the first retry; doubles per retry."
    )
    max_backoff: float = Field(default=15.0, gt=0, description="Longest wait between two retries, seconds.")
    multipart_threshold: int = Field(
        default=32 << 20,
        ge=5 << 20,
        description="Objects of at least this many bytes are uploaded as multipart uploads (parts "
        "in parallel, each part retried on its own); smaller ones as one PUT.",
    )
    part_size: int = Field(
        default=8 << 20,
        ge=5 << 20,
        le=5 << 30,
        description="Multipart part size in bytes (S3 allows 5 MiB to 5 GiB, at most 10,000 parts).",
    )
    max_concurrency: int = Field(
        default=8, ge=1, description="Parts of one multipart upload in flight at once."
    )
    concurrent_uploads: int = Field(
        default=4,
        ge=1,
        description="Objects (chunks or shards) of one band uploaded at once, to hide per-request "
        "latency. Memory does not grow with it: the objects are already in the in-flight budget.",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_plain_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme, sep, rest = v.partition("://")
        if not sep or scheme not in ("http", "https") or not rest:
            raise ValueError(f"endpoint must be an http:// or https:// URL, got {v!r}")
        if "@" in rest.split("/", 1)[0]:
            raise ValueError("endpoint must not contain credentials; use the AWS environment variables")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _http_is_explicit(self) -> S3Settings:
        if self.endpoint is not None and self.endpoint.startswith("http://") and not self.allow_http:
            raise ValueError(
                f"endpoint {self.endpoint!r} is plain http: set allow_http: true to send data unencrypted"
            )
        return self


class StreamSettings(_Model):
    """Everything needed to open a stream: where it goes, which format, which arrays."""

    store: str = Field(
        description="Where to create the Zarr store: a local directory path, or "
        "'s3://bucket/prefix' for object storage (see the `s3` section)."
    )
    version: Literal[2, 3] = Field(
        default=3,
        description="Zarr format: 2 writes one file per chunk, 3 packs chunks into shards.",
    )
    overwrite: bool = Field(
        default=False,
        description="Replace an existing store at `store`; without it an existing store is an error.",
    )
    arrays: list[ArraySettings] = Field(min_length=1, description="The arrays (cameras) of the stream.")
    dimension_separator: Literal[".", "/"] = Field(
        default=".",
        description="Zarr v2 chunk key separator ('.' gives '0.0.0', '/' gives '0/0/0'). "
        "Zarr v3 always uses the default 'c/0/0/0' encoding.",
    )
    max_inflight_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Cap on memory reserved for frames not yet written: band buffers plus their "
        "worst-case encoded output, all arrays and pyramid levels. `append` blocks when it is reached. "
        "null: twice what the acquisition orders need (the bands open at once, one set filling while "
        "the other is compressed and written), and at least 256 MiB (small bands compress several at "
        "a time). A cap below the need is refused at open.",
    )
    append_timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds `append` may block on a full pipeline before raising "
        "BackpressureTimeout; null waits indefinitely.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="Compression threads; null uses one per CPU core.",
    )
    fsync: bool = Field(
        default=False,
        description="fsync each chunk/shard file and metadata document after writing it. Off, a "
        "killed process loses nothing (the page cache survives it) but a power cut may.",
    )

    direct_io: bool = Field(
        default=True,
        description="Write chunk and shard files of 256 KiB or more with O_DIRECT, bypassing the page "
        "cache (several times faster on VMs where page-cache memory is slow to fault in). Falls back "
        "to ordinary writes on filesystems without O_DIRECT (e.g. tmpfs).",
    )
    positions: list[Position] | None = Field(
        default=None,
        min_length=1,
        description="Stage positions: every array is written once per position, as image "
        "'<position>/<key>' (or '<position>' for key ''); `append(..., index={'p': i})` selects one.",
    )
    plate: Plate | None = Field(
        default=None,
        description="Lay the positions out as an OME-NGFF plate: images '<row>/<column>/<field>'. "
        "Takes exactly one array, with key ''; excludes `positions`.",
    )
    s3: S3Settings = Field(
        default_factory=S3Settings,
        description="Object storage connection, used when `store` is an s3:// URL. An acknowledged "
        "S3 PUT is durable, so `fsync` and `direct_io` do not apply there.",
    )

    @field_validator("store")
    @classmethod
    def _store_url_is_complete(cls, v: str) -> str:
        if is_s3(v):
            split_s3(v)  # a bucket and a prefix, or a ValueError saying so
        return v

    @model_validator(mode="after")
    def _arrays_are_consistent(self) -> StreamSettings:
        keys = [a.key for a in self.arrays]
        if len(set(keys)) != len(keys):
            raise ValueError(f"array keys must be unique, got {keys}")
        if "" in keys and len(keys) > 1:
            raise ValueError("key '' (the store root) is only allowed for a single array")
        for a in keys:
            for b in keys:
                if a != b and b.startswith(a + "/"):
                    raise ValueError(f"array key {b!r} would nest inside image group {a!r}")
        if not spec_for(self.version).sharded:
            for i, arr in enumerate(self.arrays):
                for j, d in enumerate(arr.dimensions):
                    if d.shard != 1:
                        raise ValueError(
                            f"arrays[{i}].dimensions[{j}].shard: Zarr v{self.version} has no shards, "
                            f"shard must be 1, got {d.shard}"
                        )
        return self

    @model_validator(mode="after")
    def _positions_fit_the_arrays(self) -> StreamSettings:
        if self.positions is not None and self.plate is not None:
            raise ValueError("positions and plate are exclusive: a plate lays out its own positions")
        if self.plate is not None and (len(self.arrays) != 1 or self.arrays[0].key != ""):
            keys = [a.key for a in self.arrays]
            raise ValueError(f"a plate takes exactly one array, with key '' (its fields); got keys {keys}")
        if self.positions is not None:
            names = [p.name for p in self.positions]
            if len(set(names)) != len(names):
                raise ValueError(f"position names must be unique, got {names}")
        if self.position_paths is not None:
            for i, arr in enumerate(self.arrays):
                if POSITION_AXIS in (d.name for d in arr.dimensions):
                    raise ValueError(
                        f"arrays[{i}] has an axis named {POSITION_AXIS!r}, which selects the position "
                        "in append's index when there are positions"
                    )
        if len(self.images) > 1 and self.plate is None:
            clash = [a.key for a in self.arrays if a.key.split("/")[0] == COLLECTION_GROUP]
            if clash:
                raise ValueError(
                    f"array key {clash[0]!r}: a store of several images keeps their list in group "
                    f"{COLLECTION_GROUP!r}"
                )
        return self

    @property
    def position_paths(self) -> list[str] | None:
        """The group path of each position, by position index ``p`` (None without positions)."""
        if self.plate is not None:
            return self.plate.paths
        if self.positions is not None:
            return [p.name for p in self.positions]
        return None

    @property
    def images(self) -> list[ArraySettings]:
        """One entry per image group: the arrays, once per position when there are positions, each
        with ``key`` set to the image's full path and carrying its position."""
        paths = self.position_paths
        if paths is None:
            return list(self.arrays)
        positions: list[Position | None] = (
            [None] * len(paths) if self.positions is None else [*self.positions]
        )
        out = []
        for path, position in zip(paths, positions, strict=True):
            for arr in self.arrays:
                image = arr.model_copy(update={"key": join_key(path, arr.key)})
                image._position = position
                out.append(image)
        return out

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Load settings from a YAML or JSON file, naming the offending key on error."""
        data = load_mapping(path)
        if isinstance(data, dict) and "source" in data and "source" not in cls.model_fields:
            raise ConfigError(  # else: "source: Extra inputs are not permitted"
                f"{path}: a recording session (it has a source: section); load it with "
                f"acqzarr.session.load_session({str(path)!r}) or run `acqzarr record {path}`"
            )
        return cls.from_mapping(data, source=str(path))


def load_mapping(path: str | Path) -> Any:
    """Read a YAML (.yaml/.yml) or JSON file into plain Python data."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"{p}: not valid {kind}: {exc}") from None


def _key_text(part: object) -> str:
    """A key as written, or its repr when it holds anything but plain printable characters."""
    text = str(part)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    """One line per problem, each starting with the dotted key path (under ``prefix``, if given)."""
    lines = [f"{source}: invalid settings"]
    for err in exc.errors():
        loc = ".".join([*([prefix] if prefix else []), *(_key_text(p) for p in err["loc"])]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)
