"""Live counters of the ingest server, its status, and the client side of its status socket.

The server counts what happens (``Counters``) and every rejected message
(``Rejections``, which also logs them, rate limited); it answers any request
on its REP status socket with ``reporter.Reporter.snapshot()`` as JSON, and
``acqzarr status ENDPOINT`` (``query``) asks once and prints it.  The same
figures go to the console once per ``status_interval`` (``reporter.Reporter.tick``).
A sender finds there, too, whether the server refused its series
(``rejected_series``, read with ``rejection``): the data socket is one-way,
the status socket is how a sender hears back.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import zmq

from ..errors import AcqzarrError, ProtocolError
from .protocol import MINOR_FIELDS, PROTOCOL_MINOR, PROTOCOL_VERSION, SeriesStart, protocol_text

if TYPE_CHECKING:  # the server's side; a sender imports this module without it
    from .series import Series

__all__ = [
    "Counters",
    "Rejections",
    "SeriesRejected",
    "StatusClient",
    "StatusUnavailable",
    "format_line",
    "query",
    "rejection",
]

log = logging.getLogger("acqzarr.ingest")

RECENT_SERIES = 50
_LOGGED_PER_REASON = 5  # rejection log lines per reason per status interval; the rest are summarised


class StatusUnavailable(AcqzarrError, TimeoutError):
    """No answer from a status endpoint within the timeout."""


class SeriesRejected(ProtocolError):
    """The server refused to start a series: ``reason`` is the server's (docs/protocol.md), and the
    message says why in its words; nothing sent for the series was stored."""

    def __init__(self, series_id: str, reason: str, message: str) -> None:
        super().__init__(reason, f"the server rejected series {series_id!r}: {message}")
        self.series_id = series_id
        self.detail = message


class Counters:
    """Totals since the server started; rates are averaged over the last status interval."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.frames = 0
        self.bytes_received = 0  # payload bytes on the wire (compressed for blosc2)
        self.bytes_raw = 0  # frame bytes after decoding
        self.gaps = 0  # messages lost in transport (holes in msg_number)
        self.camera_dropped = 0  # frames the senders' cameras lost (their dropped_before)
        self.rejected: Counter[str] = Counter()
        self.series_started = 0
        self.series_finished = 0
        self.open_series: dict[str, dict[str, Any]] = {}
        self.finalizing_series: dict[str, dict[str, Any]] = {}  # ended, their stores being finalized
        self.waiting_series: list[str] = []  # not open yet: waiting for a slot or their store to open
        self.held_bytes = 0  # messages held for the waiting series
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_SERIES)
        self.detectors: dict[str, dict[str, Any]] = {}  # each detector input's state (``detectors.py``)
        self.rejected_series: deque[dict[str, Any]] = deque(maxlen=RECENT_SERIES)
        self.bytes_written_finished = 0
        self.bytes_written_open = 0
        self.fps = 0.0
        self.raw_bytes_per_s = 0.0
        self._last = (self.started, 0, 0)

    def refused(self, header: SeriesStart, error: ProtocolError) -> None:
        """A series_start that did not start its series, listed for its sender to find."""
        prefix = f"{error.reason}: "
        message = str(error)
        self.rejected_series.append(
            {
                "series_id": header.series_id,
                "sender_start_ns": header.timestamp_ns,
                "reason": error.reason,
                "message": message[len(prefix) :] if message.startswith(prefix) else message,
            }
        )

    def tick(self) -> None:
        """Recompute the rates from the frames and bytes since the previous tick."""
        now = time.monotonic()
        t, frames, raw = self._last
        span = max(now - t, 1e-9)
        self.fps = (self.frames - frames) / span
        self.raw_bytes_per_s = (self.bytes_raw - raw) / span
        self._last = (now, self.frames, self.bytes_raw)

    def snapshot(self) -> dict[str, Any]:
        return {
            "protocol_version": PROTOCOL_VERSION,
            "protocol_minor": PROTOCOL_MINOR,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "frames": self.frames,
            "bytes_received": self.bytes_received,
            "bytes_raw": self.bytes_raw,
            "bytes_written": self.bytes_written_finished + self.bytes_written_open,
            "fps": round(self.fps, 2),
            "raw_bytes_per_s": round(self.raw_bytes_per_s),
            "gaps": self.gaps,
            "camera_dropped": self.camera_dropped,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
            "series_started": self.series_started,
            "series_finished": self.series_finished,
            "open_series": dict(self.open_series),
            "finalizing_series": dict(self.finalizing_series),
            "waiting_series": list(self.waiting_series),
            "held_bytes": self.held_bytes,
            "recent_series": list(self.recent),
            "rejected_series": list(self.rejected_series),
            "detectors": dict(self.detectors),
        }


