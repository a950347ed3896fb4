"""Record pymmcore-plus MDAs with acqzarr (``pip install 'acqzarr[mda]'``).

    core.mda.run(sequence, output=acqzarr.mda.MDAWriter("run.zarr"))

``MDAWriter`` is the data handler; ``settings_from_sequence`` maps a useq
sequence to ``StreamSettings`` for callers that drive a ``Stream`` themselves;
``record`` runs an MDA into a store and raises if writing failed;
``simulated_core`` is a microscope of pure-Python devices to try it on without
Micro-Manager's device adapters.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import useq  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("acqzarr.mda needs useq-schema and pymmcore-plus: pip install 'acqzarr[mda]'") from exc

from ._live import LatestFrames, LiveFrame
from ._settings import settings_from_sequence
from ._writer import ATTRIBUTE, MDAWriter

if TYPE_CHECKING:
    from ._simulated import SimulatedCore

__all__ = [
    "ATTRIBUTE",
    "LatestFrames",
    "LiveFrame",
    "MDAWriter",
    "record",
    "settings_from_sequence",
    "simulated_core",
]


def record(core: Any, sequence: Any, store: str | Path, **settings: Any) -> MDAWriter:
    """Run ``sequence`` on ``core`` (blocking) into ``store``; raise WriterError if writing failed
    (the run was cancelled then, and the store holds what was written).  Returns the writer (its
    ``stats()`` and ``images``)."""
    writer = MDAWriter(store, core=core, **settings)
    core.mda.run(sequence, output=writer)
    writer.raise_if_failed()
    return writer


def simulated_core(
    shape: tuple[int, int] = (512, 512),
    *,
    dtype: Any = "uint16",
    pixel_size_um: float = 0.65,
    keep_frames: bool = False,
    camera: Any = None,
) -> SimulatedCore:
    """A pymmcore-plus core of pure-Python devices (``UniMMCore``), for MDAs without Micro-Manager.

    Camera "Camera" (``shape``, ``dtype``; new data each snap, ``core.camera.frames`` keeps a copy
    of each when ``keep_frames``), focus "Z", stage "XY", shutter "Shutter", and the config group
    "Channel" with DAPI and FITC (10 and 20 ms exposure); ``pixel_size_um`` is the pixel size.
    ``camera``: a camera device of your own (a pymmcore-plus ``SimpleCameraDevice``, e.g. one that
    free-runs for a benchmark) instead of the simulated one.
    ``loadSystemConfiguration()`` would need Micro-Manager's C++ device adapters instead.
    Imported on first call: pymmcore-plus's unicore is only needed here.
    """
    from ._simulated import simulated_core as make

    return make(shape, dtype=dtype, pixel_size_um=pixel_size_um, keep_frames=keep_frames, camera=camera)
