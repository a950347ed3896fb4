"""ZarrStorage: the StorageInterface-style device over the streaming engine.

Acquisition frameworks drive storage as a device with a small state machine
(configure, arm, run, stop, run again into a new path).  This class is that
device; all the work is done by the same ``Stream`` the Python API uses.

A device never overwrites a recording it wrote itself: ``overwrite: true`` in the
settings is meant for stores left by earlier runs, and a framework that calls
``start()`` again after ``stop()`` without a new ``set()`` would otherwise replace
the recording it just finished with an empty one.  The one exception is ``existing:
resume``: that continues the recording where it stops (``engine/resume.py``), so it may name a
store the device wrote before.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, StateError
from ..settings import DTYPES, StreamSettings
from ..settings.locations import is_s3
from .memory import MemoryUsage
from .stream import ArrayStats, Stream

__all__ = ["State", "StorageCapabilities", "ZarrStorage"]


class State(enum.Enum):
    UNCONFIGURED = "unconfigured"
    ARMED = "armed"
    RUNNING = "running"


class StorageCapabilities(BaseModel):
    """What this storage device can do, for frameworks that negotiate before configuring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    versions: tuple[int, ...] = Field(description="Zarr format versions that can be written.")
    sharding: bool = Field(description="Whether shards (Zarr v3 sharding_indexed) are supported.")
    multiscale: bool = Field(description="Whether a downsampled pyramid can be written while streaming.")
    codecs: tuple[str, ...] = Field(description="Blosc inner compressors available for chunks.")
    dtypes: tuple[str, ...] = Field(description="Sample types accepted.")
    max_dims: int = Field(description="Most dimensions an array may have.")
    unbounded_append: bool = Field(description="Whether the first axis may grow without a known end.")


_CAPABILITIES = StorageCapabilities(
    versions=(2, 3),
    sharding=True,
    multiscale=True,
    codecs=("lz4", "lz4hc", "zstd", "blosclz", "zlib"),
    dtypes=DTYPES,
    max_dims=5,
    unbounded_append=True,
)


