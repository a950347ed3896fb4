"""The cap on bytes in flight: the backpressure between ``append`` and the writers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .errors import BackpressureTimeout

__all__ = ["InflightBudget"]


class InflightBudget:
    """Counts bytes held by unwritten data; ``acquire`` blocks the appender when over the cap.

    Only the appending thread ever blocks.  Writer threads ``add`` compressed
    bytes without waiting and ``release`` bytes once written, so the pipeline
    always drains and a waiting appender always wakes.  A failure wakes it too.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()
        self._failure: BaseException | None = None

    def acquire(
        self,
        nbytes: int,
        *,
        timeout: float | None,
        exempt: Callable[[], bool] = lambda: False,
    ) -> None:
        """Take ``nbytes``; wait while over the cap unless ``exempt()`` says this taker may proceed.

        Raises BackpressureTimeout after ``timeout`` seconds, or the pipeline's
        failure if one happens while waiting.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.used + nbytes > self.cap and not exempt():
                if self._failure is not None:
                    raise self._failure
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BackpressureTimeout(
                        f"append waited {timeout:g} s for the writers: {self.used} bytes in flight, "
                        f"cap {self.cap}; the frame was not accepted"
                    )
                self._cond.wait(remaining)
            self._grow(nbytes)

    def add(self, nbytes: int) -> None:
        with self._cond:
            self._grow(nbytes)

    def _grow(self, nbytes: int) -> None:
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def release(self, nbytes: int) -> None:
        with self._cond:
            self.used -= nbytes
            self._cond.notify_all()

    def notify(self) -> None:
        """Wake waiters whose exemption may have changed."""
        with self._cond:
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self._cond:
            self._failure = exc
            self._cond.notify_all()
