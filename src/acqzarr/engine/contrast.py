"""The per-channel display window (omero ``window``), observed while chunks are encoded.

Viewers such as napari open an image with the contrast the metadata gives;
a 12-bit camera shown over 0-65535 looks black.  Every stored chunk is
sampled (1 in 16 along each frame axis, 1/256 of the pixels) on the
compression threads, and the (min, max) per channel index is kept.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..metadata.ngff import Windows
from ..writers.layout import ArrayLayout

__all__ = ["ContrastWindows"]


class ContrastWindows:
    def __init__(self, layout: ArrayLayout, seen: Windows | None = None) -> None:
        """``seen``: the windows of frames written before (a resumed store's), to widen from."""
        kinds = layout.kinds
        # The channel axis after the append axis (as the omero block counts channels), if any;
        # windows are per channel index, else one for the image.
        self._axis = kinds.index("channel") if "channel" in kinds[1:] else None
        self._layout = layout
        self._lock = threading.Lock()
        self.windows: Windows = dict(seen or {})

    def observe(self, band: tuple[int, ...], chunk: np.ndarray[Any, Any]) -> None:
        """Fold a subsample of ``chunk`` (of the band at ``band``) into the windows."""
        sub = chunk[..., ::16, ::16] if chunk.ndim >= 2 else chunk[..., ::16]
        ax = self._axis
        if ax is None:
            parts = {0: sub}
        else:
            base = band[ax] * self._layout.chunks[ax]
            limit = self._layout.settings.dimensions[ax].size
            parts = {base + i: sub.take(i, axis=ax) for i in range(min(sub.shape[ax], limit - base))}
        found = {c: (float(p.min()), float(p.max())) for c, p in parts.items() if p.size}
        with self._lock:
            for c, (lo, hi) in found.items():
                old = self.windows.get(c)
                self.windows[c] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
