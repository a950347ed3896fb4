"""``Sender``: the Python side of the wire protocol, for any acquisition loop or driver.

    with Sender("tcp://127.0.0.1:5555") as sender:
        with sender.series("run-001", settings):
            for i in range(n):
                buf = sender.acquire((2048, 2048), "uint16")   # a buffer zmq is done with
                camera.read_into(buf)
                sender.send(buf, key="cam0")                   # sent without a copy

Raw frames go out zero-copy: ``send`` hands ZeroMQ a buffer from a small
pool, and ``acquire`` returns a pool buffer only once its MessageTracker
says ZeroMQ has released it.  An array that is not a pool buffer is copied
into one first (one memcpy), so the caller may reuse it as soon as ``send``
returns.  PUSH (the default) blocks when the server is behind; PUB drops
the frame instead (``send`` returns False, ``dropped`` counts it) and the
server sees the hole in ``msg_number``.

With the server's ``status_endpoint`` the sender hears back: a series the
server refuses (its store exists, the server is busy, its settings are
invalid, ...) raises ``SeriesRejected`` with the server's reason from the
next ``send`` or ``end_series`` (``watch.py`` listens for it on a thread),
and ``end_series`` waits for the server's summary of the series.

``start_series(..., resume=True)`` (protocol 1.1) asks the server to
continue the series' store after the frames it holds rather than refuse it.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np
import zmq
import zmq.auth

from ..errors import BackpressureTimeout, ConfigError, FrameError, StateError
from ..settings import DTYPES, StreamSettings
from .protocol import (
    MAX_SERIES_ID,
    PROTOCOL_VERSION,
    SERVER_FIELDS,
    Frame,
    SeriesEnd,
    SeriesStart,
    encode_header,
    encode_payload,
    minor_needed,
    valid_series_id,
)
from .status import SeriesRejected, StatusClient, StatusUnavailable, rejection
from .watch import SeriesWatch

__all__ = ["CurveClient", "Sender"]


@dataclass(frozen=True)
class CurveClient:
    """Key files for a CURVE connection: this sender's certificate and the server's public one."""

    secret_key_file: str  # '.key_secret' written by zmq.auth.create_certificates
    server_key_file: str  # the server's '.key' (public) certificate


class _Slot:
    __slots__ = ("array", "tracker")

    def __init__(self, array: np.ndarray[Any, Any]) -> None:
        self.array = array
        self.tracker: zmq.MessageTracker | None = None


class Sender:
    """Connects to an ``acqzarr serve`` endpoint and sends series of frames.

    Parameters
    ----------
    endpoint
        tcp://HOST:PORT or ipc://PATH of the server.
    socket
        'push' (lossless, blocks on a slow server) or 'pub' (lossy; for a ``socket: sub`` server).
    encoding
        'raw' or 'blosc2' (lz4, byte shuffle; transport compression only).
    hwm
        Send high-water mark in messages; small so memory in flight stays bounded.
    buffers
        Pool buffers per frame shape: how many raw frames may be in flight without a copy.
    timeout
        Seconds a send may block (PUSH) or a control message may retry (PUB) before
        BackpressureTimeout; None waits forever.
    status_endpoint
        The server's status socket; when given, a series the server refuses raises
        SeriesRejected (with its reason) from the next ``send`` or ``end_series``, no more
        frames of it are sent, and ``end_series`` waits for the server to finalize the series
        and returns its summary.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        socket: Literal["push", "pub"] = "push",
        encoding: Literal["raw", "blosc2"] = "raw",
        clevel: int = 1,
        hwm: int = 4,
        buffers: int = 4,
        timeout: float | None = None,
        curve: CurveClient | None = None,
        linger: float = 10.0,
        status_endpoint: str | None = None,
    ) -> None:
        if socket not in ("push", "pub"):
            raise ConfigError(f"socket must be 'push' or 'pub', got {socket!r}")
        if encoding not in ("raw", "blosc2"):
            raise ConfigError(f"encoding must be 'raw' or 'blosc2', got {encoding!r}")
        self.endpoint = endpoint
        self.pattern = socket
        self.encoding = encoding
        self.clevel = clevel
        self.timeout = timeout
        self.buffers = max(1, buffers)
        self.hwm = hwm
        self.status_endpoint = status_endpoint
        self.summary: dict[str, Any] | None = None  # the server's summary of the last confirmed series
        self._started_ns = 0
        self.sent = 0  # frame messages handed to ZeroMQ
        self.dropped = 0  # frames not sent because a PUB queue was full (the server counts them as gaps)
        self._linger_ms = int(linger * 1000)
        self._pool: dict[tuple[tuple[int, ...], str], list[_Slot]] = {}
        self._next_slot: dict[tuple[tuple[int, ...], str], int] = {}
        self._pool_ids: dict[int, _Slot] = {}
        self._series: str | None = None
        self._needs_minor = 0  # the protocol minor version the open series' series_start needs
        self._watch: SeriesWatch | None = None  # listens for a refusal of the open series
        self._refusal: SeriesRejected | None = None  # the server refused the last series
        self._msg = 0
        self._frame_ids: dict[str, int] = {}
        self._ctx = zmq.Context()
        try:
            self._sock = self._connect(curve)
        except BaseException:
            self._ctx.term()
            raise
        self._closed = False

    def _connect(self, curve: CurveClient | None) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.PUSH if self.pattern == "push" else zmq.XPUB)
        try:
            sock.sndhwm = self.hwm
            sock.linger = self._linger_ms
            if self.pattern == "push":
                sock.immediate = True  # block (and time out) rather than queue for a server not there
                if self.timeout is not None:
                    sock.sndtimeo = int(self.timeout * 1000)
            else:
                sock.xpub_nodrop = True  # a full queue says EAGAIN, so drops are ours to count
            if curve is not None:
                public, secret = zmq.auth.load_certificate(curve.secret_key_file)
                server_public, _ = zmq.auth.load_certificate(curve.server_key_file)
                if secret is None:
                    raise ConfigError(f"{curve.secret_key_file}: holds no secret key")
                sock.curve_secretkey = secret
                sock.curve_publickey = public
                sock.curve_serverkey = server_public
            sock.connect(self.endpoint)
            if self.pattern == "pub":
                self._await_subscriber(sock)
        except BaseException:
            sock.close(linger=0)
            raise
        return sock

    def _await_subscriber(self, sock: zmq.Socket[bytes]) -> None:
        """Wait for the server's SUB to subscribe: PUB drops everything sent before that."""
        wait = 5.0 if self.timeout is None else self.timeout
        if not sock.poll(int(wait * 1000), zmq.POLLIN):
            raise StateError(f"{self.endpoint}: no subscriber (a 'socket: sub' server) within {wait} s")
        sock.recv()

    # -- series -------------------------------------------------------------------
    def start_series(
        self,
        series_id: str,
        settings: StreamSettings | Mapping[str, Any] | None = None,
        *,
        preset: str | None = None,
        user_data: Any = None,
        resume: bool = False,
    ) -> None:
        """Open a series on the server, carrying its stream settings or naming a preset.

        The fields that are the server's (``protocol.SERVER_FIELDS``: store,
        overwrite, existing, s3) are left out of a ``StreamSettings``, which
        always has them; a mapping that carries one is a ConfigError here,
        before anything is sent, as the server would refuse the series for it.

        ``resume`` (protocol 1.1) asks the server to continue the series' store
        if it exists, instead of refusing the series (``series_exists``): the
        frames go on after those it holds, and its session record gains a
        segment; a store that does not exist is started.  The server refuses a
        store written with other settings (reason ``resume``, every mismatch
        named, the store untouched), and a 1.0 server refuses the request
        itself (reason ``version`` here, heard through ``status_endpoint``).
        Frame ids start again at 0 unless ``send`` is given them.
        """
        if self._series is not None:
            raise StateError(f"series {self._series!r} is still open; end it first")
        if not valid_series_id(series_id):
            raise ConfigError(
                f"series_id {series_id!r}: 1-{MAX_SERIES_ID} of letters, digits, '_', '.', '-', "
                "not starting with '.' or '-', no '..' (it names a directory on the server)"
            )
        data: dict[str, Any] | None
        if isinstance(settings, StreamSettings):
            data = settings.model_dump(mode="json", exclude=set(SERVER_FIELDS))
        else:
            data = None if settings is None else dict(settings)
            carried = [name for name in SERVER_FIELDS if data is not None and name in data]
            if carried:
                raise ConfigError(
                    f"series {series_id!r}: settings {carried[0]!r} is set by the server, not the series; "
                    f"leave {', '.join(SERVER_FIELDS)} out"
                )
        self._msg = 0
        self._frame_ids = {}
        self._started_ns = time.time_ns()
        self.summary = None
        self._refusal = None
        header = SeriesStart(
            htype="series_start",
            version=PROTOCOL_VERSION,
            series_id=series_id,
            msg_number=0,
            settings=data,
            preset=preset,
            timestamp_ns=self._started_ns,
            user_data=user_data,
            resume=resume,
        )
        self._send_control(encode_header(header))
        self._series = series_id
        self._needs_minor = minor_needed(header)
        if self.status_endpoint is not None:
            self._watch = SeriesWatch(
                self.status_endpoint, series_id, self._started_ns, needs_minor=self._needs_minor
            )

    def end_series(self, user_data: Any = None) -> dict[str, Any] | None:
        """Finalize the open series on the server.

        With a ``status_endpoint``, waits until the server reports the series
        finalized and returns its summary (also kept as ``summary``): the only
        way a PUSH sender learns that everything landed.  Closing an ipc
        connection while the server is behind can lose the last messages
        (libzmq issue #4660), so confirm before closing there.  A series the
        server refused raises SeriesRejected instead (and sends nothing).
        """
        series = self._require_series()
        header = SeriesEnd(
            htype="series_end",
            version=PROTOCOL_VERSION,
            series_id=series,
            msg_number=self._msg,
            timestamp_ns=time.time_ns(),
            user_data=user_data,
        )
        self._series = None
        self._send_control(encode_header(header))
        self._stop_watch()
        if self.status_endpoint is None:
            return None
        self.summary = self._confirm(self.status_endpoint, series)
        return self.summary

    def _confirm(self, endpoint: str, series: str) -> dict[str, Any]:
        """The server's summary of ``series`` once it is finalized; SeriesRejected if the server
        refused it, StatusUnavailable if neither is known within ``timeout`` (default 60 s)."""
        wait = 60.0 if self.timeout is None else self.timeout
        deadline = time.monotonic() + wait
        client = StatusClient(endpoint)
        try:
            while True:
                try:
                    snap = client.ask(timeout=max(0.1, deadline - time.monotonic()))
                except StatusUnavailable:
                    raise StatusUnavailable(f"{endpoint}: no status reply within {wait} s") from None
                for summary in snap["recent_series"]:
                    if summary["series_id"] == series and summary.get("sender_start_ns") == self._started_ns:
                        return dict(summary)
                refusal = rejection(snap, series, self._started_ns, self._needs_minor)
                if refusal is not None:
                    raise refusal
                if time.monotonic() > deadline:
                    raise StatusUnavailable(f"{endpoint}: series {series!r} not finalized within {wait} s")
                time.sleep(0.02)
        finally:
            client.close()

    def _stop_watch(self) -> None:
        """Stop listening for a refusal of the series; one heard meanwhile is kept for the next call."""
        if self._watch is not None:
            self._refusal = self._refusal or self._watch.stop()
            self._watch = None

    @contextmanager
    def series(
        self,
        series_id: str,
        settings: StreamSettings | Mapping[str, Any] | None = None,
        *,
        preset: str | None = None,
        user_data: Any = None,
        resume: bool = False,
    ) -> Iterator[Sender]:
        """``start_series`` ... ``end_series``; an exception skips series_end, so the server's idle
        timeout finalizes the series as incomplete rather than calling it complete."""
        self.start_series(series_id, settings, preset=preset, user_data=user_data, resume=resume)
        try:
            yield self
        except BaseException:
            self._series = None
            self._stop_watch()
            raise
        self.end_series()

    def _require_series(self) -> str:
        """The open series; SeriesRejected once the server has refused it (this and every later
        call, until the next start_series), so nothing more of it is sent."""
        if self._watch is not None and self._watch.refusal is not None:
            self._stop_watch()
            self._series = None
        if self._refusal is not None:
            r = self._refusal
            raise SeriesRejected(r.series_id, r.reason, r.detail)
        if self._series is None:
            raise StateError("no open series; call start_series first")
        return self._series

    # -- frames -------------------------------------------------------------------
    def acquire(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray[Any, Any]:
        """A pool buffer of ``shape``/``dtype`` that ZeroMQ is done with; fill it, then ``send`` it."""
        dt = np.dtype(dtype).newbyteorder("<")
        pool_key = (tuple(shape), dt.str)
        slots = self._pool.get(pool_key)
        if slots is None:
            slots = self._pool[pool_key] = []
            self._next_slot[pool_key] = 0
        i = self._next_slot[pool_key]
        self._next_slot[pool_key] = (i + 1) % self.buffers
        if i == len(slots):
            slot = _Slot(np.empty(shape, dt))
            slots.append(slot)
            self._pool_ids[id(slot.array)] = slot
            return slot.array
        slot = slots[i]
        if slot.tracker is not None and not slot.tracker.done:
            try:
                slot.tracker.wait(self.timeout if self.timeout is not None else -1)
            except zmq.NotDone:
                raise BackpressureTimeout(
                    f"{self.endpoint}: a frame buffer was not released within {self.timeout} s"
                ) from None
        slot.tracker = None
        return slot.array

    def send(
        self,
        frame: np.ndarray[Any, Any],
        *,
        key: str,
        frame_id: int | None = None,
        timestamp_ns: int | None = None,
        dropped_before: int = 0,
        user_data: Any = None,
    ) -> bool:
        """Send one frame of array ``key``; False if a PUB queue was full and the frame was dropped.

        ``frame_id`` defaults to a per-key counter, ``timestamp_ns`` to now
        (CLOCK_MONOTONIC, as the simulated drivers stamp frames).
        """
        series = self._require_series()
        frame = np.asarray(frame)
        if frame.dtype.name not in DTYPES:
            raise FrameError(f"frames of dtype {frame.dtype} cannot be sent; expected one of {DTYPES}")
        slot = self._pool_ids.get(id(frame))
        if slot is not None and slot.array is not frame:
            slot = None
        if self.encoding == "raw" and slot is None:
            buf = self.acquire(frame.shape, frame.dtype)
            np.copyto(buf, frame, casting="equiv")
            frame, slot = buf, self._pool_ids[id(buf)]
        elif not frame.flags.c_contiguous or frame.dtype.byteorder == ">":
            frame = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("<"))
        # operator.index: numpy integers are fine, floats are not (headers are strict).
        frame_id = self._frame_ids.get(key, 0) if frame_id is None else operator.index(frame_id)
        self._frame_ids[key] = frame_id + 1
        header = Frame(
            htype="frame",
            version=PROTOCOL_VERSION,
            series_id=series,
            msg_number=self._msg,
            key=key,
            frame_id=frame_id,
            shape=tuple(int(n) for n in frame.shape),
            dtype=frame.dtype.name,
            encoding=self.encoding,
            timestamp_ns=time.monotonic_ns() if timestamp_ns is None else operator.index(timestamp_ns),
            dropped_before=operator.index(dropped_before),
            user_data=user_data,
        )
        self._msg += 1
        payload = encode_payload(frame, self.encoding, self.clevel)
        tracker = self._send(encode_header(header), payload, track=self.encoding == "raw", wait=False)
        if tracker is False:
            self.dropped += 1
            return False
        self.sent += 1
        if slot is not None and isinstance(tracker, zmq.MessageTracker):
            slot.tracker = tracker
        return True

    # -- the socket -----------------------------------------------------------------
    def _send(self, header: bytes, payload: Any, *, track: bool, wait: bool) -> zmq.MessageTracker | bool:
        """Send [header, payload]; False when PUB could not queue it and ``wait`` is off."""
        flags = zmq.NOBLOCK if self.pattern == "pub" else 0
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                self._sock.send(header, flags | zmq.SNDMORE)
                break
            except zmq.Again:
                if self.pattern == "push":  # SNDTIMEO expired
                    raise BackpressureTimeout(
                        f"{self.endpoint}: the server took nothing for {self.timeout} s"
                    ) from None
                if not wait:
                    return False
                if deadline is not None and time.monotonic() > deadline:
                    raise BackpressureTimeout(
                        f"{self.endpoint}: a control message could not be queued for {self.timeout} s"
                    ) from None
                time.sleep(0.001)
        # ZeroMQ applies the high-water mark per message, at its first part: this cannot block.
        result = self._sock.send(payload, copy=False, track=track)
        return result if isinstance(result, zmq.MessageTracker) else True

    def _send_control(self, header: bytes) -> None:
        """series_start/series_end: never dropped; on PUB they wait for room (up to ``timeout``)."""
        self._send(header, b"", track=False, wait=True)
        self._msg += 1

    def close(self) -> None:
        """Close the socket; queued messages get up to ``linger`` seconds to go out."""
        if self._closed:
            return
        self._closed = True
        self._stop_watch()
        self._sock.close()
        self._ctx.term()

    def __enter__(self) -> Sender:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
