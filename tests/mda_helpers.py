"""A pure-Python microscope for pymmcore-plus MDAs in tests: UniMMCore with a camera that keeps
every frame it produced, z and xy stages, a shutter and a "Channel" config group."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import useq
from pymmcore_plus.experimental.unicore import (
    ShutterDevice,
    SimpleCameraDevice,
    StageDevice,
    UniMMCore,
    XYStageDevice,
)
from pymmcore_plus.mda import MDAEngine, SkipEvent

SHAPE = (24, 40)
EXPOSURES = {"DAPI": 10.0, "FITC": 20.0}


class RecordingCamera(SimpleCameraDevice):
    """Each snap is new random data (seeded by the frame number); every frame is kept."""

    def __init__(self, shape: tuple[int, int] = SHAPE, dtype: Any = np.uint16) -> None:
        super().__init__()
        self._shape = shape
        self._dtype = np.dtype(dtype)
        self._exposure = 10.0
        self.frames: list[np.ndarray[Any, Any]] = []
        self.keep = True

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
        if self.keep:
            rng = np.random.default_rng(n)
            buffer[:] = rng.integers(1, 4000, buffer.shape, dtype=self._dtype)
            self.frames.append(buffer.copy())
        else:
            self.frames.append(buffer[:0])
        return {"frame_number": n}


class ZStage(StageDevice):
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


class XYStage(XYStageDevice):
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


class Shutter(ShutterDevice):
    def __init__(self) -> None:
        super().__init__()
        self.open = False

    def get_open(self) -> bool:
        return self.open

    def set_open(self, open: bool) -> None:
        self.open = open


class SkippingEngine(MDAEngine):
    """Raises SkipEvent for the events whose index is in ``skip``: the runner never acquires them."""

    def __init__(self, core: UniMMCore, skip: Iterable[dict[str, int]]) -> None:
        super().__init__(core)
        self.skip = [dict(s) for s in skip]

    def setup_event(self, event: useq.MDAEvent) -> None:
        if {str(k): v for k, v in event.index.items()} in self.skip:
            raise SkipEvent(num_frames=1)
        super().setup_event(event)


class PixelCore(UniMMCore):
    """UniMMCore with a fixed pixel size (its pixel-size configs want a C++ device property)."""

    pixel_size = 0.0

    def getPixelSizeUm(self, *args: Any, **kwargs: Any) -> float:
        return self.pixel_size


def make_core(shape: tuple[int, int] = SHAPE, pixel_size: float = 0.5, dtype: Any = np.uint16) -> UniMMCore:
    logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)  # "no Micro-Manager installation"
    core = PixelCore()
    camera = RecordingCamera(shape, dtype)
    for label, device in (("Camera", camera), ("Z", ZStage()), ("XY", XYStage()), ("Shutter", Shutter())):
        core.loadPyDevice(label, device)
        core.initializeDevice(label)
    core.setCameraDevice("Camera")
    core.setFocusDevice("Z")
    core.setXYStageDevice("XY")
    core.setShutterDevice("Shutter")
    for name, exposure in EXPOSURES.items():
        core.defineConfig("Channel", name, "Camera", "Exposure", str(exposure))
    core.setChannelGroup("Channel")
    core.pixel_size = pixel_size  # type: ignore[attr-defined]
    core.camera = camera  # type: ignore[attr-defined]
    return core


def camera(core: UniMMCore) -> RecordingCamera:
    return core.camera  # type: ignore[attr-defined, no-any-return]
