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
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ..errors import AcqzarrError, ConfigError, FrameError, ProtocolError
from ..locations import is_s3
from ..settings import StreamSettings
from ..stop import StopSignal
from ..stores import open_store
from .config import ServeConfig, series_memory, series_settings
from .finalizer import Finalizer
from .opener import Held, Opener, Waiting
from .protocol import Frame, SeriesEnd, SeriesStart, decode_payload, parse_header
from .series import Series
from .status import Counters, format_line

__all__ = ["IngestServer", "serve"]

log = logging.getLogger("acqzarr.ingest")

_OPEN_POLL = 0.005  # seconds between looks at a running open (a store opens in 0.01-1 s)
_BATCH = 64  # messages handled per poll before timers and the status socket get a turn
_LOGGED_PER_REASON = 5  # rejection log lines per reason per status interval; the rest are summarised
_REMEMBER_ENDED = 4096  # finalized series ids kept, so late frames are "series_ended", not "unknown"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


class IngestServer:
    """Bind the sockets of ``config``; ``run(stop)`` serves until ``stop`` is set, then finalizes."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.remote_root = is_s3(config.root)
        self.root = Path(config.root)
        if not self.remote_root:
            self.root.mkdir(parents=True, exist_ok=True)
        self.counters = Counters()
        self.series: dict[str, Series] = {}  # open: taking frames
        self.finalizer = Finalizer(config.max_open_series)  # ended: being finalized
        self.opener = Opener(config.max_open_series, config.max_waiting_bytes)  # not open yet
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._logged: Counter[str] = Counter()
        self._last_line: tuple[int, int, int, int] | None = None
        self._ctx = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._status: zmq.Socket[bytes] | None = None
        try:
            self._data = self._bind_data()
            if config.status_endpoint is not None:
                self._status = self._ctx.socket(zmq.REP)
                self._status.linger = 0
                self._bind(self._status, config.status_endpoint, "status_endpoint")
        except BaseException:
            self.close()
            raise

    # -- sockets ----------------------------------------------------------------
    def _bind_data(self) -> zmq.Socket[bytes]:
        cfg = self.config
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.PULL if cfg.socket == "pull" else zmq.SUB)
        self._data = sock
        sock.linger = 0
        sock.rcvhwm = cfg.rcvhwm
        sock.maxmsgsize = cfg.max_message_bytes
        if cfg.socket == "sub":
            sock.subscribe(b"")
        if cfg.curve is not None:
            self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("acqzarr.ingest.auth"))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=cfg.curve.authorized_keys_dir)
            public, secret = zmq.auth.load_certificate(cfg.curve.secret_key_file)
            if secret is None:
                raise ConfigError(f"curve.secret_key_file {cfg.curve.secret_key_file!r} holds no secret key")
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
        for i, endpoint in enumerate(cfg.endpoints):
            self._bind(sock, endpoint, f"endpoints.{i}")
        return sock

    @staticmethod
    def _bind(sock: zmq.Socket[bytes], endpoint: str, where: str) -> None:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(f"{where}: cannot bind {endpoint}: {exc}") from None

    def close(self) -> None:
        """Close the sockets, after waiting for every pending open and finalize (nothing is cut
        short)."""
        self.opener.close()
        self.finalizer.close()
        for sock in (getattr(self, "_data", None), self._status):
            if sock is not None:
                sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.term()

    # -- the loop ---------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; then take what is already queued (up to drain_timeout) and
        finalize every open series as incomplete ('shutdown')."""
        poller = zmq.Poller()
        poller.register(self._data, zmq.POLLIN)
        if self._status is not None:
            poller.register(self._status, zmq.POLLIN)
        interval = self.config.status_interval
        next_tick = time.monotonic() + interval
        log.info(
            "serving %s on %s, writing under %s", self.config.socket, self.config.endpoints, self.config.root
        )
        reading = True
        while not stop.is_set():
            self._reap()
            self._advance()
            if reading == self.opener.full:  # too much held for waiting series: leave the socket unread
                reading = not self.opener.full
                if reading:  # the senders of open series were not idle, the server was not reading
                    poller.register(self._data, zmq.POLLIN)
                    for series in self.series.values():
                        series.touch()
                else:
                    poller.unregister(self._data)
            # An open running: look for its end often (it is polled, like finalizes).
            soon = _OPEN_POLL if self.opener.opening else 0.1
            timeout = max(0.0, min(soon, next_tick - time.monotonic()))
            events = dict(poller.poll(int(timeout * 1000)))
            if self._data in events:
                self._receive(_BATCH)
            if self._status is not None and self._status in events:
                self._answer_status()
            if reading:
                self._expire_idle()
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick = time.monotonic() + interval
        if not reading:
            poller.register(self._data, zmq.POLLIN)
        self._drain(poller)
        for series in list(self.series.values()):
            self._end(series, "shutdown", None)
        self.wait_finalized()
        self._tick(force=True)

    def _drain(self, poller: zmq.Poller) -> None:
        """Take what is queued (up to drain_timeout) and let waiting series open meanwhile; then
        wait for the opens already running (a store half created is never left behind) and give
        up the series still waiting for a slot, their messages rejected as 'shutdown'."""
        deadline = time.monotonic() + self.config.drain_timeout
        while time.monotonic() < deadline:
            self._reap()
            self._advance()
            if not self.opener.full:
                events = dict(poller.poll(50))
                if self._data in events:
                    self._receive(_BATCH)
                    continue
            if not self.opener.waiting:
                break
            # Shutting down: waiting here stalls nothing that matters.
            left = max(0.0, min(0.05, deadline - time.monotonic()))
            self.opener.wait(left)
            self.finalizer.wait(left)
        self.wait_opened()
        for waiting in list(self.opener.waiting.values()):
            if waiting.opening is None:
                log.warning(
                    "series_start of %r not taken: shut down while it waited for a slot", waiting.series_id
                )
                self.opener.release(waiting)
                never = f"series {waiting.series_id!r} never started (the server shut down)"
                self._refuse(waiting.header, ProtocolError("shutdown", never))
                for _ in waiting.messages:
                    self._reject("shutdown", never, None)

    def wait_finalized(self) -> None:
        """Wait for every pending finalize and count its outcome (shutdown; tests)."""
        self.finalizer.wait(every=True)
        self._reap()

    def wait_opened(self) -> None:
        """Wait for every running open and take the series (tests that call ``handle`` directly,
        with no loop to do it)."""
        self._advance()
        for waiting in list(self.opener.waiting.values()):
            if waiting.opening is not None:
                cf.wait([waiting.opening])
                self._opened(waiting)

    def _receive(self, limit: int) -> None:
        for _ in range(limit):
            if self.opener.full:
                return
            try:
                parts = self._data.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.handle(parts)

    def _answer_status(self) -> None:
        assert self._status is not None
        self._status.recv_multipart()
        self._status.send(json.dumps(self.snapshot()).encode())

    def snapshot(self) -> dict[str, Any]:
        self._reap()
        c = self.counters
        now = time.monotonic()
        finalizing = self.finalizer.pending
        c.bytes_written_open = sum(s.bytes_written() for s in self.series.values()) + sum(
            f.series.bytes_written() for f in finalizing.values()
        )
        c.open_series = {
            sid: {
                "frames": s.frames,
                "gaps": s.gaps,
                "rejected": sum(s.rejected.values()),
                "idle_s": round(now - s.last_activity, 3),
            }
            for sid, s in self.series.items()
        }
        c.finalizing_series = {
            sid: {"end": f.end, "frames": f.series.frames, "finalizing_s": round(now - f.since, 3)}
            for sid, f in finalizing.items()
        }
        c.waiting_series = list(self.opener.waiting)
        c.held_bytes = self.opener.nbytes
        return c.snapshot()

    def _tick(self, force: bool = False) -> None:
        c = self.counters
        c.tick()
        suppressed = {r: n - _LOGGED_PER_REASON for r, n in self._logged.items() if n > _LOGGED_PER_REASON}
        if suppressed:
            log.warning("rejections not logged individually in the last interval: %s", suppressed)
        self._logged.clear()
        state = (c.frames, sum(c.rejected.values()), c.gaps, c.series_finished)
        if force or self.series or self.finalizer.pending or state != self._last_line:
            log.info("%s", format_line(self.snapshot()))
            self._last_line = state

    def _expire_idle(self) -> None:
        now = time.monotonic()
        for series in list(self.series.values()):
            if now - series.last_activity > self.config.idle_timeout:
                log.warning(
                    "series %r: no message for %.1f s; finalizing as incomplete",
                    series.id,
                    now - series.last_activity,
                )
                self._end(series, "idle_timeout", None)

    # -- messages ---------------------------------------------------------------
    def handle(self, parts: list[zmq.Frame], receive_ns: int | None = None) -> None:
        """Validate and act on one multipart message (received at ``receive_ns``, default now);
        never raises."""
        receive_ns = time.monotonic_ns() if receive_ns is None else receive_ns
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
                self._start_or_refuse(header, payload, Held(parts, receive_ns))
                return
            series = self._open(header.series_id)
            before = series.gaps
            series.sequence(header.msg_number)
            self.counters.gaps += series.gaps - before
            series.touch()
            if isinstance(header, Frame):
                self._frame(series, header, payload, receive_ns)
            else:
                if payload.nbytes:
                    raise ProtocolError("payload_size", f"series_end carries {payload.nbytes} payload bytes")
                self._end(series, "series_end", header)
        except ProtocolError as exc:
            self._reject(exc.reason, str(exc), series)
        except Exception as exc:  # a bug must not take the server down; it is counted and shown
            log.exception("unexpected error handling a message")
            self._reject("internal", repr(exc), series)

    def _reject(self, reason: str, message: str, series: Series | None) -> None:
        self.counters.rejected[reason] += 1
        if series is not None:
            series.rejected[reason] += 1
        self._logged[reason] += 1
        if self._logged[reason] <= _LOGGED_PER_REASON:
            log.warning("rejected (%s)", message if message.startswith(reason) else f"{reason}: {message}")

    def _open(self, series_id: str) -> Series:
        series = self.series.get(series_id)
        if series is not None:
            return series
        if series_id in self._ended:
            raise ProtocolError("series_ended", f"series {series_id!r} is already finalized")
        raise ProtocolError("unknown_series", f"series {series_id!r} was never started")

    # -- starting a series --------------------------------------------------------
    def _start_or_refuse(self, header: SeriesStart, payload: memoryview, message: Held) -> None:
        try:
            self._start(header, payload, message)
        except ProtocolError as exc:
            self._refuse(header, exc)
        except Exception as exc:  # a bug: the series cannot start, its sender still hears why
            log.exception("unexpected error handling a series_start")
            self._refuse(header, ProtocolError("internal", repr(exc)))

    def _refuse(self, header: SeriesStart, error: ProtocolError) -> None:
        """A series_start that does not start its series: rejected, and listed in the status
        (``rejected_series``), where its sender looks for it."""
        self.counters.refused(header, error)
        self._reject(error.reason, str(error), None)

    def _start(self, header: SeriesStart, payload: memoryview, message: Held) -> None:
        """Check a series_start against the server's state; the series then waits (``opener.py``)
        for its slot, if a finalizing series holds it, and for its store to open."""
        sid = header.series_id
        if payload.nbytes:
            raise ProtocolError("payload_size", f"series_start carries {payload.nbytes} payload bytes")
        if sid in self.series:
            raise ProtocolError("series_open", f"series {sid!r} is already open")
        taken = len(self.series) + len(self.opener.waiting)
        if taken >= self.config.max_open_series:
            names = sorted([*self.series, *self.opener.waiting])
            raise ProtocolError("busy", f"{taken} series open or starting ({names}), the limit")
        self._reap()
        waiting = self.opener.wait_for(header, message)
        if self._must_wait(sid):
            log.info("series_start of %r waits for a finalizing series", sid)
        else:
            self._begin(waiting)

    def _must_wait(self, sid: str) -> bool:
        """A series waits while finalizing series hold the slots it needs (their streams' memory is
        not freed yet), or while its own store is still being finalized."""
        finalizing = self.finalizer.pending
        held = len(self.series) + self.opener.opening + len(finalizing)
        return sid in finalizing or held >= self.config.max_open_series

    def _begin(self, waiting: Waiting) -> None:
        """Check the series' settings here and open its store on an open thread; a series that
        cannot start is given up, its messages rejected."""
        header = waiting.header
        try:
            settings, path = self._series_settings(header)
        except ProtocolError as exc:
            self._give_up(waiting, exc)
            return
        exists = None if self.config.overwrite else self._exists
        cap = self.config.max_user_data_bytes
        self.opener.open(waiting, lambda: _open_series(header, settings, path, exists, cap))

    def _series_settings(self, header: SeriesStart) -> tuple[StreamSettings, str]:
        """The stream settings a series_start asks for, and its store's path, as the server
        allows them."""
        sid = header.series_id
        cfg = self.config
        path = f"{cfg.root}/{sid}" if self.remote_root else str(self.root / sid)
        # valid_series_id already ensures it (a plain name); belt and braces for directories:
        if not self.remote_root and Path(path).resolve().parent != self.root.resolve():
            raise ProtocolError("bad_path", f"series {sid!r} resolves outside the root")
        if header.preset is not None:
            if header.preset not in cfg.presets:
                raise ProtocolError(
                    "settings", f"unknown preset {header.preset!r}; known: {sorted(cfg.presets)}"
                )
            data = cfg.presets[header.preset]
        else:
            if not cfg.allow_sender_settings:
                raise ProtocolError(
                    "settings", "this server accepts presets only (allow_sender_settings: false)"
                )
            assert header.settings is not None
            data = header.settings
        try:
            settings = series_settings(data, path, cfg.overwrite, f"series {sid!r}", cfg.s3)
        except ConfigError as exc:
            raise ProtocolError("settings", str(exc).replace("\n ", "")) from None
        need = series_memory(settings)
        if need > cfg.max_series_memory:
            raise ProtocolError(
                "settings",
                f"series {sid!r} would reserve {need} bytes; max_series_memory is {cfg.max_series_memory}",
            )
        return settings, path

    def _advance(self) -> None:
        """Move the waiting series on: open those whose slot is free, take those now open."""
        for waiting in list(self.opener.waiting.values()):
            if waiting.opening is None and not self._must_wait(waiting.series_id):
                self._begin(waiting)
            if waiting.opening is not None and waiting.opening.done():
                self._opened(waiting)

    def _opened(self, waiting: Waiting) -> None:
        """Take a series whose open is done, then handle its held messages in order."""
        assert waiting.opening is not None
        sid = waiting.series_id
        try:
            series = waiting.opening.result()
        except ProtocolError as exc:
            self._give_up(waiting, exc)
            return
        except Exception as exc:  # a bug: the series cannot start, the server goes on
            log.error("series %r: opening failed", sid, exc_info=exc)
            self._give_up(waiting, ProtocolError("internal", repr(exc)))
            return
        self.opener.release(waiting)
        self.series[sid] = series
        self._ended.pop(sid, None)
        self.counters.series_started += 1
        log.info(
            "series %r started: %s into %s",
            sid,
            ", ".join(f"{a.key or '(root)'} {a.dtype}" for a in series.settings.arrays),
            series.settings.store,
        )
        for held in waiting.messages:
            self.handle(held.parts, held.receive_ns)

    def _give_up(self, waiting: Waiting, error: ProtocolError) -> None:
        """A series that cannot start: its series_start is rejected for ``error``, and its held
        messages as the messages of a series that never started."""
        self.opener.release(waiting)
        self._refuse(waiting.header, error)
        for held in waiting.messages:
            self.handle(held.parts, held.receive_ns)

    def _exists(self, path: str) -> bool:
        if not self.remote_root:
            return Path(path).exists()
        try:
            return not open_store(path, s3=self.config.s3).is_empty()
        except AcqzarrError as exc:  # the object store cannot be reached: the series cannot start
            raise ProtocolError("store", f"cannot check {path}: {exc}") from None

    # -- messages of open series --------------------------------------------------
    def _frame(self, series: Series, header: Frame, payload: memoryview, receive_ns: int) -> None:
        state = series.key(header)
        frame = decode_payload(header, payload, state.decode_buffer)
        if header.encoding == "blosc2":
            state.decode_buffer = frame  # reused: the stream copies every frame it accepts
        try:
            series.append(header, frame, receive_ns)
        except FrameError as exc:
            raise ProtocolError("append", str(exc)) from None
        except AcqzarrError as exc:  # the writer failed: the series cannot go on
            log.error("series %r: %s; finalizing with what is stored", series.id, exc)
            self._end(series, "write_error", None)
            raise ProtocolError("append", f"series {series.id!r} failed: {exc}") from None
        c = self.counters
        c.frames += 1
        c.bytes_received += payload.nbytes
        c.bytes_raw += frame.nbytes
        c.camera_dropped += header.dropped_before

    def _end(self, series: Series, end: str, header: SeriesEnd | None) -> None:
        """The series takes no more messages; it is finalized on a finalize thread."""
        del self.series[series.id]
        self._ended[series.id] = None
        while len(self._ended) > _REMEMBER_ENDED:
            self._ended.popitem(last=False)
        self.finalizer.submit(series, end, header)

    def _reap(self) -> None:
        """Count and log the series whose finalize is done."""
        for series, summary in self.finalizer.finished():
            self._finalized(series, summary)

    def _finalized(self, series: Series, summary: dict[str, Any]) -> None:
        end = summary["end"]
        c = self.counters
        c.series_finished += 1
        c.bytes_written_finished += summary["bytes_written"]
        c.recent.append(
            {
                k: summary[k]
                for k in (
                    "series_id",
                    "store",
                    "end",
                    "completed",
                    "frames_total",
                    "gaps",
                    "rejected",
                    "bytes_written",
                    "start",
                    "stop",
                    "sender_start_ns",
                )
            }
            | ({"error": summary["error"]} if "error" in summary else {})
        )
        error = summary.get("error")
        level = logging.INFO if summary["completed"] else logging.ERROR if error else logging.WARNING
        log.log(
            level,
            "series %r finalized (%s): %s frames, %d gaps, rejected %s, %s%s",
            series.id,
            end,
            summary["frames_total"],
            summary["gaps"],
            summary["rejected"] or "none",
            "complete" if summary["completed"] else "INCOMPLETE",
            "" if error is None else f"; finalizing failed: {error}",
        )


