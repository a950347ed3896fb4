"""ZarrV2 and ZarrV3: what differs between the two on-disk formats when writing images.

The stream asks its format for documents and for a writer; nothing else in
the engine branches on the Zarr version.  The documents themselves come from
the version's ``ZarrSpec`` (``metadata/zarr_v2.py``, ``metadata/zarr_v3.py``),
which ``acqzarr info`` and ``acqzarr validate`` read back with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from ..codecs import BloscCodec, ShardLayout
from ..metadata import ngff
from ..metadata.zarr_spec import Documents, ZarrSpec
from ..metadata.zarr_v2 import ZarrV2Spec
from ..metadata.zarr_v3 import ZarrV3Spec
from ..settings import ArraySettings, StreamSettings
from ..settings.locations import join_key
from ..stores import Store
from ..writers import ChunkWriter, ObjectWriter, ShardWriter
from ..writers.layout import ArrayLayout

__all__ = ["ZarrFormat", "ZarrV2", "ZarrV3", "format_for"]


class ZarrFormat(ABC):
    spec: ClassVar[ZarrSpec]
    writer_class: ClassVar[type[ObjectWriter]]

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = settings
        self.keys = self.spec.key_encoding(settings.dimension_separator)

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def sharded(self) -> bool:
        return self.spec.sharded

    def group_documents(self, path: str, attributes: dict[str, Any]) -> Documents:
        """Documents that make ``path`` a group carrying ``attributes``."""
        return self.spec.group_documents(path, attributes)

    def array_documents(
        self, path: str, layout: ArrayLayout, shape: tuple[int, ...], codec: BloscCodec | None
    ) -> Documents:
        """Documents that describe the image level at ``path`` with the given shape."""
        return self.spec.image_array_documents(
            path,
            shape=shape,
            chunks=layout.chunks,
            shards=layout.shard_shape,
            dtype=layout.dtype,
            codec=codec,
            index_codecs=ShardLayout(layout.chunks_per_shard).index_config(),
            dimension_names=layout.names,
            separator=self.settings.dimension_separator,
        )

    def column_documents(
        self, path: str, shape: tuple[int, ...], chunks: tuple[int, ...], kind: str, names: tuple[str, ...]
    ) -> Documents:
        """Documents of a per-frame metadata column (``frame_columns.py``); missing entries are its
        fill value (``frame_columns.MISSING``)."""
        return self.spec.column_documents(
            path,
            shape=shape,
            chunks=chunks,
            kind=kind,
            dimension_names=names,
            separator=self.settings.dimension_separator,
        )

    def chunk_key(self, path: str, coords: tuple[int, ...]) -> str:
        """Key of the stored object (chunk, or shard) at grid position ``coords`` of array ``path``."""
        return join_key(path, self.keys.key(coords))

    @abstractmethod
    def image_attributes(self, settings: ArraySettings, levels: int, windows: ngff.Windows) -> dict[str, Any]:
        """OME-NGFF attributes of an image group with ``levels`` levels at paths "0", "1", ..."""

    @abstractmethod
    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Attributes of a group above the images (plate, well, series) from its NGFF fields."""

    def make_writer(self, layout: ArrayLayout, store: Store, array_path: str) -> ObjectWriter:
        """The object writer of this format for one array."""
        return self.writer_class(layout=layout, store=store, array_path=array_path, keys=self.keys)


class ZarrV2(ZarrFormat):
    """Zarr v2 + OME-NGFF 0.4; one object per chunk (ChunkWriter)."""

    spec = ZarrV2Spec()
    writer_class = ChunkWriter

    def image_attributes(self, settings: ArraySettings, levels: int, windows: ngff.Windows) -> dict[str, Any]:
        return ngff.ngff_04_attrs(settings, levels, windows)

    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        return ngff.ngff_04_group(fields)


class ZarrV3(ZarrFormat):
    """Zarr v3 + OME-NGFF 0.5; chunks packed into shards (ShardWriter)."""

    spec = ZarrV3Spec()
    writer_class = ShardWriter

    def image_attributes(self, settings: ArraySettings, levels: int, windows: ngff.Windows) -> dict[str, Any]:
        return ngff.ngff_05_attrs(settings, levels, windows)

    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        return ngff.ngff_05_group(fields)


FORMATS: dict[int, type[ZarrFormat]] = {f.spec.version: f for f in (ZarrV2, ZarrV3)}


def format_for(settings: StreamSettings) -> ZarrFormat:
    return FORMATS[settings.version](settings)
