"""Simulated cameras that behave like real ones where it matters to a sink.

A producer thread fills a bounded ring buffer at the configured frame rate.
When the reader falls behind, the oldest unread frame is overwritten, as a
camera's on-board buffer does, and the loss is counted and reported with the
next frame read: a slow sink produces counted drops, never silent ones.

Without a frame rate there is no frame clock to keep up with: the simulator
makes the next frame as soon as the ring has room, like a camera triggered by
its reader, so it runs as fast as the reader takes frames and loses none.  (It
used to overwrite as fast as it could: ``acqzarr send`` with the default
options reported 735 frames "dropped by the camera" for 20 sent.)
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from acqzarr.recording.camera import ROI, FrameInfo, frame_buffers

__all__ = [
    "EmptySimulator",
    "NoiseSimulator",
    "RadialSineSimulator",
    "RandomSimulator",
    "RegionOptions",
    "SimulatorOptions",
]


class RegionOptions(BaseModel):
    """A sensor region of interest: only these pixels are read out and delivered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x: int = Field(default=0, ge=0, description="Left edge on the sensor, pixels.")
    y: int = Field(default=0, ge=0, description="Top edge on the sensor, pixels.")
    width: int = Field(ge=1, description="Width of the delivered frames, pixels.")
    height: int = Field(ge=1, description="Height of the delivered frames, pixels.")


class SimulatorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    height: int = Field(default=512, ge=1, description="Sensor height in pixels.")
    width: int = Field(default=512, ge=1, description="Sensor width in pixels.")
    roi: RegionOptions | None = Field(
        default=None, description="Deliver only this sensor region; null delivers the whole sensor."
    )
    exposure_ms: float | None = Field(
        default=None,
        gt=0,
        description="Exposure per frame; it bounds the frame rate (fps <= 1000/exposure_ms). "
        "Null: the full frame period at `fps`, or no limit without `fps`.",
    )
    dtype: str = Field(default="uint16", pattern="^(uint8|uint16)$", description="Sample type.")
    fps: float | None = Field(
        default=None,
        gt=0,
        description="Frame rate of the camera's clock; frames the reader misses are lost (counted). "
        "Null: no clock, the next frame is made when the ring has room (as fast as the reader "
        "takes them; none lost).",
    )
    frames: int | None = Field(
        default=None, ge=0, description="Frames to produce, then end; null runs until stop."
    )
    ring: int = Field(
        default=16, ge=1, description="On-board buffer in frames; unread frames beyond it are lost."
    )
    seed: int = Field(default=0, description="Seed of the deterministic pattern.")

    @model_validator(mode="after")
    def _fits(self) -> SimulatorOptions:
        r = self.roi
        if r is not None and (r.x + r.width > self.width or r.y + r.height > self.height):
            raise ValueError(
                f"roi ({r.x}, {r.y}, {r.width}x{r.height}) does not fit the {self.width}x{self.height} sensor"
            )
        if self.fps is not None and self.exposure_ms is not None and self.exposure_ms > 1000.0 / self.fps:
            raise ValueError(
                f"exposure_ms {self.exposure_ms} is longer than the frame period at fps {self.fps} "
                f"({1000.0 / self.fps:g} ms)"
            )
        return self

    @property
    def region(self) -> ROI:
        r = self.roi
        return ROI(0, 0, self.width, self.height) if r is None else ROI(r.x, r.y, r.width, r.height)


