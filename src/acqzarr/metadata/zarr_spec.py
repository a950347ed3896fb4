"""What every Zarr version's metadata looks like to acqzarr: one surface, two implementations.

``zarr_v2.ZarrV2Spec`` and ``zarr_v3.ZarrV3Spec`` both build the documents the
engine stores (array, group and column documents, the OME-NGFF flavour of the
version, chunk keys) and parse the documents ``acqzarr info`` and ``acqzarr
validate`` read back (``read/info.py``, ``read/validate.py``), so the rules of
each version live in its own module and no caller branches on the version
number.  A spec for writing is bound to the store's chunk key separator
(``spec_for(version, separator)``).  A parsed array is an ``ArrayMeta``, the same for both
versions; a chunk's key comes from its ``KeyEncoding``, the one place that
turns grid coordinates into a key and back.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..settings.locations import join_key

if TYPE_CHECKING:
    from ..settings import ArraySettings

__all__ = [
    "COLUMN_MISSING",
    "ArrayDocument",
    "ArrayMeta",
    "Documents",
    "KeyEncoding",
    "ParsedNode",
    "ZarrSpec",
    "column_fill",
]

Documents = dict[str, dict[str, Any]]

# Per-frame metadata columns: the missing marker of each kind, the one table of them.  It is also
# each column array's fill value (``column_fill``, as JSON spells it), so a chunk never written reads
# as missing; string columns are vlen-utf8 then zstd at this level.
COLUMN_MISSING: dict[str, Any] = {"float64": math.nan, "int64": -(2**63), "string": ""}
COLUMN_ZSTD_LEVEL = 1


def column_fill(kind: str) -> Any:
    """The fill value of a column of ``kind`` in an array document (JSON has no NaN: "NaN")."""
    value = COLUMN_MISSING[kind]
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


@dataclass(frozen=True)
class KeyEncoding:
    """How a stored object's grid coordinates become its key (relative to the array) and back.

    Zarr v2 joins the coordinates with the array's separator ("0.1.2");
    Zarr v3's default encoding puts "c" in front ("c/0/1/2").
    """

    separator: str = "/"
    prefix: str | None = None

    def key(self, coords: tuple[int, ...]) -> str:
        parts = [*([self.prefix] if self.prefix is not None else []), *map(str, coords)]
        return self.separator.join(parts) or "0"

    def parse(self, key: str) -> tuple[int, ...] | None:
        """The coordinates a relative key names, or None if it is not a key of this encoding."""
        parts = key.split(self.separator)
        if self.prefix is not None:
            if parts[0] != self.prefix:
                return None
            parts = parts[1:]
        if not parts or not all(p.isdigit() for p in parts):
            return None
        return tuple(int(p) for p in parts)


@dataclass(frozen=True)
class ArrayMeta:
    """An array document, parsed into what readers need whatever the Zarr version.

    ``grid`` is the shape of one stored object (a shard when sharded, else a
    chunk); ``chunks`` the shape of one compressed chunk.  ``data_type`` is a
    numpy dtype name, or "string" for a vlen-utf8 string array.
    ``compressor`` is the chunk compressor as a numcodecs config (``id`` plus
    parameters), or None when chunks are stored raw; ``filters`` names any
    other codec a chunk passes through (v2 filters, a v3 transpose or
    checksum), which ``array_reader`` does not apply.
    """

    shape: tuple[int, ...]
    data_type: str
    chunks: tuple[int, ...]
    grid: tuple[int, ...]
    sharding: dict[str, Any] | None  # the sharding_indexed configuration, when sharded
    compressor: dict[str, Any] | None
    keys: KeyEncoding
    byte_order: str = "<"  # of a decoded chunk's items ("<", ">" or "|")
    fill_value: Any = 0
    filters: tuple[str, ...] = ()

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype of a decoded chunk; ValueError for a string or other non-numeric array."""
        if self.data_type in ("string", "object"):
            raise ValueError(f"a {self.data_type} array has no fixed-size numpy dtype")
        return np.dtype(self.data_type).newbyteorder(">" if self.byte_order == ">" else "<")

    @property
    def shards(self) -> tuple[int, ...] | None:
        return self.grid if self.sharding is not None else None

    @property
    def grid_extent(self) -> tuple[int, ...]:
        """How many stored objects the array's shape spans along each axis."""
        return tuple(-(-s // g) for s, g in zip(self.shape, self.grid, strict=True))


@dataclass(frozen=True)
class ArrayDocument:
    """An array's metadata document with everything but its shape fixed: an image level that
    shows a longer extent is published as ``with_shape(new shape)``."""

    key: str
    doc: Mapping[str, Any]

    def with_shape(self, shape: tuple[int, ...]) -> Documents:
        return {self.key: {**self.doc, "shape": list(shape)}}


@dataclass(frozen=True)
class ParsedNode:
    """A node found in a store: its path, kind, metadata document and attributes."""

    path: str
    kind: str  # "group" or "array" (anything else is reported by validate)
    meta: dict[str, Any]
    attrs: dict[str, Any]


class ZarrSpec(ABC):
    """One Zarr version's documents, written and read; ``separator`` is the chunk key separator of
    the arrays this instance writes (Zarr v2's ``dimension_separator``)."""

    version: ClassVar[int]
    ngff_version: ClassVar[str]  # the OME-NGFF version written with (and expected in) this Zarr version
    sharded: ClassVar[bool]  # whether acqzarr writes images of this version in shards
    document_names: ClassVar[tuple[str, ...]]  # the file names that hold this version's metadata
    node_names: ClassVar[tuple[str, ...]]  # the file names whose presence makes a node
    required_array_fields: ClassVar[tuple[str, ...]]

    def __init__(self, separator: str = "/") -> None:
        self.separator = separator
        self.keys = self.key_encoding(separator)  # the chunk keys of the arrays it writes

    def writing(self, separator: str) -> ZarrSpec:
        """This version's spec for writing arrays with chunk key ``separator``."""
        return type(self)(separator)

    # --- writing ---------------------------------------------------------------------------------
    @abstractmethod
    def group_documents(self, path: str, attributes: dict[str, Any]) -> Documents:
        """Documents that make ``path`` a group carrying ``attributes``."""

    @abstractmethod
    def image_array(
        self,
        path: str,
        *,
        chunks: tuple[int, ...],
        shards: tuple[int, ...],
        dtype: np.dtype[Any],
        codec: Any,
        dimension_names: tuple[str, ...],
    ) -> ArrayDocument:
        """The document of an image level (any shape): ``codec`` is a ``BloscCodec`` or None
        (raw); ``shards`` is ignored by a version that does not shard."""

    @abstractmethod
    def column_documents(
        self,
        path: str,
        *,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        kind: str,
        dimension_names: tuple[str, ...],
    ) -> Documents:
        """Documents of a per-frame metadata column (``engine/frame_columns.py``): ``kind`` "float64" or
        "int64" (raw little-endian chunks) or "string" (vlen-utf8 then zstd)."""

    @abstractmethod
    def whole_array_documents(
        self, path: str, *, shape: tuple[int, ...], dtype: np.dtype[Any], dimension_names: tuple[str, ...]
    ) -> Documents:
        """Documents of an array stored whole as one chunk (``Stream.write_array``): little-endian
        items compressed with zstd at ``COLUMN_ZSTD_LEVEL``, fill value 0, never sharded."""

    @abstractmethod
    def key_encoding(self, separator: str) -> KeyEncoding:
        """The chunk keys of arrays acqzarr writes (``separator`` is the v2 dimension separator)."""

    def chunk_key(self, path: str, coords: tuple[int, ...]) -> str:
        """Key of the stored object (chunk, or shard) at grid position ``coords`` of array ``path``."""
        return join_key(path, self.keys.key(coords))

    @abstractmethod
    def image_attributes(
        self, settings: ArraySettings, levels: int, windows: dict[int, tuple[float, float]]
    ) -> dict[str, Any]:
        """OME-NGFF attributes of an image group with ``levels`` levels at paths "0", "1", ..."""

    @abstractmethod
    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Attributes of a group above the images (plate, well, series) from its NGFF fields."""

    # --- reading ---------------------------------------------------------------------------------
    @abstractmethod
    def read_node(
        self, parent: str, name: str, doc: dict[str, Any], attrs: Callable[[str], dict[str, Any]]
    ) -> ParsedNode | None:
        """The node that document ``name`` (one of ``node_names``) at ``parent`` defines;
        ``attrs(key)`` reads a further document (v2 keeps attributes in ``.zattrs``)."""

    @abstractmethod
    def parse_array(self, doc: dict[str, Any]) -> ArrayMeta:
        """Parse an array document; KeyError, TypeError, ValueError or AttributeError if malformed."""

    @abstractmethod
    def document_key(self, path: str, kind: str) -> str:
        """The key of the document that defines the node at ``path``."""

    @abstractmethod
    def attributes_key(self, path: str) -> str:
        """The key of the document that holds the attributes of the node at ``path``."""


SHUFFLE_NAMES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}  # the v3 blosc names, as numcodecs codes


def numcodecs_config(name: str, configuration: dict[str, Any]) -> dict[str, Any]:
    """A v3 codec entry as the numcodecs config that decodes the same bytes."""
    config = {"id": name, **configuration}
    if name == "blosc" and config.get("shuffle") in SHUFFLE_NAMES:
        config["shuffle"] = SHUFFLE_NAMES[config["shuffle"]]
        config.pop("typesize", None)
    return config
