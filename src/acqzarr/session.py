"""Recording sessions: a config file (stream settings + a ``source:``) turned into a dataset.

The config is validated completely (stream settings, the driver's own
options, and that the driver's frames fit the array) before anything touches
disk.  While recording, per-frame metadata is collected and, at the end,
written beside the image as small 1-D arrays; the group attributes get a
session record.  SIGINT/SIGTERM stop the loop; the stream is then closed
normally, so everything accepted is flushed and the store finalized.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__
from .errors import ConfigError
from .settings import StreamSettings, format_validation_error, load_mapping
from .stream import Stream, open_stream

__all__ = ["FRAME_FIELDS", "SessionConfig", "SourceSettings", "load_session", "record"]

FRAME_FIELDS = ("frame_id", "timestamp_ns", "receive_ns", "dropped_before")
FRAMES_GROUP = "acqzarr_frames"
ENV_PREFIX = "ACQZARR_"


class SourceSettings(BaseModel):
    """Where frames come from: a registered driver and its own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    driver: str = Field(description="Registered driver name, e.g. 'simulated.noise' or 'replay'.")
    frames: int | None = Field(
        default=None,
        ge=0,
        description="Frames to record; null records until the driver ends or the session is interrupted.",
    )
    key: str | None = Field(default=None, description="Array the frames go to; null when there is one array.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The driver's own settings, validated by the driver's pydantic model.",
    )


class SessionConfig(StreamSettings):
    """A recording session: every StreamSettings field at the top level, plus ``source``."""

    source: SourceSettings = Field(description="The camera or file the frames come from.")


def _set_path(data: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    """Set ``a.b.0.c`` inside nested dicts/lists, creating dicts where keys are missing."""
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{origin}: {'.'.join(parts[: i + 1])}: no such list index")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{origin}: {'.'.join(parts[:i])} is not a mapping or list")


def apply_overrides(data: dict[str, Any], sets: Sequence[str], environ: Mapping[str, str]) -> dict[str, Any]:
    """Environment (ACQZARR_SECTION__KEY=value) first, then --set key.path=value; values parse as YAML."""
    for name, raw in sorted(environ.items()):
        parts = name[len(ENV_PREFIX) :].lower().split("__") if name.startswith(ENV_PREFIX) else []
        if parts and parts[0] in SessionConfig.model_fields:  # others (ACQZARR_*) are not config
            _set_path(data, ".".join(parts), yaml.safe_load(raw), f"environment {name}")
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        _set_path(data, key.strip(), yaml.safe_load(raw), f"--set {key.strip()}")
    return data


