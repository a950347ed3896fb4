"""Continuing a store acqzarr wrote (``existing: resume``): is it compatible, and where it stops.

A stream asked to resume reads, per image, the image group's session record
(``session_record.py``: it proves acqzarr wrote the image and holds the
settings it was written with) and level 0's array document (its shape along
the append axis is the published extent ``E``).  Only documents are read,
never chunks, so this costs the same for ten timepoints as for a million.

``resume_points`` checks everything first and changes nothing: a store written
with other settings is refused with a ResumeRefused (a ConfigError) naming every mismatch
(key path, stored vs asked), the store untouched.  Only then does
``discard_past`` remove what a killed writer left beyond ``E``: chunk and
shard objects whose first step along the append axis is at or past it,
metadata-column chunks past it, and staged files (``Store.discard_staged``).
The image then continues at ``E`` (``Image``: the levels, the publisher, the
columns and the session record each take their part).

A pyramid resumes level by level: every level's extent is ``E`` (the publisher
shows all levels over one extent) and each reads back its own partial row.  A
pyramid that halves the append axis itself (z appended) shows ``ceil(E / 2**k)``
planes on level k, and the last may be made of one plane (the earlier run
closed with an odd count): level k then goes on after its ``E // 2**k`` planes
made of whole pairs (``pyramid.resume_extent``), and when that count is odd the
plane before it, read back from the store, waits again for its partner
(``PyramidLevel.resume``), so the planes made of one are made again of two.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ResumeRefused
from ..metadata.levels import level_count, level_settings
from ..metadata.zarr_spec import ZarrSpec
from ..metadata.zarr_versions import SPECS
from ..settings import StreamSettings
from ..settings.locations import join_key
from ..stores import Store
from .frame_columns import GROUP
from .pyramid import halved_axis, level_extent
from .session_record import SESSION_KEY

__all__ = ["ResumePoint", "discard_past", "resume_points", "stored_dimensions"]

# Stream-wide settings a resumed store must share with the stream that wrote it.
_STREAM_FIELDS = ("version", "dimension_separator", "positions", "plate")
# Per array (``dimensions`` and the acquisition order are compared on their own).
_ARRAY_FIELDS = ("dtype", "compression", "multiscale", "frame_columns")


@dataclass(frozen=True)
class ResumePoint:
    """Where one image of a store stops, and what it said about itself."""

    extent: int  # level 0's published extent along the append axis
    record: dict[str, Any]  # the session record found in the image group
    columns: dict[str, str]  # per-frame metadata columns published: name -> kind
    windows: dict[int, tuple[float, float]]  # the contrast seen so far, per channel index


def resume_points(settings: StreamSettings, store: Store, spec: ZarrSpec) -> dict[str, ResumePoint]:
    """Every image's resume point; ResumeRefused naming every way the store differs from
    ``settings`` (nothing is written)."""
    where = store.describe()
    groups: dict[str, dict[str, Any]] = {}  # each image group's attributes
    missing = []
    for image in settings.images:
        attrs = _attributes(store, spec, image.key)
        if attrs is None or not isinstance(attrs.get(SESSION_KEY), dict):
            missing.append(image.key or "(root)")
        else:
            groups[image.key] = attrs
    if missing:
        found = _any_record(store)
        if found is not None:  # acqzarr wrote it, with other images: say how it differs
            stored = found.get("settings")
            asked = json.loads(settings.model_dump_json())
            found_problems = _mismatches(stored, asked, 0) if isinstance(stored, dict) else []
            found_problems.append(f"images: asked for {', '.join(missing)}, not in the store")
            raise _refusal(where, found_problems)
        raise ResumeRefused(
            f"{where}: cannot resume: it is not a store acqzarr wrote (no {SESSION_KEY} record in "
            f"an image group at {', '.join(missing)}, nor anywhere else); resume only continues a "
            "store acqzarr wrote"
        )
    asked = json.loads(settings.model_dump_json())
    points: dict[str, ResumePoint] = {}
    problems: list[str] = []
    for image in settings.images:
        record = groups[image.key][SESSION_KEY]
        stored = record.get("settings")
        if not isinstance(stored, dict):
            problems.append(f"{image.key or '(root)'}: {SESSION_KEY}.settings: missing")
            continue
        extent = _extent(store, spec, image.key)
        if extent is None:
            problems.append(f"{image.key or '(root)'}: level 0 array document: missing or unreadable")
            continue
        for problem in _mismatches(stored, asked, extent):
            if problem not in problems:
                problems.append(problem)
        windows = _windows(groups[image.key], image.dtype)
        points[image.key] = ResumePoint(extent, record, _columns(store, spec, image.key), windows)
    if problems:
        raise _refusal(where, problems)
    return points


def stored_dimensions(settings: StreamSettings, store: Store, spec: ZarrSpec) -> list[dict[str, Any]] | None:
    """The dimensions (as settings JSON) that the store's first image of ``settings`` was written
    with, from its session record; None when there is no such record.  A caller that derives
    defaults (the MDA writer's chunking) continues a store with the store's own, so a default
    that changed since the store was written does not refuse it."""
    record = _session_record(store, spec, settings.images[0].key)
    stored = None if record is None else record.get("settings")
    if not isinstance(stored, dict):
        return None
    for array in stored.get("arrays") or []:
        if isinstance(array, dict) and array.get("key") == settings.arrays[0].key:
            dims = array.get("dimensions")
            return [d for d in dims if isinstance(d, dict)] if isinstance(dims, list) else None
    return None


def _refusal(where: str, problems: list[str]) -> ResumeRefused:
    return ResumeRefused(
        f"{where}: cannot resume: the store was written with other settings "
        f"({len(problems)} mismatches; the store is unchanged)\n  " + "\n  ".join(problems)
    )


def discard_past(
    settings: StreamSettings, store: Store, spec: ZarrSpec, points: Mapping[str, ResumePoint]
) -> None:
    """Remove what a killed writer left past each image's extent: objects no publish showed.

    Looks at one directory level per array (``Store.children``: the steps of the append axis, or
    the chunk names of a flat Zarr v2 array), never at every chunk below it."""
    for image in settings.images:
        extent = points[image.key].extent
        halves = halved_axis(image) == 0
        for k, level in enumerate(level_settings(image, level_count(image))):
            depth = level.dimensions[0].chunk * (level.dimensions[0].shard if spec.sharded else 1)
            shown = level_extent(extent, k, halves)  # what level k shows of E
            _discard(store, spec, join_key(image.key, str(k)), depth, shown)
        group = join_key(image.key, GROUP)
        published = points[image.key].columns
        for name in store.children(group):
            path = join_key(group, name)
            if name in spec.document_names:
                continue
            rows = _column_rows(store, spec, path) if name in published else None
            if rows is None:  # a column no publish showed: nothing of it is the store's
                store.delete_tree(path)
            else:
                _discard(store, spec, path, rows, extent)
    store.discard_staged()


def _discard(store: Store, spec: ZarrSpec, array: str, depth: int, extent: int) -> None:
    """Delete the objects of ``array`` (``depth`` steps of the append axis each) from ``extent`` on:
    every name below the array (after the key prefix, Zarr v3's "c") whose first coordinate is
    that far, with everything below it."""
    keys = spec.keys
    base = join_key(array, keys.prefix) if keys.prefix is not None else array
    for name in store.children(base):
        first = name.split(keys.separator, 1)[0]
        if first.isdigit() and int(first) * depth >= extent:
            store.delete_tree(join_key(base, name))


def _any_record(store: Store) -> dict[str, Any] | None:
    """A session record anywhere in the store, in any Zarr version (to name what differs when the
    asked images are not where the settings put them).  Lists the store: only on the way to a
    refusal."""
    for key in sorted(store.list()):
        path, _, name = key.rpartition("/")
        for spec in SPECS:
            if name in spec.node_names and spec.document_key(path, "group") == key:
                record = _session_record(store, spec, path)
                if record is not None:
                    return record
    return None


def _doc(store: Store, key: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(store.get(key))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _attributes(store: Store, spec: ZarrSpec, path: str) -> dict[str, Any] | None:
    key = spec.document_key(path, "group")
    doc = _doc(store, key)
    if doc is None:
        return None
    node = spec.read_node(path, key.rsplit("/", 1)[-1], doc, lambda k: _doc(store, k) or {})
    return None if node is None or node.kind != "group" else node.attrs


def _session_record(store: Store, spec: ZarrSpec, path: str) -> dict[str, Any] | None:
    attrs = _attributes(store, spec, path)
    record = None if attrs is None else attrs.get(SESSION_KEY)
    return record if isinstance(record, dict) else None


def _extent(store: Store, spec: ZarrSpec, path: str) -> int | None:
    doc = _doc(store, spec.document_key(join_key(path, "0"), "array"))
    try:
        return None if doc is None else spec.parse_array(doc).shape[0]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None


def _columns(store: Store, spec: ZarrSpec, path: str) -> dict[str, str]:
    attrs = _attributes(store, spec, join_key(path, GROUP)) or {}
    columns = (attrs.get(GROUP) or {}).get("columns") or {}
    return {str(k): str(v) for k, v in columns.items()}


def _windows(attrs: dict[str, Any], dtype: str) -> dict[int, tuple[float, float]]:
    """The omero windows the store shows, as the (min, max) seen per channel index.  A window over
    the dtype's whole range is what a channel with no data shows: not a value seen."""
    block = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs  # NGFF 0.5 / 0.4
    channels = ((block or {}).get("omero") or {}).get("channels") or []
    kind = np.dtype(dtype)
    info = np.iinfo(kind) if kind.kind in "iu" else np.finfo(kind)
    full = (float(info.min), float(info.max))
    out = {}
    for c, channel in enumerate(channels):
        window = channel.get("window") if isinstance(channel, dict) else None
        if not isinstance(window, dict):
            continue
        try:
            seen = (float(window["start"]), float(window["end"]))
        except (TypeError, KeyError, ValueError):
            continue
        if seen != full:
            out[c] = seen
    return out


def _column_rows(store: Store, spec: ZarrSpec, path: str) -> int | None:
    doc = _doc(store, spec.document_key(path, "array"))
    try:
        return None if doc is None else spec.parse_array(doc).grid[0]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None


def _mismatches(stored: dict[str, Any], asked: dict[str, Any], extent: int) -> list[str]:
    """Every difference that makes the store another dataset than ``asked`` would write."""
    out = []

    def differ(path: str, s: Any, a: Any) -> None:
        if s != a:
            out.append(f"{path}: stored {json.dumps(s)}, asked {json.dumps(a)}")

    for name in _STREAM_FIELDS:
        differ(name, stored.get(name), asked.get(name))
    stored_arrays = {a.get("key"): a for a in stored.get("arrays") or [] if isinstance(a, dict)}
    asked_keys = [a["key"] for a in asked["arrays"]]
    for key in stored_arrays:
        if key not in asked_keys:
            out.append(f"arrays: the store has array {key!r}, not asked for")
    for i, a in enumerate(asked["arrays"]):
        s = stored_arrays.get(a["key"])
        if s is None:
            out.append(f"arrays[{i}]: array {a['key']!r} is not in the store")
            continue
        for name in _ARRAY_FIELDS:
            differ(f"arrays[{i}].{name}", s.get(name), a.get(name))
        differ(f"arrays[{i}].acquisition_order", _order(s), _order(a))
        out += _dimension_mismatches(i, s.get("dimensions") or [], a["dimensions"], extent)
    return out


def _order(array: dict[str, Any]) -> list[str]:
    """The acquisition order, as given or (when not) the storage order of the index axes."""
    order = array.get("acquisition_order")
    if order:
        return list(order)
    names = [d.get("name") for d in array.get("dimensions") or []]
    return names[: -2 if len(names) > 2 else -1]


def _dimension_mismatches(i: int, stored: list[Any], asked: list[Any], extent: int) -> list[str]:
    if [d.get("name") for d in stored] != [d["name"] for d in asked]:
        names = [d.get("name") for d in stored], [d["name"] for d in asked]
        return [f"arrays[{i}].dimensions: stored axes {names[0]}, asked {names[1]}"]
    out = []
    for j, (s, a) in enumerate(zip(stored, asked, strict=True)):
        for name in sorted(set(s) | set(a)):
            path = f"arrays[{i}].dimensions[{j}].{name}"
            if j == 0 and name == "size":
                if a[name] != 0 and a[name] < extent:
                    out.append(
                        f"{path}: the store holds {extent} steps, asked {a[name]} (the append axis may grow)"
                    )
            elif s.get(name) != a.get(name):
                out.append(f"{path}: stored {json.dumps(s.get(name))}, asked {json.dumps(a.get(name))}")
    return out
