"""The life of each series on the server: started, waiting, opened, taking frames, ended, finalized.

A series_start that ``Admission`` lets in waits (``opener.py``) for its slot
and its store, which opens on an open thread; once open the series takes
frames until it ends (``series_end``, ``idle_timeout``, ``write_error``,
``shutdown``) and is finalized on a finalize thread (``finalizer.py``); its
summary is then counted and logged.  Everything here runs on the receive
thread, which also counts what each step did (``Counters``) and rejects what
fails (``Rejections``).

Messages held for a series that was waiting are not handled here: the steps
that end a wait (``advance``, ``take``) return them, and the server's loop
handles them, in order, as if they had just arrived.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..errors import AcqzarrError, FrameError, ProtocolError, ResumeRefused
from ..settings import StreamSettings
from .admission import Admission
from .finalizer import Finalizer
from .opener import Held, Opener, Waiting
from .protocol import Frame, SeriesEnd, SeriesStart, decode_payload
from .series import Series
from .status import Counters, Rejections

__all__ = ["SeriesLifecycle"]

log = logging.getLogger("acqzarr.ingest")

_REMEMBER_ENDED = 4096  # finalized series ids kept, so late frames are "series_ended", not "unknown"


class SeriesLifecycle:
    """The series the server holds: ``open`` (taking frames, by id), waiting or opening
    (``opener``), finalizing (``finalizer``), and the ids of those that ended."""

    def __init__(
        self,
        admission: Admission,
        opener: Opener,
        finalizer: Finalizer,
        counters: Counters,
        rejections: Rejections,
        user_data_cap: int,
    ) -> None:
        self.admission = admission
        self.opener = opener
        self.finalizer = finalizer
        self.counters = counters
        self.rejections = rejections
        self.user_data_cap = user_data_cap
        self.open: dict[str, Series] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()

    # -- starting a series --------------------------------------------------------
    def start(self, header: SeriesStart, payload: memoryview, message: Held) -> None:
        """A series_start: refused (rejected, and listed for its sender) if it cannot start;
        otherwise the series waits for its slot, if a finalizing series holds it, and for its store
        to open."""
        try:
            if payload.nbytes:
                raise ProtocolError("payload_size", f"series_start carries {payload.nbytes} payload bytes")
            self.admission.admit(header.series_id, self.open)
            self.reap()
            waiting = self.opener.wait_for(header, message)
            if self.admission.must_wait(header.series_id, len(self.open)):
                log.info("series_start of %r waits for a finalizing series", header.series_id)
            else:
                self._begin(waiting)  # nothing held yet: a refusal has no messages to give back
        except ProtocolError as exc:
            self.rejections.refuse(header, exc)
        except Exception as exc:  # a bug: the series cannot start, its sender still hears why
            log.exception("unexpected error handling a series_start")
            self.rejections.refuse(header, ProtocolError("internal", repr(exc)))

    def _begin(self, waiting: Waiting) -> list[Held] | None:
        """Check the series' settings here and open its store on an open thread (None); a series
        that cannot start is refused, and its held messages returned."""
        header = waiting.header
        try:
            settings, path = self.admission.settings(header)
        except ProtocolError as exc:
            return self._give_up(waiting, exc)
        exists = self.admission.existing_store(header)
        cap = self.user_data_cap
        self.opener.open(waiting, lambda: _open_series(header, settings, path, exists, cap))
        return None

    def _give_up(self, waiting: Waiting, error: ProtocolError) -> list[Held]:
        """A series that cannot start: its series_start is refused for ``error``; its held
        messages are returned, to be handled as messages of a series that never started."""
        self.opener.release(waiting)
        self.rejections.refuse(waiting.header, error)
        return waiting.messages

    def advance(self) -> list[Held] | None:
        """Move the waiting series on: open those whose slot is free, and take the first one whose
        open is done (or refuse the first that cannot start); its held messages, to handle now, or
        None when no wait ended."""
        for waiting in list(self.opener.waiting.values()):
            if waiting.opening is None and not self.admission.must_wait(waiting.series_id, len(self.open)):
                refused = self._begin(waiting)
                if refused is not None:
                    return refused
            if waiting.opening is not None and waiting.opening.done():
                return self.take(waiting, waiting.opening)
        return None

    def opening(self) -> list[tuple[Waiting, cf.Future[Series]]]:
        """The waiting series whose open is running (or done, not yet taken), with that open."""
        return [(w, w.opening) for w in self.opener.waiting.values() if w.opening is not None]

    def take(self, waiting: Waiting, opening: cf.Future[Series]) -> list[Held]:
        """Take a series whose open is done, or refuse it if the open failed; its held messages,
        which the caller handles, in order."""
        sid = waiting.series_id
        try:
            series = opening.result()  # waits for an open still running
        except ProtocolError as exc:
            return self._give_up(waiting, exc)
        except Exception as exc:  # a bug: the series cannot start, the server goes on
            log.error("series %r: opening failed", sid, exc_info=exc)
            return self._give_up(waiting, ProtocolError("internal", repr(exc)))
        self.opener.release(waiting)
        self.open[sid] = series
        self._ended.pop(sid, None)
        self.counters.series_started += 1
        log.info(
            "series %r %s: %s into %s",
            sid,
            "resumed" if series.resumed else "started",
            ", ".join(f"{a.key or '(root)'} {a.dtype}" for a in series.settings.arrays),
            series.settings.store,
        )
        return waiting.messages

    def give_up_waiting(self) -> None:
        """Shutting down: the series still waiting for a slot are not started; their series_start
        and held messages are rejected as 'shutdown'."""
        for waiting in list(self.opener.waiting.values()):
            if waiting.opening is None:
                log.warning(
                    "series_start of %r not taken: shut down while it waited for a slot", waiting.series_id
                )
                self.opener.release(waiting)
                never = f"series {waiting.series_id!r} never started (the server shut down)"
                self.rejections.refuse(waiting.header, ProtocolError("shutdown", never))
                for _ in waiting.messages:
                    self.rejections.reject("shutdown", never, None)

    # -- messages of open series --------------------------------------------------
    def series(self, series_id: str) -> Series:
        """The open series a frame or series_end is for."""
        series = self.open.get(series_id)
        if series is not None:
            return series
        if series_id in self._ended:
            raise ProtocolError("series_ended", f"series {series_id!r} is already finalized")
        raise ProtocolError("unknown_series", f"series {series_id!r} was never started")

    def sequence(self, series: Series, msg_number: int) -> None:
        """Account for a message's number (gaps counted, a step back rejected); the series is active."""
        before = series.gaps
        series.sequence(msg_number)
        self.counters.gaps += series.gaps - before
        series.touch()

    def frame(self, series: Series, header: Frame, payload: memoryview, receive_ns: int) -> None:
        state = series.key(header)
        frame = decode_payload(header, payload, state.decode_buffer)
        if header.encoding == "blosc2":
            state.decode_buffer = frame  # reused: the stream copies every frame it accepts
        try:
            series.append(header, frame, receive_ns)
        except FrameError as exc:
            raise ProtocolError("append", str(exc)) from None
        except AcqzarrError as exc:  # the writer failed: the series cannot go on
            log.error("series %r: %s; finalizing with what is stored", series.id, exc)
            self.end(series, "write_error", None)
            raise ProtocolError("append", f"series {series.id!r} failed: {exc}") from None
        c = self.counters
        c.frames += 1
        c.bytes_received += payload.nbytes
        c.bytes_raw += frame.nbytes
        c.camera_dropped += header.dropped_before

    def end(self, series: Series, end: str, header: SeriesEnd | None) -> None:
        """The series takes no more messages; it is finalized on a finalize thread."""
        del self.open[series.id]
        self._ended[series.id] = None
        while len(self._ended) > _REMEMBER_ENDED:
            self._ended.popitem(last=False)
        self.finalizer.submit(series, end, header)

    def end_all(self, end: str) -> None:
        for series in list(self.open.values()):
            self.end(series, end, None)

    def expire_idle(self, idle_timeout: float) -> None:
        now = time.monotonic()
        for series in list(self.open.values()):
            if now - series.last_activity > idle_timeout:
                log.warning(
                    "series %r: no message for %.1f s; finalizing as incomplete",
                    series.id,
                    now - series.last_activity,
                )
                self.end(series, "idle_timeout", None)

    def touch_open(self) -> None:
        """The socket is read again after a pause: the open series' senders were not idle."""
        for series in self.open.values():
            series.touch()

    # -- finalized ----------------------------------------------------------------
    def reap(self) -> None:
        """Count and log the series whose finalize is done."""
        for series, summary in self.finalizer.finished():
            self._finalized(series, summary)

    def wait_finalized(self) -> None:
        """Wait for every pending finalize and count its outcome."""
        self.finalizer.wait(every=True)
        self.reap()

    def _finalized(self, series: Series, summary: dict[str, Any]) -> None:
        end = summary["end"]
        c = self.counters
        c.series_finished += 1
        c.bytes_written_finished += summary["bytes_written"]
        c.recent.append(
            {
                k: summary[k]
                for k in (
                    "series_id",
                    "store",
                    "end",
                    "completed",
                    "frames_total",
                    "gaps",
                    "rejected",
                    "bytes_written",
                    "start",
                    "stop",
                    "sender_start_ns",
                    "resumed",
                )
            }
            | ({"error": summary["error"]} if "error" in summary else {})
        )
        error = summary.get("error")
        level = logging.INFO if summary["completed"] else logging.ERROR if error else logging.WARNING
        log.log(
            level,
            "series %r finalized (%s): %s frames, %d gaps, rejected %s, %s%s",
            series.id,
            end,
            summary["frames_total"],
            summary["gaps"],
            summary["rejected"] or "none",
            "complete" if summary["completed"] else "INCOMPLETE",
            "" if error is None else f"; finalizing failed: {error}",
        )


def _open_series(
    header: SeriesStart,
    settings: StreamSettings,
    path: str,
    exists: Callable[[str], bool] | None,
    user_data_cap: int,
) -> Series:
    """An open thread: create the series' store (or continue it: a resume) and open its stream."""
    if exists is not None and exists(path):
        raise ProtocolError(
            "series_exists",
            f"{path} already exists (the server does not overwrite; a series_start with resume continues it)",
        )
    try:
        return Series(header, settings, user_data_cap)
    except (AcqzarrError, OSError, MemoryError) as exc:
        if isinstance(exc, ResumeRefused):
            # The stream refused to continue the store (untouched); its mismatches on one line.
            first, *problems = str(exc).split("\n")
            detail = first + (" " + "; ".join(p.strip() for p in problems) if problems else "")
            raise ProtocolError("resume", f"series {header.series_id!r}: {detail}") from None
        raise ProtocolError("store", f"series {header.series_id!r}: cannot create {path}: {exc}") from None
