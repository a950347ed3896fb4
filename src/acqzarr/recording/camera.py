"""The camera driver protocol: the one seam drivers (in ``drivers/``) implement.

Drivers import only this module from acqzarr.  A driver fills buffers the
caller owns (no copy per frame beyond the sensor readout) and says, per
frame, what a real camera would: its frame id, hardware timestamp and how
many frames were lost before it because nobody read them in time.

``frame_buffers`` gives drivers and readers memory that is already faulted
in: on the VMs this runs on, the first write to fresh memory costs ~20 ms per
2048x2048 uint16 frame (~0.4 GB/s), a whole frame period at 50 fps, so a ring
touched for the first time while the camera runs loses frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["ROI", "Camera", "FrameInfo", "frame_buffers"]


@dataclass(frozen=True)
class ROI:
    """The sensor region a camera delivers, in sensor pixels (origin top-left).

    Recorded in the session record so a frame's pixels can be placed on the
    sensor again (flat-field and dark-frame corrections are per sensor pixel).
    """

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class FrameInfo:
    """What a camera reports with a frame (version 1 of the per-frame metadata)."""

    frame_id: int  # counts every frame the sensor produced, read or not
    timestamp_ns: int  # hardware (or simulated hardware) clock, nanoseconds
    dropped_before: int  # frames overwritten unread since the previous frame returned


@runtime_checkable
class Camera(Protocol):
    """A source of frames.  ``read_into`` blocks until a frame is ready (or the source ends)."""

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    @property
    def fps(self) -> float | None:
        """Frame rate the camera paces itself at; None when free-running."""
        ...

    @property
    def exposure_ms(self) -> float | None:
        """Exposure time per frame in milliseconds; None when the source has none (a file)."""
        ...

    @property
    def roi(self) -> ROI:
        """The sensor region of the delivered frames; its size equals ``shape``."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def read_into(self, out: np.ndarray[Any, Any]) -> FrameInfo | None:
        """Fill ``out`` (shape and dtype as above) with the next frame; None when the source has ended."""
        ...

    @property
    def dropped(self) -> int:
        """Frames overwritten unread so far."""
        ...


def frame_buffers(n: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray[Any, Any]:
    """``n`` zeroed frames of ``shape`` (an array ``(n, *shape)``), faulted in now.

    Mapped with MAP_POPULATE where the OS has it (the kernel faults the pages in several times
    faster than first writes do), so filling them later costs only the copy.
    """
    from ..writers.buffers import mapped_array

    return mapped_array((n, *shape), np.dtype(dtype))
