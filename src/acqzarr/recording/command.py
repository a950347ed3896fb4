"""Recording sessions: a config file (stream settings + a ``source:``) turned into a dataset.

The config is validated completely (stream settings, each driver's own
options, and that each driver's frames fit its array) before anything
touches disk.  Each source runs in its own thread, so two cameras write into
one store concurrently.  Each frame's camera metadata (frame_id, timestamps,
drops) goes into the image's per-frame metadata columns (``engine/frame_columns.py``); the
session record (``engine/session_record.py``) names the driver, and its counters and
drops follow the recording (``lifecycle.py``, shared with ``acqzarr serve``).
SIGINT/SIGTERM stop the sources; the recording then ends normally, so
everything accepted is flushed and the store finalized.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..settings import StreamSettings, format_validation_error, load_mapping
from ..settings.overrides import ENV_PREFIX, apply_overrides, parse_assignment
from ..stores import Store
from .camera import frame_buffers
from .lifecycle import End, Recording
from .progress import Conditions, Display, DropReason, Snapshot, drop_reason, make_display, snapshot
from .stop import StopSignal

__all__ = ["SessionConfig", "SourceSettings", "load_config", "load_session", "make_cameras", "record"]


class SourceSettings(BaseModel):
    """Where frames come from: a registered driver and its own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    driver: str = Field(description="Registered driver name, e.g. 'simulated.noise' or 'replay'.")
    frames: int | None = Field(
        default=None,
        ge=0,
        description="Frames to record; null records until the driver ends or the session is interrupted.",
    )
    key: str | None = Field(
        default=None, description="Array the frames go to; may be null only when there is one array."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The driver's own settings, validated by the driver's pydantic model.",
    )


class SessionConfig(StreamSettings):
    """A recording session: every StreamSettings field at the top level, plus ``source``."""

    source: SourceSettings | list[SourceSettings] = Field(
        description="The camera or file the frames come from; a list records several cameras "
        "concurrently, each naming its array with `key`."
    )

    @model_validator(mode="after")
    def _one_source_per_array(self) -> SessionConfig:
        keys = [a.key for a in self.images]  # with positions, "<position>/<array key>"
        seen: set[str] = set()
        for i, src in enumerate(self.sources):
            where = "source" if isinstance(self.source, SourceSettings) else f"source.{i}"
            key = src.key if src.key is not None else (keys[0] if len(keys) == 1 else None)
            if key not in keys:
                raise ValueError(f"{where}.key: must name one of the arrays {keys}")
            if key in seen:
                raise ValueError(f"{where}.key: array {key!r} already has a source")
            seen.add(key)
        return self

    @property
    def sources(self) -> list[SourceSettings]:
        return [self.source] if isinstance(self.source, SourceSettings) else list(self.source)

    def key_of(self, source: SourceSettings) -> str:
        return source.key if source.key is not None else self.images[0].key

    def stream_settings(self) -> StreamSettings:
        return StreamSettings.model_validate(self.model_dump(exclude={"source"}))


def load_session(
    path: str | Path,
    sets: Sequence[str] = (),
    *,
    frames: int | None = None,
    output: str | None = None,
    environ: Mapping[str, str] | None = None,
    check: Callable[[SessionConfig], None] | None = None,
) -> tuple[SessionConfig, list[Any]]:
    """Validate a session config and build its drivers (one per source, in order).

    Raises ConfigError naming the key and reason; nothing is created on disk.  ``check`` runs
    on the validated config before the drivers are built (they may take seconds: a simulator
    makes its frames up front), e.g. the command's check that the store may be written.
    """
    env = os.environ if environ is None else environ
    config = load_config(path, sets, frames=frames, output=output, environ=env)
    if check is not None:
        check(config)
    with _naming_overrides(_override_origins(sets, env)):
        return config, make_cameras(config, str(path))


