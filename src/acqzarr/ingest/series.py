"""One open series on the server: its stream, its message sequence, and what to record at the end.

A series is one store (``root/series_id``) with the arrays its settings
declare; frames for each key go to that key's array, so several cameras in
one series are compressed and written concurrently by the one stream.  The
per-frame metadata (a ``FrameLog``, published live as far as the image is
flushed) and the session record follow ``acqzarr record``'s layout, so
readers need not care how a dataset was acquired.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ProtocolError
from ..frame_log import FIELDS, GROUP, FrameLog
from ..layout import ArrayLayout
from ..settings import ArraySettings, StreamSettings
from ..stream import Stream, open_stream
from .protocol import PROTOCOL_VERSION, Frame, SeriesEnd, SeriesStart

__all__ = ["INGEST_FRAME_FIELDS", "Series"]

# acqzarr record's per-frame fields, plus the messages lost in transport before each frame.
INGEST_FRAME_FIELDS = (*FIELDS, "gap_before")


class _Key:
    """Per-array state: the frame geometry it accepts, a decode buffer, and its frame log."""

    def __init__(self, stream: Stream, settings: ArraySettings) -> None:
        layout = ArrayLayout(settings, sharded=False)
        self.key = settings.key
        self.shape = layout.frame_shape
        self.dtype = layout.dtype
        self.decode_buffer: np.ndarray[Any, Any] | None = None
        self.log = FrameLog(stream, settings.key, INGEST_FRAME_FIELDS)
        self.user_data: dict[str, Any] = {}


class Series:
    """An open series; the server calls ``check``, ``append`` and finally ``finalize``."""

    def __init__(self, start: SeriesStart, settings: StreamSettings, user_data_cap: int) -> None:
        self.id = start.series_id
        self.start_header = start
        self.settings = settings
        self.stream = open_stream(settings)
        self.keys = {a.key: _Key(self.stream, a) for a in settings.arrays}
        self.started = dt.datetime.now(dt.UTC)
        self.last_activity = time.monotonic()
        self.next_msg = start.msg_number + 1
        self.gaps = 0
        self._pending_gap = 0
        self.rejected: Counter[str] = Counter()
        self.frames = 0
        self.bytes_raw = 0
        self._user_data_left = user_data_cap
        self.user_data_dropped = 0

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

    def append(self, header: Frame, state: _Key, frame: np.ndarray[Any, Any], receive_ns: int) -> None:
        """Hand the frame to the stream (which copies it), then note its metadata."""
        self.stream.append(frame, key=header.key)
        index = len(state.log)
        state.log.add(
            header.frame_id, header.timestamp_ns, receive_ns, header.dropped_before, self._pending_gap
        )
        self._pending_gap = 0
        self.frames += 1
        self.bytes_raw += frame.nbytes
        if header.user_data is not None:
            size = len(json.dumps(header.user_data))
            if size <= self._user_data_left:
                state.user_data[str(index)] = header.user_data
                self._user_data_left -= size
            else:
                self.user_data_dropped += 1

    def bytes_written(self) -> int:
        return sum(self.stream.stats(k).bytes_written for k in self.keys)

    def publish(self) -> None:
        """Per-frame metadata for the frames readers can see now (called once per status interval)."""
        for key, state in self.keys.items():
            state.log.publish(self.stream.stats(key).frames_flushed)

    def finalize(self, end: str, end_header: SeriesEnd | None) -> dict[str, Any]:
        """Write per-frame metadata and the session record into every image group, then close.

        ``end`` says why: series_end, idle_timeout, shutdown or write_error.
        Complete means the sender ended the series and nothing was lost or
        rejected on the way.
        """
        completed = end == "series_end" and self.gaps == 0 and not self.rejected
        record: dict[str, Any] = {
            "version": 1,
            "software": f"acqzarr {__version__}",
            "source": "zmq",
            "protocol_version": PROTOCOL_VERSION,
            "series_id": self.id,
            "preset": self.start_header.preset,
            "settings": json.loads(self.settings.model_dump_json(exclude={"store", "overwrite"})),
            "start": self.started.isoformat(),
            "stop": dt.datetime.now(dt.UTC).isoformat(),
            "frames_total": self.frames,
            "gaps": self.gaps,
            "rejected": dict(sorted(self.rejected.items())),
            "user_data_dropped": self.user_data_dropped,
            "end": end,
            "completed": completed,
            "user_data": {
                "series_start": self.start_header.user_data,
                "series_end": None if end_header is None else end_header.user_data,
            },
        }
        error: BaseException | None = None
        try:
            for key, state in self.keys.items():
                record_key = {**record, "frames": len(state.log)}
                self.stream.write_metadata({"acqzarr_session": record_key}, key=key)
        except Exception as exc:
            error = exc
        finally:
            try:
                self.stream.close()
            except Exception as exc:
                error = error or exc
            for key, state in self.keys.items():  # exactly what reached the disk, also after a failure
                try:
                    state.log.publish(self.stream.stats(key).frames_flushed)
                    if state.user_data:
                        self._write_user_data(key, state)
                except Exception as exc:
                    error = error or exc
        summary = {
            **record,
            "bytes_written": self.bytes_written(),
            "store": self.settings.store,
            "sender_start_ns": self.start_header.timestamp_ns,
        }
        if error is not None:
            summary["error"] = repr(error)
            summary["completed"] = False
        return summary

    def _write_user_data(self, key: str, state: _Key) -> None:
        """Per-frame user_data in the frame log group's attributes, keyed by frame index."""
        base = "/".join(p for p in (key, GROUP) if p)
        attrs = {"fields": list(INGEST_FRAME_FIELDS), "version": 1, "user_data": state.user_data}
        self.stream.put_documents(self.stream.format.group_documents(base, attrs))
