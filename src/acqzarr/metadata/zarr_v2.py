"""Zarr v2 documents: ``.zgroup``, ``.zattrs`` and ``.zarray`` (one file each), written and read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..settings import ArraySettings
from ..settings.locations import join_key
from . import ngff
from .zarr_spec import (
    COLUMN_ZSTD_LEVEL,
    ArrayDocument,
    ArrayMeta,
    Documents,
    KeyEncoding,
    ParsedNode,
    ZarrSpec,
    column_fill,
)

__all__ = ["ZarrV2Spec", "array_doc", "v2_dtype"]


def v2_dtype(dtype: np.dtype[Any]) -> str:
    """The numpy typestr with explicit little-endian order ('|' for single bytes)."""
    return dtype.newbyteorder("<").str


def array_doc(
    *,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype[Any],
    compressor: dict[str, Any] | None,
    separator: str,
    fill_value: Any = 0,
    filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An array document; ``dtype`` object ('|O') is a string array (with a ``vlen-utf8`` filter)."""
    return {
        "zarr_format": 2,
        "shape": list(shape),
        "chunks": list(chunks),
        "dtype": "|O" if dtype.kind == "O" else v2_dtype(dtype),
        "compressor": compressor,
        "fill_value": fill_value,
        "order": "C",
        "filters": filters,
        "dimension_separator": separator,
    }


class ZarrV2Spec(ZarrSpec):
    """Zarr v2 with OME-NGFF 0.4; acqzarr writes one object per chunk (no shards)."""

    version = 2
    ngff_version = "0.4"
    sharded = False
    document_names = (".zgroup", ".zarray", ".zattrs")
    node_names = (".zgroup", ".zarray")
    required_array_fields = (
        "shape",
        "chunks",
        "dtype",
        "compressor",
        "fill_value",
        "order",
        "filters",
        "zarr_format",
    )

    def group_documents(self, path: str, attributes: dict[str, Any]) -> Documents:
        docs = {join_key(path, ".zgroup"): {"zarr_format": 2}}
        if attributes:
            docs[join_key(path, ".zattrs")] = attributes
        return docs

    def __init__(self, separator: str = ".") -> None:
        super().__init__(separator)

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
        doc = array_doc(
            shape=(0,) * len(chunks),
            chunks=chunks,
            dtype=dtype,
            compressor=None if codec is None else codec.v2_config(),
            separator=self.separator,
        )
        return ArrayDocument(join_key(path, ".zarray"), doc)

    def column_documents(
        self,
        path: str,
        *,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        kind: str,
        dimension_names: tuple[str, ...],
    ) -> Documents:
        string = kind == "string"
        doc = array_doc(
            shape=shape,
            chunks=chunks,
            dtype=np.dtype(object if string else kind),
            compressor={"id": "zstd", "level": COLUMN_ZSTD_LEVEL} if string else None,
            separator=self.separator,
            fill_value=column_fill(kind),
            filters=[{"id": "vlen-utf8"}] if string else None,
        )
        return {
            join_key(path, ".zarray"): doc,
            join_key(path, ".zattrs"): {"_ARRAY_DIMENSIONS": list(dimension_names)},
        }

    def whole_array_documents(
        self, path: str, *, shape: tuple[int, ...], dtype: np.dtype[Any], dimension_names: tuple[str, ...]
    ) -> Documents:
        doc = array_doc(
            shape=shape,
            chunks=tuple(max(1, n) for n in shape),
            dtype=dtype,
            compressor={"id": "zstd", "level": COLUMN_ZSTD_LEVEL},
            separator=self.separator,
        )
        return {
            join_key(path, ".zarray"): doc,
            join_key(path, ".zattrs"): {"_ARRAY_DIMENSIONS": list(dimension_names)},
        }

    def key_encoding(self, separator: str) -> KeyEncoding:
        return KeyEncoding(separator)

    def image_attributes(
        self, settings: ArraySettings, levels: int, windows: dict[int, tuple[float, float]]
    ) -> dict[str, Any]:
        return ngff.ngff_04_attrs(settings, levels, windows)

    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        return ngff.ngff_04_group(fields)

    def read_node(
        self, parent: str, name: str, doc: dict[str, Any], attrs: Callable[[str], dict[str, Any]]
    ) -> ParsedNode | None:
        kind = {".zarray": "array", ".zgroup": "group"}.get(name)
        return None if kind is None else ParsedNode(parent, kind, doc, attrs(join_key(parent, ".zattrs")))

    def parse_array(self, doc: dict[str, Any]) -> ArrayMeta:
        chunks = tuple(int(c) for c in doc["chunks"])
        dtype = np.dtype(doc["dtype"])
        filters = doc.get("filters") or []
        vlen = any(isinstance(f, dict) and f.get("id") == "vlen-utf8" for f in filters)
        data_type = ("string" if vlen else "object") if dtype.kind == "O" else dtype.name
        compressor = doc.get("compressor")
        return ArrayMeta(
            shape=tuple(int(s) for s in doc["shape"]),
            data_type=data_type,
            chunks=chunks,
            grid=chunks,
            sharding=None,
            compressor=dict(compressor) if isinstance(compressor, dict) else None,
            keys=KeyEncoding(str(doc.get("dimension_separator") or ".")),
            byte_order=doc["dtype"][0] if str(doc["dtype"])[:1] in "<>|" else "<",
            fill_value=doc.get("fill_value"),
            filters=tuple(str(f.get("id")) for f in filters if isinstance(f, dict)),
        )

    def document_key(self, path: str, kind: str) -> str:
        return join_key(path, ".zarray" if kind == "array" else ".zgroup")

    def attributes_key(self, path: str) -> str:
        return join_key(path, ".zattrs")
