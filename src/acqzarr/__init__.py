"""acqzarr: stream camera frames into OME-Zarr (v2 chunked or v3 sharded) as fast as the disk allows.

The top level is what a program that records needs: the settings, ``open_stream`` and its
``Stream``, the StorageInterface-style device ``ZarrStorage``, the stores, the errors, and
``info`` / ``validate`` for what a store holds.  Camera drivers implement
``acqzarr.recording.camera.Camera``; docs/how-it-works.md maps the rest of the package.
"""

from ._version import __version__
from .engine.device import State, StorageCapabilities, ZarrStorage
from .engine.memory import MemoryUsage
from .engine.stream import ArrayStats, Stream, open_stream
from .errors import (
    AcqzarrError,
    BackpressureTimeout,
    ConfigError,
    FrameError,
    ProtocolError,
    ResumeRefused,
    StateError,
    StoreError,
    WriterError,
)
from .read.inspect import Problem, info, validate
from .settings import (
    Acquisition,
    ArraySettings,
    Blosc,
    Channel,
    Dimension,
    Multiscale,
    Plate,
    Position,
    S3Settings,
    StreamSettings,
)
from .stores import LocalStore, MemoryStore, S3Store, Store

__all__ = [
    "Acquisition",
    "AcqzarrError",
    "ArraySettings",
    "ArrayStats",
    "BackpressureTimeout",
    "Blosc",
    "Channel",
    "ConfigError",
    "Dimension",
    "FrameError",
    "LocalStore",
    "MemoryStore",
    "MemoryUsage",
    "Multiscale",
    "Plate",
    "Position",
    "Problem",
    "ProtocolError",
    "ResumeRefused",
    "S3Settings",
    "S3Store",
    "State",
    "StateError",
    "StorageCapabilities",
    "Store",
    "StoreError",
    "Stream",
    "StreamSettings",
    "WriterError",
    "ZarrStorage",
    "__version__",
    "info",
    "open_stream",
    "validate",
]
