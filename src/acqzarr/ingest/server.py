"""The ingest server: a PULL (or SUB) socket in, one Zarr store per series out.

One thread receives, validates and appends; the stream's own pool
compresses and writes, so while ``append`` blocks on a full pipeline the
socket is not read, the receive high-water mark fills, and PUSH senders
block (backpressure, nothing lost) while PUB senders drop (counted as gaps).
A new series opens on an open thread (``opener.py``) and an ended one is
finalized on a finalize thread (``finalizer.py``), so neither a store being
created nor one being closed stalls the frames of the other series.  A
finalizing series still holds its stream's memory, so it counts against
``max_open_series``: a series_start that needs the slot of a finalizing
series waits for it.  Until a series is open its messages are held in order
(up to ``max_waiting_bytes``; beyond it the socket is left unread until a
series opens) and the socket goes on serving the others; outcomes are counted
and logged here, on the receive thread.

Nothing a sender does can stop the server: every message that fails a check
is rejected with a reason from ``protocol.REASONS``, counted, logged (rate
limited), and the series goes on.

The loop is here; its collaborators have one job each, and are made and
wired here: ``sockets.py`` (binding, CURVE, receiving, the status socket),
``admission.py`` (the limits: max_open_series, max_waiting_bytes, busy,
what a series may ask for), ``lifecycle.py`` (each series started, opened,
fed, ended and finalized) and ``status.py`` (counters, rejections, the
snapshot and the console line).
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from ..errors import ProtocolError
from ..recording.stop import StopSignal
from ..settings.locations import is_s3
from .admission import Admission
from .config import ServeConfig
from .detectors import DecoderFactory, DetectorInputs
from .finalizer import Finalizer
from .lifecycle import SeriesLifecycle
from .opener import Held, Opener
from .protocol import Frame, SeriesStart, parse_header
from .reporter import Reporter
from .series import Series
from .sockets import Sockets
from .status import Counters, Rejections

__all__ = ["IngestServer", "serve"]

log = logging.getLogger("acqzarr.ingest")

_OPEN_POLL = 0.005  # seconds between looks at a running open (a store opens in 0.01-1 s)
_BATCH = 64  # messages handled per poll before timers and the status socket get a turn
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc mallopt parameters


class IngestServer:
    """Bind the sockets of ``config``; ``run(stop)`` serves until ``stop`` is set, then finalizes."""

    def __init__(self, config: ServeConfig, decoders: DecoderFactory | None = None) -> None:
        self.config = config
        if not is_s3(config.root):
            Path(config.root).mkdir(parents=True, exist_ok=True)
        self.counters = Counters()
        self.rejections = Rejections(self.counters)
        self.finalizer = Finalizer(config.max_open_series)  # ended: being finalized
        self.opener = Opener(config.max_open_series, config.max_waiting_bytes)  # not open yet
        self.admission = Admission(config, self.opener, self.finalizer)
        self.lifecycle = SeriesLifecycle(
            self.admission,
            self.opener,
            self.finalizer,
            self.counters,
            self.rejections,
            config.max_user_data_bytes,
        )
        try:
            self.sockets = Sockets(config)
            try:  # detector inputs: connected PULL sockets, polled with the server's
                self.detectors = DetectorInputs(
                    config,
                    self.sockets.context,
                    self.sockets.poller,
                    self.counters,
                    self.rejections,
                    decoders,
                )
            except BaseException:
                self.sockets.close()
                raise
        except BaseException:
            self.opener.close()
            self.finalizer.close()
            raise
        self.reporter = Reporter(self.counters, self.rejections, self.lifecycle, self.detectors)

    @property
    def series(self) -> dict[str, Series]:
        """The open series (taking frames), by id."""
        return self.lifecycle.open

    def close(self) -> None:
        """Close the sockets, after waiting for every pending open and finalize (nothing is cut
        short)."""
        self.opener.close()
        self.finalizer.close()
        self.detectors.close()
        self.sockets.close()

    # -- the loop ---------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; then take what is already queued (up to drain_timeout) and
        finalize every open series as incomplete ('shutdown')."""
        interval = self.config.status_interval
        next_tick = time.monotonic() + interval
        if self.config.endpoints:
            log.info(
                "serving %s on %s, writing under %s",
                self.config.socket,
                self.config.endpoints,
                self.config.root,
            )
        for d in self.config.detectors:
            log.info(
                "detector %s: %s from %s, writing under %s", d.name, d.protocol, d.connect, self.config.root
            )
        sockets = self.sockets
        detectors = self.detectors
        while not stop.is_set():
            self.lifecycle.reap()
            detectors.reap()
            self._advance()
            # Too much held for waiting series: the socket is left unread until a series opens.
            reading = self.admission.reading
            if reading and not sockets.reading:  # the open series' senders were not idle, the server was
                self.lifecycle.touch_open()
            sockets.read(reading)
            # An open running: look for its end often (it is polled, like finalizes).
            soon = _OPEN_POLL if self.opener.opening else 0.1  # decodes wake the poll themselves
            timeout = max(0.0, min(soon, next_tick - time.monotonic()))
            events = sockets.wait(timeout)
            data, status = sockets.ready(events)
            if data:
                self._receive(_BATCH)
            detectors.service(events)
            if status:
                sockets.answer(json.dumps(self.snapshot()).encode())
            if reading:
                self.lifecycle.expire_idle(self.config.idle_timeout)
            detectors.expire_idle()
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + interval
        sockets.read(True)
        self._drain()
        detectors.drain(self.config.drain_timeout)
        self.lifecycle.end_all("shutdown")
        detectors.end_all("shutdown")
        self.wait_finalized()
        self._tick(force=True)

    def _drain(self) -> None:
        """Take what is queued (up to drain_timeout) and let waiting series open meanwhile; then
        wait for the opens already running (a store half created is never left behind) and give
        up the series still waiting for a slot, their messages rejected as 'shutdown'."""
        deadline = time.monotonic() + self.config.drain_timeout
        while time.monotonic() < deadline:
            self.lifecycle.reap()
            self._advance()
            if self.admission.reading:
                data, _ = self.sockets.poll(0.05)
                if data:
                    self._receive(_BATCH)
                    continue
            if not self.opener.waiting:
                break
            # Shutting down: waiting here stalls nothing that matters.
            left = max(0.0, min(0.05, deadline - time.monotonic()))
            self.opener.wait(left)
            self.finalizer.wait(left)
        self.wait_opened()
        self.lifecycle.give_up_waiting()

    def wait_finalized(self) -> None:
        """Wait for every pending finalize and count its outcome (shutdown; tests)."""
        self.lifecycle.wait_finalized()
        self.detectors.wait_finalized()

    def wait_opened(self) -> None:
        """Wait for every running open and take the series (tests that call ``handle`` directly,
        with no loop to do it)."""
        self._advance()
        for waiting, opening in self.lifecycle.opening():
            self._replay(self.lifecycle.take(waiting, opening))

    def _advance(self) -> None:
        """Open the waiting series whose slot is free; take those now open (or refused), each
        followed by its held messages."""
        while (held := self.lifecycle.advance()) is not None:
            self._replay(held)

    def _replay(self, held: list[Held]) -> None:
        for message in held:
            self.handle(message.parts, message.receive_ns)

    def _receive(self, limit: int) -> None:
        for _ in range(limit):
            if not self.admission.reading:
                return
            parts = self.sockets.receive()
            if parts is None:
                return
            self.handle(parts)

    def snapshot(self) -> dict[str, Any]:
        return self.reporter.snapshot()

    def _tick(self, force: bool = False) -> None:
        self.reporter.tick(force)

    # -- messages ---------------------------------------------------------------
    def handle(self, parts: list[zmq.Frame], receive_ns: int | None = None) -> None:
        """Validate and act on one multipart message (received at ``receive_ns``, default now);
        never raises."""
        receive_ns = time.monotonic_ns() if receive_ns is None else receive_ns
        lifecycle = self.lifecycle
        series: Series | None = None
        try:
            if len(parts) != 2:
                raise ProtocolError("parts", f"{len(parts)} parts, expected 2 [header, payload]")
            header = parse_header(parts[0].bytes, self.config.max_header_bytes)
            payload = parts[1].buffer
            waiting = self.opener.waiting.get(header.series_id)
            if waiting is not None:  # handled, in order, once the series is open
                self.opener.hold(waiting, Held(parts, receive_ns))
                return
            if isinstance(header, SeriesStart):
                lifecycle.start(header, payload, Held(parts, receive_ns))
                return
            series = lifecycle.series(header.series_id)
            lifecycle.sequence(series, header.msg_number)
            if isinstance(header, Frame):
                lifecycle.frame(series, header, payload, receive_ns)
            else:
                if payload.nbytes:
                    raise ProtocolError("payload_size", f"series_end carries {payload.nbytes} payload bytes")
                lifecycle.end(series, "series_end", header)
        except ProtocolError as exc:
            self.rejections.reject(exc.reason, str(exc), series)
        except Exception as exc:  # a bug must not take the server down; it is counted and shown
            log.exception("unexpected error handling a message")
            self.rejections.reject("internal", repr(exc), series)