def load_config(
    path: str | Path,
    sets: Sequence[str] = (),
    *,
    frames: int | None = None,
    output: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> SessionConfig:
    """The validated config alone, without building its drivers."""
    env = os.environ if environ is None else environ
    data = load_mapping(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    with _naming_overrides(_override_origins(sets, env)):
        data = apply_overrides(data, sets, env, SessionConfig.model_fields)
        if output is not None:
            data["store"] = output
        if "source" not in data:
            raise ConfigError(
                f"{path}: no source: section, so there is nothing to record.\n"
                "  This is a StreamSettings config for the Python API:\n"
                f"    settings = acqzarr.StreamSettings.from_file({str(path)!r})\n"
                "    with acqzarr.open_stream(settings) as stream: stream.append(frame) ...\n"
                "  To record it with acqzarr record, add a source whose frames fit the array, e.g.\n"
                "    source: {driver: simulated.noise, frames: 100, options: {height: 2048, width: 2048}}"
            )
        _check_sources(data["source"], str(path))
        if frames is not None:
            source = data.get("source")
            for src in source if isinstance(source, list) else [source]:
                if isinstance(src, dict):
                    src["frames"] = frames
        return SessionConfig.from_mapping(data, source=str(path))


def make_cameras(config: SessionConfig, origin: str) -> list[Any]:
    """Build each source's driver, checking its options and that its frames fit its array."""
    single = isinstance(config.source, SourceSettings)
    return [
        _make_camera(config, src, "source" if single else f"source.{i}", origin)
        for i, src in enumerate(config.sources)
    ]


def _check_sources(source: Any, origin: str) -> None:
    """Validate ``source`` (one mapping or a list of them) before the whole config, so a problem in it
    reads ``source.frame: unknown key; did you mean 'frames'?`` instead of pydantic's report against
    both members of the union (``source.SourceSettings.frame ...``, ``source.list[SourceSettings] ...``).
    """
    if isinstance(source, list):
        entries = [(f"source.{i}", src) for i, src in enumerate(source)]
    elif isinstance(source, dict):
        entries = [("source", source)]
    else:
        raise ConfigError(
            f"{origin}: invalid settings\n  source: must be a mapping (one camera: driver, frames, key, "
            f"options) or a list of them, got {type(source).__name__}"
        )
    lines = []
    for where, src in entries:
        try:
            SourceSettings.model_validate(src)
        except ValidationError as exc:
            lines += _problem_lines(exc, where, SourceSettings)
    if lines:
        raise ConfigError("\n".join([f"{origin}: invalid settings", *lines]))


def _problem_lines(exc: ValidationError, where: str, model: type[BaseModel]) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join([where, *(str(p) for p in err["loc"])])
        if err["type"] == "extra_forbidden":
            known = list(model.model_fields)
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            lines.append(f"  {loc}: unknown key; {hint}")
        else:
            lines.append(f"  {loc}: {err['msg'].removeprefix('Value error, ')}")
    return lines


def _override_origins(sets: Sequence[str], environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """(key path, where it was set) for every override, in the order they apply (later ones win);
    the same rules as ``apply_overrides``."""
    origins = []
    for name in sorted(environ):
        parts = name[len(ENV_PREFIX) :].lower().split("__") if name.startswith(ENV_PREFIX) else []
        if parts and parts[0] in SessionConfig.model_fields:
            origins.append((".".join(parts), f"environment variable {name}"))
    for item in sets:
        try:
            key, _ = parse_assignment(item, "--set", "key.path=value")
        except ConfigError:
            continue  # apply_overrides reports it
        origins.append((key, f"--set {item}"))
    return origins


@contextlib.contextmanager
def _naming_overrides(origins: list[tuple[str, str]]) -> Iterator[None]:
    """Rewrite a ConfigError so a problem in an overridden value names the override (the
    environment variable or the --set), not the config file it never came from."""
    try:
        yield
    except ConfigError as exc:
        head, *lines = str(exc).split("\n")
        found = [
            next((o for p, o in reversed(origins) if loc == p or loc.startswith(p + ".")), None)
            for loc in (line.strip().split(": ", 1)[0] for line in lines)
        ]
        if not any(found):
            raise
        if len(set(found)) == 1:  # every problem is in one override: name it instead of the file
            raise ConfigError("\n".join([f"{found[0]}: invalid settings", *lines])) from None
        out = [line + (f" (from {o})" if o else "") for line, o in zip(lines, found, strict=True)]
        raise ConfigError("\n".join([head, *out])) from None


def _make_camera(config: SessionConfig, src: SourceSettings, where: str, origin: str) -> Any:
    import acqzarr_drivers

    try:
        cls = acqzarr_drivers.driver_class(src.driver)
    except KeyError as exc:
        raise ConfigError(f"{origin}: invalid settings\n  {where}.driver: {exc.args[0]}") from None
    try:
        options = cls.Options.model_validate(src.options)
    except ValidationError as exc:
        msg = format_validation_error(exc, origin).replace("\n  ", f"\n  {where}.options.")
        raise ConfigError(msg) from None
    try:
        camera = cls(options)
    except (OSError, ValueError) as exc:  # e.g. a replay file that exists but cannot be read
        raise ConfigError(f"{origin}: invalid settings\n  {where}.options: {exc}") from None
    key = config.key_of(src)
    array = next(a for a in config.images if a.key == key)
    frame_shape = array.frame_shape
    if tuple(camera.shape) != frame_shape or np.dtype(camera.dtype) != np.dtype(array.dtype):
        raise ConfigError(
            f"{origin}: invalid settings\n  {where}.options: the driver delivers {tuple(camera.shape)} "
            f"{np.dtype(camera.dtype)} frames but array {key!r} takes {frame_shape} {array.dtype}"
        )
    return camera


def estimate(config: SessionConfig, cameras: Sequence[Any]) -> dict[str, Any]:
    """What --dry-run reports: memory the stream may reserve, and the raw data rate of every source."""
    from ..engine.memory import plan_memory

    per_source = []
    for src, camera in zip(config.sources, cameras, strict=True):
        frame_bytes = int(np.prod(camera.shape)) * np.dtype(camera.dtype).itemsize
        fps = camera.fps
        per_source.append(
            {
                "key": config.key_of(src),
                "frame_bytes": frame_bytes,
                "data_rate_bytes_per_s": None if fps is None else frame_bytes * fps,
                "frames": src.frames,
            }
        )
    rates = [s["data_rate_bytes_per_s"] for s in per_source]
    return {
        "memory_reserved_bytes": plan_memory(config).cap(config),
        "data_rate_bytes_per_s": None if None in rates else sum(rates),
        "sources": per_source,
    }


class _Acquisition:
    """One source feeding one array, on its own thread."""

    def __init__(
        self, recording: Recording, src: SourceSettings, key: str, camera: Any, stop: StopSignal
    ) -> None:
        self.recording, self.src, self.key, self.camera, self.stop = recording, src, key, camera, stop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"acqzarr-source-{key}", daemon=True)

    def _run(self) -> None:
        buf = frame_buffers(1, self.camera.shape, self.camera.dtype)[0]  # faulted in before the first frame
        limit = self.src.frames
        appended = 0  # this source is the array's only one: its count, without a stats call a frame
        try:
            self.camera.start()
            while (limit is None or appended < limit) and not self.stop.event.is_set():
                info = self.camera.read_into(buf)
                if info is None:
                    break
                meta = {
                    "frame_id": info.frame_id,
                    "timestamp_ns": info.timestamp_ns,
                    "receive_ns": time.monotonic_ns(),
                    "dropped_before": info.dropped_before,
                }
                self.recording.append(buf, self.key, meta, lost=info.dropped_before)
                appended += 1
        except BaseException as exc:
            self.error = exc
            self.stop.event.set()  # one failed source ends the session for all
        finally:
            self.camera.stop()

    def source(self) -> dict[str, Any]:
        """The session record's ``source``: the driver and the camera it drove."""
        cam = self.camera
        return {
            "kind": "record",
            "driver": self.src.driver,
            "options": self.src.options,
            "camera": {
                "shape": list(cam.shape),
                "dtype": np.dtype(cam.dtype).name,
                "fps": cam.fps,
                "exposure_ms": cam.exposure_ms,
                "roi": dataclasses.asdict(cam.roi),
            },
        }

    def end(self, aborted: bool, dropped_reason: str | None = None) -> End:
        """How this source ended: the camera's own count of drops (it may also have lost frames after
        the last one read) and why it dropped them, the signal that interrupted it, and whether it
        is complete (not if it failed, was interrupted, or the session around it failed: ``aborted``)."""
        return End(
            completed=self.error is None and self.stop.signal is None and not aborted,
            fields={
                "frames_dropped": int(self.camera.dropped),
                "dropped_reason": dropped_reason,
                "interrupted": self.stop.signal,
            },
        )


def record(
    config: SessionConfig,
    cameras: Sequence[Any],
    *,
    log: Any = None,
    store: Store | None = None,
    refresh: float = 1.0,
) -> list[dict[str, Any]]:
    """Run the session; returns the session record of each source's image (also in the store).

    ``store`` replaces the configured store (tests slow it down on purpose).
    """
    out = log or sys.stdout
    stop = StopSignal()
    recording = Recording(config.stream_settings(), store, source={"kind": "record"})
    t0, cpu0 = time.monotonic(), time.process_time()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    runs = [
        _Acquisition(recording, src, config.key_of(src), cam, stop)
        for src, cam in zip(config.sources, cameras, strict=True)
    ]

    def reason(dropped: int, mb_out: float) -> DropReason | None:
        if not dropped:
            return None
        elapsed = max(time.monotonic() - t0, 1e-9)
        memory = recording.stream.memory()
        return drop_reason(
            dropped,
            Conditions(
                cap_mib=memory.cap / 2**20,
                peak_mib=memory.peak / 2**20,
                cpu_share=(time.process_time() - cpu0) / (elapsed * cores),
                load=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                cores=cores,
                mb_out=mb_out,
            ),
        )

    def snapshots() -> list[Snapshot]:
        elapsed = time.monotonic() - t0
        snaps = []
        for r in runs:
            snap = snapshot(recording.stream, r.key, elapsed, recording.counts(r.key).dropped)
            why = reason(snap.dropped, snap.mb_out)
            snaps.append(snap if why is None else dataclasses.replace(snap, why=why.cause))
        return snaps

    display: Display = make_display(out)
    aborted: BaseException | None = None  # the session itself failed, not one of its sources
    with stop:
        try:
            for run in runs:
                recording.describe(run.key, run.source())
                run.thread.start()
            while alive := [run for run in runs if run.thread.is_alive()]:
                alive[0].thread.join(refresh)  # returns as soon as a source ends, at the latest after refresh
                if any(run.thread.is_alive() for run in runs):  # the final figures come from finish()
                    display.update(snapshots())
        except BaseException as exc:
            aborted = exc
        finally:
            stop.event.set()
            for run in runs:
                if run.thread.ident is not None:  # started
                    run.thread.join()
    failure = aborted or next((r.error for r in runs if r.error is not None), None)
    ends = {}
    for run, snap in zip(runs, snapshots(), strict=True):
        dropped = int(run.camera.dropped)  # the camera's own count: after the last frame read too
        why = reason(dropped, snap.mb_out)
        ends[run.key] = run.end(aborted is not None, None if why is None else why.text(dropped))
    try:
        recording.finish(ends, failure)
    finally:
        display.close(snapshots())
    return [recording.stream.session(run.key) for run in runs]
