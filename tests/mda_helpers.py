"""pymmcore-plus MDAs in tests: the public simulated microscope (``acqzarr.mda.simulated_core``:
UniMMCore with a camera, z and xy stages, a shutter and a "Channel" config group), its camera keeping
every frame it produced, and an engine that skips events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import useq
from pymmcore_plus.experimental.unicore import UniMMCore
from pymmcore_plus.mda import MDAEngine, SkipEvent

from acqzarr.mda import simulated_core
from acqzarr.mda._simulated import CHANNELS, SimulatedCamera, SimulatedCore

SHAPE = (24, 40)
EXPOSURES = CHANNELS


class SkippingEngine(MDAEngine):
    """Raises SkipEvent for the events whose index is in ``skip``: the runner never acquires them."""

    def __init__(self, core: UniMMCore, skip: Iterable[dict[str, int]]) -> None:
        super().__init__(core)
        self.skip = [dict(s) for s in skip]

    def setup_event(self, event: useq.MDAEvent) -> None:
        if {str(k): v for k, v in event.index.items()} in self.skip:
            raise SkipEvent(num_frames=1)
        super().setup_event(event)


def make_core(
    shape: tuple[int, int] = SHAPE, pixel_size: float = 0.5, dtype: Any = np.uint16
) -> SimulatedCore:
    """The documented simulated microscope, keeping every frame its camera produced."""
    return simulated_core(shape, dtype=dtype, pixel_size_um=pixel_size, keep_frames=True)


def camera(core: SimulatedCore) -> SimulatedCamera:
    return core.camera
