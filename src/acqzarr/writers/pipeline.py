"""The threads behind a stream: a compression pool and one ordered I/O thread.

Compression runs on a pool sized to the cores (Blosc releases the GIL).
Writes run on a single I/O thread in submission order, which gives two
properties for free: a band is stored only after every band submitted before it
(what ``engine/publish.py`` counts on), and the disk sees sequential writes while the
pool keeps compressing the next band.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import WriterError
from .budget import InflightBudget

__all__ = ["IOJob", "Pipeline"]

T = TypeVar("T")

# An I/O job runs on the I/O thread; ``failed`` tells it an earlier job failed,
# in which case it must only release what it holds, not write.
IOJob = Callable[[bool], None]


def _set_event(event: threading.Event, failed: bool) -> None:
    event.set()


def _idle(failed: bool) -> None:
    """Not a job: the wait for one ran out (the idle hook's time came)."""


class _OrderedThread:
    """Runs jobs one at a time in submission order; a job is told whether anything failed before it."""

    def __init__(
        self,
        name: str,
        record: Callable[[BaseException], None],
        failed: Callable[[], bool],
        # Run when a job leaves the queue empty; returns the seconds after which it wants to run
        # again if no job comes meanwhile (None: not until the next job).
        on_idle: Callable[[], float | None] | None = None,
    ) -> None:
        self._jobs: queue.Queue[IOJob | None] = queue.Queue()
        self.on_idle = on_idle
        self.submitted = 0  # jobs submitted so far (drain's markers not counted)
        self._record = record
        self._failed = failed
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: IOJob) -> None:
        self.submitted += 1
        self._jobs.put(job)

    def drain(self) -> None:
        """Wait until every job has run, including jobs that running jobs submit to this thread
        (a pyramid level's finish queues the next level's)."""
        while True:
            before = self.submitted
            done = threading.Event()
            self._jobs.put(functools.partial(_set_event, done))
            done.wait()
            if self.submitted == before:
                return

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _loop(self) -> None:
        again: float | None = None  # when idle: seconds until on_idle wants to run again
        while True:
            try:
                job = self._jobs.get(timeout=again)
            except queue.Empty:
                job = _idle
            again = None
            if job is None:
                return
            try:
                if job is not _idle:
                    job(self._failed())
                if self.on_idle is not None and self._jobs.empty() and not self._failed():
                    again = self.on_idle()
            except BaseException as exc:
                self._record(exc)


class Pipeline:
    """The compression pool, the ordered I/O thread and the downsampling thread of one stream.

    ``on_io_idle`` runs on the I/O thread whenever a job leaves its queue empty
    (and nothing failed), and again after the seconds it returns if no job came
    meanwhile: the stream publishes what is stored then, at most every publish
    interval.  It must not hold the stream itself (the threads would keep an
    unclosed stream alive).
    """

    def __init__(
        self,
        threads: int | None,
        budget: InflightBudget,
        on_io_idle: Callable[[], float | None] | None = None,
    ) -> None:
        self.budget = budget
        self.threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="acqzarr-compress")
        self._failure: BaseException | None = None
        self._io = _OrderedThread("acqzarr-io", self._record, lambda: self._failure is not None, on_io_idle)
        self._side: _OrderedThread | None = None  # downsampling, started on first use
        self._closed = False

    def compress(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on the pool; inline once the interpreter is shutting down (its pools
        refuse new work then, before ``atexit`` closes a stream that was never closed)."""
        try:
            return self._pool.submit(fn, *args)
        except RuntimeError:
            if self._closed:  # not the interpreter's shutdown: this pipeline's own
                raise
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)
        return done

    def submit_io(self, job: IOJob) -> None:
        self._io.submit(job)

    def submit_side(self, job: IOJob) -> None:
        """Run ``job`` on the downsampling thread (ordered, off the appending thread)."""
        if self._side is None:
            self._side = _OrderedThread("acqzarr-downsample", self._record, lambda: self._failure is not None)
        self._side.submit(job)

    def fail(self, exc: BaseException) -> None:
        """A helper thread of the stream failed: the next call on the stream raises it."""
        self._record(exc)

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def check(self) -> None:
        """Raise the first failure of any writer thread, if there was one."""
        if self._failure is not None:
            raise self._failure

    def drain_side(self) -> None:
        if self._side is not None:
            self._side.drain()

    def drain(self) -> None:
        """Block until every job submitted so far (downsampling, then I/O) has run."""
        self.drain_side()
        self._io.drain()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._side is not None:
            self._side.stop()
        self._io.stop()
        self._pool.shutdown(wait=True)

    def _record(self, exc: BaseException) -> None:
        if self._failure is None:
            err = exc if isinstance(exc, WriterError) else WriterError(f"writer failed: {exc}")
            if err is not exc:
                err.__cause__ = exc
            self._failure = err
            self.budget.fail(err)
