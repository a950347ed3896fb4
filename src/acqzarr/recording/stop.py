"""SIGINT and SIGTERM as a stop request, for the commands that must finish cleanly.

A recording or a server stopped by Ctrl-C or by a service manager must still
flush and finalize everything it accepted, so the signal only sets an event
the loop checks; the loop then ends the way it would at its natural end.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

__all__ = ["StopSignal"]


class StopSignal:
    """While entered (``with``), SIGINT/SIGTERM set ``event`` and record the signal's name.

    Handlers can only be installed from the main thread; elsewhere (a test
    running a session in a thread) the context does nothing and ``event`` is
    still there to be set by hand.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name
        self.event.set()

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self) for s in self.SIGNALS}
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
