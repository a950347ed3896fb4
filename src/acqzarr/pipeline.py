"""The threads behind a stream: a compression pool and one ordered I/O thread.

Compression runs on a pool sized to the cores (Blosc releases the GIL).
Writes run on a single I/O thread in submission order, which gives two
properties for free: a layer's metadata is published only after every earlier
layer is on disk, and the disk sees sequential writes while the pool keeps
compressing the next layer.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .budget import InflightBudget
from .errors import WriterError

__all__ = ["IOJob", "Pipeline"]

T = TypeVar("T")

# An I/O job runs on the I/O thread; ``failed`` tells it an earlier job failed,
# in which case it must only release what it holds, not write.
IOJob = Callable[[bool], None]


class Pipeline:
    def __init__(self, threads: int | None, budget: InflightBudget) -> None:
        self.budget = budget
        self.threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="acqzarr-compress")
        self._jobs: queue.Queue[IOJob | None] = queue.Queue()
        self._failure: BaseException | None = None
        self._io = threading.Thread(target=self._io_loop, name="acqzarr-io", daemon=True)
        self._io.start()
        self._closed = False

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def compress(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._pool.submit(fn, *args)

    def submit_io(self, job: IOJob) -> None:
        self._jobs.put(job)

    def check(self) -> None:
        """Raise the first failure of any writer thread, if there was one."""
        if self._failure is not None:
            raise self._failure

    def drain(self) -> None:
        """Block until every I/O job submitted so far has run."""
        done = threading.Event()
        self._jobs.put(lambda failed: done.set())
        done.wait()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._io.join()
        self._pool.shutdown(wait=True)

    def _io_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job(self._failure is not None)
            except BaseException as exc:
                self._record(exc)

    def _record(self, exc: BaseException) -> None:
        if self._failure is None:
            err = exc if isinstance(exc, WriterError) else WriterError(f"writer failed: {exc}")
            if err is not exc:
                err.__cause__ = exc
            self._failure = err
            self.budget.fail(err)
