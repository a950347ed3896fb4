"""Record pymmcore-plus MDAs with acqzarr (``pip install 'acqzarr[mda]'``).

    core.mda.run(sequence, output=acqzarr.mda.MDAWriter("run.zarr"))

``MDAWriter`` is the data handler; ``settings_from_sequence`` maps a useq
sequence to ``StreamSettings`` for callers that drive a ``Stream`` themselves;
``record`` runs an MDA into a store and raises if writing failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import useq  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("acqzarr.mda needs useq-schema and pymmcore-plus: pip install 'acqzarr[mda]'") from exc

from ._live import LatestFrames, LiveFrame
from ._settings import settings_from_sequence
from ._writer import ATTRIBUTE, MDAWriter

__all__ = ["ATTRIBUTE", "LatestFrames", "LiveFrame", "MDAWriter", "record", "settings_from_sequence"]


def record(core: Any, sequence: Any, store: str | Path, **settings: Any) -> MDAWriter:
    """Run ``sequence`` on ``core`` (blocking) into ``store``; raise WriterError if writing failed
    (the run was cancelled then, and the store holds what was written).  Returns the writer (its
    ``stats()`` and ``images``)."""
    writer = MDAWriter(store, core=core, **settings)
    core.mda.run(sequence, output=writer)
    writer.raise_if_failed()
    return writer
