"""Read a store back without zarr-python: its nodes, arrays, images and what they hold.

``acqzarr info`` and ``acqzarr validate`` use this to look at any store they
are pointed at (ours or another writer's), through the same Store interface
the writers use, so they work wherever the writers can write.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metadata.zarr_spec import ArrayMeta, ParsedNode, ZarrSpec
from ..metadata.zarr_versions import SPECS, spec_in
from ..settings.locations import join_key
from ..stores import Store

__all__ = ["ArrayInfo", "ImageInfo", "Node", "StoreTree", "describe", "ome_fields"]

METADATA_NAMES = frozenset(name for spec in SPECS for name in spec.document_names)
Node = ParsedNode


def _is_temp(key: str) -> bool:
    """A staging file of an atomic write that was interrupted (LocalStore names them .name.pid.n.tmp)."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


@dataclass
class ArrayInfo:
    path: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]  # inner chunks
    shards: tuple[int, ...] | None  # shard shape when sharded
    codec: str
    objects: int
    stored_bytes: int

    @property
    def raw_bytes(self) -> int:
        """Uncompressed size; a variable-length (string) array counts as its stored size."""
        if self.dtype in ("string", "object"):
            return self.stored_bytes
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    @property
    def ratio(self) -> float | None:
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else None


@dataclass
class ImageInfo:
    path: str
    ngff: str
    axes: list[str]
    levels: list[str]
    frames: int
    session: dict[str, Any] | None
    frame_fields: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)  # omero channel labels
    translation: list[float] | None = None  # the multiscale-level translation (a stage position)


class StoreTree:
    """Every node of a store, parsed; documents that do not parse are kept as ``broken``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        keys = sorted(store.list())
        self.temp = [k for k in keys if _is_temp(k)]
        self.keys = [k for k in keys if not _is_temp(k)]
        # The store's Zarr version: the one whose node documents it holds (None: not a Zarr store).
        self.spec: ZarrSpec | None = spec_in(k.rsplit("/", 1)[-1] for k in self.keys)
        self.version = self.spec.version if self.spec is not None else None
        self.nodes: dict[str, Node] = {}
        self.broken: dict[str, str] = {}  # key -> why it could not be read
        present = set(self.keys)
        for key in self.keys:
            parent, _, name = key.rpartition("/")
            if self.spec is None or name not in self.spec.node_names:
                continue
            doc = self._doc(key)
            if doc is not None:
                node = self.spec.read_node(
                    parent, name, doc, lambda k: (self._doc(k) or {}) if k in present else {}
                )
                if node is not None:
                    self.nodes[parent] = node

    def _doc(self, key: str) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.store.get(key))
        except (ValueError, UnicodeDecodeError) as exc:
            self.broken[key] = f"not valid JSON: {exc}"
            return None
        if not isinstance(doc, dict):
            self.broken[key] = "not a JSON object"
            return None
        return doc

    def arrays(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "array"]

    def chunk_keys(self, array: Node) -> list[str]:
        """Keys of the stored chunk (or shard) objects of ``array``, relative to it."""
        prefix = f"{array.path}/" if array.path else ""
        return [
            k[len(prefix) :]
            for k in self.keys
            if k.startswith(prefix) and k.rsplit("/", 1)[-1] not in METADATA_NAMES
        ]

    def array_meta(self, array: Node) -> ArrayMeta:
        """The array's document parsed by its Zarr version; KeyError, TypeError, ValueError or
        AttributeError when it is malformed (``validate`` reports which)."""
        assert self.spec is not None  # an array node exists only in a store of known version
        return self.spec.parse_array(array.meta)

    def array_info(self, array: Node) -> ArrayInfo:
        m = self.array_meta(array)
        codec = "none" if m.compressor is None else _codec_name(m.compressor)
        objects = self.chunk_keys(array)
        stored = sum(self.store.size(join_key(array.path, k)) for k in objects)
        return ArrayInfo(array.path, m.shape, m.data_type, m.chunks, m.shards, codec, len(objects), stored)

    def images(self) -> list[ImageInfo]:
        out = []
        for node in self.nodes.values():
            ngff, block = ngff_block(node.attrs)
            if block is None or node.kind != "group":
                continue
            ms = block["multiscales"][0]
            levels = [str(d.get("path")) for d in ms.get("datasets", [])]
            level0 = self.nodes.get(join_key(node.path, levels[0])) if levels else None
            shape = tuple(level0.meta.get("shape", ())) if level0 else ()
            frames = math.prod(shape[:-2]) if len(shape) > 2 else (1 if shape else 0)
            fields_node = self.nodes.get(join_key(node.path, "acqzarr_frames"))
            columns = fields_node.attrs.get("acqzarr_frames", {}).get("columns", {}) if fields_node else {}
            fields = [f"{name} ({kind})" for name, kind in columns.items()]
            omero = block.get("omero")
            channels = omero.get("channels", []) if isinstance(omero, dict) else []
            out.append(
                ImageInfo(
                    node.path,
                    ngff,
                    [str(a.get("name")) for a in ms.get("axes", [])],
                    levels,
                    frames,
                    node.attrs.get("acqzarr_session"),
                    fields,
                    [str(c.get("label")) for c in channels if isinstance(c, dict)],
                    _translation(ms),
                )
            )
        return out

    def images_paths(self) -> set[str]:
        """Paths of the groups that are OME-NGFF images."""
        return {n.path for n in self.nodes.values() if n.kind == "group" and ngff_block(n.attrs)[1]}

    def plate(self) -> dict[str, Any] | None:
        """The root's plate block, if the store is an HCS plate."""
        root = self.nodes.get("")
        plate = ome_fields(root.attrs).get("plate") if root is not None else None
        return plate if isinstance(plate, dict) else None

    def series(self) -> list[Any] | None:
        """The image paths the ``OME`` group lists (bioformats2raw layout), if any."""
        group = self.nodes.get("OME")
        series = ome_fields(group.attrs).get("series") if group is not None else None
        return series if isinstance(series, list) else None