def _open_series(
    header: SeriesStart,
    settings: StreamSettings,
    path: str,
    exists: Callable[[str], bool] | None,
    user_data_cap: int,
) -> Series:
    """An open thread: create the series' store and open its stream."""
    if exists is not None and exists(path):
        raise ProtocolError("series_exists", f"{path} already exists (the server does not overwrite)")
    try:
        return Series(header, settings, user_data_cap)
    except (AcqzarrError, OSError, MemoryError) as exc:
        raise ProtocolError("store", f"series {header.series_id!r}: cannot create {path}: {exc}") from None


def _keep_freed_frames_warm() -> None:
    """Make glibc reuse freed message buffers instead of returning them to the kernel.

    libzmq allocates every received message; by default glibc maps large
    blocks fresh and trims freed ones, so each 8 MiB frame is faulted in
    again, which is slow on cloud VMs (~0.4 GB/s).  Serving 256 frames of
    2048x2048 uint16 this cut the server's system time by ~40% (0.55 s) and
    its page faults by ~60k.  Messages up to 32 MiB (glibc's ceiling for
    this threshold) then come from the heap; up to 256 MiB of freed memory
    is kept for reuse.  Process-wide, so only the ``acqzarr serve`` process
    does it, never a library user's.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def serve(config: ServeConfig) -> str | None:
    """Run a server in this (main) thread until SIGINT/SIGTERM; returns the signal's name."""
    _keep_freed_frames_warm()
    with StopSignal() as stop:
        server = IngestServer(config)
        try:
            server.run(stop.event)
        finally:
            server.close()
    if stop.signal:
        log.info("stopped by %s; every open series was finalized", stop.signal)
    return stop.signal
