"""A DECTRIS detector without the hardware: sends series over Stream V2 or V1, as an EIGER does.

``acqzarr simulate-detector`` runs it.  Like a detector it *binds* a ZeroMQ PUSH socket (Stream
V2: port 31001, V1: 9999; loopback by default) and the receiver (``acqzarr serve`` with a
``detectors:`` input) connects to it; a PUSH socket holds its messages until a receiver is there,
so the simulator waits for one, then sends every series: start, images, end.  The bytes are
made by ``dectris_wire.py`` from the public specs.

The frames are photon counts with an EIGER's statistics (``counting_frames``): Poisson counts
over a smooth diffuse background and Bragg-like spots, so most pixels hold a few counts and
bslz4 compresses them as it does real data (about 10:1 for uint32); module gaps and a few dead
pixels hold the NODATA value (the type's maximum) and are flagged in the pixel mask.  A second
threshold channel counts a binomial share of the first channel's photons (a higher threshold sees
fewer).  A pool of frames is generated and compressed once, so the simulator sends at full speed
without compressing as it goes; frame ``i`` is ``pool[i % pool]`` (``pool_frame``).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from acqzarr.errors import AcqzarrError

from . import dectris_wire as wire

__all__ = [
    "DEFAULT_BIND",
    "DetectorSimulator",
    "DetectorSimulatorOptions",
    "NoReceiver",
    "SimulationReport",
    "counting_frames",
    "pool_frame",
]

DEFAULT_BIND = {"dectris-stream2": "tcp://127.0.0.1:31001", "dectris-stream1": "tcp://127.0.0.1:9999"}
# An EIGER2 module: 1028 x 512 pixels; modules are 12 pixels apart in x, 38 in y (so a 1M is
# 1028 x 1062 and a 4M 2068 x 2162).
MODULE = (512, 1028)
MODULE_GAP = (38, 12)
GAP, DEAD = 1, 2  # pixel mask bits (DECTRIS: bit 0 gap, bit 1 dead)
SATURATION = {"uint8": 254, "uint16": 65_534, "uint32": 1_000_000}


class NoReceiver(AcqzarrError, TimeoutError):
    """No receiver connected to the simulator within ``connect_timeout``."""


class DetectorSimulatorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["dectris-stream2", "dectris-stream1"] = "dectris-stream2"
    bind: str | None = Field(
        default=None,
        description="Endpoint to bind the PUSH socket to (default: loopback, port 31001 / 9999).",
    )
    frames: int = Field(default=100, ge=0, description="Images per series.")
    width: int = Field(default=1028, ge=1, le=16384, description="image_size_x, pixels.")
    height: int = Field(default=1062, ge=1, le=16384, description="image_size_y, pixels.")
    dtype: Literal["uint8", "uint16", "uint32"] = "uint32"
    channels: int = Field(default=1, ge=1, le=4, description="Threshold channels (Stream V1: 1).")
    fps: float | None = Field(default=None, gt=0, description="Frame rate; null: as fast as taken.")
    series: int = Field(default=1, ge=1, description="Series to send, one after the other.")
    series_id: int = Field(default=1, ge=0, description="series_id of the first series.")
    compression: Literal["bslz4", "lz4", "none"] = "bslz4"
    byte_order: Literal["little", "big"] = Field(
        default="little", description="Byte order of the pixels (Stream V2 typed arrays allow both)."
    )
    header_detail: Literal["all", "basic", "none"] = Field(
        default="all", description="all: the start carries pixel masks, flatfields, count-rate table."
    )
    pool: int = Field(default=4, ge=1, le=64, description="Distinct frames, generated once.")
    seed: int = 0
    mean_counts: float = Field(default=1.5, gt=0, description="Mean photons per pixel of the background.")
    header_appendix: Any = Field(
        default={"source": "acqzarr simulate-detector"}, description="user_data of the start."
    )
    image_appendix: bool = Field(
        default=True, description="Send user_data with each image: {'pool_frame': k}."
    )
    connect_timeout: float | None = Field(
        default=None, gt=0, description="Seconds to wait for a receiver; null: forever."
    )
    linger: float = Field(default=60.0, ge=0, description="Seconds to deliver what is queued at the end.")
    send_hwm: int = Field(default=16, ge=1, description="Messages queued before a send waits.")

    @model_validator(mode="after")
    def _fits(self) -> DetectorSimulatorOptions:
        if self.protocol == "dectris-stream1" and self.channels != 1:
            raise ValueError("Stream V1 carries one threshold channel: use --channels 1 or dectris-stream2")
        if self.protocol == "dectris-stream1" and self.byte_order != "little":
            raise ValueError("Stream V1 sends little-endian pixels only")
        return self

    @property
    def endpoint(self) -> str:
        return self.bind or DEFAULT_BIND[self.protocol]

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(f"threshold_{k + 1}" for k in range(self.channels))

    @property
    def frame_time(self) -> float:
        """The frame_time the start message says: 1/fps, or 1 ms when unpaced."""
        return 1.0 / self.fps if self.fps else 1e-3

    @property
    def pixel_dtype(self) -> np.dtype[Any]:
        return np.dtype(self.dtype).newbyteorder("<" if self.byte_order == "little" else ">")


def detector_mask(height: int, width: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """The pixel mask of a detector of this size: module gaps (bit 0) and a few dead pixels (bit 1)."""
    y, x = np.ogrid[:height, :width]
    gap_y = (y % (MODULE[0] + MODULE_GAP[0])) >= MODULE[0]
    gap_x = (x % (MODULE[1] + MODULE_GAP[1])) >= MODULE[1]
    mask = np.where(gap_y | gap_x, GAP, 0).astype(np.uint32)
    rng = np.random.default_rng((seed, 1))
    dead = rng.integers(0, height * width, max(1, height * width // 100_000))
    mask.reshape(-1)[dead] |= DEAD
    return mask


def counting_frames(
    n: int,
    height: int,
    width: int,
    dtype: Any = "uint32",
    channels: int = 1,
    seed: int = 0,
    mean_counts: float = 1.5,
) -> np.ndarray[Any, Any]:
    """``n`` frames of ``channels`` photon-counting channels, shape (n, channels, height, width);
    deterministic for a seed.  Masked pixels hold the type's maximum (NODATA), counts are clipped
    to ``SATURATION``; channel k > 0 keeps a binomial 0.35**k share of channel 0's counts."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:height, :width]
    cy, cx = 0.52 * height, 0.48 * width
    r = np.hypot(yy - cy, xx - cx).astype(np.float32)
    rmax = float(np.hypot(height, width)) / 2
    # Diffuse scattering falling off from the beam centre, and a solvent ring.
    background = mean_counts * (
        0.4 + 1.6 * np.exp(-r / (0.25 * rmax)) + 0.8 * np.exp(-(((r - 0.45 * rmax) / (0.03 * rmax)) ** 2))
    ).astype(np.float32)
    spots = max(1, height * width // 4000)
    sy = rng.integers(1, max(2, height - 1), spots)
    sx = rng.integers(1, max(2, width - 1), spots)
    mask = detector_mask(height, width, seed)
    nodata = np.iinfo(dtype).max
    saturation = min(SATURATION[dtype.name], nodata - 1)
    out = np.empty((n, channels, height, width), dtype)
    for i in range(n):
        lam = background.copy()
        lit = rng.random(spots) < 0.3  # the spots in diffraction condition on this frame
        peak = rng.exponential(400.0, spots).astype(np.float32) * lit
        for dy, dx, share in ((0, 0, 0.5), (-1, 0, 0.125), (1, 0, 0.125), (0, -1, 0.125), (0, 1, 0.125)):
            ys, xs = np.clip(sy + dy, 0, height - 1), np.clip(sx + dx, 0, width - 1)
            np.add.at(lam, (ys, xs), peak * share)
        counts = np.minimum(rng.poisson(lam), saturation)
        for c in range(channels):
            if c:
                counts = rng.binomial(counts, 0.35)
            out[i, c] = counts
        out[i][:, mask != 0] = nodata
    return out


def pool_frame(image_id: int, pool: int) -> int:
    """The pool frame image ``image_id`` of a series sends."""
    return image_id % pool


@dataclass
class SimulationReport:
    series: int = 0
    images: int = 0
    raw_bytes: int = 0  # pixel bytes of the images sent
    wire_bytes: int = 0  # bytes of every message sent
    late: int = 0  # images sent after their time at --fps (the receiver held the socket back)
    seconds: float = 0.0  # from the first start until every message was handed to the receiver
    started: float | None = None  # time.monotonic() when the first start was sent
    series_unique_ids: list[str] = field(default_factory=list)  # of the series sent, in order


class DetectorSimulator:
    """Binds, waits for a receiver, sends ``options.series`` series, closes."""

    def __init__(self, options: DetectorSimulatorOptions, say: Callable[[str], None] = print) -> None:
        self.options = options
        self.say = say
        o = options
        self.frames = counting_frames(o.pool, o.height, o.width, o.dtype, o.channels, o.seed, o.mean_counts)
        self.mask = detector_mask(o.height, o.width, o.seed)
        if o.protocol == "dectris-stream2":
            self._v2 = [
                [wire.encode_payload(f.astype(o.pixel_dtype), o.compression) for f in frame]
                for frame in self.frames
            ]
        else:
            self._v1 = [wire.stream1_payload(frame[0], o.compression) for frame in self.frames]
        self.report = SimulationReport()

    def series_info(self, k: int) -> wire.SeriesInfo:
        """The k-th series' start: what a detector arming with these options would say."""
        o = self.options
        rng = np.random.default_rng((o.seed, 2))
        flatfield = (1.0 + 0.02 * rng.standard_normal((o.height, o.width))).astype(np.float32)
        rates = np.linspace(0.0, 2e6, 64, dtype=np.float32)
        table = np.stack([rates, rates / (1.0 + rates * 1e-7)]).astype(np.float32)
        measured = np.arange(4096, dtype=np.float64)  # counts per frame -> corrected counts (dead time)
        lut = np.round(measured / (1.0 - measured / 8192.0)).astype(np.uint32)
        return wire.SeriesInfo(
            series_id=o.series_id + k,
            series_unique_id=str(uuid.uuid4()),
            height=o.height,
            width=o.width,
            dtype=o.pixel_dtype,
            channels=o.channel_names,
            number_of_images=o.frames,
            frame_time=o.frame_time,
            count_time=o.frame_time - 1e-7,  # an EIGER2's 100 ns dead time between frames
            arm_date=dt.datetime.now(dt.UTC),
            pixel_mask=self.mask,
            flatfield=flatfield,
            countrate_table=table,
            countrate_lut=lut,
            threshold_energy={c: 6000.0 + 2000.0 * j for j, c in enumerate(o.channel_names)},
            saturation_value=min(SATURATION[o.dtype], int(np.iinfo(o.dtype).max) - 1),
            header_detail=o.header_detail,
            user_data=o.header_appendix,
            beam_center=(0.48 * o.width, 0.52 * o.height),
        )

    def run(self) -> SimulationReport:
        import zmq

        o = self.options
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, o.send_hwm)
        # Told when a receiver has connected and finished the ZeroMQ handshake: the first send
        # would wait for one anyway, but then the user could not be told what it waits for.
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            sock.bind(o.endpoint)
            self.say(f"{o.protocol} on {o.endpoint}: waiting for a receiver to connect (a PULL socket)")
            try:
                if not monitor.poll(None if o.connect_timeout is None else int(o.connect_timeout * 1000)):
                    raise NoReceiver(f"no receiver connected to {o.endpoint} in {o.connect_timeout:g} s")
            finally:
                sock.disable_monitor()
                monitor.close(0)
            self.say(f"receiver connected; sending {o.series} series of {o.frames} images")
            t0 = time.perf_counter()
            self.report.started = time.monotonic()
            for k in range(o.series):
                self._series(sock, self.series_info(k))
        finally:
            sock.close(linger=int(o.linger * 1000))
            ctx.term()  # returns once the queued messages are written to the receiver (or linger ends)
        self.report.seconds = time.perf_counter() - t0
        return self.report

    def _series(self, sock: Any, s: wire.SeriesInfo) -> None:
        o, rep = self.options, self.report
        v2 = o.protocol == "dectris-stream2"
        rep.series_unique_ids.append(s.series_unique_id)
        self._send(sock, wire.stream2_start(s) if v2 else wire.stream1_header(s))
        series_date = dt.datetime.now(dt.UTC)
        start = time.perf_counter()
        for i in range(o.frames):
            if o.fps:
                ahead = start + i / o.fps - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
                elif ahead < -1.0 / o.fps:
                    rep.late += 1
            k = pool_frame(i, o.pool)
            extra = {"pool_frame": k} if o.image_appendix else None
            if v2:
                self._send(sock, wire.stream2_image(s, i, self._v2[k], series_date, extra))
            else:
                data, encoding = self._v1[k]
                self._send(sock, wire.stream1_image(s, i, data, encoding, extra))
            rep.images += 1
            rep.raw_bytes += self.frames[k].nbytes
        self._send(sock, wire.stream2_end(s) if v2 else wire.stream1_end(s))
        rep.series += 1

    def _send(self, sock: Any, message: bytes | list[bytes]) -> None:
        if isinstance(message, bytes):
            sock.send(message, copy=False)
            self.report.wire_bytes += len(message)
        else:
            sock.send_multipart(message, copy=False)
            self.report.wire_bytes += sum(len(p) for p in message)
