"""Series that are not open yet: their messages are held, in order, while the socket goes on.

A series_start cannot always open its series at once.  Its slot may still be
held by a finalizing series (whose stream's memory is not freed yet), and
opening a store takes a while: the stream creates the store's documents and
maps and touches its first band buffers (a noticeable fraction of a second
for camera-sized frames; an object store adds round trips).  The receive
thread is shared by every series, so waiting there stopped the frames of all
the others.

Instead, a series that is not open yet *waits* here: its series_start and
every later message for it are held in arrival order (the zero-copy frames
ZeroMQ received, nothing decoded), the open runs on an open thread, and the
receive thread goes on with the other series.  When the series is open the
server handles its held messages in order, exactly as if they had just
arrived; when it cannot open they are rejected like any message for a series
that never started.  Held messages are bounded (``max_waiting_bytes``):
beyond it the server stops reading the socket until a waiting series opens,
which is backpressure (PUSH senders block), never a loss.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from .protocol import SeriesStart
from .series import Series

__all__ = ["Held", "Opener", "Waiting"]


@dataclass(frozen=True)
class Held:
    """One received message, kept as received, with the time it arrived."""

    parts: list[zmq.Frame]
    receive_ns: int

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.parts)


@dataclass(eq=False)
class Waiting:
    """A series whose stream is not open yet: its series_start, the messages that came after it,
    and, once its slot is free, the open running on an open thread."""

    series_id: str
    header: SeriesStart  # of ``start``, as parsed when it arrived
    start: Held
    messages: list[Held] = field(default_factory=list)
    opening: cf.Future[Series] | None = None  # None: waiting for a slot

    @property
    def nbytes(self) -> int:
        return self.start.nbytes + sum(m.nbytes for m in self.messages)


class Opener:
    """The waiting series in arrival order (``waiting``, by series id); opens run on a pool of
    ``workers`` threads, one per series the server may hold, so an open never queues."""

    def __init__(self, workers: int, max_bytes: int) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="acqzarr-open")
        self.max_bytes = max_bytes
        self.waiting: OrderedDict[str, Waiting] = OrderedDict()
        self.nbytes = 0  # held by all waiting series

    def wait_for(self, header: SeriesStart, start: Held) -> Waiting:
        """A series_start that waits (for a slot, then for its open)."""
        waiting = self.waiting[header.series_id] = Waiting(header.series_id, header, start)
        self.nbytes += start.nbytes
        return waiting

    def hold(self, waiting: Waiting, message: Held) -> None:
        """A later message of a waiting series."""
        waiting.messages.append(message)
        self.nbytes += message.nbytes

    @property
    def full(self) -> bool:
        """Whether held messages reached the bound: the socket is left unread until a series opens."""
        return self.nbytes >= self.max_bytes

    @property
    def opening(self) -> int:
        """Waiting series whose open is running."""
        return sum(w.opening is not None for w in self.waiting.values())

    def open(self, waiting: Waiting, opener: Callable[[], Series]) -> None:
        """Run ``opener`` for ``waiting`` on an open thread; returns at once."""
        waiting.opening = self._pool.submit(opener)

    def release(self, waiting: Waiting) -> None:
        """``waiting`` waits no more (opened, failed, or given up): its messages are the caller's."""
        del self.waiting[waiting.series_id]
        self.nbytes -= waiting.nbytes

    def wait(self, timeout: float | None) -> None:
        """Wait until a running open is done, or ``timeout`` s."""
        futures = [w.opening for w in self.waiting.values() if w.opening is not None]
        if futures:
            cf.wait(futures, timeout, cf.FIRST_COMPLETED)

    def close(self) -> None:
        """Wait for running opens and stop the threads."""
        self._pool.shutdown(wait=True)
