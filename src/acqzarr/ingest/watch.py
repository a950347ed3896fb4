"""A sender's ear on the server: whether the series it is sending was refused, heard off its thread.

The data socket is one-way (PUSH/PUB), so a series_start the server refuses
(``series_exists``, ``busy``, ``settings``, ...) would otherwise be heard of
only in the server's log, after the sender streamed the whole series into
nothing.  The server lists every refused series_start in its status answer
(``rejected_series``: series_id, the sender's start time, reason, message);
a ``SeriesWatch`` asks for it every ``interval`` seconds on a thread of its
own while the series is being sent.  The sending thread only reads
``refusal`` (an attribute, set once): nothing is added to the per-frame path,
and a sender learns of a refusal within ``interval`` plus one status round
trip, however slow its camera.
"""

from __future__ import annotations

import threading

from .status import SeriesRejected, StatusClient, StatusUnavailable, rejection

__all__ = ["SeriesWatch"]

INTERVAL = 0.1  # seconds between status requests while a series is sent


class SeriesWatch:
    """Watches the status endpoint for the refusal of series ``series_id`` started at
    ``sender_start_ns``; ``refusal`` is the error once the server has refused it."""

    def __init__(
        self,
        endpoint: str,
        series_id: str,
        sender_start_ns: int,
        interval: float = INTERVAL,
        *,
        needs_minor: int = 0,
    ) -> None:
        self.refusal: SeriesRejected | None = None
        self._needs_minor = needs_minor  # the protocol minor version its series_start needs
        self._series_id = series_id
        self._start_ns = sender_start_ns
        self._interval = interval
        self._client = StatusClient(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"acqzarr-watch-{series_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                try:
                    snap = self._client.ask(timeout=max(1.0, 10 * self._interval))
                except StatusUnavailable:  # a busy or restarting server: ask again
                    continue
                refusal = rejection(snap, self._series_id, self._start_ns, self._needs_minor)
                if refusal is not None:
                    self.refusal = refusal
                    return
        finally:
            self._client.close()

    def stop(self) -> SeriesRejected | None:
        """Stop watching (waits for a request under way); the refusal heard, if any."""
        self._stop.set()
        self._thread.join()
        return self.refusal
