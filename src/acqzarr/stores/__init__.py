"""Where bytes go: the Store interface and its backends."""

from .base import Buffer, Store
from .local import LocalStore
from .memory import MemoryStore

__all__ = ["Buffer", "LocalStore", "MemoryStore", "Store", "open_store"]


def open_store(location: str, *, fsync: bool = False, direct_io: bool = True) -> Store:
    """The store for a location string from the settings (a local path for now)."""
    if "://" in location and not location.startswith("file://"):
        from ..errors import ConfigError

        scheme = location.split("://", 1)[0]
        raise ConfigError(f"store: unsupported scheme {scheme!r} in {location!r}; use a local path")
    return LocalStore(location.removeprefix("file://"), fsync=fsync, direct_io=direct_io)
