"""A pyramid's levels as the documents describe them: how many, and each level's dimensions.

Every ``space`` axis halves from one level to the next (odd sizes round up:
the edge replicates); chunk and shard shapes are kept where they fit.  The
reducers that compute the levels' samples are in ``engine/reducers.py``.
"""

from __future__ import annotations

from ..settings import ArraySettings, Dimension

__all__ = ["MAX_LEVELS", "level_count", "level_settings", "space_axes"]

MAX_LEVELS = 16


def _halve(d: Dimension) -> Dimension:
    if d.kind != "space":
        return d
    size = 0 if d.size == 0 else -(-d.size // 2)
    chunk = d.chunk if size == 0 else min(d.chunk, size)
    shard = d.shard if size == 0 else max(1, min(d.shard, -(-size // chunk)))
    return d.model_copy(update={"size": size, "chunk": chunk, "shard": shard})


def level_settings(settings: ArraySettings, levels: int) -> list[ArraySettings]:
    """Settings of levels 0..levels-1; chunk and shard shapes kept, clamped where a level is smaller."""
    out = [settings]
    for _ in range(levels - 1):
        prev = out[-1]
        out.append(prev.model_copy(update={"dimensions": tuple(_halve(d) for d in prev.dimensions)}))
    return out


def level_count(settings: ArraySettings) -> int:
    """Levels for ``multiscale.levels`` ("auto": until a level fits one chunk in every halved axis)."""
    ms = settings.multiscale
    if ms is None:
        return 1
    if ms.levels != "auto":
        return int(ms.levels)
    dims = settings.dimensions
    for n in range(1, MAX_LEVELS + 1):
        top = level_settings(settings, n)[-1].dimensions
        if all(d.size <= d0.chunk for d, d0 in zip(top, dims, strict=True) if d.kind == "space" and d.size):
            return n
    return MAX_LEVELS


def space_axes(settings: ArraySettings) -> tuple[int, ...]:
    """The indices of the axes that halve from one level to the next."""
    return tuple(i for i, d in enumerate(settings.dimensions) if d.kind == "space")