class ZarrStorage:
    """unconfigured --set--> armed --start--> running --stop--> armed (--set/start again)."""

    def __init__(self) -> None:
        # The state is what the device holds: settings once armed, a stream while running.
        self._settings: StreamSettings | None = None
        self._stream: Stream | None = None
        # Where this device has started a recording (see _check_not_written), normalised by _where.
        self._written: set[str] = set()

    @property
    def state(self) -> State:
        if self._stream is not None:
            return State.RUNNING
        return State.UNCONFIGURED if self._settings is None else State.ARMED

    def _require(self, *states: State, action: str) -> None:
        if self.state not in states:
            allowed = " or ".join(s.value for s in states)
            raise StateError(f"cannot {action} while {self.state.value}; the device must be {allowed}")

    def _running(self, action: str) -> Stream:
        """The stream of a running device; StateError naming the state otherwise."""
        if self._stream is None:
            raise StateError(f"cannot {action} while {self.state.value}; the device must be running")
        return self._stream

    def _configured(self, action: str) -> StreamSettings:
        """The settings of an armed or running device; StateError naming the state otherwise."""
        if self._settings is None:
            raise StateError(f"cannot {action} while {self.state.value}; the device must be armed or running")
        return self._settings

    def _check_not_written(self, store: str, action: str) -> None:
        """Refuse a store this device already recorded into, whatever ``overwrite`` says.

        A local recording that has since been removed (deleted or moved away by the user) frees its
        path again: nothing of this device's would be lost. An ``s3://`` prefix stays refused, as
        its objects cannot be checked without a request.
        """
        where = _where(store)
        if where not in self._written:
            return
        if not is_s3(store) and not os.path.lexists(where):
            self._written.discard(where)
            return
        raise StateError(
            f"cannot {action}: {store} holds the recording this device wrote; a device never overwrites "
            "its own recording (overwrite: true is for stores of earlier runs), so set() settings with "
            "a new store path to record again, or existing: resume to continue this one"
        )

    def set(self, settings: StreamSettings | Mapping[str, Any]) -> None:
        """Configure (or reconfigure) the device; validation errors leave the state unchanged.

        Settings whose store this device already recorded into are refused with a StateError
        (see ``start``).
        """
        self._require(State.UNCONFIGURED, State.ARMED, action="set settings")
        if not isinstance(settings, StreamSettings):
            settings = StreamSettings.from_mapping(dict(settings))
        if settings.on_existing != "resume":  # resuming its own recording is continuing it, not losing it
            self._check_not_written(settings.store, "set settings")
        self._settings = settings

    def get(self) -> StreamSettings:
        return self._configured("get settings")

    def get_meta(self) -> StorageCapabilities:
        return _CAPABILITIES

    def reserve_image_shape(self, shape: tuple[int, ...], dtype: Any, key: str | None = None) -> None:
        """Adopt the camera's frame shape and dtype into the settings before ``start``.

        ``shape`` is one frame (e.g. (y, x)); it replaces the sizes of the
        array's frame axes, and ``dtype`` its sample type.
        """
        self._require(State.ARMED, action="reserve an image shape")
        settings = self.get()
        index = _array_index(settings, key)
        data = settings.model_dump()
        arr = data["arrays"][index]
        n = len(shape)
        dims = arr["dimensions"]
        if n not in (1, 2) or n > len(dims) - 1:
            raise ConfigError(
                f"reserve_image_shape: a frame has 1 or 2 axes (at most {len(dims) - 1} here), got {shape}"
            )
        for dim, size in zip(dims[-n:], shape, strict=True):
            dim["size"] = int(size)
        arr["dtype"] = np.dtype(dtype).name
        self._settings = StreamSettings.from_mapping(data, source="reserve_image_shape")

    def start(self) -> None:
        """Create the store and start the writer threads; on failure the device stays armed.

        Starting again after ``stop()`` needs ``set()`` with a new store path first: the store of
        the last recording is refused with a StateError naming it, so it is never replaced.
        """
        self._require(State.ARMED, action="start")
        settings = self.get()
        if settings.on_existing != "resume":
            self._check_not_written(settings.store, "start")
        self._stream = Stream(settings)
        self._written.add(_where(settings.store))

    def append(
        self,
        frames: Any,
        key: str | None = None,
        *,
        index: Mapping[str, int] | None = None,
        metadata: Any = None,
    ) -> None:
        """``Stream.append``: frames in acquisition order, or from ``index`` on, with optional
        per-frame ``metadata``."""
        self._running("append").append(frames, key=key, index=index, metadata=metadata)

    def skip(self, n: int = 1, key: str | None = None) -> None:
        """``Stream.skip``: leave the next ``n`` frame slots as fill value (counted)."""
        self._running("skip").skip(n, key=key)

    def memory(self) -> MemoryUsage:
        """``Stream.memory``: the in-flight cap, bytes reserved now and the peak."""
        return self._running("read memory").memory()

    def stats(self, key: str | None = None) -> ArrayStats:
        return self._running("read stats").stats(key)

    def stop(self) -> None:
        """Flush and finalize; the device is armed afterwards even if a write failed (which raises)."""
        stream = self._running("stop")
        self._stream = None
        stream.close()


def _where(store: str) -> str:
    """A store's location as compared between runs: an ``s3://`` URL without its trailing '/', a
    local path made absolute and resolved (so 'a.zarr' and './a.zarr' are one store)."""
    return store.rstrip("/") if is_s3(store) else os.path.realpath(store)


def _array_index(settings: StreamSettings, key: str | None) -> int:
    keys = [a.key for a in settings.arrays]
    if key is None:
        if len(keys) != 1:
            raise ConfigError(f"several arrays are configured; pass key= one of {keys}")
        return 0
    if key not in keys:
        raise ConfigError(f"unknown array key {key!r}; expected one of {keys}")
    return keys.index(key)
