"""ZarrV2 and ZarrV3: everything that differs between the two on-disk formats.

The stream asks its format for documents and for a writer; nothing else in
the engine branches on the Zarr version.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from .codecs import BloscCodec, ShardLayout
from .layout import ArrayLayout
from .locations import join_key
from .metadata import ngff, zarr_v2, zarr_v3
from .settings import ArraySettings, StreamSettings
from .stores import Store
from .writers import ChunkWriter, ObjectWriter, ShardWriter

__all__ = ["ZarrFormat", "ZarrV2", "ZarrV3", "format_for"]

Documents = dict[str, dict[str, Any]]

# Per-frame metadata columns: the missing marker of each kind (also each array's fill value, so a
# chunk never written reads as missing), and the zstd level of string columns.
_COLUMN_FILL: dict[str, Any] = {"float64": "NaN", "int64": -(2**63), "string": ""}
COLUMN_ZSTD_LEVEL = 1


class ZarrFormat(ABC):
    version: ClassVar[int]
    sharded: ClassVar[bool]
    writer_class: ClassVar[type[ObjectWriter]]

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings

    @abstractmethod
    def group_documents(self, path: str, attributes: dict[str, Any]) -> Documents:
        """Documents that make ``path`` a group carrying ``attributes``."""

    @abstractmethod
    def array_documents(
        self, path: str, layout: ArrayLayout, shape: tuple[int, ...], codec: BloscCodec | None
    ) -> Documents:
        """Documents that describe the array at ``path`` with the given shape."""

    @abstractmethod
    def image_attributes(self, settings: ArraySettings, levels: int, windows: ngff.Windows) -> dict[str, Any]:
        """OME-NGFF attributes of an image group with ``levels`` levels at paths "0", "1", ..."""

    @abstractmethod
    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Attributes of a group above the images (plate, well, series) from its NGFF fields."""

    @abstractmethod
    def make_writer(self, layout: ArrayLayout, store: Store, array_path: str) -> ObjectWriter:
        """The object writer of this format for one array."""

    @abstractmethod
    def column_documents(
        self, path: str, shape: tuple[int, ...], chunks: tuple[int, ...], kind: str, names: tuple[str, ...]
    ) -> Documents:
        """Documents of a per-frame metadata column (``frame_columns.py``): ``kind`` "float64" or
        "int64" (raw little-endian chunks) or "string" (vlen-utf8 then zstd); missing entries are
        its fill value (``frame_columns.MISSING``)."""

    @abstractmethod
    def column_chunk_key(self, path: str, coords: tuple[int, ...]) -> str:
        """Key of a column's chunk at grid position ``coords``."""


class ZarrV2(ZarrFormat):
    """Zarr v2 + OME-NGFF 0.4; one object per chunk (ChunkWriter)."""

    version = 2
    sharded = False
    writer_class = ChunkWriter

    def group_documents(self, path: str, attributes: dict[str, Any]) -> Documents:
        docs = {join_key(path, ".zgroup"): zarr_v2.group_doc()}
        if attributes:
            docs[join_key(path, ".zattrs")] = attributes
        return docs

    def array_documents(
        self, path: str, layout: ArrayLayout, shape: tuple[int, ...], codec: BloscCodec | None
    ) -> Documents:
        doc = zarr_v2.array_doc(
            shape=shape,
            chunks=layout.chunks,
            dtype=layout.dtype,
            compressor=None if codec is None else codec.v2_config(),
            separator=self.settings.dimension_separator,
        )
        return {join_key(path, ".zarray"): doc}

    def image_attributes(self, settings: ArraySettings, levels: int, windows: ngff.Windows) -> dict[str, Any]:
        return ngff.ngff_04_attrs(settings, levels, windows)

    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        return ngff.ngff_04_group(fields)

    def make_writer(self, layout: ArrayLayout, store: Store, array_path: str) -> ObjectWriter:
        return ChunkWriter(
            separator=self.settings.dimension_separator, layout=layout, store=store, array_path=array_path
        )

    def column_documents(
        self, path: str, shape: tuple[int, ...], chunks: tuple[int, ...], kind: str, names: tuple[str, ...]
    ) -> Documents:
        string = kind == "string"
        doc = zarr_v2.array_doc(
            shape=shape,
            chunks=chunks,
            dtype=np.dtype(object if string else kind),
            compressor={"id": "zstd", "level": COLUMN_ZSTD_LEVEL} if string else None,
            separator=self.settings.dimension_separator,
            fill_value=_COLUMN_FILL[kind],
            filters=[{"id": "vlen-utf8"}] if string else None,
        )
        return {join_key(path, ".zarray"): doc, join_key(path, ".zattrs"): {"_ARRAY_DIMENSIONS": list(names)}}

    def column_chunk_key(self, path: str, coords: tuple[int, ...]) -> str:
        return join_key(path, self.settings.dimension_separator.join(map(str, coords)))


class ZarrV3(ZarrFormat):
    """Zarr v3 + OME-NGFF 0.5; chunks packed into shards (ShardWriter)."""

    version = 3
    sharded = True
    writer_class = ShardWriter

    def group_documents(self, path: str, attributes: dict[str, Any]) -> Documents:
        return {join_key(path, "zarr.json"): zarr_v3.group_doc(attributes)}

    def array_documents(
        self, path: str, layout: ArrayLayout, shape: tuple[int, ...], codec: BloscCodec | None
    ) -> Documents:
        doc = zarr_v3.array_doc(
            shape=shape,
            shard_shape=layout.shard_shape,
            chunk_shape=layout.chunks,
            dtype=layout.dtype,
            inner_codecs=[] if codec is None else [codec.v3_config()],
            index_codecs=ShardLayout(layout.chunks_per_shard).index_config(),
            dimension_names=layout.names,
        )
        return {join_key(path, "zarr.json"): doc}

    def image_attributes(self, settings: ArraySettings, levels: int, windows: ngff.Windows) -> dict[str, Any]:
        return ngff.ngff_05_attrs(settings, levels, windows)

    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        return ngff.ngff_05_group(fields)

    def make_writer(self, layout: ArrayLayout, store: Store, array_path: str) -> ObjectWriter:
        return ShardWriter(layout=layout, store=store, array_path=array_path)

    def column_documents(
        self, path: str, shape: tuple[int, ...], chunks: tuple[int, ...], kind: str, names: tuple[str, ...]
    ) -> Documents:
        codecs = (
            [
                {"name": "vlen-utf8", "configuration": {}},
                {"name": "zstd", "configuration": {"level": COLUMN_ZSTD_LEVEL, "checksum": False}},
            ]
            if kind == "string"
            else [{"name": "bytes", "configuration": {"endian": "little"}}]
        )
        doc = zarr_v3.plain_array_doc(
            shape=shape,
            chunk=chunks,
            data_type=kind,
            fill_value=_COLUMN_FILL[kind],
            codecs=codecs,
            dimension_names=names,
        )
        return {join_key(path, "zarr.json"): doc}

    def column_chunk_key(self, path: str, coords: tuple[int, ...]) -> str:
        return join_key(path, "c/" + "/".join(map(str, coords)))


def format_for(settings: StreamSettings) -> ZarrFormat:
    return ZarrV2(settings) if settings.version == 2 else ZarrV3(settings)
