"""Finalizing ended series on their own threads, so the receive loop never waits for a close.

Ending a series writes its session record's end and closes its stream: the
last bands are compressed and written, the final shapes and metadata
stored.  That takes as long as the series' slowest store (seconds for a
large series or an object store), and the receive thread is shared by every
series, so a close done there stalls the frames of all the others.  The
server hands an ended series to ``Finalizer.submit`` and goes on receiving;
it collects the summaries with ``finished`` on its own thread, where it
counts and logs them like any other outcome.

A finalize that fails never dies in its thread: ``Series.finalize`` turns a
failed end or close into a summary with an ``error``, and anything else it
raises becomes such a summary here (logged with its traceback).  The pool
has one thread per series the server may hold (``max_open_series``): the
server counts finalizing series against that limit, so a finalize never
queues behind another.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from dataclasses import dataclass
from typing import Any

from .protocol import SeriesEnd
from .series import Series

__all__ = ["Finalizer", "Finalizing"]

log = logging.getLogger("acqzarr.ingest")


@dataclass(frozen=True)
class Finalizing:
    """An ended series whose finalize is running: why it ended, since when, its outcome to come."""

    series: Series
    end: str
    since: float  # time.monotonic() at the hand-over
    future: cf.Future[dict[str, Any]]


class Finalizer:
    """Runs ``Series.finalize`` on a pool of ``workers`` threads; ``pending`` by series id."""

    def __init__(self, workers: int) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="acqzarr-finalize")
        self.pending: dict[str, Finalizing] = {}  # in hand-over order

    def submit(self, series: Series, end: str, header: SeriesEnd | None) -> None:
        """Start finalizing ``series`` (``end`` says why it ended); returns at once."""
        future = self._pool.submit(_finalize, series, end, header)
        self.pending[series.id] = Finalizing(series, end, time.monotonic(), future)

    def finished(self) -> list[tuple[Series, dict[str, Any]]]:
        """The series whose finalize is done, with their summaries, in hand-over order; they are
        no longer pending."""
        done = [f for f in self.pending.values() if f.future.done()]
        for f in done:
            del self.pending[f.series.id]
        return [(f.series, _outcome(f)) for f in done]

    def wait(self, timeout: float | None = None, *, every: bool = False) -> None:
        """Wait until one pending finalize is done (every one with ``every``), or ``timeout`` s."""
        futures = [f.future for f in self.pending.values()]
        if futures:
            cf.wait(futures, timeout, cf.ALL_COMPLETED if every else cf.FIRST_COMPLETED)

    def close(self) -> None:
        """Wait for every pending finalize and stop the threads."""
        self._pool.shutdown(wait=True)


def _outcome(f: Finalizing) -> dict[str, Any]:
    error = f.future.exception()
    if error is None:
        return f.future.result()
    # Even the failure's own summary failed: say what is known, never lose the series.
    log.error("series %r: finalizing failed", f.series.id, exc_info=error)
    return f.series.failed_summary(f.end, error)


def _finalize(series: Series, end: str, header: SeriesEnd | None) -> dict[str, Any]:
    """A finalize thread: the series' summary, also when finalizing raised (then with ``error``)."""
    try:
        return series.finalize(end, header)
    except Exception as exc:  # a bug: the series is still reported, as failed
        log.exception("series %r: finalizing failed", series.id)
        return series.failed_summary(end, exc)
