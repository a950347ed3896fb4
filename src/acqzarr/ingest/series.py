"""One open series on the server: its stream, its message sequence, and what to record at the end.

A series is one store (``root/series_id``) with the arrays its settings
declare; frames for each key go to that key's array, so several cameras in
one series are compressed and written concurrently by the one stream.  Each
frame's header fields go into the image's per-frame metadata columns
(``engine/frame_columns.py``, with ``acqzarr record``'s fields plus ``gap_before``;
a frame's ``user_data`` into its JSON entry), and the session record
(``engine/session_record.py``) describes the series, so readers need not care how a
dataset was acquired.  Opening, counting drops and the end of the record are
``recording/lifecycle.py``'s, as for ``acqzarr record``; what is the protocol's (message
sequence, gaps, rejections, the ``user_data`` cap) is here.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import numpy as np

from ..errors import ProtocolError
from ..recording.lifecycle import End, Recording
from ..settings import ArraySettings, StreamSettings
from .protocol import PROTOCOL_VERSION, Frame, SeriesEnd, SeriesStart

__all__ = ["Series"]


class _Key:
    """Per-array state: the frame geometry it accepts and a decode buffer."""

    def __init__(self, settings: ArraySettings) -> None:
        self.key = settings.key
        self.shape = settings.frame_shape
        self.dtype = np.dtype(settings.dtype)
        self.decode_buffer: np.ndarray[Any, Any] | None = None


class Series:
    """An open series; the server calls ``check``, ``append`` and finally ``finalize``."""

    def __init__(self, start: SeriesStart, settings: StreamSettings, user_data_cap: int) -> None:
        self.id = start.series_id
        self.start_header = start
        self.settings = settings
        self.last_activity = time.monotonic()
        self.next_msg = start.msg_number + 1
        self.gaps = 0
        self._pending_gap = 0
        self.rejected: Counter[str] = Counter()
        self._user_data_left = user_data_cap
        self.user_data_dropped = 0
        self.recording = Recording(settings, source=self._source())
        self.keys = {a.key: _Key(a) for a in settings.images}  # with positions: "<position>/<array>"
        # Whether the series continues a store (it asked to resume, and the store was there): its
        # session record then has the earlier segments before this one.
        self.resumed = len(self.recording.stream.session(next(iter(self.keys)))["segments"]) > 1

    def _source(self, end: str | None = None, end_header: SeriesEnd | None = None) -> dict[str, Any]:
        """The session record's ``source``: the series and what happened to its messages."""
        return {
            "kind": "serve",
            "protocol_version": PROTOCOL_VERSION,
            "series_id": self.id,
            "preset": self.start_header.preset,
            "resume": self.start_header.resume,
            "sender_start_ns": self.start_header.timestamp_ns,
            "gaps": self.gaps,
            "rejected": dict(sorted(self.rejected.items())),
            "user_data_dropped": self.user_data_dropped,
            "end": end,
            "user_data": {
                "series_start": self.start_header.user_data,
                "series_end": None if end_header is None else end_header.user_data,
            },
        }

    @property
    def frames(self) -> int:
        """Frames accepted so far, all arrays."""
        return sum(self.recording.counts(key).accepted for key in self.keys)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def sequence(self, msg_number: int) -> None:
        """Account for ``msg_number``: a jump forward is a gap (lost messages), a step back is rejected."""
        if msg_number < self.next_msg:
            raise ProtocolError(
                "out_of_order", f"series {self.id!r}: msg_number {msg_number}, expected >= {self.next_msg}"
            )
        gap = msg_number - self.next_msg
        self.gaps += gap
        self._pending_gap += gap
        self.next_msg = msg_number + 1

    def key(self, header: Frame) -> _Key:
        """The array the frame goes to, after checking its geometry matches."""
        state = self.keys.get(header.key)
        if state is None:
            raise ProtocolError(
                "unknown_key", f"series {self.id!r} has arrays {sorted(self.keys)}, got key {header.key!r}"
            )
        if tuple(header.shape) != state.shape or np.dtype(header.dtype) != state.dtype:
            raise ProtocolError(
                "frame_mismatch",
                f"array {header.key!r} takes {state.shape} {state.dtype} frames, got "
                f"{tuple(header.shape)} {header.dtype}",
            )
        return state

    def append(self, header: Frame, frame: np.ndarray[Any, Any], receive_ns: int) -> None:
        """Hand the frame and its metadata to the stream (which copies the frame)."""
        meta: dict[str, Any] = {
            "frame_id": header.frame_id,
            "timestamp_ns": header.timestamp_ns,
            "receive_ns": receive_ns,
            "dropped_before": header.dropped_before,
            "gap_before": self._pending_gap,
        }
        if header.user_data is not None:
            size = len(json.dumps(header.user_data))
            if size <= self._user_data_left:
                meta["user_data"] = header.user_data
                self._user_data_left -= size
            else:
                self.user_data_dropped += 1
        lost = header.dropped_before + self._pending_gap  # camera drops and transport gaps
        self.recording.append(frame, header.key, meta, lost=lost)
        self._pending_gap = 0
        if lost:  # readers see the gaps so far with the drops
            self.recording.describe(header.key, self._source(), write=False)

    def bytes_written(self) -> int:
        return sum(self.recording.stream.stats(k).bytes_written for k in self.keys)

    def finalize(self, end: str, end_header: SeriesEnd | None) -> dict[str, Any]:
        """Finish every image's session record, then close the stream; the series' summary.

        ``end`` says why: series_end, idle_timeout, shutdown or write_error.
        Complete means the sender ended the series and nothing was lost or
        rejected on the way.  Runs on a finalize thread (``finalizer.py``);
        a failed end or close is the summary's ``error``, never raised.
        """
        completed = end == "series_end" and self.gaps == 0 and not self.rejected
        ending = End(completed, {"source": self._source(end, end_header)})
        try:
            self.recording.finish(dict.fromkeys(self.keys, ending))
        except Exception as exc:  # the server goes on; the summary reports it
            return self.failed_summary(end, exc)
        record = self.recording.stream.session(next(iter(self.keys)))
        return self._summary(end, completed, record["start"], record["stop"])

    def failed_summary(self, end: str, error: BaseException) -> dict[str, Any]:
        """The summary of a series whose finalize failed with ``error``: never complete."""
        try:
            record = self.recording.stream.session(next(iter(self.keys)))
            start, stop = record["start"], record["stop"]
        except Exception:  # the record itself is what failed: the summary still goes out
            start = stop = None
        try:
            return {**self._summary(end, False, start, stop), "error": repr(error)}
        except Exception:  # not even the stream's counts: what the protocol knows still goes out
            return {**self._summary(end, False, None, None, counted=False), "error": repr(error)}

    def _summary(
        self, end: str, completed: bool, start: Any, stop: Any, *, counted: bool = True
    ) -> dict[str, Any]:
        """The series' summary; ``counted=False`` leaves out the stream's own counts."""
        return {
            "series_id": self.id,
            "store": self.settings.store,
            "end": end,
            "completed": completed,
            "frames_total": self.frames if counted else None,
            "gaps": self.gaps,
            "rejected": dict(sorted(self.rejected.items())),
            "user_data_dropped": self.user_data_dropped,
            "bytes_written": self.bytes_written() if counted else 0,
            "start": start,
            "stop": stop,
            "sender_start_ns": self.start_header.timestamp_ns,
            "resumed": self.resumed,
        }
