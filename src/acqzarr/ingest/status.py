"""Live counters of the ingest server, and the client side of its status socket.

The server answers any request on its REP status socket with
``Counters.snapshot()`` as JSON; ``acqzarr status ENDPOINT`` (``query``)
asks once and prints it.  The same figures go to the console once per
``status_interval``.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from typing import Any

import zmq

from ..errors import AcqzarrError
from .protocol import PROTOCOL_VERSION

__all__ = ["Counters", "StatusUnavailable", "format_line", "query"]

RECENT_SERIES = 50


class StatusUnavailable(AcqzarrError, TimeoutError):
    """No answer from a status endpoint within the timeout."""


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
        self.bytes_written_finished = 0
        self.bytes_written_open = 0
        self.fps = 0.0
        self.raw_bytes_per_s = 0.0
        self._last = (self.started, 0, 0)

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
        }


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
    )


def query(endpoint: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a server's status socket once; StatusUnavailable if it does not answer in ``timeout`` s."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.REQ)
        try:
            sock.linger = 0
            sock.rcvtimeo = sock.sndtimeo = int(timeout * 1000)
            sock.connect(endpoint)
            try:
                sock.send(b"status")
                reply = sock.recv()
            except zmq.Again:
                raise StatusUnavailable(f"{endpoint}: no status reply within {timeout} s") from None
        finally:
            sock.close()
    finally:
        ctx.term()
    result: dict[str, Any] = json.loads(reply)
    return result
