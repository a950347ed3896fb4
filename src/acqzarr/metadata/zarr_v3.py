"""Zarr v3 ``zarr.json`` documents for groups, sharded arrays and plain arrays, written and read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..codecs import ShardLayout
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
    numcodecs_config,
)

__all__ = ["SERIALIZERS", "ZarrV3Spec"]

# Codecs that turn an array into bytes (or reorder it) rather than compress: the compressor is
# whatever comes after them.
SERIALIZERS = ("bytes", "transpose", "vlen-utf8")
_DEFAULT_KEYS = {"name": "default", "configuration": {"separator": "/"}}


def _array_doc(
    shape: tuple[int, ...],
    grid: tuple[int, ...],
    data_type: str,
    fill_value: Any,
    codecs: list[dict[str, Any]],
    dimension_names: tuple[str, ...],
) -> dict[str, Any]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(grid)}},
        "chunk_key_encoding": _DEFAULT_KEYS,
        "fill_value": fill_value,
        "codecs": codecs,
        "attributes": {},
        "dimension_names": list(dimension_names),
    }


class ZarrV3Spec(ZarrSpec):
    """Zarr v3 with OME-NGFF 0.5; acqzarr writes images as ``sharding_indexed`` shards."""

    version = 3
    ngff_version = "0.5"
    sharded = True
    document_names = ("zarr.json",)
    node_names = ("zarr.json",)
    required_array_fields = ("shape", "data_type", "chunk_grid", "chunk_key_encoding", "codecs", "fill_value")

    def group_documents(self, path: str, attributes: dict[str, Any]) -> Documents:
        return {
            join_key(path, "zarr.json"): {"zarr_format": 3, "node_type": "group", "attributes": attributes}
        }

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
        """A sharded array: each stored object is a shard of ``chunks``-shaped inner chunks."""
        per_shard = tuple(s // c for s, c in zip(shards, chunks, strict=True))
        sharding = {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": list(chunks),
                "codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    *([] if codec is None else [codec.v3_config()]),
                ],
                "index_codecs": ShardLayout(per_shard).index_config(),
                "index_location": "end",
            },
        }
        doc = _array_doc((0,) * len(chunks), shards, str(dtype), 0, [sharding], dimension_names)
        return ArrayDocument(join_key(path, "zarr.json"), doc)

    def column_documents(
        self,
        path: str,
        *,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        kind: str,
        dimension_names: tuple[str, ...],
    ) -> Documents:
        codecs = (
            [
                {"name": "vlen-utf8", "configuration": {}},
                {"name": "zstd", "configuration": {"level": COLUMN_ZSTD_LEVEL, "checksum": False}},
            ]
            if kind == "string"
            else [{"name": "bytes", "configuration": {"endian": "little"}}]
        )
        doc = _array_doc(shape, chunks, kind, column_fill(kind), codecs, dimension_names)
        return {join_key(path, "zarr.json"): doc}

    def whole_array_documents(
        self, path: str, *, shape: tuple[int, ...], dtype: np.dtype[Any], dimension_names: tuple[str, ...]
    ) -> Documents:
        codecs = [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": COLUMN_ZSTD_LEVEL, "checksum": False}},
        ]
        grid = tuple(max(1, n) for n in shape)
        doc = _array_doc(shape, grid, str(dtype.newbyteorder("=")), 0, codecs, dimension_names)
        return {join_key(path, "zarr.json"): doc}

    def key_encoding(self, separator: str) -> KeyEncoding:
        return KeyEncoding("/", "c")

    def image_attributes(
        self, settings: ArraySettings, levels: int, windows: dict[int, tuple[float, float]]
    ) -> dict[str, Any]:
        return ngff.ngff_05_attrs(settings, levels, windows)

    def collection_attributes(self, fields: dict[str, Any]) -> dict[str, Any]:
        return ngff.ngff_05_group(fields)

    def read_node(
        self, parent: str, name: str, doc: dict[str, Any], attrs: Callable[[str], dict[str, Any]]
    ) -> ParsedNode | None:
        if name != "zarr.json":
            return None
        return ParsedNode(parent, str(doc.get("node_type")), doc, dict(doc.get("attributes") or {}))

    def parse_array(self, doc: dict[str, Any]) -> ArrayMeta:
        grid = tuple(int(c) for c in doc["chunk_grid"]["configuration"]["chunk_shape"])
        codecs = list(doc.get("codecs") or [])
        sharding = next((c for c in codecs if c.get("name") == "sharding_indexed"), None)
        config = dict(sharding["configuration"]) if sharding is not None else None
        if config is not None:
            chunks = tuple(int(c) for c in config["chunk_shape"])
            codecs = list(config.get("codecs") or [])
        else:
            chunks = grid
        compressor = next((c for c in codecs if c.get("name") not in SERIALIZERS), None)
        serializer = next((c for c in codecs if c.get("name") == "bytes"), None)
        endian = (serializer or {}).get("configuration", {}).get("endian", "little")
        filters = tuple(str(c.get("name")) for c in codecs if c is not compressor and c is not serializer)
        encoding = doc["chunk_key_encoding"]
        default = encoding.get("name") == "default"
        separator = (encoding.get("configuration") or {}).get("separator", "/" if default else ".")
        return ArrayMeta(
            shape=tuple(int(s) for s in doc["shape"]),
            data_type=str(doc["data_type"]),
            chunks=chunks,
            grid=grid,
            sharding=config,
            compressor=None
            if compressor is None
            else numcodecs_config(str(compressor["name"]), dict(compressor.get("configuration") or {})),
            keys=KeyEncoding(str(separator), "c" if default else None),
            byte_order=">" if endian == "big" else "<",
            fill_value=doc.get("fill_value"),
            filters=filters,
        )

    def document_key(self, path: str, kind: str) -> str:
        return join_key(path, "zarr.json")

    def attributes_key(self, path: str) -> str:
        return join_key(path, "zarr.json")
