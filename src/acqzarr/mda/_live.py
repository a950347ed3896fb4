"""The latest frame per image and channel, for a GUI to show while the MDA runs.

Frames are held by reference (pymmcore-plus hands each ``frameReady`` a fresh
array), so keeping them costs one frame per image and channel, and no copy.
Everything older is in the store: acqzarr publishes complete bands while it
writes, so ``zarr.open`` on the store shows the frames written so far.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LatestFrames", "LiveFrame"]


@dataclass(frozen=True)
class LiveFrame:
    """One frame as it arrived: the pixels, its index in its image, and which image."""

    data: np.ndarray[Any, Any]
    index: dict[str, int]  # t/c/z of the frame in its image
    image: str  # the image's group path in the store ('' for the root)
    count: int  # frames received so far, all images (a GUI redraws when it changes)


class LatestFrames:
    """Thread-safe map (image, channel) -> the newest ``LiveFrame``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames: dict[tuple[str, int], LiveFrame] = {}
        self._count = 0
        self._newest: LiveFrame | None = None

    def put(self, data: np.ndarray[Any, Any], index: dict[str, int], image: str) -> None:
        with self._lock:
            self._count += 1
            frame = LiveFrame(data, index, image, self._count)
            self._frames[(image, index.get("c", 0))] = frame
            self._newest = frame

    @property
    def count(self) -> int:
        return self._count

    def get(self, image: str | None = None, channel: int | None = None) -> LiveFrame | None:
        """The newest frame of ``image`` and ``channel``; None for either means any."""
        with self._lock:
            if image is None and channel is None:
                return self._newest
            matches = [
                f
                for (img, c), f in self._frames.items()
                if (image is None or img == image) and (channel is None or c == channel)
            ]
        return max(matches, key=lambda f: f.count, default=None)

    def channels(self, image: str = "") -> dict[int, LiveFrame]:
        """The newest frame of every channel of ``image`` (e.g. to draw a composite)."""
        with self._lock:
            return {c: f for (img, c), f in self._frames.items() if img == image}
