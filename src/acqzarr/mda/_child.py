"""The writer process's side of ``MDAWriter(process=True)`` (the parent's is ``_process.py``).

``python -c "...; from acqzarr.mda._child import main; main(sys.argv)" FD``:
an ordinary ``MDAWriter`` (without a runner to cancel: the parent cancels)
fed from the socket ``FD``, frames read from the parent's shared-memory ring.
It reports the writer's first error of a run before anything that follows,
answers calls, hands slots back in batches, and, on end-of-file from a dead
parent, closes the open run as failed so what it received stays readable.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Mapping
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ..errors import WriterError
from ._writer import MDAWriter

__all__ = ["main"]

_ACK_BATCH = 8  # slots handed back at most this late (sooner when no frame is waiting)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a WriterError with its text (chained causes dropped)."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return WriterError(f"in the writer process: {exc!r}")
    return exc


class _Writer(MDAWriter):
    def _find_runner(self) -> Any:
        return None  # the parent cancels the MDA when it hears of the error


class _Child:
    """The writer process's loop: one ``MDAWriter`` (without a runner to cancel) fed from the socket."""

    def __init__(self, conn: Connection) -> None:
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
                    reply = ("reply", True, getattr(self, f"_{name}")(*args))
                except BaseException as exc:
                    reply = ("reply", False, _portable(exc))
                self._report()
                self._send(reply)

    def _ack(self) -> None:
        """Hand the slots appended since the last ack back (a message per batch, not per frame)."""
        self._send(("ack", self.generation, self._acks))
        self._acks = []

    def _send(self, message: tuple[Any, ...]) -> None:
        """Send to the parent; if it is gone, go on: the frames it sent before are still to be read
        and stored, and end-of-file then closes the run (``_abandon``)."""
        with contextlib.suppress(OSError):
            self.conn.send(message)

    def _report(self) -> None:
        """Send the writer's first error of the run once, before any reply that follows it."""
        error = None if self.writer is None else self.writer.error
        if error is not None and error is not self._reported:
            self._reported = error
            self._send(("error", _portable(error)))

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
        self.writer = _Writer(store, **options)

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
        return {"stats": writer._final_stats, "opened": _opened(writer)}

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