class Simulator:
    """Base of the simulated cameras: subclasses only say how frame ``i`` looks."""

    Options: ClassVar[type[SimulatorOptions]] = SimulatorOptions

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self._dtype = np.dtype(options.dtype)
        self._region = options.region
        # Faulted in now: first touched while running, a 2048^2 ring slot cost a 50 fps frame period.
        self._ring = frame_buffers(options.ring, self.shape, self._dtype)
        self._stamps = np.zeros(options.ring, np.int64)
        self._cond = threading.Condition()
        self._written = 0  # frames produced
        self._read = 0  # frames consumed or dropped
        self._dropped = 0
        self._dropped_reported = 0
        self._running = False
        self._ended = False
        self._thread: threading.Thread | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self._region.height, self._region.width)

    @property
    def roi(self) -> ROI:
        return self._region

    @property
    def exposure_ms(self) -> float | None:
        if self.options.exposure_ms is not None:
            return self.options.exposure_ms
        return None if self.options.fps is None else 1000.0 / self.options.fps

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    @property
    def fps(self) -> float | None:
        return self.options.fps

    @property
    def dropped(self) -> int:
        return self._dropped

    def pattern(self, i: int, out: np.ndarray[Any, Any]) -> None:
        """Fill ``out`` (the ROI's shape) with frame ``i`` as the ROI sees it."""
        raise NotImplementedError

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._produce, name="simulated-camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _produce(self) -> None:
        # A sensor cannot start the next frame before the exposure ends.
        period = 1.0 / self.options.fps if self.options.fps else (self.options.exposure_ms or 0.0) / 1000.0
        clocked = self.options.fps is not None  # a clock does not wait for the reader
        start = time.perf_counter()
        i = 0
        while self._running and (self.options.frames is None or i < self.options.frames):
            if period:
                delay = start + i * period - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            slot = i % self.options.ring
            with self._cond:
                while not clocked and self._written - self._read >= self.options.ring and self._running:
                    self._cond.wait()  # no clock: wait for the reader to free a slot
                if not self._running:
                    break
                if self._written - self._read >= self.options.ring:  # overwrite the oldest unread
                    self._read += 1
                    self._dropped += 1
            self.pattern(i, self._ring[slot])
            with self._cond:
                self._stamps[slot] = time.monotonic_ns()
                self._written += 1
                self._cond.notify_all()
            i += 1
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def read_into(self, out: np.ndarray[Any, Any]) -> FrameInfo | None:
        with self._cond:
            while self._read >= self._written and not self._ended and self._running:
                self._cond.wait()
            if self._read >= self._written:
                return None
            frame_id = self._read
            slot = frame_id % self.options.ring
            out[...] = self._ring[slot]
            self._read += 1
            self._cond.notify_all()  # a producer without a clock waits for this slot
            dropped = self._dropped - self._dropped_reported
            self._dropped_reported = self._dropped
            return FrameInfo(frame_id=frame_id, timestamp_ns=int(self._stamps[slot]), dropped_before=dropped)


class EmptySimulator(Simulator):
    """All-zero frames: measures the sink's overhead without compressible content."""

    def pattern(self, i: int, out: np.ndarray[Any, Any]) -> None:
        out[...] = 0


class RandomSimulator(Simulator):
    """Uniform random frames (incompressible): a worst case for compression.

    Drawn at the ROI's size, so an ROI's values are not a crop of the full frame's.
    """

    def pattern(self, i: int, out: np.ndarray[Any, Any]) -> None:
        rng = np.random.default_rng((self.options.seed, i))
        out[...] = rng.integers(0, np.iinfo(out.dtype).max, out.shape, dtype=out.dtype, endpoint=True)


class RadialSineSimulator(Simulator):
    """A radial sine pattern that moves outward frame by frame.

    ``sin(r/8 - i/2)`` is computed as ``sin(r/8) cos(i/2) - cos(r/8) sin(i/2)`` from two
    float32 maps made once: a few multiply-adds per pixel instead of a hypot and a sine, so a
    1024x1024 frame takes ~3 ms, not ~30 (configs/chunked-v2.yaml asked for 100 fps and got 33.5).
    """

    def __init__(self, options: SimulatorOptions) -> None:
        super().__init__(options)
        h, w = options.height, options.width  # the pattern is centred on the sensor
        r0 = self._region
        yy, xx = np.ogrid[r0.y : r0.y + r0.height, r0.x : r0.x + r0.width]
        phase = np.hypot(yy - h / 2, xx - w / 2) / 8.0
        self._sin = np.sin(phase).astype(np.float32)
        self._cos = np.cos(phase).astype(np.float32)
        self._half = np.float32(np.iinfo(self._dtype).max / 2)
        self._a = np.empty(self.shape, np.float32)  # scratch, touched once here
        self._b = np.empty(self.shape, np.float32)
        self._a.fill(0)
        self._b.fill(0)

    def pattern(self, i: int, out: np.ndarray[Any, Any]) -> None:
        half, a, b = self._half, self._a, self._b
        np.multiply(self._sin, np.float32(half * np.cos(i * 0.5)), out=a)
        np.multiply(self._cos, np.float32(half * np.sin(i * 0.5)), out=b)
        a -= b
        a += half
        np.clip(a, 0, 2 * half, out=a)  # float32 rounding must not wrap around the integer range
        out[...] = a


class NoiseSimulator(Simulator):
    """A 12-bit camera: smooth background plus shot noise, deterministic for a seed."""

    _POOL = 8

    def __init__(self, options: SimulatorOptions) -> None:
        super().__init__(options)
        from acqzarr.recording.synthetic import camera_frames

        # A pool generated once: drawing Poisson noise per 2048^2 frame would cap the frame rate.
        # Generated for the whole sensor and cropped, so an ROI sees the same pixels as a full frame.
        sensor = camera_frames(self._POOL, (options.height, options.width), self._dtype, seed=options.seed)
        r = self._region
        self._pool = np.ascontiguousarray(sensor[:, r.y : r.y + r.height, r.x : r.x + r.width])

    def pattern(self, i: int, out: np.ndarray[Any, Any]) -> None:
        out[...] = self._pool[i % self._POOL]
