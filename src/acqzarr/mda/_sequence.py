"""What a useq ``MDASequence`` means for storage: axes, sizes, scales, channels and positions.

A sequence mixes two kinds of axes.  ``t``, ``c`` and ``z`` index frames inside
one image; ``p`` (stage positions) and ``g`` (grid tiles) pick which image a
frame belongs to.  This module reads both out of the sequence once, so the
settings builder and the writer agree on where event ``index`` goes.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import useq

from ..errors import ConfigError

__all__ = ["FRAME_AXES", "SequenceLayout", "read_sequence"]

# The MDA axes that index frames inside one image, in OME-NGFF storage order.
FRAME_AXES = ("t", "c", "z")

# Display colours for common channel names (case-insensitive substring match), so a two-colour
# acquisition opens in napari as blue and green rather than in the default palette.
_CHANNEL_COLORS = (
    ("dapi", "0000FF"),
    ("hoechst", "0000FF"),
    ("bfp", "0000FF"),
    ("cfp", "00FFFF"),
    ("fitc", "00FF00"),
    ("gfp", "00FF00"),
    ("488", "00FF00"),
    ("yfp", "FFFF00"),
    ("tritc", "FF0000"),
    ("cy3", "FF8000"),
    ("rfp", "FF0000"),
    ("mcherry", "FF0000"),
    ("561", "FF0000"),
    ("cy5", "FF00FF"),
    ("640", "FF00FF"),
    ("bright", "FFFFFF"),
    ("dic", "FFFFFF"),
    ("phase", "FFFFFF"),
)
_SEGMENT_BAD = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class PlateLayout:
    """A well-plate plan as acqzarr's ``Plate`` needs it."""

    name: str | None
    rows: list[str]
    columns: list[str]
    wells: list[str]  # 'row/column', in acquisition order
    fields: int  # images per well: points per well x grid tiles


@dataclass(frozen=True)
class SequenceLayout:
    """The storage view of one MDA sequence.

    ``sizes`` has the frame axes (``t``, ``c``, ``z``) the images get, in storage
    order, with ``t`` = 0 for a time plan without end; ``acquisition_order`` is
    the order they arrive in (from ``axis_order``).  ``positions`` names every
    image (stage position x grid tile) and ``position_index`` maps an event's
    ``(p, g)`` to it.
    """

    sizes: dict[str, int]
    acquisition_order: list[str]
    channel_names: list[str]
    channel_colors: list[str | None]
    z_step_um: float | None
    t_interval_s: float | None
    position_names: list[str]
    position_xyz: list[tuple[float | None, float | None, float | None]]
    position_index: dict[tuple[int, int], int] = field(default_factory=dict)
    plate: PlateLayout | None = None

    def image_index(self, index: Mapping[Any, int]) -> tuple[dict[str, int], int | None]:
        """An event's index split into the image's own index (``t``/``c``/``z``) and the image
        (None when the sequence has a single image)."""
        own: dict[str, int] = {}
        p = g = 0
        for key, value in index.items():
            name = str(getattr(key, "value", key))
            if name in self.sizes:
                own[name] = int(value)
            elif name == "p":
                p = int(value)
            elif name == "g":
                g = int(value)
        if not self.position_index:
            return own, None
        try:
            return own, self.position_index[(p, g)]
        except KeyError:
            raise ConfigError(
                f"event index p={p}, g={g} is not a position of the sequence "
                f"({len(self.position_names)} images planned)"
            ) from None


def read_sequence(sequence: useq.MDASequence) -> SequenceLayout:
    """Read the storage layout out of ``sequence``; ConfigError for what cannot be stored as
    same-shaped images (per-position sub-sequences with their own time, channel or z plans)."""
    sizes = _frame_sizes(sequence)
    order = [a for a in (str(getattr(a, "value", a)) for a in sequence.axis_order) if a in sizes]
    if "t" in order and sizes["t"] == 0 and order[0] != "t":
        raise ConfigError(
            f"axis_order {sequence.axis_order!r}: a time plan without end must be the outermost of t, c and z"
        )
    order += [a for a in sizes if a not in order]
    channels = [c.config for c in sequence.channels]
    names, xyz, index, plate = _positions(sequence)
    xyz = [(x, y, _first_plane(sequence.z_plan, z)) for x, y, z in xyz]
    return SequenceLayout(
        sizes=sizes,
        acquisition_order=order,
        channel_names=channels,
        channel_colors=_colors(channels),
        z_step_um=_z_step(sequence.z_plan),
        t_interval_s=_interval(sequence.time_plan),
        position_names=names,
        position_xyz=xyz,
        position_index=index,
        plate=plate,
    )


def _frame_sizes(sequence: useq.MDASequence) -> dict[str, int]:
    """t (always: it is the append axis; 0 = no end), c and z when the sequence uses them.

    ``run()`` given an iterable of events instead of a sequence hands handlers a placeholder
    sequence without axes (pymmcore-plus's ``GeneratorMDASequence``): its shape is unknown, so it
    is stored as a (t, y, x) series growing with each event's ``t`` index.
    """
    if not sequence.axis_order:
        return {"t": 0}
    sizes = {"t": _timepoints(sequence.time_plan)}
    if sequence.channels:
        sizes["c"] = len(sequence.channels)
    if sequence.z_plan is not None and sequence.z_plan.num_positions() > 0:
        sizes["z"] = sequence.z_plan.num_positions()
    return sizes


