"""``acqzarr validate``: is this a well-formed Zarr store with well-formed OME-NGFF images?

Checks what a reader relies on, with messages that name the object and the
rule: every metadata document parses and has the fields its Zarr version
requires; every stored chunk or shard key lies inside the array's grid;
every shard index is whole, checksummed (crc32c) and points inside its
shard; every OME-NGFF image follows the 0.4 (Zarr v2) or 0.5 (Zarr v3)
rules for axes, datasets and coordinate transformations; no pyramid is
ragged (every level covers level 0's extent); every per-frame metadata
column is indexed like its image's frames; and the plate, well and series
metadata above the images point at groups that exist.  ``deep`` also decodes every
chunk, which reads the whole store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codecs.sharding import ShardIndex, index_nbytes
from ..engine.frame_columns import GROUP as FRAMES_GROUP
from ..engine.frame_columns import JSON_COLUMN
from ..metadata.zarr_spec import ArrayMeta, ZarrSpec
from ..settings.locations import join_key
from ..stores import Store
from .info import Node, StoreTree, ngff_block, ome_fields

__all__ = ["Problem", "validate"]

AXIS_TYPES = ("time", "channel", "space")


@dataclass(frozen=True)
class Problem:
    key: str  # the object or node the problem is in
    message: str
    severity: str = "error"  # "error": readers may fail or misread; "warning": harmless but odd

    def __str__(self) -> str:
        return f"{self.severity}: {self.key or '(root)'}: {self.message}"


def validate(store: Store, *, deep: bool = False) -> list[Problem]:
    tree = StoreTree(store)
    problems = [Problem(k, why) for k, why in tree.broken.items()]
    spec = tree.spec
    if spec is None:
        return [*problems, Problem("", "no Zarr metadata (zarr.json, .zgroup or .zarray) in this store")]
    if "" not in tree.nodes and not any(k in tree.broken for k in spec.node_names):
        problems.append(Problem("", "the store root has no group or array metadata"))
    problems += [Problem(k, "a staging file left by an interrupted write", "warning") for k in tree.temp]
    for node in tree.nodes.values():
        problems += _check_node(spec, tree, node)
        if node.kind == "array" and not _missing_fields(spec, node):
            problems += _check_chunks(tree, node, deep)
        if node.kind == "group":
            problems += _check_ngff(spec, tree, node)
            problems += _check_frame_columns(tree, node)
    return problems + _check_collections(spec, tree)


def _check_collections(spec: ZarrSpec, tree: StoreTree) -> list[Problem]:
    """Every well a plate lists is a well group, every field a well lists is an image, and every
    path the OME group's ``series`` lists is an image: a reader follows them blindly."""
    out: list[Problem] = []
    images = tree.images_paths()
    plate = tree.plate()
    if plate is not None:
        for i, well in enumerate(plate.get("wells") or []):
            path = well.get("path") if isinstance(well, dict) else None
            node = tree.nodes.get(str(path)) if path is not None else None
            if node is None or "well" not in ome_fields(node.attrs):
                out.append(
                    Problem(
                        spec.attributes_key(""),
                        f"plate.wells[{i}].path {path!r} is not a well group in this store",
                    )
                )
    for node in tree.nodes.values():
        well = ome_fields(node.attrs).get("well") if node.kind == "group" else None
        if not isinstance(well, dict):
            continue
        for i, image in enumerate(well.get("images") or []):
            path = image.get("path") if isinstance(image, dict) else None
            if path is None or join_key(node.path, str(path)) not in images:
                where = spec.attributes_key(node.path)
                out.append(Problem(where, f"well.images[{i}].path {path!r} is not an image in this store"))
    for i, path in enumerate(tree.series() or []):
        if not isinstance(path, str) or path not in images:
            out.append(
                Problem(spec.attributes_key("OME"), f"series[{i}] {path!r} is not an image in this store")
            )
    return out


def _missing_fields(spec: ZarrSpec, node: Node) -> list[str]:
    return [f for f in spec.required_array_fields if f not in node.meta]


def _check_node(spec: ZarrSpec, tree: StoreTree, node: Node) -> list[Problem]:
    key = spec.document_key(node.path, node.kind)
    out = []
    fmt = node.meta.get("zarr_format")
    if fmt != spec.version:
        out.append(Problem(key, f"zarr_format is {fmt!r}, expected {spec.version}"))
    if node.kind not in ("group", "array"):
        out.append(Problem(key, f"node_type is {node.kind!r}, expected 'group' or 'array'"))
    if node.kind == "array":
        missing = _missing_fields(spec, node)
        if missing:
            out.append(Problem(key, f"array metadata lacks required fields {missing}"))
    parent = node.path.rpartition("/")[0] if node.path else None
    if parent is not None and parent in tree.nodes and tree.nodes[parent].kind == "array":
        out.append(Problem(key, f"a node inside array {parent!r}"))
    return out


