"""Per-frame metadata beside an image: typed columns and a JSON column, indexed like the frames.

``Stream.append(frames, metadata=...)`` hands each frame a mapping.  Fields
with a declared type (``BUILTIN_COLUMNS`` or ``ArraySettings.frame_columns``)
go to a typed column, every other field into one JSON object per frame.
Each column is a Zarr array at ``<image>/acqzarr_frames/<name>`` shaped like
the image's index axes (``(t,)`` for a ``(t, y, x)`` image, ``(t, c, z)``
for ``(t, c, z, y, x)``) with the same dimension names, so the metadata of
the frame at ``image[t, c, z]`` is ``column[t, c, z]``, whatever order the
frames arrived in.

A slot with no metadata (skipped, a hole closed at ``close``, or a frame
appended without it) holds the column's missing value (``MISSING``): NaN,
-2**63, or "" in the JSON column.  These are the arrays' fill values, so a
chunk that was never written reads as missing too.

Columns are published *with the image*: ``publish(extent)`` stores the
chunks covering the rows readers will see and returns the column documents,
which the stream writes in the same atomic ``put_group`` as the image's
shapes.  So a live reader, or a reader after a kill, finds every column as
long as the image's append axis, with every value of those frames in it.
Columns appear with their first value; a column created late reads as
missing before it.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np

from ..errors import FrameError
from ..metadata.zarr_spec import COLUMN_MISSING, COLUMN_ZSTD_LEVEL, ZarrSpec
from ..settings.locations import join_key
from ..stores import Store
from ..writers.layout import ArrayLayout, Index

__all__ = ["BUILTIN_COLUMNS", "GROUP", "JSON_COLUMN", "MISSING", "SCHEMA_VERSION", "FrameColumns"]

GROUP = "acqzarr_frames"
JSON_COLUMN = "json"
SCHEMA_VERSION = 2  # 1: acqzarr record/serve's four int64 vectors in append order (before 0.2)

# Fields that have a column without being declared: what cameras, acquisition engines and the
# ZeroMQ protocol report per frame.  ``ArraySettings.frame_columns`` adds (or retypes) columns.
BUILTIN_COLUMNS: dict[str, str] = {
    "frame_id": "int64",  # the camera's frame counter
    "timestamp_ns": "int64",  # the camera's (or sender's) timestamp
    "receive_ns": "int64",  # when acqzarr received the frame (monotonic clock)
    "dropped_before": "int64",  # frames the camera dropped just before this one
    "gap_before": "int64",  # ZeroMQ messages lost in transport just before this one
    "elapsed_ms": "float64",  # time since the acquisition started
    "exposure_ms": "float64",
    "stage_x_um": "float64",
    "stage_y_um": "float64",
    "stage_z_um": "float64",
}
MISSING = COLUMN_MISSING  # the metadata's one table: also each column array's fill value

# Chunk length along the append axis, in entries: numbers are small, JSON text is not, and the
# chunk a publish ends in is written again by the next one.
_ENTRIES = {"float64": 4096, "int64": 4096, "string": 256}
_INT64 = np.iinfo(np.int64)
_INT64_MIN, _INT64_MAX = int(_INT64.min), int(_INT64.max)  # the minimum marks 'missing'


@dataclass(frozen=True)
class FrameMeta:
    """One frame's metadata, checked and split: typed values and the JSON text of the rest."""

    values: dict[str, float | int]
    text: str | None


