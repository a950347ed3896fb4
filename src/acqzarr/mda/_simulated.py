"""A microscope made of pure-Python devices, so an MDA runs without Micro-Manager installed.

``CMMCorePlus.loadSystemConfiguration()`` needs Micro-Manager's C++ device
adapters (its demo config names them); without them it raises
FileNotFoundError.  pymmcore-plus's ``UniMMCore`` also takes devices written
in Python: this module gives it a camera, z and xy stages, a shutter and a
"Channel" config group, which is what a ``useq.MDASequence`` with time,
channels, z and positions needs.  The tests record their MDAs with it too.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pymmcore_plus.experimental.unicore import (
    ShutterDevice,
    SimpleCameraDevice,
    StageDevice,
    UniMMCore,
    XYStageDevice,
)

__all__ = ["CHANNELS", "SimulatedCamera", "SimulatedCore", "simulated_core"]

CHANNELS = {"DAPI": 10.0, "FITC": 20.0}  # the "Channel" group's configs and their exposures (ms)


class SimulatedCamera(SimpleCameraDevice):
    """Each snap is new data, deterministic per frame number (1, 2, ...), values 1..3999 (12 bits;
    1..255 for uint8).

    ``frames`` keeps a copy of every frame when ``keep_frames`` is true (to compare with what a
    writer stored); otherwise it only counts them (an empty array per frame).
    """

    def __init__(self, shape: tuple[int, int], dtype: Any = np.uint16, *, keep_frames: bool = False) -> None:
        super().__init__()
        self._shape = shape
        self._dtype = np.dtype(dtype)
        self._exposure = 10.0
        self.keep = keep_frames
        self.frames: list[np.ndarray[Any, Any]] = []

    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        self._exposure = float(exposure)

    def sensor_shape(self) -> tuple[int, int]:
        return self._shape

    def dtype(self) -> Any:
        return self._dtype

    def snap(self, buffer: np.ndarray[Any, Any]) -> dict[str, Any]:
        n = len(self.frames) + 1
        high = min(4000, int(np.iinfo(self._dtype).max) + 1)
        buffer[:] = np.random.default_rng(n).integers(1, high, buffer.shape, dtype=self._dtype)
        self.frames.append(buffer.copy() if self.keep else buffer[:0])
        return {"frame_number": n}


class _ZStage(StageDevice):
    def __init__(self) -> None:
        super().__init__()
        self.z = 0.0

    def home(self) -> None: ...
    def stop(self) -> None: ...
    def set_origin(self) -> None: ...

    def set_position_um(self, val: float) -> None:
        self.z = val

    def get_position_um(self) -> float:
        return self.z


class _XYStage(XYStageDevice):
    def __init__(self) -> None:
        super().__init__()
        self.xy = (0.0, 0.0)

    def home(self) -> None: ...
    def stop(self) -> None: ...
    def set_origin_x(self) -> None: ...
    def set_origin_y(self) -> None: ...

    def set_position_um(self, x: float, y: float) -> None:
        self.xy = (x, y)

    def get_position_um(self) -> tuple[float, float]:
        return self.xy


class _Shutter(ShutterDevice):
    def __init__(self) -> None:
        super().__init__()
        self.open = False

    def get_open(self) -> bool:
        return self.open

    def set_open(self, open: bool) -> None:
        self.open = open


class SimulatedCore(UniMMCore):
    """UniMMCore with a fixed pixel size (its pixel-size configs want a C++ device property) and
    its camera at hand (``core.camera``)."""

    pixel_size = 0.65
    camera: SimpleCameraDevice

    def getPixelSizeUm(self, *args: Any, **kwargs: Any) -> float:
        return self.pixel_size


def simulated_core(
    shape: tuple[int, int] = (512, 512),
    *,
    dtype: Any = np.uint16,
    pixel_size_um: float = 0.65,
    keep_frames: bool = False,
    camera: SimpleCameraDevice | None = None,
) -> SimulatedCore:
    """A ready core: camera "Camera" (``shape``, ``dtype``), focus "Z", stage "XY", shutter
    "Shutter", and config group "Channel" with configs DAPI and FITC (exposures 10 and 20 ms).
    ``camera``: a camera device of your own instead (one that free-runs, say, for a benchmark)."""
    logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)  # "no Micro-Manager installation"
    core = SimulatedCore()
    if camera is None:
        camera = SimulatedCamera(shape, dtype, keep_frames=keep_frames)
    for label, device in (("Camera", camera), ("Z", _ZStage()), ("XY", _XYStage()), ("Shutter", _Shutter())):
        core.loadPyDevice(label, device)
        core.initializeDevice(label)
    core.setCameraDevice("Camera")
    core.setFocusDevice("Z")
    core.setXYStageDevice("XY")
    core.setShutterDevice("Shutter")
    for name, exposure in CHANNELS.items():
        core.defineConfig("Channel", name, "Camera", "Exposure", str(exposure))
    core.setChannelGroup("Channel")
    core.pixel_size = pixel_size_um
    core.camera = camera
    return core