def _check_chunks(tree: StoreTree, node: Node, deep: bool) -> list[Problem]:
    out: list[Problem] = []
    try:
        meta: ArrayMeta = tree.array_meta(node)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [Problem(node.path, f"unreadable array metadata: {exc!r}")]
    shape, object_shape = meta.shape, meta.grid
    if len(object_shape) != len(shape):
        return [Problem(node.path, f"chunk shape {object_shape} does not match the rank of shape {shape}")]
    extent = meta.grid_extent
    sharding = meta.sharding
    start_index = sharding is not None and sharding.get("index_location", "end") != "end"
    if start_index:  # keys are still checked; the shards' contents are not
        out.append(Problem(node.path, "index_location 'start' is not checked", "warning"))
    n_inner = math.prod(s // c for s, c in zip(object_shape, meta.chunks, strict=False))
    decoder = _Decoder(meta.compressor) if deep else None  # built once per array
    for rel in tree.chunk_keys(node):
        key = join_key(node.path, rel)
        index = meta.keys.parse(rel)
        if index is None or len(index) != len(shape):
            out.append(Problem(key, "not a chunk key of this array", "warning"))
            continue
        if any(i >= e for i, e in zip(index, extent, strict=True)):
            # The writers store objects before publishing the shape that covers them, so a crash can
            # leave these behind; readers ignore them.
            out.append(Problem(key, f"outside the array's grid {extent} (shape {shape})", "warning"))
            continue
        if start_index or (sharding is None and decoder is None):
            continue  # nothing more to check in this object without decoding it
        data = tree.store.get(key)  # read once for the index check and the decoding
        pieces = [data]
        if sharding is not None:
            problems, pieces = _check_shard(key, data, n_inner)
            out += problems
        if decoder is not None:
            out += decoder.decode(key, pieces)
    return out


def _check_shard(key: str, data: bytes, n: int) -> tuple[list[Problem], list[bytes]]:
    """Problems of a shard's index (at the end), and the inner chunks it points to."""
    try:
        index = ShardIndex.decode(data, n)
    except ValueError as exc:
        return [Problem(key, str(exc))], []
    present = index.present()
    used = np.array(present, dtype=np.uint64).reshape(-1, 2)
    pieces = [data[o : o + b] for o, b in present]
    body_end = len(data) - index_nbytes(n)
    if (used[:, 0] + used[:, 1] > body_end).any():
        return [Problem(key, "shard index points past the end of the chunk data")], pieces
    order = np.argsort(used[:, 0])
    starts, ends = used[order, 0], used[order, 0] + used[order, 1]
    if (starts[1:] < ends[:-1]).any():
        return [Problem(key, "shard index has overlapping chunks")], pieces
    return [], pieces


class _Decoder:
    """The array's compressor as a numcodecs codec, built once; decodes each stored chunk."""

    def __init__(self, comp: dict[str, Any] | None) -> None:
        self.config = comp
        self.codec: Any = None
        self.error: Exception | None = None
        if comp is not None:
            import numcodecs

            try:
                self.codec = numcodecs.get_codec(comp)
            except Exception as exc:  # reported on every object, as a decode failure
                self.error = exc

    def decode(self, key: str, pieces: list[bytes]) -> list[Problem]:
        if self.config is None:
            return []
        try:
            if self.error is not None:
                raise self.error
            for piece in pieces:
                self.codec.decode(piece)
        except Exception as exc:  # any decoder failure is a corrupt object
            return [Problem(key, f"does not decode with {self.config.get('id')}: {exc}")]
        return []


def _check_ngff(spec: ZarrSpec, tree: StoreTree, node: Node) -> list[Problem]:
    version, block = ngff_block(node.attrs)
    if block is None:
        return []
    where = spec.attributes_key(node.path)
    expected = spec.ngff_version
    out = []
    if version != expected:
        out.append(
            Problem(
                where, f"OME-NGFF version {version!r} in a Zarr v{spec.version} store; expected {expected}"
            )
        )
    multiscales = block.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales:
        return [*out, Problem(where, "multiscales must be a non-empty list")]
    for i, ms in enumerate(multiscales):
        out += _check_multiscale(tree, node, where, i, ms)
    return out


@dataclass(frozen=True)
class _Level:
    index: int  # in datasets
    path: str  # of its array
    shape: tuple[int, ...]
    scale: Any  # its coordinateTransformations scale, as found


def _check_multiscale(tree: StoreTree, node: Node, where: str, i: int, ms: Any) -> list[Problem]:
    p = f"multiscales[{i}]"
    if not isinstance(ms, dict):
        return [Problem(where, f"{p} is not an object")]
    out = []
    axes = ms.get("axes")
    if not isinstance(axes, list) or not 2 <= len(axes) <= 5:
        return [Problem(where, f"{p}.axes must list 2 to 5 axes")]
    names = [a.get("name") if isinstance(a, dict) else None for a in axes]
    types = [a.get("type") if isinstance(a, dict) else None for a in axes]
    if None in names or len(set(names)) != len(names):
        out.append(Problem(where, f"{p}.axes names must be present and unique, got {names}"))
    if types.count("space") not in (2, 3):
        out.append(Problem(where, f"{p}.axes need 2 or 3 space axes, got types {types}"))
    if types.count("time") > 1 or types.count("channel") > 1:
        out.append(Problem(where, f"{p}.axes allow at most one time and one channel axis, got {types}"))
    rank = {"time": 0, "channel": 1, "space": 2}
    order = [rank.get(str(t), 1) for t in types]  # custom/absent types sit with channel
    if order != sorted(order):
        out.append(Problem(where, f"{p}.axes must be ordered time, channel, space; got {types}"))
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        return [*out, Problem(where, f"{p}.datasets must be a non-empty list")]
    levels: list[_Level] = []
    dtype = None
    for j, ds in enumerate(datasets):
        q = f"{p}.datasets[{j}]"
        path = ds.get("path") if isinstance(ds, dict) else None
        array = tree.nodes.get(join_key(node.path, str(path))) if path is not None else None
        if array is None or array.kind != "array":
            out.append(Problem(where, f"{q}.path {path!r} is not an array in this store"))
            continue
        shape = tuple(array.meta.get("shape", ()))
        if len(shape) != len(axes):
            out.append(
                Problem(where, f"{q}: array {path!r} has {len(shape)} dimensions, axes has {len(axes)}")
            )
        transforms = ds.get("coordinateTransformations")
        scale = None
        if not isinstance(transforms, list) or not transforms or transforms[0].get("type") != "scale":
            out.append(Problem(where, f"{q}.coordinateTransformations must start with a scale"))
        else:
            scale = transforms[0].get("scale")
            for t in transforms:
                values = t.get("scale", t.get("translation"))
                if not isinstance(values, list) or len(values) != len(axes):
                    out.append(
                        Problem(where, f"{q}: a {t.get('type')} needs {len(axes)} values, got {values}")
                    )
            if len(transforms) > 2 or (len(transforms) == 2 and transforms[1].get("type") != "translation"):
                out.append(Problem(where, f"{q}: only a scale and then a translation are allowed"))
        level_dtype = array.meta.get("data_type", array.meta.get("dtype"))
        if dtype is not None and level_dtype != dtype:
            out.append(Problem(where, f"{q}: dtype {level_dtype} differs from level 0's {dtype}"))
        dtype = dtype or level_dtype
        levels.append(_Level(j, array.path, shape, scale))
    return out + _check_level_shapes(where, p, names, levels)


def _check_level_shapes(where: str, p: str, names: list[Any], levels: list[_Level]) -> list[Problem]:
    """Every level covers level 0's extent, and the levels go from largest to smallest.

    Along an axis where a level's scale is ``factor`` times level 0's, it has
    ceil(n0 / factor) samples (floor or ceil if the factor is not an integer):
    an odd size keeps its last sample, as acqzarr's replicate-edge halving
    does.  A level that falls short or overshoots is a ragged pyramid: a
    reader sees levels covering different extents (a writer killed between
    publishing level 0's shape and level 1's leaves one).  Axes whose scales
    cannot be read (reported above) are not checked.
    """
    out: list[Problem] = []
    if not levels or levels[0].index != 0:
        return out  # without level 0 there is no extent to compare with
    first = levels[0]
    previous: tuple[int, ...] | None = None
    for level in levels:
        ragged = []
        if len(level.shape) == len(first.shape):
            for i, (n0, n) in enumerate(zip(first.shape, level.shape, strict=True)):
                implied = _implied_sizes(n0, _factor(first.scale, level.scale, i, len(first.shape)))
                if implied and n not in implied:
                    name = names[i] if i < len(names) and names[i] is not None else i
                    said = " or ".join(map(str, implied))
                    why = f"level {level.index} has {n} along {name!r}, level 0 ({n0}) implies {said}"
                    ragged.append(Problem(level.path, f"ragged pyramid: {why}"))
        out += ragged
        if (
            not ragged
            and previous is not None
            and any(a > b for a, b in zip(level.shape, previous, strict=False))
        ):
            q = f"{p}.datasets[{level.index}]"
            out.append(
                Problem(where, f"{q}: shape {level.shape} is larger than the previous level's {previous}")
            )
        previous = None if ragged else level.shape
    return out


def _factor(scale0: Any, scale: Any, axis: int, rank: int) -> float | None:
    """How many times coarser than level 0 a level is along ``axis``; None if a scale is unusable."""
    if not all(isinstance(s, list) and len(s) == rank for s in (scale0, scale)):
        return None
    a, b = scale0[axis], scale[axis]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf for v in (a, b)):
        return None
    return float(b / a)


