"""Where each frame goes: acquisition order, index-addressed frames and the cursor.

Storage is always in the order of ``dimensions`` (OME-NGFF: t, c, z, y, x),
but microscopes acquire in other orders: ``t, z, c`` switches the channel
inside every z step.  ``FrameOrder`` maps the n-th frame of the acquisition
to its storage index, resolves a partial ``index`` (axes omitted follow on
from the last frame), and says how many bands an order keeps open at once,
which is what memory must hold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..errors import FrameError
from ..writers.layout import ArrayLayout, Index

__all__ = ["FrameOrder"]


class FrameOrder:
    """The acquisition order of one array's index axes, and a cursor over it."""

    def __init__(self, layout: ArrayLayout, acquisition_axes: Sequence[str], name: str) -> None:
        self.layout = layout
        self.name = name
        self.axes = tuple(acquisition_axes)
        self.perm = tuple(layout.index_names.index(a) for a in self.axes)  # storage axis per acquisition axis
        self.sizes = tuple(layout.index_shape[p] for p in self.perm)  # 0: unbounded (only the first)
        self.cursor = 0  # sequence number of the next frame in acquisition order

    # -- sequence number <-> storage index --------------------------------
    def position(self, seq: int) -> Index:
        """Storage index of frame ``seq`` of the acquisition; FrameError past a bounded array."""
        acq = [0] * len(self.sizes)
        rest = seq
        for j in range(len(self.sizes) - 1, 0, -1):
            rest, acq[j] = divmod(rest, self.sizes[j])
        acq[0] = rest
        if self.sizes[0] and rest >= self.sizes[0]:
            raise FrameError(
                f"array {self.name}: frame {seq} of the acquisition is past the end of the array "
                f"({self.capacity()} frames in {self._describe_shape()})"
            )
        index = [0] * len(self.sizes)
        for j, p in enumerate(self.perm):
            index[p] = acq[j]
        return tuple(index)

    def sequence(self, index: Index) -> int:
        """Inverse of ``position``: the acquisition sequence number of a storage index."""
        seq = 0
        for j, p in enumerate(self.perm):
            seq = index[p] if j == 0 else seq * self.sizes[j] + index[p]
        return seq

    def capacity(self) -> int | None:
        return None if self.sizes[0] == 0 else math.prod(self.sizes)

    # -- resolving what the caller gave -----------------------------------
    def resolve(self, index: Mapping[str, int] | None) -> Index:
        """Storage index of the next frame: the cursor's, with the axes in ``index`` replaced."""
        if index is None:
            return self.position(self.cursor)
        if not isinstance(index, Mapping):
            raise FrameError(f"array {self.name}: index must map axis names to positions, got {index!r}")
        names = self.layout.index_names
        unknown = sorted(set(index) - set(names))
        if unknown:
            frame_axes = set(self.layout.names[self.layout.index_ndim :])
            why = (
                "frame axes are not indexed (a frame covers them)"
                if frame_axes.intersection(unknown)
                else "not an axis of this array"
            )
            raise FrameError(f"array {self.name}: index axes {unknown}: {why}; index axes are {list(names)}")
        if len(index) == len(names):
            base: list[int] = [0] * len(names)
        else:
            base = list(self._cursor_position())
        for axis, value in index.items():
            try:
                v = int(value) if not isinstance(value, bool) else None
            except (TypeError, ValueError):
                v = None
            if v is None or v != value:
                raise FrameError(f"array {self.name}: index {axis}={value!r} is not an integer")
            base[names.index(axis)] = v
        out = tuple(base)
        self.check(out)
        return out

    def _cursor_position(self) -> Index:
        """The cursor's index, or (past the end of a bounded array) the last one: axes that are
        given then still make a valid index."""
        cap = self.capacity()
        return self.position(min(self.cursor, cap - 1) if cap else self.cursor)

    def check(self, index: Index) -> None:
        for axis, value, size in zip(self.layout.index_names, index, self.layout.index_shape, strict=True):
            if value < 0 or (size and value >= size):
                raise FrameError(
                    f"array {self.name}: index {self.layout.describe(index)} is outside the array "
                    f"({self._describe_shape()}): {axis}={value}"
                )

    def advance(self, index: Index, frames: int) -> list[Index]:
        """Indexes of ``frames`` frames from ``index`` on in acquisition order (checked, cursor unmoved)."""
        start = self.sequence(index)
        return [index] + [self.position(start + k) for k in range(1, frames)]

    def moved_past(self, index: Index) -> None:
        """The cursor follows on after the frame (or skip) at ``index``."""
        self.cursor = self.sequence(index) + 1

    # -- memory -----------------------------------------------------------
    def open_bands(self) -> int:
        """Bands open at once when frames arrive in this order.

        Along the slowest acquisition axis whose band spans several frames, the
        traversal revisits every combination of the faster axes before it
        leaves that band: every band of those faster axes is then open together.
        """
        lay = self.layout
        for j, p in enumerate(self.perm):
            size = lay.index_shape[p]
            if min(lay.index_chunks[p], size or lay.index_chunks[p]) > 1:
                faster = self.perm[j + 1 :]
                return math.prod(-(-lay.index_shape[q] // lay.index_chunks[q]) for q in faster)
        return 1

    # -- messages ---------------------------------------------------------
    def _describe_shape(self) -> str:
        return ", ".join(
            f"{a}: {s if s else 'unbounded'}"
            for a, s in zip(self.layout.index_names, self.layout.index_shape, strict=True)
        )