class Rejections:
    """Every rejected message, counted under its reason (for the server, and for its series when it
    is attributed to one) and logged: at most a few lines per reason per status interval, then one
    line that says how many more there were."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self._logged: Counter[str] = Counter()

    def reject(self, reason: str, message: str, series: Series | None) -> None:
        self.counters.rejected[reason] += 1
        if series is not None:
            series.rejected[reason] += 1
        self._logged[reason] += 1
        if self._logged[reason] <= _LOGGED_PER_REASON:
            log.warning("rejected (%s)", message if message.startswith(reason) else f"{reason}: {message}")

    def refuse(self, header: SeriesStart, error: ProtocolError) -> None:
        """A series_start that does not start its series: rejected, and listed in the status
        (``rejected_series``), where its sender looks for it."""
        self.counters.refused(header, error)
        self.reject(error.reason, str(error), None)

    def summarise(self) -> None:
        """Log how many rejections were not logged one by one since the last call."""
        suppressed = {r: n - _LOGGED_PER_REASON for r, n in self._logged.items() if n > _LOGGED_PER_REASON}
        if suppressed:
            log.warning("rejections not logged individually in the last interval: %s", suppressed)
        self._logged.clear()


def format_line(snap: dict[str, Any]) -> str:
    """One console line: frames, rates, losses and rejections by reason."""
    rejected = ", ".join(f"{k} {v}" for k, v in snap["rejected"].items()) or "none"
    finalizing = sorted(snap.get("finalizing_series", ()))  # absent from an older server's answer
    waiting = snap.get("waiting_series", [])
    return (
        f"frames {snap['frames']} ({snap['fps']:.1f} fps)"
        f" | in {snap['raw_bytes_per_s'] / 1e6:.0f} MB/s | wire {snap['bytes_received'] / 1e6:.0f} MB"
        f" | written {snap['bytes_written'] / 1e6:.0f} MB | gaps {snap['gaps']}"
        f" | camera drops {snap['camera_dropped']}"
        f" | rejected {snap['rejected_total']} ({rejected})"
        f" | open {sorted(snap['open_series']) or '-'}"
        f"{f' | starting {waiting}' if waiting else ''}"
        f"{f' | finalizing {finalizing}' if finalizing else ''} | finished {snap['series_finished']}"
        + "".join(_detector_part(name, d) for name, d in snap.get("detectors", {}).items())
    )


def _detector_part(name: str, d: dict[str, Any]) -> str:
    """A detector input on the console line: connected or not, its series, its images."""
    state = "connected" if d["connected"] else "not connected"
    series = d["series"] or "-"
    if d["series"] is not None:
        of = d["series_expected"] if d["series_expected"] is not None else "?"
        series = f"{series} ({d['series_images']}/{of})"
    return (
        f" | {name}: {state}, series {series}, images {d['images_received']} in /"
        f" {d['images_written']} written / {d['images_rejected']} rejected ({d['images_per_s']:.1f}/s)"
    )


def rejection(
    snap: dict[str, Any], series_id: str, sender_start_ns: int, needs_minor: int = 0
) -> SeriesRejected | None:
    """The server's refusal of the series a sender started at ``sender_start_ns``, if ``snap`` (a
    status answer) lists one; None from a server that does not list refusals.

    A series_start that needs a newer minor protocol version than the server's (``needs_minor``,
    ``protocol.minor_needed``) was refused by it as a header with an unknown field, which names no
    series: the answer's ``protocol_minor`` (absent before 1.1) says so instead.
    """
    server_minor = snap.get("protocol_minor", 0)
    if isinstance(server_minor, int) and server_minor < needs_minor:
        fields = [f"`{name}`" for name, minor in MINOR_FIELDS.items() if server_minor < minor <= needs_minor]
        return SeriesRejected(
            series_id,
            "version",
            f"it speaks protocol {protocol_text(server_minor)}, and the series_start needs "
            f"{protocol_text(needs_minor)} (it sets {', '.join(fields)}): the server rejected it as a "
            "header with an unknown field, and stored nothing of the series",
        )
    for refused in snap.get("rejected_series", ()):
        if refused["series_id"] == series_id and refused["sender_start_ns"] == sender_start_ns:
            return SeriesRejected(series_id, refused["reason"], refused["message"])
    return None


class StatusClient:
    """A REQ socket to a status endpoint, asked again and again.

    A REQ socket cannot send before it has the answer to its last request,
    so one that timed out is closed and a new one connected (ZeroMQ's "lazy
    pirate" pattern): a server that restarts, or answers late, never wedges
    the client.
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None

    def ask(self, timeout: float) -> dict[str, Any]:
        """The server's counters; StatusUnavailable if it does not answer in ``timeout`` s."""
        if self._sock is None:
            self._sock = self._ctx.socket(zmq.REQ)
            self._sock.linger = 0
            self._sock.connect(self.endpoint)
        sock = self._sock
        sock.rcvtimeo = sock.sndtimeo = max(1, int(timeout * 1000))
        try:
            sock.send(b"status")
            reply = sock.recv()
        except zmq.Again:
            sock.close()
            self._sock = None
            raise StatusUnavailable(f"{self.endpoint}: no status reply within {timeout} s") from None
        result: dict[str, Any] = json.loads(reply)
        return result

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._ctx.term()


def query(endpoint: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a server's status socket once; StatusUnavailable if it does not answer in ``timeout`` s."""
    client = StatusClient(endpoint)
    try:
        return client.ask(timeout)
    finally:
        client.close()
