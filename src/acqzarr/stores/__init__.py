"""Where bytes go: the Store interface and its backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..settings.locations import is_s3
from .base import Buffer, Staged, Store
from .local import LocalStore
from .memory import MemoryStore
from .s3 import S3Store

if TYPE_CHECKING:
    from ..settings import S3Settings

__all__ = ["Buffer", "LocalStore", "MemoryStore", "S3Store", "Staged", "Store", "open_store"]


def open_store(
    location: str, *, fsync: bool = False, direct_io: bool = True, s3: S3Settings | None = None
) -> Store:
    """The store for a location string from the settings: a local path or ``s3://bucket/prefix``."""
    if is_s3(location):
        return S3Store(location, s3)
    if "://" in location and not location.startswith("file://"):
        from ..errors import ConfigError

        scheme = location.split("://", 1)[0]
        raise ConfigError(
            f"store: unsupported scheme {scheme!r} in {location!r}; use a local path or s3://bucket/prefix"
        )
    return LocalStore(location.removeprefix("file://"), fsync=fsync, direct_io=direct_io)