def _implied_sizes(n0: int, factor: float | None) -> tuple[int, ...]:
    """The sizes a level ``factor`` times coarser than level 0's ``n0`` samples may have; () if unknown."""
    if factor is None:
        return ()
    whole = round(factor)
    if (
        whole >= 1 and abs(factor - whole) <= 1e-9 * factor
    ):  # scales written as decimals: 0.3 / 0.1 is 2.9999999999999996
        return (-(-n0 // whole),)
    return tuple(sorted({math.floor(n0 / factor), math.ceil(n0 / factor)}))


def _check_frame_columns(tree: StoreTree, image: Node) -> list[Problem]:
    """The per-frame metadata columns of an image (``engine/frame_columns.py``): each is indexed like the
    frames (its shape is level 0's index axes: the first as long as level 0's, the others equal),
    of a documented kind (the JSON column a string, every other float64 or int64), and is the
    kind the group's ``acqzarr_frames.columns`` lists.  A reader pairs ``column[t, c, z]`` with
    ``image[t, c, z]``, so a column of another shape pairs metadata with the wrong frames."""
    group = tree.nodes.get(join_key(image.path, FRAMES_GROUP))
    _, block = ngff_block(image.attrs)
    level0 = _level0(tree, image, block)
    if group is None or level0 is None:
        return []  # no columns, or no image to compare them with (reported by _check_ngff)
    shape0 = tuple(level0.meta.get("shape", ()))
    index_shape = shape0[: len(shape0) - min(2, len(shape0) - 1)]  # settings.ArraySettings.frame_names
    if group.kind != "group":
        return [Problem(group.path, f"{FRAMES_GROUP} must be a group of per-frame metadata columns")]
    out: list[Problem] = []
    described = group.attrs.get(FRAMES_GROUP, {})
    listed = described.get("columns", {}) if isinstance(described, dict) else None
    if not isinstance(listed, dict):
        out.append(Problem(group.path, f"{FRAMES_GROUP}.columns must map column names to kinds"))
        listed = {}
    columns = {
        n.path.rpartition("/")[2]: n for n in tree.nodes.values() if n.path.rpartition("/")[0] == group.path
    }
    for name, node in sorted(columns.items()):
        if node.kind != "array":
            out.append(Problem(node.path, "a group among the per-frame metadata columns"))
            continue
        shape = tuple(node.meta.get("shape", ()))
        if shape != index_shape:
            out.append(
                Problem(
                    node.path,
                    f"per-frame column has shape {shape}, the image's frames are indexed {index_shape} "
                    f"(level 0 {level0.path!r} is {shape0})",
                )
            )
        kind = _column_kind(tree, node)
        allowed = ("string",) if name == JSON_COLUMN else ("float64", "int64")
        if kind not in allowed:
            out.append(
                Problem(
                    node.path, f"per-frame column of kind {kind!r}; {name!r} must be {' or '.join(allowed)}"
                )
            )
        elif name in listed and listed[name] != kind:
            out.append(
                Problem(node.path, f"stored as {kind}, but {group.path!r} lists it as {listed[name]!r}")
            )
        elif name not in listed:
            out.append(
                Problem(node.path, f"not listed in {FRAMES_GROUP}.columns of {group.path!r}", "warning")
            )
    for name in sorted(set(listed) - set(columns)):
        out.append(Problem(group.path, f"lists column {name!r}, which is not an array in this store"))
    return out


def _level0(tree: StoreTree, image: Node, block: dict[str, Any] | None) -> Node | None:
    try:
        path = block["multiscales"][0]["datasets"][0]["path"]  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return None
    node = tree.nodes.get(join_key(image.path, str(path)))
    return node if node is not None and node.kind == "array" else None


def _column_kind(tree: StoreTree, node: Node) -> str | None:
    """float64, int64 or string (as ``frame_columns`` names them), or the stored type if none;
    None when the column's document does not parse."""
    try:
        return tree.array_meta(node).data_type
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
