"""Where the arrays are imaged: stage positions, or the wells and fields of a plate."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .model import SettingsModel, finite
from .names import COLLECTION_GROUP, KEY_SEGMENT

__all__ = ["Acquisition", "Plate", "Position"]


class Position(SettingsModel):
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
        if not KEY_SEGMENT.fullmatch(v) or v == COLLECTION_GROUP:
            raise ValueError(
                f"a position name must be one path segment of letters, digits, '_', '.', '-' (not "
                f"starting with '.', not {COLLECTION_GROUP!r}), got {v!r}"
            )
        return v

    @field_validator("x", "y", "z")
    @classmethod
    def _coordinate_is_finite(cls, v: float | None) -> float | None:
        return finite(v, "a stage coordinate")

    @property
    def translation(self) -> dict[str, float]:
        """The given coordinates by axis name."""
        return {n: v for n, v in (("x", self.x), ("y", self.y), ("z", self.z)) if v is not None}


class Acquisition(SettingsModel):
    """One acquisition (run) of a plate, as OME-NGFF's plate metadata lists it."""

    id: int = Field(ge=0, description="Identifier of the acquisition in the plate, >= 0.")
    name: str | None = Field(default=None, description="Name of the acquisition.")
    description: str | None = Field(default=None, description="Free-text description.")
    maximumfieldcount: int | None = Field(
        default=None, ge=1, description="Most fields of view per well in this acquisition."
    )
    starttime: int | None = Field(default=None, description="Start, as an integer epoch timestamp.")
    endtime: int | None = Field(default=None, description="End, as an integer epoch timestamp.")


class Plate(SettingsModel):
    """A high-content-screening plate: positions laid out as wells in rows and columns, each with
    the same number of fields of view, written as an OME-NGFF plate."""

    name: str | None = Field(default=None, description="Name of the plate.")
    rows: tuple[str, ...] = Field(
        min_length=1, description="Row names of the physical plate in order, e.g. ['A', 'B', ...]."
    )
    columns: tuple[str, ...] = Field(
        min_length=1, description="Column names of the physical plate in order, e.g. ['1', '2', ...]."
    )
    wells: tuple[str, ...] = Field(
        min_length=1,
        description="The wells imaged, as 'row/column' (e.g. 'B/3'), in acquisition order: position "
        "p is field p % fields of well p // fields.",
    )
    fields: int = Field(default=1, ge=1, description="Fields of view per well.")
    acquisitions: tuple[Acquisition, ...] | None = Field(
        default=None,
        max_length=1,
        description="The acquisition this stream writes (at most one), tagged on every field.",
    )

    @field_validator("rows", "columns")
    @classmethod
    def _names_are_alphanumeric_and_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [n for n in v if not (n.isascii() and n.isalnum())]
        if bad:
            raise ValueError(f"row and column names must be letters and digits only, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"names must be unique, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _wells_are_on_the_plate(self) -> Plate:
        if len(set(self.wells)) != len(self.wells):
            raise ValueError(f"wells must be unique, got {list(self.wells)}")
        for well in self.wells:
            row, sep, column = well.partition("/")
            if not sep or row not in self.rows or column not in self.columns:
                raise ValueError(
                    f"well {well!r} must be 'row/column' with a row of {list(self.rows)} and a column of "
                    f"{list(self.columns)}"
                )
        return self

    @property
    def paths(self) -> list[str]:
        """The image path of every position: '<row>/<column>/<field>', well by well."""
        return [f"{well}/{field}" for well in self.wells for field in range(self.fields)]
