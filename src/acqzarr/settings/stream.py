"""The settings of a whole stream: its store, Zarr version, arrays, positions or plate, and limits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from ..errors import ConfigError
from .arrays import ArraySettings
from .loading import load_mapping
from .locations import is_s3, join_key, split_s3
from .model import SettingsModel
from .names import COLLECTION_GROUP, POSITION_AXIS
from .positions import Plate, Position
from .s3 import S3Settings

__all__ = ["SHARDED_VERSIONS", "StreamSettings"]

# The Zarr versions whose images acqzarr writes in shards (v3); the others take ``shard: 1`` on every
# axis. Each version's writer in metadata/ says the same (its ``sharded``; a test keeps them in step):
# a constant here, so that settings depend on nothing above them.
SHARDED_VERSIONS = frozenset({3})


class StreamSettings(SettingsModel):
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
        description="Replace an existing store at `store` (the same as `existing: overwrite`).",
    )
    existing: Literal["error", "overwrite", "resume"] = Field(
        default="error",
        description="What to do when `store` already holds something: 'error' refuses it, 'overwrite' "
        "replaces it, 'resume' continues a store acqzarr wrote with the same arrays (dtype, dimensions "
        "but the append axis's size, chunks, shards, compression, acquisition order, frame columns), "
        "positions, version and dimension separator, at the extent it published; a store that does not "
        "exist is started. `overwrite: true` means 'overwrite' and contradicts 'resume'.",
    )
    arrays: tuple[ArraySettings, ...] = Field(min_length=1, description="The arrays (cameras) of the stream.")
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
    max_unflushed_seconds: float | None = Field(
        default=5.0,
        gt=0,
        description="The durability deadline: every accepted frame is on disk and readable (and "
        "survives a kill) within about this many seconds, even when its chunk or shard is not full "
        "yet; the partial chunk or shard is written then (fill value where frames are still to "
        "come) and written again, whole, when it fills. Costs nothing while chunks fill faster. "
        "null: frames wait in memory until their chunk or shard is full.",
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
    positions: tuple[Position, ...] | None = Field(
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
        if self.version not in SHARDED_VERSIONS:
            for i, arr in enumerate(self.arrays):
                for j, d in enumerate(arr.dimensions):
                    if d.shard != 1:
                        raise ValueError(
                            f"arrays[{i}].dimensions[{j}].shard: Zarr v{self.version} has no shards, "
                            f"shard must be 1, got {d.shard}"
                        )
        return self

    @model_validator(mode="after")
    def _existing_is_one_choice(self) -> StreamSettings:
        if self.overwrite and self.existing == "resume":
            raise ValueError("overwrite: true and existing: resume contradict each other; pick one")
        return self

    @property
    def on_existing(self) -> Literal["error", "overwrite", "resume"]:
        """What an existing store gets: the one place ``overwrite`` and ``existing`` are resolved."""
        return "overwrite" if self.overwrite else self.existing

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
                image = arr._unchecked_copy({"key": join_key(path, arr.key)})
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
                f"acqzarr.recording.command.load_session({str(path)!r}) or run `acqzarr record {path}`"
            )
        return cls.from_mapping(data, source=str(path))
