"""What an object writer is: encoded bands in, stored objects (and readable bands) out.

The two formats differ only here: Zarr v2 stores each chunk as an object
(``ChunkWriter``), Zarr v3 packs chunks into shards (``ShardWriter``).  Both
run on the ordered I/O thread and report which bands became readable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..metadata.zarr_spec import KeyEncoding
from ..settings.locations import join_key
from ..stores import Store
from .bands import Band
from .encode import ChunkCoords, Encoded, output_nbytes
from .layout import ArrayLayout, Index

__all__ = ["ObjectWriter", "Stored", "StoredBand"]


@dataclass(frozen=True)
class StoredBand:
    """A band whose objects are all stored, and how many frames it holds (what a reader gains)."""

    coords: Index
    frames: int


@dataclass
class Stored:
    """What one store step did: the bands it made readable and the bytes it wrote."""

    bands: list[StoredBand] = field(default_factory=list)
    nbytes: int = 0

    def add(self, other: Stored) -> None:
        self.bands += other.bands
        self.nbytes += other.nbytes


class ObjectWriter(ABC):
    """Turns a band's encoded task outputs into stored objects."""

    def __init__(self, layout: ArrayLayout, store: Store, array_path: str, keys: KeyEncoding) -> None:
        self.layout = layout
        self.keys = keys  # the array's chunk key encoding (its format's)
        # Chunk coordinates (frame grid) encoded together, one list per task, in the order of
        # ``results`` in ``store``; and the bytes to leave free after a task's chunks.
        self.tasks = self.task_groups(layout)
        self.trailer = self.trailer_for(layout)
        self.store = store
        self.array_path = array_path
        self.final_extent: int | None = None  # the append axis's extent, once the stream closes

    @classmethod
    @abstractmethod
    def task_groups(cls, layout: ArrayLayout) -> list[list[ChunkCoords]]:
        """The chunks of a band each encoding task takes (one object's worth)."""

    @classmethod
    def trailer_for(cls, layout: ArrayLayout) -> int:
        """Bytes to leave free after a task's chunks (a one-band shard's index)."""
        return 0

    @classmethod
    def reservation(cls, layout: ArrayLayout) -> int:
        """Bytes one band may hold at worst: its buffer plus every task's output buffer."""
        tasks = cls.task_groups(layout)
        per_task = output_nbytes(layout, max(len(t) for t in tasks), cls.trailer_for(layout))
        return layout.band_nbytes + len(tasks) * per_task

    @abstractmethod
    def store_band(self, band: Band, results: Sequence[Encoded]) -> Stored:
        """Store one band's chunks (the caller hands the Encoded back afterwards)."""

    def write(self, band: Band, results: Sequence[Encoded] | None) -> Stored:
        """Store a band; ``results`` is None for a band with no frames (nothing to write)."""
        return self.store_band(band, results or [])

    @abstractmethod
    def write_partial(self, parts: Sequence[tuple[Band, Sequence[Encoded]]]) -> Stored:
        """A durability checkpoint: store, as they are now, the bands of ``parts`` (copies of bands
        still filling, encoded) and every complete band held back for an object still open, so
        that readers see each one.  Returns the bytes written and the held-back bands it showed
        (reported as stored once their object is complete, as always)."""

    def finish(self) -> Stored:
        """Write anything held back (shards still open at the end)."""
        return Stored()

    @abstractmethod
    def read_band(self, coords: Index) -> list[tuple[tuple[int, ...], bytes]]:
        """The stored encoded chunks of band ``coords`` (a resumed stream's partial band): each
        chunk's frame-grid coordinates and bytes; chunks never stored (all fill) are left out."""

    def adopt(self, extent: int) -> None:  # noqa: B027 (only a shard deeper than one band holds any)
        """A resumed stream continues at ``extent``: take over what is stored of objects it will
        write again whole (a shard deeper than one band that ``extent`` ends inside)."""

    def abort(self) -> None:  # noqa: B027 (nothing to drop unless a subclass holds objects back)
        """Drop anything held back after a failure."""

    def object_key(self, coords: tuple[int, ...]) -> str:
        """The store key of the object (chunk or shard) at grid position ``coords``."""
        return join_key(self.array_path, self.keys.key(coords))

    def _put_many(self, items: Sequence[tuple[str, Encoded, int]]) -> int:
        """Store each ``(key, encoded, nbytes)`` whose encoded group holds any chunk (an all-fill
        group is no object at all); return the bytes written."""
        stored = [item for item in items if not item[1].empty]
        self.store.put_padded_many([(key, enc.buffer, n) for key, enc, n in stored])
        return sum(n for _key, _enc, n in stored)
