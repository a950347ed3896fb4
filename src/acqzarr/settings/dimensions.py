"""One axis of an array: its extent, chunking and physical unit (UDUNITS-2, as OME-NGFF asks)."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .model import SettingsModel

__all__ = ["SPACE_UNITS", "TIME_UNITS", "Dimension"]

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


class Dimension(SettingsModel):
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
