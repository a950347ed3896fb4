"""acqzarr: stream camera frames into OME-Zarr (v2 chunked or v3 sharded) as fast as the disk allows."""

from ._version import __version__
from .camera import ROI, Camera, FrameInfo
from .codecs import BloscCodec
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
from .formats import ZarrFormat, ZarrV2, ZarrV3
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
from .writers import ChunkWriter, ShardWriter

__all__ = [
    "ROI",
    "Acquisition",
    "AcqzarrError",
    "ArraySettings",
    "ArrayStats",
    "BackpressureTimeout",
    "Blosc",
    "BloscCodec",
    "Camera",
    "Channel",
    "ChunkWriter",
    "ConfigError",
    "Dimension",
    "FrameError",
    "FrameInfo",
    "LocalStore",
    "MemoryStore",
    "MemoryUsage",
    "Multiscale",
    "Plate",
    "Position",
    "ProtocolError",
    "S3Settings",
    "S3Store",
    "ShardWriter",
    "State",
    "StateError",
    "StorageCapabilities",
    "Store",
    "StoreError",
    "Stream",
    "StreamSettings",
    "WriterError",
    "ZarrFormat",
    "ZarrStorage",
    "ZarrV2",
    "ZarrV3",
    "__version__",
    "open_stream",
]
