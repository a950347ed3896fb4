"""How much memory a stream reserves: the open bands its acquisition orders need, and the cap.

Memory is counted in bands at their worst case (the band buffer plus room
for its chunks encoded incompressibly).  An acquisition order keeps some
bands open at once (``FrameOrder.open_bands``: one for storage order, one
per channel for ``t, z, c`` with several z planes per chunk); every array
and pyramid level must be able to hold that many, or the stream could not
make progress.  The default cap doubles it: one set of bands filling while
the other is compressed and written, which measured fastest on 2 cores.
Small bands get at least ``MIN_DEFAULT_CAP``: a band whose frame is one shard
is one compression task, so with only two such bands in flight one core
compresses while the other waits (512x512 frames ran ~1.3x faster, with a
third of the p99 append latency, at 256 MiB than at twice the need).
It depends on the chunk shape and the order, never on the number of planes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..metadata.levels import level_count, level_settings
from ..metadata.zarr_versions import spec_for
from ..settings import StreamSettings
from ..writers import object_writer_class
from ..writers.layout import ArrayLayout
from .order import FrameOrder

__all__ = ["MIN_DEFAULT_CAP", "MemoryPlan", "MemoryUsage", "plan_memory"]

MIN_DEFAULT_CAP = 256 << 20  # bytes: the least a default cap is (see the module docstring)


@dataclass(frozen=True)
class MemoryUsage:
    """The in-flight memory of a running stream, in bytes (like acquire-zarr's
    ``get_maximum_memory_usage`` / ``get_current_memory_usage``)."""

    cap: int  # the most that may be reserved (max_inflight_bytes or the default)
    used: int  # reserved now: open bands, bands being encoded or written, a checkpoint's copies
    peak: int  # the most reserved at any moment so far (a checkpoint's copies may pass the cap)
    required: int  # what the acquisition orders need at least (the cap is never below it)
    mapped: int  # buffers mapped and kept for reuse (band buffers resident, outputs on first touch)


@dataclass(frozen=True)
class MemoryPlan:
    required: int  # bytes: every array level's open bands at once
    default_cap: int  # bytes: twice that, and at least MIN_DEFAULT_CAP
    per_array: dict[str, int]  # required bytes per image key (an array once per position)

    def cap(self, settings: StreamSettings) -> int:
        return settings.max_inflight_bytes or self.default_cap


def plan_memory(settings: StreamSettings) -> MemoryPlan:
    spec = spec_for(settings.version)
    writer = object_writer_class(spec)
    per_array: dict[str, int] = {}
    for arr in settings.images:
        need = 0
        for level in level_settings(arr, level_count(arr)):
            layout = ArrayLayout(level, sharded=spec.sharded)
            order = FrameOrder(layout, level.acquisition_axes, arr.key or "(root)")
            need += order.open_bands() * writer.reservation(layout)
        per_array[arr.key] = need
    required = sum(per_array.values())
    default_cap = max(2 * required, MIN_DEFAULT_CAP)
    return MemoryPlan(required=required, default_cap=default_cap, per_array=per_array)
