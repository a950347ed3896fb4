"""acqzarr: stream camera frames into OME-Zarr (v2 chunked or v3 sharded) as fast as the disk allows.

The top level is what a program that records needs: the settings, ``open_stream`` and its
``Stream``, the StorageInterface-style device ``ZarrStorage``, the stores and the errors.  The
engine is reachable where the design documents it: ``acqzarr.writers`` (``ChunkWriter``,
``ShardWriter``), ``acqzarr.formats`` (``ZarrV2``, ``ZarrV3``), ``acqzarr.codecs``; camera
drivers implement ``acqzarr.camera.Camera``.
"""

from ._version import __version__
from .device import State, StorageCapabilities, ZarrStorage
from .errors import (
    AcqzarrError,
    BackpressureTimeout,
    ConfigError,
    FrameError,
    ProtocolError,
    StateError,
    StoreError,
    WriterError,
)
from .memory import MemoryUsage
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
from .stream import ArrayStats, Stream, open_stream

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
    "ProtocolError",
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
    "open_stream",
]