def _timepoints(plan: Any) -> int:
    """Timepoints of a time plan: 1 without one, 0 when it has no end (useq v2's interval plan
    with ``duration=None``, or a plan whose length cannot be known)."""
    if plan is None:
        return 1
    if getattr(plan, "duration", 0) is None:
        return 0
    try:
        n = int(plan.num_timepoints())
    except (ValueError, TypeError, OverflowError):
        return 0
    return n if n > 0 else 0


def _interval(plan: Any) -> float | None:
    """Seconds between timepoints, when the plan has one uniform positive interval."""
    interval = getattr(plan, "interval", None)
    seconds = getattr(interval, "total_seconds", None)
    if seconds is None:
        return None
    value = float(seconds())
    return value if value > 0 and math.isfinite(value) else None


def _z_step(plan: Any) -> float | None:
    """The z spacing in micrometer when the planes are evenly spaced (else None)."""
    if plan is None:
        return None
    planes = [float(z) for z in plan]
    if len(planes) < 2:
        return None
    steps = {round(abs(b - a), 9) for a, b in itertools.pairwise(planes)}
    if len(steps) != 1:
        return None
    step = steps.pop()
    return step if step > 0 else None


def _first_plane(plan: Any, z: float | None) -> float | None:
    """The stage z of plane 0 (the image's z origin): a relative plan's first offset from the
    position's z, an absolute plan's first plane."""
    if plan is None or plan.num_positions() == 0:
        return z
    first = float(next(iter(plan)))
    if not plan.is_relative:
        return first
    return None if z is None else z + first


def _colors(names: Iterable[str]) -> list[str | None]:
    out: list[str | None] = []
    for name in names:
        lower = name.lower()
        out.append(next((color for key, color in _CHANNEL_COLORS if key in lower), None))
    return out


def _positions(
    sequence: useq.MDASequence,
) -> tuple[
    list[str],
    list[tuple[float | None, float | None, float | None]],
    dict[tuple[int, int], int],
    PlateLayout | None,
]:
    """Every image (position x grid tile) in acquisition order: names, stage coordinates (of the
    tile's first event, after the engine has sized the grid) and the (p, g) -> image map."""
    stage = sequence.stage_positions
    for p, position in enumerate(stage):
        sub = getattr(position, "sequence", None)
        if sub is None:
            continue
        extra = [
            n
            for n in ("time_plan", "channels", "z_plan", "stage_positions")
            if getattr(sub, n) not in (None, (), [])
        ]
        if extra:
            raise ConfigError(
                f"stage_positions[{p}] has a sub-sequence with its own {', '.join(extra)}: acqzarr writes "
                "every position with the same shape; only a per-position grid_plan is supported"
            )
    if not stage and sequence.grid_plan is None:
        return [], [], {}, None
    reduced = useq.MDASequence(stage_positions=stage, grid_plan=sequence.grid_plan, axis_order="pgtcz")
    tiles: dict[tuple[int, int], tuple[float | None, float | None, float | None]] = {}
    labels: dict[int, str | None] = {}
    for event in reduced:
        p, g = int(event.index.get("p", 0)), int(event.index.get("g", 0))
        tiles.setdefault((p, g), (event.x_pos, event.y_pos, event.z_pos))
        labels.setdefault(p, event.pos_name)
    grids = {p: sum(1 for q, _ in tiles if q == p) for p, _ in tiles}
    plate = _plate(stage, grids) if isinstance(stage, useq.WellPlatePlan) else None
    if len(tiles) == 1 and plate is None:  # one image: at the store root, no collection
        return [], [], {}, None
    index = {key: i for i, key in enumerate(tiles)}
    names = _unique([_name(labels.get(p), p, g, grids[p] > 1) for p, g in tiles])
    return names, list(tiles.values()), index, plate


def _name(label: str | None, p: int, g: int, tiled: bool) -> str:
    base = _SEGMENT_BAD.sub("_", label).lstrip(".-") if label else ""
    base = base if base and base != "OME" else f"p{p}"
    return f"{base}_g{g}" if tiled else base


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        n = seen.get(name, 0)
        seen[name] = n + 1
        out.append(name if n == 0 else f"{name}_{n}")
    return out


def _plate(plan: useq.WellPlatePlan, grids: dict[int, int]) -> PlateLayout:
    """A well-plate plan as rows, columns, wells and fields (points per well x grid tiles)."""
    all_names = plan.plate.all_well_names
    rows = [str(all_names[r, 0])[:-1] for r in range(plan.plate.rows)]  # "A1" -> "A"
    columns = [str(c + 1) for c in range(plan.plate.columns)]
    wells = []
    for r, c in plan.selected_well_indices:
        wells.append(f"{rows[int(r)]}/{columns[int(c)]}")
    tiles = set(grids.values())
    if len(tiles) != 1:
        raise ConfigError(f"a well plate needs the same number of grid tiles at every point, got {tiles}")
    fields = plan.num_points_per_well * tiles.pop()
    name = plan.plate.name or None
    return PlateLayout(name=name, rows=rows, columns=columns, wells=wells, fields=fields)
