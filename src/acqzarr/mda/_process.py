"""The writer process of ``MDAWriter(process=True)``: the stream runs outside the MDA's interpreter.

pymmcore-plus runs an MDA in Python threads, and a writer in the same
process shares their GIL: with 512x512 frames the runner, the relay thread
and the stream's Python bookkeeping took turns on one lock while the second
core idled (``benchmarks/mda.py``: 1.2 of 2 cores busy).  Here the handler
copies each frame into a ring of shared-memory slots and sends its slot,
index and metadata over a socket; a child process (``python -m
acqzarr.mda._child``'s ``main``, started with ``subprocess`` so the user's
script is never imported again in it) appends it with an ordinary ``MDAWriter`` and
hands the slot back.  Memory stays bounded by the ring: when every slot is
in flight, ``frame`` waits for one, as ``Stream.append`` waits for its
budget.

Errors keep the in-process rules: the child's writer never raises, it
reports its first error at once (an ``error`` message, handled on the
receiving thread, which cancels the run), calls that fail raise in the
caller, and a child that dies is a ``WriterError`` with its exit code.  If
the MDA's process dies instead, the child reads end-of-file and closes the
store as failed, so what was written stays readable.
"""

from __future__ import annotations

import atexit
import contextlib
import pickle
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ..errors import ConfigError, WriterError

__all__ = ["RING_BYTES", "WriterProcess"]

# Shared memory for frames in flight to the writer process: at least 2 frames, at most 32.
RING_BYTES = 64 << 20
_MAX_SLOTS = 32
_START_TIMEOUT_S = 120.0  # the child's imports (numpy, pydantic, useq) on a cold machine
# The child's program: ``-c`` rather than ``-m`` so this module is imported once, under its name.
_CHILD = "import sys; from acqzarr.mda._child import main; main(sys.argv)"


class _Ring:
    """Frame slots in one shared-memory block (the parent's side)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype[Any], generation: int) -> None:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        self.count = max(2, min(_MAX_SLOTS, RING_BYTES // max(1, nbytes)))
        self.shape, self.dtype, self.generation = shape, dtype, generation
        self.memory = shared_memory.SharedMemory(create=True, size=max(1, nbytes * self.count))
        self.slots: np.ndarray[Any, Any] = np.ndarray((self.count, *shape), dtype, buffer=self.memory.buf)
        self.free: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        for slot in range(self.count):
            self.free.put(slot)

    def fits(self, img: np.ndarray[Any, Any]) -> bool:
        return bool(img.shape == self.shape and img.dtype == self.dtype)

    def close(self) -> None:
        del self.slots
        self.memory.close()
        self.memory.unlink()


class WriterProcess:
    """The parent's handle on the writer process: calls, frames, and what the child reports.

    ``on_error`` is called (on the receiving thread) with the child writer's
    first error of a run, or a WriterError when the child dies.
    """

    def __init__(
        self, store: str, options: Mapping[str, Any], on_error: Callable[[BaseException], None]
    ) -> None:
        if sys.platform == "win32":
            raise ConfigError("MDAWriter(process=True) needs a POSIX system (it hands the child a socket)")
        self.on_error = on_error
        ours, theirs = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._call_lock = threading.Lock()
        self._replies: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._ring: _Ring | None = None
        self._generation = 0
        self._closing = False
        self._dead: WriterError | None = None
        self._receiver = threading.Thread(target=self._receive, name="acqzarr-mda-receiver", daemon=True)
        self._receiver.start()
        atexit.register(self.close)  # a writer never closed: the child ends, the ring is unlinked
        self.call("init", store, dict(options), timeout=_START_TIMEOUT_S)

    @property
    def pid(self) -> int:
        return self._proc.pid

    # -- requests -------------------------------------------------------------
    def call(self, name: str, *args: Any, timeout: float | None = None) -> Any:
        """Run handler ``name`` in the child and return its result (or raise its exception)."""
        with self._call_lock:
            self._post(("call", name, args))
            try:
                ok, value = self._replies.get(timeout=timeout)
            except queue.Empty:
                raise WriterError(f"the writer process did not answer {name!r} within {timeout} s") from None
        if not ok:
            raise value
        return value

    def frame(self, img: np.ndarray[Any, Any], index: Mapping[str, int], metadata: dict[str, Any]) -> None:
        """Copy ``img`` into a free slot (waiting for one while all are in flight) and send it."""
        ring = self._ring
        if ring is None or not ring.fits(img):
            ring = self._new_ring(img)
        slot = ring.free.get()
        if slot is None:  # the child died while we waited
            raise self._dead or WriterError("the writer process stopped")
        np.copyto(ring.slots[slot], img, casting="no")
        self._post(("frame", slot, dict(index), metadata))

    def _new_ring(self, img: np.ndarray[Any, Any]) -> _Ring:
        """Slots for frames of ``img``'s shape and dtype; the child switches to them in message order."""
        old = self._ring
        self._generation += 1
        ring = self._ring = _Ring(img.shape, img.dtype, self._generation)
        self._post(("ring", ring.generation, ring.memory.name, ring.count, ring.shape, ring.dtype.str))
        if old is not None:
            old.close()  # the child keeps its own mapping until it switches
        return ring

    def _post(self, message: tuple[Any, ...]) -> None:
        if self._dead is not None:
            raise self._dead
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._send_lock:
            try:
                self._conn.send_bytes(data)
            except OSError as exc:
                raise self._death(exc) from exc

    def _death(self, exc: OSError) -> WriterError:
        """The child is gone (a send failed): the error with its exit code, as the receiving thread
        reports it once it reads end-of-file (whichever sees the death first, the user reads one
        error), or the send's error if the child has not exited within 5 s."""
        if self._dead is not None:
            return self._dead
        try:
            return _exited(self._proc.wait(timeout=5))
        except subprocess.TimeoutExpired:
            return WriterError(f"the writer process is gone: {exc!r}")

    # -- replies --------------------------------------------------------------
    def _receive(self) -> None:
        """Acks free slots, errors go to ``on_error``, replies to the caller; end-of-file is a death."""
        while True:
            try:
                kind, *rest = self._conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # a message this side cannot read: never a silent end here
                self.on_error(WriterError(f"an unreadable message from the writer process: {exc!r}"))
                self._proc.kill()
                break
            if kind == "ack":
                ring = self._ring
                if ring is not None and ring.generation == rest[0]:
                    for slot in rest[1]:
                        ring.free.put(slot)
            elif kind == "error":
                self.on_error(rest[0])
            else:
                self._replies.put((rest[0], rest[1]))
        self._dead = _exited(self._proc.wait())
        if not self._closing:
            self.on_error(self._dead)
        self._replies.put((False, self._dead))
        ring = self._ring
        if ring is not None:
            ring.free.put(None)

    # -- the end --------------------------------------------------------------
    def close(self, timeout: float = 60.0) -> None:
        """Stop the child (after the frames sent so far) and free the ring."""
        if self._closing:
            return
        self._closing = True
        atexit.unregister(self.close)
        with contextlib.suppress(WriterError):  # already gone
            self._post(("quit",))
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._receiver.join(timeout)
        self._conn.close()
        if self._ring is not None:
            self._ring.close()
            self._ring = None


def _exited(code: int) -> WriterError:
    """The error of a writer process that ended, wherever its end is seen first."""
    return WriterError(f"the writer process exited with code {code}")