def ome_fields(attrs: dict[str, Any]) -> dict[str, Any]:
    """A group's OME-NGFF keys: under "ome" in 0.5, at the top of the attributes in 0.4."""
    ome = attrs.get("ome")
    return ome if isinstance(ome, dict) else attrs


def _translation(ms: dict[str, Any]) -> list[float] | None:
    transforms = ms.get("coordinateTransformations")
    if not isinstance(transforms, list):
        return None
    found = [
        t.get("translation") for t in transforms if isinstance(t, dict) and t.get("type") == "translation"
    ]
    return found[0] if found and isinstance(found[0], list) else None


def ngff_block(attrs: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """The OME-NGFF block of a group's attributes and its version (0.5 nests it under "ome")."""
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return str(ome.get("version")), ome
    if "multiscales" in attrs:
        ms = attrs["multiscales"]
        version = ms[0].get("version") if isinstance(ms, list) and ms and isinstance(ms[0], dict) else None
        return str(version), attrs
    return "", None


def _codec_name(compressor: dict[str, Any]) -> str:
    """A compressor's numcodecs config in a few words ("blosc lz4 clevel 1 shuffle")."""
    name = compressor.get("id")
    if name == "blosc":
        shuffle = compressor.get("shuffle")
        shuffle = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle", -1: "autoshuffle"}.get(shuffle, shuffle)  # type: ignore[arg-type]
        return f"blosc {compressor.get('cname')} clevel {compressor.get('clevel')} {shuffle}"
    return str(name)


def describe(store: Store) -> dict[str, Any]:
    """Everything ``acqzarr info`` reports, as plain data (printed as text or JSON)."""
    tree = StoreTree(store)
    arrays = [tree.array_info(a) for a in sorted(tree.arrays(), key=lambda n: n.path)]
    stored = sum(a.stored_bytes for a in arrays)
    raw = sum(a.raw_bytes for a in arrays)
    return {
        "store": store.describe(),
        "zarr_format": tree.version,
        "arrays": [
            {
                "path": a.path,
                "shape": list(a.shape),
                "dtype": a.dtype,
                "chunks": list(a.chunks),
                "shards": None if a.shards is None else list(a.shards),
                "codec": a.codec,
                "objects": a.objects,
                "stored_bytes": a.stored_bytes,
                "ratio": a.ratio,
            }
            for a in arrays
        ],
        "images": [
            {
                "path": im.path,
                "ngff": im.ngff,
                "axes": im.axes,
                "levels": im.levels,
                "frames": im.frames,
                "frame_metadata": im.frame_fields,
                "session": im.session,
                "channels": im.channels,
                "translation": im.translation,
            }
            for im in sorted(tree.images(), key=lambda i: i.path)
        ],
        "plate": _plate_summary(tree),
        "series": tree.series(),
        "stored_bytes": stored,
        "ratio": raw / stored if stored else None,
    }


def _plate_summary(tree: StoreTree) -> dict[str, Any] | None:
    """The plate's name, rows, columns, and each well with its fields (from the well groups)."""
    plate = tree.plate()
    if plate is None:
        return None
    wells = []
    for well in plate.get("wells") or []:
        path = str(well.get("path")) if isinstance(well, dict) else str(well)
        node = tree.nodes.get(path)
        block = ome_fields(node.attrs).get("well") if node is not None else None
        images = block.get("images", []) if isinstance(block, dict) else []
        wells.append({"path": path, "fields": [str(i.get("path")) for i in images if isinstance(i, dict)]})
    return {
        "name": plate.get("name"),
        "rows": [str(r.get("name")) for r in plate.get("rows") or [] if isinstance(r, dict)],
        "columns": [str(c.get("name")) for c in plate.get("columns") or [] if isinstance(c, dict)],
        "wells": wells,
    }


def render(info: dict[str, Any]) -> str:
    """The human-readable ``acqzarr info`` report."""
    fmt = info["zarr_format"]
    lines = [
        f"{info['store']}: Zarr v{fmt}, {len(info['arrays'])} arrays, {len(info['images'])} images, "
        f"{info['stored_bytes'] / 1e6:.1f} MB stored"
        + (f", ratio {info['ratio']:.2f}" if info["ratio"] else "")
    ]
    arrays = {a["path"]: a for a in info["arrays"]}
    plate = info.get("plate")
    if plate:
        lines.append(
            f"plate {plate['name'] or '(unnamed)'}: {len(plate['rows'])} rows x {len(plate['columns'])} "
            f"columns, {len(plate['wells'])} wells: "
            + ", ".join(f"{w['path']} ({len(w['fields'])} fields)" for w in plate["wells"])
        )
    if info.get("series"):
        lines.append(f"series (OME group): {len(info['series'])} images")
    for im in info["images"]:
        lines.append(
            f"image {im['path'] or '(root)'}: OME-NGFF {im['ngff']}, axes {','.join(im['axes'])}, "
            f"{im['frames']} frames, {len(im['levels'])} levels"
        )
        if im.get("channels"):
            lines.append(f"  channels: {', '.join(im['channels'])}")
        if im.get("translation"):
            shift = ", ".join(f"{a}={v:g}" for a, v in zip(im["axes"], im["translation"], strict=False) if v)
            lines.append(f"  stage position: {shift or 'origin'}")
        for level in im["levels"]:
            a = arrays.get(join_key(im["path"], level))
            if a is not None:
                lines.append("  " + _array_line(level, a))
        if im["frame_metadata"]:
            lines.append(f"  per-frame metadata in acqzarr_frames/: {', '.join(im['frame_metadata'])}")
        s = im["session"]
        if s:
            lines.append("  session: " + _session_line(s))
            segments = s.get("segments")
            if isinstance(segments, list) and len(segments) > 1:  # a store that was resumed
                lines += [f"    segment {i + 1}: " + _segment_line(seg) for i, seg in enumerate(segments)]
    shown = {join_key(im["path"], lv) for im in info["images"] for lv in im["levels"]}
    for path, a in arrays.items():
        if path not in shown and "acqzarr_frames" not in path:
            lines.append(_array_line(path or "(root)", a))
    return "\n".join(lines)


def _session_line(s: dict[str, Any]) -> str:
    """The session record (``engine/session_record.py``) in one line: who wrote it, counts, how it ended."""
    given = s.get("source")
    source: dict[str, Any] = given if isinstance(given, dict) else {}
    who = " ".join(str(source[k]) for k in ("kind", "driver", "series_id") if source.get(k))
    if s.get("completed"):
        state = "completed"
    elif s.get("stop") is None:
        state = "not closed (still recording, or killed)"
    else:
        state = f"incomplete ({s.get('interrupted') or source.get('end') or 'closed as incomplete'})"
    return (
        f"{who or 'unknown source'}, {s.get('frames_on_disk')} frames on disk, {s.get('frames_skipped')} "
        f"skipped, {s.get('frames_dropped')} dropped, {s.get('start')} to {s.get('stop')}, {state}, "
        f"{s.get('software')}"
    )


def _segment_line(seg: Any) -> str:
    """One segment of a resumed store's session record: when, what, how it ended."""
    if not isinstance(seg, dict):
        return repr(seg)
    return (
        f"{seg.get('start')} to {seg.get('stop')}, {seg.get('frames_accepted')} frames accepted, "
        f"{seg.get('frames_skipped')} skipped, {seg.get('frames_dropped')} dropped, "
        f"{seg.get('ended') or 'running'}"
    )


def _array_line(name: str, a: dict[str, Any]) -> str:
    shards = f" shards {tuple(a['shards'])}" if a["shards"] else ""
    ratio = f" ratio {a['ratio']:.2f}" if a["ratio"] else ""
    return (
        f"{name}: {tuple(a['shape'])} {a['dtype']} chunks {tuple(a['chunks'])}{shards} {a['codec']}; "
        f"{a['objects']} objects, {a['stored_bytes'] / 1e6:.1f} MB{ratio}"
    )
