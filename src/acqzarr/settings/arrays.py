"""One array (one camera): its sample type, axes, order of arrival, compression, pyramid and channels."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import Field, PrivateAttr, field_serializer, field_validator, model_validator

from .dimensions import Dimension
from .model import FrozenMapping, SettingsModel, finite
from .names import DTYPES, KEY_SEGMENT, dtype_name, is_key_path
from .positions import Position

__all__ = ["MAX_CHUNK_BYTES", "ArraySettings", "Blosc", "Channel", "Multiscale"]

# Blosc1 refuses buffers above BLOSC_MAX_BUFFERSIZE (INT32_MAX - 16 bytes of overhead).
MAX_CHUNK_BYTES = 2**31 - 1 - 16


_COLOR = re.compile(r"^[0-9A-Fa-f]{6}$")


class Blosc(SettingsModel):
    """Blosc1 compression of each chunk: the Zarr ``blosc`` codec, readable by every Zarr reader."""

    cname: Literal["lz4", "lz4hc", "zstd", "blosclz", "zlib"] = Field(
        default="lz4", description="Compressor inside Blosc."
    )
    clevel: int = Field(default=1, ge=0, le=9, description="Compression level, 0 (none) to 9.")
    shuffle: Literal["none", "byte", "bit"] = Field(
        default="byte", description="Shuffle filter applied before compression."
    )


class Multiscale(SettingsModel):
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


class Channel(SettingsModel):
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
        finite(start, "window start")
        finite(end, "window end")
        if start > end:
            raise ValueError(f"window start must not exceed its end, got ({start}, {end})")
        return v


class ArraySettings(SettingsModel):
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
    dimensions: tuple[Dimension, ...] = Field(
        min_length=2,
        max_length=5,
        description="Axes from slowest to fastest; the first is the append axis.",
    )
    acquisition_order: tuple[str, ...] | None = Field(
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
    channels: tuple[Channel, ...] | None = Field(
        default=None,
        description="Name, colour and contrast of each channel index, as many as the channel axis "
        "holds (exactly one for an array without a channel axis); null labels them '<key> c0', ...",
    )
    # The stage position of an image expanded from ``StreamSettings.positions`` (``images``); not a
    # setting of its own, so private: it travels with the image's settings to its metadata.
    _position: Position | None = PrivateAttr(default=None)
    frame_columns: Mapping[str, Literal["float64", "int64"]] = Field(
        default_factory=dict,
        validate_default=True,  # the default too becomes a FrozenMapping
        description="Per-frame metadata fields stored as typed columns (name -> float64 or int64), "
        "besides the built-in ones (frame_id, timestamp_ns, ..., exposure_ms, stage_x_um, ...; see "
        "the README). Any other field of `append(..., metadata=)` goes to the per-frame JSON column.",
    )

    @field_validator("frame_columns")
    @classmethod
    def _column_names_are_segments(cls, v: Mapping[str, str]) -> FrozenMapping[str, str]:
        for name in v:
            if not KEY_SEGMENT.fullmatch(name) or name == "json":
                raise ValueError(
                    f"a frame column name must be letters, digits, '_', '.', '-' (not starting with "
                    f"'.' or '-') and not 'json' (the JSON column's name), got {name!r}"
                )
        return FrozenMapping(v)

    @field_serializer("frame_columns")
    def _dump_columns(self, v: Mapping[str, str]) -> dict[str, str]:
        return dict(v)

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
                f"got {list(order)}: {'; '.join(problems)}"
            )
        first = self.dimensions[0]
        if first.size == 0 and order[0] != first.name:
            raise ValueError(
                f"acquisition_order: the append axis {first.name!r} is unbounded (size 0), so it must "
                f"come first (no axis can be iterated inside one that never ends); got {list(order)}"
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
