"""Replay: play frames from an existing .npy, TIFF stack or Zarr array.

For re-recording or re-chunking real data, and the way tests feed known
frames through the whole pipeline.  Files are read lazily (memory-mapped
.npy, one TIFF page, or one row of Zarr chunks at a time, decoded by
``acqzarr.read.arrays`` so no zarr-python is needed), so stacks larger than memory
replay fine.  A file never drops frames; ``fps`` paces playback like a camera.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from acqzarr.recording.camera import ROI, FrameInfo

__all__ = ["Replay", "ReplayOptions"]


class ReplayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="A .npy file, a .tif/.tiff stack, or a Zarr array directory.")
    fps: float | None = Field(default=None, gt=0, description="Playback rate; null plays as fast as read.")
    loop: bool = Field(default=False, description="Start again at the end (until the session's frame count).")

    @field_validator("path")
    @classmethod
    def _exists(cls, v: str) -> str:
        if not Path(v).exists():
            raise ValueError(f"no such file or directory: {v}")
        return v


def _open(path: Path) -> Any:
    """An array-like of frames (n, y, x), read lazily."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        data = np.load(path, mmap_mode="r")
    elif suffix in (".tif", ".tiff"):
        import tifffile

        data = tifffile.memmap(path) if _tiff_contiguous(path) else tifffile.imread(path)
    elif path.is_dir():
        from acqzarr.read.arrays import ArrayReader
        from acqzarr.stores import LocalStore

        data = ArrayReader(LocalStore(path))
    else:
        raise ValueError(f"unsupported replay source {path} (use .npy, .tif/.tiff or a Zarr array)")
    if data.ndim < 2:
        raise ValueError(f"{path}: needs at least 2 dimensions, has shape {data.shape}")
    return data.reshape(-1, *data.shape[-2:]) if data.ndim != 3 else data


def _tiff_contiguous(path: Path) -> bool:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return bool(tif.series and tif.series[0].dataoffset is not None)


class Replay:
    Options: ClassVar[type[ReplayOptions]] = ReplayOptions

    def __init__(self, options: ReplayOptions) -> None:
        self.options = options
        self._data = _open(Path(options.path))
        self._next = 0
        self._start = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self._data.shape[-2]), int(self._data.shape[-1]))

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self._data.dtype)

    @property
    def fps(self) -> float | None:
        return self.options.fps

    @property
    def dropped(self) -> int:
        return 0

    @property
    def exposure_ms(self) -> float | None:
        return None  # a file has no exposure

    @property
    def roi(self) -> ROI:
        return ROI(0, 0, self.shape[1], self.shape[0])

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        pass

    def read_into(self, out: np.ndarray[Any, Any]) -> FrameInfo | None:
        n = int(self._data.shape[0])
        i = self._next
        if i >= n and not self.options.loop:
            return None
        if self.options.fps:
            delay = self._start + i / self.options.fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        out[...] = self._data[i % n]
        self._next += 1
        return FrameInfo(frame_id=i, timestamp_ns=time.monotonic_ns(), dropped_before=0)