class _Column:
    def __init__(self, name: str, kind: str, inner: tuple[int, ...]) -> None:
        self.name = name
        self.kind = kind
        self.rows = max(1, _ENTRIES[kind] // max(1, math.prod(inner)))  # append-axis steps per chunk
        self.chunk_shape = (self.rows, *inner)
        self.pending: dict[int, np.ndarray[Any, Any]] = {}  # chunk row -> values, until published
        self.dirty: set[int] = set()

    def chunk(self, row: int) -> np.ndarray[Any, Any]:
        block = self.pending.get(row)
        if block is None:
            dtype = object if self.kind == "string" else self.kind
            block = self.pending[row] = np.full(self.chunk_shape, MISSING[self.kind], dtype)
        return block

    def set(self, index: Index, value: Any) -> None:
        row, offset = divmod(index[0], self.rows)
        self.chunk(row)[(offset, *index[1:])] = value
        self.dirty.add(row)

    def decode(self, data: bytes) -> np.ndarray[Any, Any]:
        """A stored chunk back as the block ``encode`` wrote it from."""
        if self.kind == "string":
            text = numcodecs.Zstd(level=COLUMN_ZSTD_LEVEL).decode(data)
            values = numcodecs.VLenUTF8().decode(text)
            return np.asarray(values, dtype=object).reshape(self.chunk_shape)
        little = np.dtype(self.kind).newbyteorder("<")
        return np.frombuffer(data, little).astype(self.kind).reshape(self.chunk_shape)

    def encode(self, block: np.ndarray[Any, Any]) -> bytes:
        if self.kind == "string":
            text = numcodecs.VLenUTF8().encode(block.reshape(-1))
            return bytes(numcodecs.Zstd(level=COLUMN_ZSTD_LEVEL).encode(text))
        return block.astype(f"<{np.dtype(self.kind).str[1:]}", copy=False).tobytes()


class FrameColumns:
    """The per-frame metadata of one image: checked on the appending thread, published with it."""

    def __init__(
        self, layout: ArrayLayout, columns: Mapping[str, str], spec: ZarrSpec, store: Store, path: str
    ) -> None:
        self._types = {**BUILTIN_COLUMNS, **columns}
        self._names = layout.index_names
        self._inner = layout.index_shape[1:]
        self._spec = spec
        self._store = store
        self._path = join_key(path, GROUP)
        self._name = layout.settings.key or "(root)"
        self._columns: dict[str, _Column] = {}
        self._lock = threading.Lock()
        self.used = False  # any metadata yet: the group exists from the first publish after it

    def resume(self, extent: int, kinds: Mapping[str, str]) -> None:
        """Continue the columns ``kinds`` (name -> kind, as the store lists them) of a store whose
        image shows ``extent`` steps: the chunk the extent ends inside is read back (values at or
        past the extent, which a killed writer may have stored ahead of their frames, become
        missing, and the chunk is written again with the next publish, so none of them is shown for
        a frame still to come), so the next publishes write it whole with the new frames' values."""
        with self._lock:
            for name, kind in kinds.items():
                column = self._column(name, kind)
                row, offset = divmod(extent, column.rows)
                self.used = True
                if offset == 0:
                    continue
                key = self._spec.chunk_key(f"{self._path}/{name}", (row,) + (0,) * len(self._inner))
                try:
                    block = column.decode(self._store.get(key)).copy()
                except KeyError:
                    continue  # never stored: all missing, as a new chunk starts
                block[offset:] = MISSING[kind]
                column.pending[row] = block
                column.dirty.add(row)

    # -- appending thread --------------------------------------------------
    def check(self, metadata: Any, n: int) -> list[FrameMeta | None]:
        """Split the metadata of ``n`` frames (a mapping for one frame, or a sequence of mappings or
        None, one per frame) into per-frame entries; FrameError for anything that cannot be stored."""
        if isinstance(metadata, Mapping):
            if n != 1:
                raise FrameError(
                    f"array {self._name}: {n} frames need a list of {n} metadata mappings, got one mapping"
                )
            items: Sequence[Any] = [metadata]
        elif isinstance(metadata, Sequence) and not isinstance(metadata, str | bytes):
            items = metadata
            if len(items) != n:
                raise FrameError(
                    f"array {self._name}: {n} frames but {len(items)} metadata entries; give one per frame"
                )
        else:
            raise FrameError(
                f"array {self._name}: metadata must be a mapping (one frame) or a list of mappings, "
                f"got {type(metadata).__name__}"
            )
        return [None if m is None else self._record(m, k, n) for k, m in enumerate(items)]

    def _record(self, metadata: Any, k: int, n: int) -> FrameMeta:
        if not isinstance(metadata, Mapping):
            raise FrameError(f"{self._where(k, n)} must be a mapping, got {type(metadata).__name__}")
        values: dict[str, float | int] = {}
        rest: dict[str, Any] = {}
        types = self._types
        for name, value in metadata.items():
            kind = types.get(name)
            if kind is None:
                if not isinstance(name, str):
                    raise FrameError(f"{self._where(k, n)}: field names must be strings, got {name!r}")
                rest[name] = value
            elif value is None:
                continue
            # The common cases without the numbers ABCs (the appending thread runs this per field).
            elif type(value) is float and kind == "float64":
                values[name] = value
            elif type(value) is int and _INT64_MIN < value <= _INT64_MAX:
                values[name] = value if kind == "int64" else float(value)
            else:
                values[name] = _number(value, kind, f"{self._where(k, n)}[{name!r}]")
        text = None
        if rest:
            try:
                text = json.dumps(rest, allow_nan=False, default=_plain, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                raise FrameError(
                    f"{self._where(k, n)}: fields without a column must be JSON: {exc}"
                ) from None
        return FrameMeta(values, text)

    def _where(self, k: int, n: int) -> str:
        """Where an error is: ``array cam0: metadata[3]`` (built only when there is one)."""
        return f"array {self._name}: metadata" + (f"[{k}]" if n > 1 else "")

    def put(self, positions: Sequence[Index], metas: Sequence[FrameMeta | None]) -> None:
        """Note each frame's metadata at its index (before the frame can be stored and published)."""
        with self._lock:
            for index, meta in zip(positions, metas, strict=True):
                if meta is None:
                    continue
                for name, value in meta.values.items():
                    column = self._columns.get(name) or self._column(name, self._types[name])
                    column.set(index, value)
                if meta.text is not None:
                    self._column(JSON_COLUMN, "string").set(index, meta.text)
                self.used = True

    def forget(self, positions: Sequence[Index]) -> None:
        """Back to missing: frames of a call that were not accepted after all."""
        with self._lock:
            for column in self._columns.values():
                for index in positions:
                    column.set(index, MISSING[column.kind])

    def _column(self, name: str, kind: str) -> _Column:
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = _Column(name, kind, self._inner)
        return column

    # -- I/O thread ------------------------------------------------------
    def publish(self, extent: int) -> dict[str, dict[str, Any]]:
        """Store the chunks readers of ``extent`` steps of the append axis need; return the
        documents that show every column at that extent (to be written with the image's)."""
        puts: list[tuple[str, bytes]] = []
        with self._lock:
            if not self.used:
                return {}
            docs = self._spec.group_documents(
                self._path, {"acqzarr_frames": {"version": SCHEMA_VERSION, "columns": self._kinds()}}
            )
            for column in self._columns.values():
                path = f"{self._path}/{column.name}"
                for row in sorted(column.dirty):
                    if row * column.rows >= extent:
                        continue
                    key = self._spec.chunk_key(path, (row,) + (0,) * len(self._inner))
                    puts.append((key, column.encode(column.pending[row])))
                    column.dirty.discard(row)
                # Rows below the extent are complete: their values never change again.
                for row in [r for r in column.pending if (r + 1) * column.rows <= extent]:
                    if row not in column.dirty:
                        del column.pending[row]
                docs.update(
                    self._spec.column_documents(
                        path,
                        shape=(extent, *self._inner),
                        chunks=column.chunk_shape,
                        kind=column.kind,
                        dimension_names=self._names,
                    )
                )
        for key, data in puts:  # outside the lock: appends go on meanwhile
            self._store.put(key, [data])
        return docs

    def _kinds(self) -> dict[str, str]:
        return {name: column.kind for name, column in self._columns.items()}


def _number(value: Any, kind: str, where: str) -> float | int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise FrameError(f"{where}: the {kind} column takes a number, got {value!r}")
    if kind == "float64":
        return float(value)
    as_float = float(value)
    if isinstance(value, numbers.Integral):
        number = operator.index(value)
    elif math.isfinite(as_float) and as_float.is_integer():
        number = int(as_float)
    else:
        raise FrameError(f"{where}: the int64 column takes an integer, got {value!r}")
    if not _INT64.min < number <= _INT64.max:  # the minimum is the missing marker
        raise FrameError(f"{where}: {number} is outside int64 (the minimum marks 'missing')")
    return number


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
