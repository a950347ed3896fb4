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
from .metadata import ngff, zarr_v2, zarr_v3
from .settings import ArraySettings, StreamSettings
from .stores import Store
from .writers import ChunkWriter, ObjectWriter, ShardWriter

__all__ = ["ZarrFormat", "ZarrV2", "ZarrV3", "format_for"]

Documents = dict[str, dict[str, Any]]


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


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
    def vector_documents(self, path: str, length: int, dtype: np.dtype[Any], chunk: int) -> Documents:
        """Documents of a small uncompressed 1-D array in chunks of ``chunk`` (per-frame metadata)."""

    @abstractmethod
    def vector_chunk_key(self, path: str, index: int) -> str:
        """Key of that array's chunk ``index``."""


class ZarrV2(ZarrFormat):
    """Zarr v2 + OME-NGFF 0.4; one object per chunk (ChunkWriter)."""

    version = 2
    sharded = False
    writer_class = ChunkWriter

    def group_documents(self, path: str, attributes: dict[str, Any]) -> Documents:
        docs = {_join(path, ".zgroup"): zarr_v2.group_doc()}
        if attributes:
            docs[_join(path, ".zattrs")] = attributes
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
        return {_join(path, ".zarray"): doc}

    def image_attributes(self, settings: ArraySettings, levels: int, windows: ngff.Windows) -> dict[str, Any]:
        return ngff.ngff_04_attrs(settings, levels, windows)

    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        return ngff.ngff_04_group(fields)

    def make_writer(self, layout: ArrayLayout, store: Store, array_path: str) -> ObjectWriter:
        return ChunkWriter(
            separator=self.settings.dimension_separator, layout=layout, store=store, array_path=array_path
        )

    def vector_documents(self, path: str, length: int, dtype: np.dtype[Any], chunk: int) -> Documents:
        doc = zarr_v2.array_doc(
            shape=(length,),
            chunks=(chunk,),
            dtype=dtype,
            compressor=None,
            separator=self.settings.dimension_separator,
        )
        return {_join(path, ".zarray"): doc}

    def vector_chunk_key(self, path: str, index: int) -> str:
        return _join(path, str(index))


class ZarrV3(ZarrFormat):
    """Zarr v3 + OME-NGFF 0.5; chunks packed into shards (ShardWriter)."""

    version = 3
    sharded = True
    writer_class = ShardWriter

    def group_documents(self, path: str, attributes: dict[str, Any]) -> Documents:
        return {_join(path, "zarr.json"): zarr_v3.group_doc(attributes)}

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
        return {_join(path, "zarr.json"): doc}

    def image_attributes(self, settings: ArraySettings, levels: int, windows: ngff.Windows) -> dict[str, Any]:
        return ngff.ngff_05_attrs(settings, levels, windows)

    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        return ngff.ngff_05_group(fields)

    def make_writer(self, layout: ArrayLayout, store: Store, array_path: str) -> ObjectWriter:
        return ShardWriter(layout=layout, store=store, array_path=array_path)

    def vector_documents(self, path: str, length: int, dtype: np.dtype[Any], chunk: int) -> Documents:
        doc = zarr_v3.plain_array_doc(shape=(length,), chunk=(chunk,), dtype=dtype)
        return {_join(path, "zarr.json"): doc}

    def vector_chunk_key(self, path: str, index: int) -> str:
        return _join(path, f"c/{index}")


def format_for(settings: StreamSettings) -> ZarrFormat:
    return ZarrV2(settings) if settings.version == 2 else ZarrV3(settings)
