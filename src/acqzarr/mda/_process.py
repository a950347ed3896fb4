"""The writer process of ``MDAWriter(process=True)``: the stream runs outside the MDA's interpreter.

pymmcore-plus runs an MDA in Python threads, and a writer in the same
process shares their GIL: with 512x512 frames the runner, the relay thread
and the stream's Python bookkeeping took turns on one lock while the second
core idled (``benchmarks/mda.py``: 1.2 of 2 cores busy).  Here the handler
copies each frame into a ring of shared-memory slots and sends its slot,
index and metadata over a socket; a child process (``python -m
acqzarr.mda._process``, started with ``subprocess`` so the user's script is
never imported again in it) appends it with an ordinary ``MDAWriter`` and
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

from ..errors import WriterError

__all__ = ["RING_BYTES", "WriterProcess"]

# Shared memory for frames in flight to the writer process: at least 2 frames, at most 32.
RING_BYTES = 64 << 20
_MAX_SLOTS = 32
_ACK_BATCH = 8  # slots handed back at most this late (sooner when no frame is waiting)
_START_TIMEOUT_S = 120.0  # the child's imports (numpy, pydantic, useq) on a cold machine
# The child's program: ``-c`` rather than ``-m`` so this module is imported once, under its name.
_CHILD = "import sys; from acqzarr.mda._process import main; main(sys.argv)"


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
                raise self._dead or WriterError(f"the writer process is gone: {exc!r}") from exc

    # -- replies --------------------------------------------------------------
    def _receive(self) -> None:
        """Acks free slots, errors go to ``on_error``, replies to the caller; end-of-file is a death."""
        while True:
            try:
                kind, *rest = self._conn.recv()
            except (EOFError, OSError):
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
        code = self._proc.wait()
        self._dead = WriterError(f"the writer process exited with code {code}")
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


# -- the child ------------------------------------------------------------------
def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a WriterError with its text (chained causes dropped)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return WriterError(f"in the writer process: {exc!r}")
    return exc


class _Child:
    """The writer process's loop: one ``MDAWriter`` (without a runner to cancel) fed from the socket."""

    def __init__(self, conn: Connection) -> None:
        from ._writer import MDAWriter

        class _Writer(MDAWriter):
            def _find_runner(self) -> Any:
                return None  # the parent cancels the MDA when it hears of the error

        self._make = _Writer
        self.conn = conn
        self.writer: MDAWriter | None = None
        self.slots: np.ndarray[Any, Any] | None = None
        self.generation = 0
        self._memory: shared_memory.SharedMemory | None = None
        self._reported: BaseException | None = None
        self._acks: list[int] = []

    def run(self) -> None:
        while True:
            if self._acks and not self.conn.poll():
                self._ack()  # nothing waiting: never sit on slots the parent may be waiting for
            try:
                kind, *rest = self.conn.recv()
            except (EOFError, OSError):  # the MDA's process is gone: keep what was written readable
                self._abandon()
                return
            if kind == "quit":
                self._abandon()
                return
            if kind == "frame":
                slot, index, metadata = rest
                writer = self.writer
                assert writer is not None, "init comes first"
                assert self.slots is not None, "a ring comes before its frames"
                if writer.error is None and not writer._finished:
                    try:
                        writer._put(self.slots[slot], index, metadata)
                    except BaseException as exc:
                        writer._fail(exc)
                self._report()
                self._acks.append(slot)
                if len(self._acks) >= _ACK_BATCH:
                    self._ack()
            elif kind == "ring":
                if self._acks:
                    self._ack()  # the old ring's slots, under its generation
                self._attach(*rest)
            else:
                name, args = rest
                try:
                    value = getattr(self, f"_{name}")(*args)
                except BaseException as exc:
                    self._report()
                    self.conn.send(("reply", False, _portable(exc)))
                else:
                    self._report()
                    self.conn.send(("reply", True, value))

    def _ack(self) -> None:
        """Hand the slots appended since the last ack back (a message per batch, not per frame)."""
        self.conn.send(("ack", self.generation, self._acks))
        self._acks = []

    def _report(self) -> None:
        """Send the writer's first error of the run once, before any reply that follows it."""
        error = None if self.writer is None else self.writer.error
        if error is not None and error is not self._reported:
            self._reported = error
            self.conn.send(("error", _portable(error)))

    def _attach(self, generation: int, name: str, count: int, shape: tuple[int, ...], dtype: str) -> None:
        self._detach()
        memory = shared_memory.SharedMemory(name=name)
        try:  # the parent owns the block: our tracker must not unlink it when we exit (Python < 3.13)
            from multiprocessing import resource_tracker

            resource_tracker.unregister(memory._name, "shared_memory")  # type: ignore[attr-defined]
        except Exception:
            pass
        self._memory = memory
        self.slots = np.ndarray((count, *shape), np.dtype(dtype), buffer=memory.buf)
        self.generation = generation

    def _detach(self) -> None:
        self.slots = None
        if self._memory is not None:
            with contextlib.suppress(BufferError):  # a view still held: the mapping goes with us
                self._memory.close()
            self._memory = None

    # -- calls (``WriterProcess.call``) ------------------------------------------
    def _init(self, store: str, options: dict[str, Any]) -> None:
        self.writer = self._make(store, **options)

    def _start(self, sequence: Any, summary: Mapping[str, Any] | None) -> Any:
        writer = self._need()
        writer.sequenceStarted(sequence, summary)
        return _opened(writer)

    def _open(self, image_info: Mapping[str, Any]) -> Any:
        writer = self._need()
        writer._open_for(image_info)
        return _opened(writer)

    def _finish(self, canceled: bool, error: str | None) -> dict[str, Any]:
        """End the run; ``error``: the parent's (the session record says the run failed with it)."""
        writer = self._need()
        if error is not None and writer.error is None:
            writer._fail(WriterError(f"in the MDA's process: {error}"))
            self._reported = writer.error  # the parent has it already
        if canceled:
            writer.sequenceCanceled(writer._sequence)
        writer.sequenceFinished(writer._sequence)
        return {"stats": writer._final_stats, "images": writer.images, "settings": writer.settings}

    def _stats(self, image: str | None) -> Any:
        return self._need().stats(image)

    def _need(self) -> Any:
        if self.writer is None:
            raise WriterError("the writer process was not initialized")
        return self.writer

    def _abandon(self) -> None:
        """Close a run that did not finish as failed (its frames so far readable), then stop."""
        writer = self.writer
        if writer is not None and writer.stream is not None and not writer._finished:
            writer._fail(WriterError("the MDA's process ended before the run finished"))
            with writer._lock:
                writer._close(None)
        self._detach()


def _opened(writer: Any) -> dict[str, Any] | None:
    """What the parent needs of an open stream to place frames: images, their paths, offsets."""
    if writer.stream is None:
        return None
    return {
        "paths": writer._paths,
        "t_offset": writer._t_offset,
        "images": writer.images,
        "settings": writer.settings,
    }


def main(argv: list[str]) -> None:
    conn = Connection(int(argv[1]))
    try:
        _Child(conn).run()
    finally:
        conn.close()


