"""The cap on bytes in flight: the backpressure between ``append`` and the writers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import BackpressureTimeout

__all__ = ["InflightBudget"]


class InflightBudget:
    """Counts bytes held by unwritten data; ``acquire`` blocks the appender when over the cap.

    Bytes are *filling* (an open band waiting for frames) or *in flight*
    (submitted: being encoded or written, released without any caller's
    help).  Waiting only makes sense while something is in flight: when the
    cap is reached by filling bands alone nothing will ever free memory, and
    ``acquire`` raises the caller's ``stuck`` error at once instead of
    deadlocking.  A writer failure wakes waiters too.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self.filling = 0
        self.peak = 0
        self.extra = 0  # bytes taken beside the cap (``take_extra``)
        self._cond = threading.Condition()
        self._failure: BaseException | None = None

    def acquire(
        self,
        nbytes: int,
        *,
        timeout: float | None,
        may_exceed: Callable[[], bool] = lambda: False,
        stuck: Callable[[], BaseException] | None = None,
    ) -> None:
        """Take ``nbytes`` as filling; wait while over the cap unless ``may_exceed()``.

        Raises BackpressureTimeout after ``timeout`` seconds, ``stuck()`` when
        nothing in flight could free memory, or the pipeline's failure.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.used + nbytes > self.cap and not may_exceed():
                if self._failure is not None:
                    raise self._failure
                if stuck is not None and self.used == self.filling:
                    raise stuck()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise BackpressureTimeout(
                        f"append waited {timeout:g} s for the writers: {self.used} bytes in flight, "
                        f"cap {self.cap}; the frame was not accepted"
                    )
                self._cond.wait(remaining)
            self.used += nbytes
            self.filling += nbytes
            self.peak = max(self.peak, self.used)

    def take_extra(self, nbytes: int) -> None:
        """Take ``nbytes`` beside the cap: a durability checkpoint's copies, which must neither wait
        nor make ``append`` wait (one checkpoint at a time per image bounds them: at most a copy of
        its open bands).  Counted in ``extra`` and ``peak``, never against the cap; given back with
        ``release(..., extra=True)``."""
        with self._cond:
            self.extra += nbytes
            self.peak = max(self.peak, self.used + self.extra)

    def submitted(self, nbytes: int) -> None:
        """Filling bytes are now in flight (their band is complete and on its way)."""
        with self._cond:
            self.filling -= nbytes

    def release(self, nbytes: int, *, extra: bool = False) -> None:
        """Give back ``nbytes`` taken with ``acquire`` (or, ``extra``, with ``take_extra``)."""
        with self._cond:
            if extra:
                self.extra -= nbytes
                return
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