def _keep_freed_frames_warm() -> None:
    """Make glibc reuse freed message buffers instead of returning them to the kernel.

    libzmq allocates every received message; by default glibc maps large
    blocks fresh and trims freed ones, so each 8 MiB frame is faulted in
    again, which is slow on virtual machines (docs/performance.md,
    "Measurements behind the design", has what it saved).  Messages up to 32 MiB (glibc's ceiling for
    this threshold) then come from the heap; up to 256 MiB of freed memory
    is kept for reuse.  One heap (arena) for every thread: glibc gives
    threads heaps of their own, and each kept its own freed memory (the
    ZeroMQ I/O thread's messages, each decode thread's frames, a detector
    series' start decoded on one of them), so what was kept added up: a
    4M detector series had 163 MiB resident in thread heaps with 26 MiB in
    use, and the server's memory went past the series' cap (+261-277 MiB
    against 256; with one heap +219-224, docs/performance.md).  The threads
    allocate a few large blocks per frame, so sharing one heap's lock costs
    nothing measurable.  Process-wide, so only the ``acqzarr serve`` process
    does it, never a library user's.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)
        libc.mallopt(_M_ARENA_MAX, 1)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def serve(config: ServeConfig, decoders: DecoderFactory | None = None) -> str | None:
    """Run a server in this (main) thread until SIGINT/SIGTERM; returns the signal's name.
    ``decoders`` makes the detector inputs' wire decoders (default: the protocols' own)."""
    _keep_freed_frames_warm()
    with StopSignal() as stop:
        server = IngestServer(config, decoders)
        try:
            server.run(stop.event)
        finally:
            server.close()
    if stop.signal:
        log.info("stopped by %s; every open series was finalized", stop.signal)
    return stop.signal
