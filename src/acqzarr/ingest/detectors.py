"""Detector inputs of the server: a PULL socket connected to each detector, decoding off the loop.

A detector (DECTRIS SIMPLON Stream V2 or V1) binds a PUSH socket; the server
*connects* a PULL socket to it (``config.DetectorInput``), so ZeroMQ keeps
reconnecting by itself: a detector that is off, restarts or goes away is
connected to again when it is back, never an error.  A monitor socket says
when the connection comes and goes, for the status.

Decoding (CBOR, bslz4/lz4) is the expensive part, so the receive thread does
none of it: each message goes to the detector's small decode pool as
received (zero-copy), several decode at once, and the results are applied in
arrival order (``_Input.service`` takes only the finished decodes at the head
of the queue).  A decode that finishes writes a byte into a pipe the loop
polls with its sockets, so its result is applied at once, not at the next
poll timeout.  The queue is bounded in bytes, by the series' frame size
(``dectris/series.py``, ``DecodeBudget``: received bytes and decoded frames
together, and never fewer messages than keep every decode thread busy); when
it is full the socket is left unread, the receive high-water mark fills and
the detector's PUSH waits, which is backpressure, never a loss.  What the
queue and the receive pipe may hold comes out of the series' stream cap, so
the series' memory on the server stays within it.

Applying is the series' state machine: a start opens a store (on an open
thread; the detector's later messages wait in the queue meanwhile), images
go to it (``dectris/series.py`` maps every field), an end finalizes it on a
finalize thread.  What breaks the rules (an image before a start or after an
end, a wrong size or dtype, a duplicate image_id, an end without a start, a
message the decoder refuses ...) is rejected and counted under its reason,
per detector and in the server's totals, and logged (rate limited); the
series it was aimed at goes on.  A start while a series is open ends the
open one as incomplete (counted as ``start_while_open``); a series that
hears nothing for the detector's ``idle_timeout`` is finalized as incomplete.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import importlib
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..errors import AcqzarrError, ConfigError, ProtocolError
from ..settings.locations import is_s3
from ..stores import open_store
from .config import DetectorInput, ServeConfig
from .dectris.messages import DetectorEnd, DetectorImage, DetectorMessage, DetectorStart, WireDecoder
from .dectris.series import (
    DecodeBudget,
    DetectorSeries,
    declared_dtype,
    decode_budget,
    queue_floor,
    series_stream_settings,
    store_path,
)
from .status import Counters, Rejections

__all__ = ["DecoderFactory", "DetectorInputs", "default_decoder"]

log = logging.getLogger("acqzarr.ingest")

DecoderFactory = Callable[[str], WireDecoder]
_QUEUE_PER_THREAD = 4  # messages queued or decoding per decode thread at most (small frames: no byte bound)
_BATCH = 64  # messages taken per service before the loop's other work gets a turn
_MONITORED = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED


def default_decoder(protocol: str) -> WireDecoder:
    """The wire decoder of ``protocol`` (``acqzarr.ingest.dectris.decoder_for``); ConfigError if
    this installation has none."""
    try:
        module = importlib.import_module("acqzarr.ingest.dectris")
        factory: Callable[[str], WireDecoder] = module.decoder_for
    except (ImportError, AttributeError):
        raise ConfigError(f"no decoder for protocol {protocol!r} in this installation") from None
    return factory(protocol)


@dataclass
class _Received:
    """A message on its way: its parts as received (kept alive while they decode), their bytes,
    the decode, and the bytes it decoded to (once done and looked at)."""

    parts: list[zmq.Frame]
    wire: int
    decoding: cf.Future[DetectorMessage]
    decoded: int | None = None


def _decoded_bytes(message: DetectorMessage) -> int:
    """The pixel bytes a decoded message holds: an image's channels, a start's arrays."""
    if isinstance(message, DetectorImage):
        return sum(a.nbytes for a in message.data.values())
    if isinstance(message, DetectorStart):
        return sum(a.nbytes for a in message.arrays.values())
    return 0


@dataclass
class _Opening:
    start: DetectorStart
    future: cf.Future[DetectorSeries]
    first: DetectorImage | None  # the image that decided the dtype of a start that did not say


@dataclass
class _Finalizing:
    series: DetectorSeries
    end: str
    since: float
    future: cf.Future[dict[str, Any]]


class _Input:
    """One detector: its socket, monitor, decode queue, open series and the series finalizing."""

    def __init__(
        self,
        config: DetectorInput,
        server: ServeConfig,
        ctx: zmq.Context[Any],
        poller: zmq.Poller,
        decoder: WireDecoder,
        counters: Counters,
        rejections: Rejections,
        wake: Callable[[Any], None],
    ) -> None:
        self.config = config
        self.name = config.name
        self.wake = wake  # a done-callback for decodes, opens and finalizes: the loop looks at once
        self.server = server
        self.poller = poller
        self.decoder = decoder
        self.counters = counters
        self.rejections = rejections
        sock: zmq.Socket[bytes] = ctx.socket(zmq.PULL)
        sock.linger = 0
        sock.rcvhwm = config.rcvhwm
        sock.maxmsgsize = server.max_message_bytes
        sock.reconnect_ivl = 100  # ms: a detector back up is found at once ...
        sock.reconnect_ivl_max = 2000  # ... and one that is off costs a try every 2 s
        sock.tcp_keepalive = 1  # a detector that vanished without closing is noticed
        sock.tcp_keepalive_idle = 10
        sock.tcp_keepalive_intvl = 5
        self.monitor: zmq.Socket[bytes] = sock.get_monitor_socket(_MONITORED)
        try:
            sock.connect(config.connect)
        except zmq.ZMQError as exc:
            self.monitor.close(linger=0)
            sock.close(linger=0)
            raise ConfigError(f"detectors {config.name!r}: cannot connect {config.connect}: {exc}") from None
        self.sock = sock
        self.pool = cf.ThreadPoolExecutor(
            config.decode_threads, thread_name_prefix=f"acqzarr-decode-{self.name}"
        )
        self.opener = cf.ThreadPoolExecutor(1, thread_name_prefix=f"acqzarr-open-{self.name}")
        self.finisher = cf.ThreadPoolExecutor(1, thread_name_prefix=f"acqzarr-finalize-{self.name}")
        self.queue: deque[_Received] = deque()
        self.queue_max = _QUEUE_PER_THREAD * config.decode_threads
        self.queue_floor = queue_floor(config)  # taken whatever their size
        self.budget: DecodeBudget | None = None  # the frames of the last series started say it
        self.queue_peak = 0  # the most bytes the queue held (DecodeBudget's reckoning)
        self.reading = True
        poller.register(sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        self.connected = False
        self.connections = 0
        self.series: DetectorSeries | None = None
        self.opening: _Opening | None = None
        self.deferred: DetectorStart | None = None  # a start without a dtype, waiting for its first image
        self.last_ended: tuple[int | None, str | None] | None = None  # ids of the last series ended
        self.refused: tuple[int | None, str | None] | None = None  # ids of a start that was refused
        self.finalizing: list[_Finalizing] = []
        self.messages = 0
        self.images_received = 0
        self.images_written = 0
        self.images_rejected = 0
        self.rejected: Counter[str] = Counter()
        self.series_started = 0
        self.series_finished = 0
        self.rate = 0.0
        self._last = (time.monotonic(), 0)

    # -- receiving ----------------------------------------------------------------
    def service(self, events: dict[Any, int]) -> None:
        """Note connection changes, take what the socket has (while the queue has room), and
        apply the decoded messages at the head of the queue."""
        if self.monitor in events:
            self._monitor()
        if self.reading and self.sock in events:
            self._receive()
        self.apply()

    def _monitor(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_CONNECTED:
                self.connected = True
                self.connections += 1
                log.info("detector %s: connected to %s", self.name, self.config.connect)
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self.connected = False
                log.warning("detector %s: disconnected from %s; reconnecting", self.name, self.config.connect)

    def queued_bytes(self) -> int:
        """What the decode queue holds: each message's received bytes and its decoded pixels (a
        frame of the series, reserved, while it still decodes)."""
        reserve = 0 if self.budget is None else self.budget.frame_bytes
        total = 0
        for r in self.queue:
            if r.decoded is None and r.decoding.done():
                error = r.decoding.exception()
                r.decoded = 0 if error is not None else _decoded_bytes(r.decoding.result())
            total += r.wire + (reserve if r.decoded is None else r.decoded)
        return total

    def _room(self) -> bool:
        """Whether the queue takes another message: always below ``queue_floor`` (the decode
        threads stay busy), else while one more (``DecodeBudget.message_bytes``) still fits the
        series' budget (none known yet: only the floor)."""
        n = len(self.queue)
        if n < self.queue_floor:
            return True
        budget = self.budget
        if n >= self.queue_max or budget is None:
            return False
        return self.queued_bytes() + budget.message_bytes <= budget.queue_bytes

    def _receive(self) -> None:
        for _ in range(_BATCH):
            if not self._room():
                self._read(False)
                return
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.messages += 1
            buffers = [p.buffer for p in parts]
            decoding = self.pool.submit(self.decoder.decode, buffers)
            decoding.add_done_callback(self.wake)
            self.queue.append(_Received(parts, sum(b.nbytes for b in buffers), decoding))
            self._note_peak()

    def _note_peak(self) -> None:
        self.queue_peak = max(self.queue_peak, self.queued_bytes())

    def _expect(self, start: DetectorStart) -> None:
        """A series starts: its frames size the decode queue (the receive high-water mark stays
        as the socket was made: libzmq 4.3 stalls a connected pipe whose mark is changed, the
        detector's PUSH never hearing that the messages it counts were read)."""
        self.budget = decode_budget(self.config, start)

    def _read(self, reading: bool) -> None:
        if reading != self.reading:
            self.reading = reading
            if reading:
                self.poller.register(self.sock, zmq.POLLIN)
            else:
                self.poller.unregister(self.sock)

    def apply(self) -> None:
        """Apply the decoded messages at the head of the queue, in arrival order; none while a
        series' store is opening (its messages wait in the queue)."""
        while True:
            if self.opening is not None:
                if not self.opening.future.done():
                    return
                self._opened(self.opening)
            if not self.queue or not self.queue[0].decoding.done():
                break
            self._note_peak()  # decoded: a start's arrays are known now
            received = self.queue.popleft()
            self._handle(received.decoding)
        if not self.reading and self._room():
            self._read(True)

    def drain(self, deadline: float) -> None:
        """Shutting down: take what is queued on the socket and apply every decode (up to
        ``deadline``, time.monotonic())."""
        self._receive()
        while (self.queue or self.opening is not None) and time.monotonic() < deadline:
            if self.opening is not None:
                cf.wait([self.opening.future], max(0.0, deadline - time.monotonic()))
            elif self.queue:
                cf.wait([self.queue[0].decoding], max(0.0, deadline - time.monotonic()))
            self.apply()
            self._receive()
        for _ in self.queue:  # past the deadline: counted, never silently gone
            self._reject("shutdown", "received but not applied before the server stopped")
        self.queue.clear()

    # -- the series' state machine -------------------------------------------------
    def _handle(self, decoding: cf.Future[DetectorMessage]) -> None:
        self._guarded(lambda: self._apply(decoding.result()))

    def _apply(self, message: DetectorMessage) -> None:
        if isinstance(message, DetectorImage):
            self.images_received += 1
            self._image(message)
        elif isinstance(message, DetectorStart):
            self._start(message)
        elif isinstance(message, DetectorEnd):
            self._end(message)
        else:
            raise ProtocolError("unknown_type", f"the decoder gave {type(message).__name__}")

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run ``action``; what it raises is rejected and counted, never out of the loop."""
        try:
            action()
        except ProtocolError as exc:  # DetectorMessageError included
            self._reject(exc.reason, str(exc))
        except Exception as exc:  # a bug must not take the server down; it is counted and shown
            log.exception("detector %s: unexpected error handling a message", self.name)
            self._reject("internal", repr(exc))

    def _reject(self, reason: str, message: str, image: bool = False) -> None:
        self.rejected[reason] += 1
        if image:
            self.images_rejected += 1
        self.rejections.reject(
            reason, f"{reason}: detector {self.name}: {message.removeprefix(reason + ': ')}", None
        )

    def _start(self, start: DetectorStart) -> None:
        self.refused = None
        self.deferred = None
        if self.series is not None:
            self._reject(
                "start_while_open",
                f"a new series started while {self.series.id!r} was open; that one ends incomplete",
            )
            self._finish(self.series, "new_series", None)
        self._expect(start)
        if declared_dtype(start) is None:  # the start does not say: the first image will
            self.deferred = start
            return
        self._open(start, None)

    def _open(self, start: DetectorStart, first: DetectorImage | None) -> None:
        """Open the series' store on the open thread; ``first``, an image that decided its dtype,
        is taken once it is open."""
        try:
            path = store_path(self.config, self.server.root, start)
            settings = series_stream_settings(self.config, start, path, self.server.s3)
        except ProtocolError:
            self.refused = (start.series_id, start.series_unique_id)
            raise
        exists = _exists_check(self.server)
        memory = self.server.max_series_memory
        future = self.opener.submit(_open_series, self.config, start, settings, memory, exists)
        future.add_done_callback(self.wake)
        self.opening = _Opening(start, future, first)

    def _opened(self, opening: _Opening) -> None:
        self.opening = None
        start = opening.start
        try:
            series = opening.future.result()
        except ProtocolError as exc:
            self.refused = (start.series_id, start.series_unique_id)
            self._reject(exc.reason, f"series {_ids(start)} refused: {exc}")
            return
        except Exception as exc:  # a bug: the series cannot start, the server goes on
            log.error("detector %s: opening series %s failed", self.name, _ids(start), exc_info=exc)
            self.refused = (start.series_id, start.series_unique_id)
            self._reject("internal", repr(exc))
            return
        self.series = series
        self.series_started += 1
        self.counters.series_started += 1
        log.info("detector %s: series %r started into %s", self.name, series.id, series.store)
        expect = getattr(self.decoder, "expect", None)
        if expect is not None:  # the decoder narrows its size caps to this series' frame
            expect(start)
        first = opening.first
        if first is not None:
            self._guarded(lambda: self._image(first))

    def _image(self, image: DetectorImage) -> None:
        series = self.series
        ids = (image.series_id, image.series_unique_id)
        deferred = self.deferred
        if series is None and deferred is not None and _same(ids, _ids_of(deferred)) and image.data:
            self.deferred = None  # its first image says the dtype: open it now, take the image then
            decided = dataclasses.replace(deferred, dtype=next(iter(image.data.values())).dtype)
            self._expect(decided)
            self._open(decided, image)
            return
        if series is None:
            if self.refused is not None and _same(ids, self.refused):
                raise_ = ProtocolError("series_refused", f"image {image.image_id} of a refused series")
            elif self.last_ended is not None and _same(ids, self.last_ended):
                raise_ = ProtocolError("image_after_end", f"image {image.image_id} after its series ended")
            else:
                raise_ = ProtocolError("image_without_start", f"image {image.image_id} of no open series")
            self._reject(raise_.reason, str(raise_), image=True)
            return
        if not series.matches(*ids):
            self._reject(
                "wrong_series", f"image {image.image_id} of series {ids}, {series.id!r} is open", image=True
            )
            series.rejected["wrong_series"] += 1
            return
        series.touch()
        try:
            series.image(image)
        except ProtocolError as exc:
            series.rejected[exc.reason] += 1
            self._reject(exc.reason, f"series {series.id!r}: {exc}", image=True)
            return
        except AcqzarrError as exc:  # the writer failed: the series cannot go on
            log.error("detector %s: series %r: %s; finalizing with what is stored", self.name, series.id, exc)
            self._reject("write_error", f"series {series.id!r} failed: {exc}", image=True)
            self._finish(series, "write_error", None)
            return
        self.images_written += 1
        self.counters.frames += len(image.data)
        self.counters.bytes_raw += sum(a.nbytes for a in image.data.values())

    def _end(self, end: DetectorEnd) -> None:
        series = self.series
        deferred = self.deferred
        if (
            series is None
            and deferred is not None
            and _same((end.series_id, end.series_unique_id), _ids_of(deferred))
        ):
            self.deferred = None
            self.last_ended = _ids_of(deferred)
            self._reject("empty_series", f"series {_ids(deferred)} ended without an image: no store written")
            return
        if series is None:
            self._reject(
                "end_without_start", f"an end of series {(end.series_id, end.series_unique_id)}, none open"
            )
            return
        if not series.matches(end.series_id, end.series_unique_id):
            self._reject(
                "wrong_series",
                f"an end of series {(end.series_id, end.series_unique_id)}, {series.id!r} is open",
            )
            return
        self._finish(series, "series_end", end)

    def _finish(self, series: DetectorSeries, end: str, message: DetectorEnd | None) -> None:
        """The series takes no more images; it is finalized on a finalize thread."""
        self.series = None
        expect = getattr(self.decoder, "expect", None)
        if expect is not None:
            expect(None)
        self.last_ended = (series.start.series_id, series.start.series_unique_id)
        future = self.finisher.submit(series.finalize, end, message)
        future.add_done_callback(self.wake)
        self.finalizing.append(_Finalizing(series, end, time.monotonic(), future))

    def expire_idle(self) -> None:
        series = self.series
        if series is not None and time.monotonic() - series.last_activity > self.config.idle_timeout:
            log.warning(
                "detector %s: series %r heard nothing for %.1f s; finalizing as incomplete",
                self.name,
                series.id,
                time.monotonic() - series.last_activity,
            )
            self._finish(series, "idle_timeout", None)

    def end_all(self, end: str) -> None:
        """End the open series (``end`` says why); an open still running is waited for first (a
        store half created is never left behind) and its series ended too."""
        if self.opening is not None:
            cf.wait([self.opening.future])
            self._opened(self.opening)
        if self.series is not None:
            self._finish(self.series, end, None)

    def reap(self) -> None:
        """Count and log the series whose finalize is done."""
        for f in [f for f in self.finalizing if f.future.done()]:
            self.finalizing.remove(f)
            error = f.future.exception()
            summary: dict[str, Any] = (
                f.future.result()
                if error is None
                else {**f.series.summary(f.end), "completed": False, "error": repr(error)}
            )
            self.series_finished += 1
            c = self.counters
            c.series_finished += 1
            c.bytes_written_finished += summary.get("bytes_written", 0)
            c.recent.append(summary)
            level = logging.INFO if summary["completed"] else logging.WARNING
            log.log(
                level,
                "detector %s: series %r finalized (%s): %s of %s images, rejected %s, %s%s",
                self.name,
                f.series.id,
                f.end,
                summary.get("frames_total"),
                summary.get("images_expected") or "?",
                summary.get("rejected") or "none",
                "complete" if summary["completed"] else "INCOMPLETE",
                f"; {summary['error']}" if "error" in summary else "",
            )

    def wait_finalized(self) -> None:
        cf.wait([f.future for f in self.finalizing])
        self.reap()

    # -- status ---------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        t, written = self._last
        self.rate = (self.images_written - written) / max(now - t, 1e-9)
        self._last = (now, self.images_written)

    def snapshot(self) -> dict[str, Any]:
        series = self.series
        return {
            "protocol": self.config.protocol,
            "connect": self.config.connect,
            "connected": self.connected,
            "connections": self.connections,
            "series": None if series is None else series.id,
            "store": None if series is None else series.store,
            "series_images": None if series is None else series.written,
            "series_flushed": None if series is None else series.flushed(),
            "series_expected": None if series is None else series.start.number_of_images,
            "opening": self.opening is not None,
            "messages_received": self.messages,
            "images_received": self.images_received,
            "images_written": self.images_written,
            "images_rejected": self.images_rejected,
            "images_per_s": round(self.rate, 2),
            "rejected": dict(sorted(self.rejected.items())),
            "decoding": len(self.queue),
            "decode_queue_bytes": self.queued_bytes(),
            "decode_queue_peak_bytes": self.queue_peak,
            "decode_queue_max_bytes": None if self.budget is None else self.budget.queue_max_bytes,
            "series_started": self.series_started,
            "series_finished": self.series_finished,
            "finalizing": [f.series.id for f in self.finalizing],
        }

    def bytes_written_open(self) -> int:
        series = [f.series for f in self.finalizing] + ([self.series] if self.series is not None else [])
        total = 0
        for s in series:
            with contextlib.suppress(Exception):  # closed under us: counted once finalized
                total += s.bytes_written()
        return total

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.opener.shutdown(wait=True)
        self.finisher.shutdown(wait=True)
        for sock in (self.sock, self.monitor):
            if sock in dict(self.poller.sockets):
                self.poller.unregister(sock)
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)


class DetectorInputs:
    """Every detector input of ``config``, connected on ``ctx`` and polled with ``poller`` (the
    server's); the loop calls ``service`` with each poll's events."""

    def __init__(
        self,
        config: ServeConfig,
        ctx: zmq.Context[Any],
        poller: zmq.Poller,
        counters: Counters,
        rejections: Rejections,
        decoders: DecoderFactory | None = None,
    ) -> None:
        factory = decoders or default_decoder
        self.inputs: list[_Input] = []
        self._poller = poller
        # Decodes finish on other threads: each pokes this pipe, which the loop polls with its sockets,
        # so a result is applied as soon as it is there (no polling interval in between).
        self._wake_r, self._wake_w = os.pipe() if config.detectors else (-1, -1)
        try:
            if config.detectors:
                for fd in (self._wake_r, self._wake_w):
                    os.set_blocking(fd, False)
                poller.register(self._wake_r, zmq.POLLIN)
            for d in config.detectors:
                decoder = factory(d.protocol)
                self.inputs.append(_Input(d, config, ctx, poller, decoder, counters, rejections, self._wake))
        except BaseException:
            self.close()
            raise

    def _wake(self, _: Any) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: a wake-up is pending already
            os.write(self._wake_w, b"\0")

    def __bool__(self) -> bool:
        return bool(self.inputs)

    def service(self, events: dict[Any, int]) -> None:
        if self._wake_r in events:
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(self._wake_r, 4096):
                    pass
        for i in self.inputs:
            i.service(events)

    def reap(self) -> None:
        for i in self.inputs:
            i.reap()

    def expire_idle(self) -> None:
        for i in self.inputs:
            i.expire_idle()

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for i in self.inputs:
            i.drain(deadline)

    def end_all(self, end: str) -> None:
        for i in self.inputs:
            i.end_all(end)

    def wait_finalized(self) -> None:
        for i in self.inputs:
            i.wait_finalized()

    def tick(self) -> None:
        for i in self.inputs:
            i.tick()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {i.name: i.snapshot() for i in self.inputs}

    def bytes_written_open(self) -> int:
        return sum(i.bytes_written_open() for i in self.inputs)

    def close(self) -> None:
        for i in self.inputs:
            i.close()  # its threads stopped: nothing pokes the pipe any more
        if self._wake_r >= 0:
            with contextlib.suppress(KeyError):
                self._poller.unregister(self._wake_r)
            fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
            for fd in fds:
                os.close(fd)


def _ids(start: DetectorStart) -> str:
    return repr(start.series_unique_id if start.series_unique_id is not None else start.series_id)


def _ids_of(start: DetectorStart) -> tuple[int | None, str | None]:
    return (start.series_id, start.series_unique_id)


def _same(ids: tuple[int | None, str | None], other: tuple[int | None, str | None]) -> bool:
    """Whether two (series_id, series_unique_id) pairs name one series (an id left out matches)."""
    return all(a is None or b is None or a == b for a, b in zip(ids, other, strict=True))


def _exists_check(server: ServeConfig) -> Callable[[str], bool]:
    if not is_s3(server.root):
        return lambda path: Path(path).exists()

    def exists(path: str) -> bool:
        try:
            return not open_store(path, s3=server.s3).is_empty()
        except AcqzarrError as exc:
            raise ProtocolError("store", f"cannot check {path}: {exc}") from None

    return exists


def _open_series(
    detector: DetectorInput,
    start: DetectorStart,
    settings: Any,
    max_series_memory: int,
    exists: Callable[[str], bool],
) -> DetectorSeries:
    """An open thread: refuse an existing store, else create it and open the series' stream."""
    if exists(settings.store):
        raise ProtocolError("series_exists", f"{settings.store} already exists (never overwritten)")
    try:
        return DetectorSeries(detector, start, settings, max_series_memory)
    except ProtocolError:
        raise
    except (AcqzarrError, OSError, MemoryError) as exc:
        raise ProtocolError("store", f"cannot create {settings.store}: {exc}") from None