def load_session(
    path: str | Path,
    sets: Sequence[str] = (),
    *,
    frames: int | None = None,
    output: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[SessionConfig, Any]:
    """Validate a session config and build its driver; raises ConfigError naming the key and reason."""
    data = load_mapping(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data = apply_overrides(data, sets, os.environ if environ is None else environ)
    if output is not None:
        data["store"] = output
    if frames is not None:
        data.setdefault("source", {})
        if isinstance(data["source"], dict):
            data["source"]["frames"] = frames
    try:
        config = SessionConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None
    camera = _make_camera(config, str(path))
    return config, camera


def _make_camera(config: SessionConfig, origin: str) -> Any:
    import acqzarr_drivers

    src = config.source
    try:
        cls = acqzarr_drivers.driver_class(src.driver)
    except KeyError as exc:
        raise ConfigError(f"{origin}: invalid settings\n  source.driver: {exc.args[0]}") from None
    try:
        options = cls.Options.model_validate(src.options)
    except ValidationError as exc:
        msg = format_validation_error(exc, origin).replace("\n  ", "\n  source.options.")
        raise ConfigError(msg) from None
    camera = cls(options)
    keys = [a.key for a in config.arrays]
    key = src.key if src.key is not None else (keys[0] if len(keys) == 1 else None)
    if key not in keys:
        raise ConfigError(f"{origin}: invalid settings\n  source.key: must name one of the arrays {keys}")
    array = config.arrays[keys.index(key)]
    frame_shape = tuple(d.size for d in array.dimensions[-2:])
    if tuple(camera.shape) != frame_shape or np.dtype(camera.dtype) != np.dtype(array.dtype):
        raise ConfigError(
            f"{origin}: invalid settings\n  source.options: the driver delivers {tuple(camera.shape)} "
            f"{np.dtype(camera.dtype)} frames but array {key!r} takes {frame_shape} {array.dtype}"
        )
    return camera


def estimate(config: SessionConfig, camera: Any) -> dict[str, Any]:
    """What --dry-run reports: memory the stream may reserve, and the raw data rate."""
    from .formats import format_for

    frame_bytes = int(np.prod(camera.shape)) * np.dtype(camera.dtype).itemsize
    fps = camera.fps
    return {
        "memory_reserved_bytes": config.max_inflight_bytes or format_for(config).default_inflight_bytes(),
        "frame_bytes": frame_bytes,
        "data_rate_bytes_per_s": None if fps is None else frame_bytes * fps,
        "frames": config.source.frames,
    }


class _Stop:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name
        self.event.set()


def record(config: SessionConfig, camera: Any, *, log: Any = None) -> dict[str, Any]:
    """Run the session; returns its record (also written into the image group's attributes)."""
    out = log or sys.stdout
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    key = config.source.key or config.arrays[0].key
    meta: dict[str, list[int]] = {f: [] for f in FRAME_FIELDS}
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    buf = np.empty(camera.shape, camera.dtype)
    limit = config.source.frames
    stream = open_stream(StreamSettings.model_validate(config.model_dump(exclude={"source"})))
    error: BaseException | None = None
    try:
        camera.start()
        last_log = t0
        while (limit is None or len(meta["frame_id"]) < limit) and not stop.event.is_set():
            info = camera.read_into(buf)
            if info is None:
                break
            received = time.monotonic_ns()
            stream.append(buf, key=key)
            for name, value in (
                ("frame_id", info.frame_id),
                ("timestamp_ns", info.timestamp_ns),
                ("receive_ns", received),
                ("dropped_before", info.dropped_before),
            ):
                meta[name].append(value)
            now = time.monotonic()
            if now - last_log >= 1.0:
                _progress(out, stream, key, meta, now - t0)
                last_log = now
    except BaseException as exc:
        error = exc
    finally:
        camera.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    session = {
        "version": 1,
        "software": f"acqzarr {__version__}",
        "driver": config.source.driver,
        "options": config.source.options,
        "settings": json.loads(config.model_dump_json(exclude={"source"})),
        "start": started.isoformat(),
        "stop": dt.datetime.now(dt.UTC).isoformat(),
        "frames": len(meta["frame_id"]),
        "dropped": int(camera.dropped),
        "interrupted": stop.signal,
        "completed": error is None and stop.signal is None,
    }
    try:
        stream.write_metadata({"acqzarr_session": session}, key=key)
        _write_frame_metadata(stream, key, meta)
    finally:
        try:
            stream.close()
        except Exception:
            if error is None:
                raise  # otherwise the original failure is the one to report
    _progress(out, stream, key, meta, time.monotonic() - t0)
    if error is not None:
        raise error
    return session


def _progress(out: Any, stream: Stream, key: str, meta: dict[str, list[int]], elapsed: float) -> None:
    stats = stream.stats(key)
    array = next(a for a in stream.settings.arrays if a.key == key)
    frame_bytes = array.dimensions[-1].size * array.dimensions[-2].size * np.dtype(array.dtype).itemsize
    raw = stats.frames_appended * frame_bytes
    ratio = raw / stats.bytes_written if stats.bytes_written else float("nan")
    budget = stream.pipeline.budget
    span = max(elapsed, 1e-9)
    print(
        f"frames {stats.frames_appended} ({stats.frames_appended / span:.1f} fps)"
        f" | in {raw / span / 1e6:.0f} MB/s"
        f" | out {stats.bytes_written / span / 1e6:.0f} MB/s | ratio {ratio:.2f}"
        f" | in flight {budget.used / 2**20:.0f}/{budget.cap / 2**20:.0f} MiB"
        f" | dropped {sum(meta['dropped_before'])} | flushed {stats.frames_flushed}",
        file=out,
        flush=True,
    )


def _write_frame_metadata(stream: Stream, key: str, meta: dict[str, list[int]]) -> None:
    """Per-frame metadata as 1-D int64 arrays at <key>/acqzarr_frames/<field> (uncompressed, one chunk)."""
    fmt = stream.format
    base = "/".join(p for p in (key, FRAMES_GROUP) if p)
    docs = fmt.group_documents(base, {"fields": list(FRAME_FIELDS), "version": 1})
    for name, values in meta.items():
        arr = np.asarray(values, dtype="<i8")
        path = f"{base}/{name}"
        if arr.size:
            stream.store.put(fmt.vector_chunk_key(path), [arr.tobytes()])
        docs.update(fmt.vector_documents(path, arr.size, arr.dtype))
    stream.put_documents(docs)
