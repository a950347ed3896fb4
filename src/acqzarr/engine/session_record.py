"""The ``acqzarr_session`` record in each image group: what wrote the image, and how it went.

One schema for every way of writing (the Python API, ``acqzarr record``,
``acqzarr serve``).  The stream writes it when it opens, with
``completed: false``, rewrites it with every publish of the image (in the same
atomic change as the image's shapes, so its counters always describe the
frames a reader finds) and writes it a last time at a clean close with
``completed`` true, unless the caller said otherwise.  A store whose record
says ``completed: false`` was killed, failed, or was closed as incomplete.

A stream that resumes a store (``existing: resume``, ``engine/resume.py``)
keeps the record it finds: its segments stay, the new stream's is added, and
the totals run across all of them; ``completed`` is true only after the last
segment's clean close.

Fields (version 4)::

    version, software          schema version, "acqzarr <version>" (of the last segment's writer)
    start, stop                ISO 8601 UTC: the first segment's start, the last one's stop (null
                               until it closes)
    completed                  see above
    frames_on_disk             frames inside the published image (readable now), all segments
    frames_accepted            frames accepted by append so far, all segments (may exceed
                               frames_on_disk while running, or when a segment was killed)
    frames_skipped             slots left empty: skip(), and holes closed at close; all segments
    frames_dropped             frames the sources report lost (camera drops, transport gaps)
    segments                   one entry per stream that wrote the image, oldest first:
                               {start, stop, frames_accepted, frames_skipped, frames_dropped,
                               ended}; ended is "completed" or "failed" (a close that was not
                               clean, or marked incomplete) once the stream closed, null while it
                               runs, and "killed" for a stream that never closed (found so by the
                               stream that resumed it); a failed one also carries its failure
    source                     who wrote the last segment: {"kind": "python" | "record" | "serve", ...}
    settings                   the stream settings of the last segment

Version 3 records (before segments) are read as one segment when resumed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._version import __version__

__all__ = ["SESSION_KEY", "SESSION_VERSION", "RecordTotals", "SessionRecord", "earlier_segments"]

SESSION_KEY = "acqzarr_session"
SESSION_VERSION = 4
# Fields the stream keeps itself; a caller's update of any other field is merged in.
_OWN = frozenset(
    {"version", "software", "start", "stop", "frames_on_disk", "frames_accepted", "settings", "segments"}
)


@dataclass(frozen=True)
class RecordTotals:
    frames_on_disk: int = 0
    frames_accepted: int = 0
    frames_skipped: int = 0


class SessionRecord:
    """The record of one image; ``update`` merges what the caller knows (source, drops, completed)."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        source: Mapping[str, Any] | None,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        """``previous``: the record of the store a resumed stream continues (its segments are kept)."""
        self._fields: dict[str, Any] = {
            "version": SESSION_VERSION,
            "software": f"acqzarr {__version__}",
            "start": _now(),
            "stop": None,
            "completed": False,
            "frames_dropped": 0,
            "source": dict(source) if source is not None else {"kind": "python"},
            "settings": dict(settings),
        }
        self._completed = True  # what a clean close sets, unless the caller said otherwise
        self._earlier = earlier_segments(previous) if previous is not None else []
        self._on_disk_before = int(previous.get("frames_on_disk", 0)) if previous is not None else 0

    def update(self, values: Mapping[str, Any]) -> None:
        own = sorted(_OWN.intersection(values))
        if own:
            raise ValueError(f"{own} are kept by the stream and cannot be set")
        values = dict(values)
        if "completed" in values:
            self._completed = bool(values.pop("completed"))
        self._fields.update(values)

    def render(self, counters: RecordTotals, *, final: bool = False) -> dict[str, Any]:
        if final and self._fields["stop"] is None:
            self._fields["stop"] = _now()
        fields = self._fields
        ended = ("completed" if self._completed else "failed") if final else None
        this: dict[str, Any] = {
            "start": fields["start"],
            "stop": fields["stop"],
            "frames_accepted": counters.frames_accepted,
            "frames_skipped": counters.frames_skipped,
            "frames_dropped": fields["frames_dropped"],
            "ended": ended,
        }
        if ended == "failed" and "failure" in fields:
            this["failure"] = fields["failure"]
        segments = [*self._earlier, this]
        out = {
            **fields,
            "start": segments[0]["start"],
            "frames_on_disk": self._on_disk_before + counters.frames_on_disk,
            **{
                name: sum(int(s.get(name) or 0) for s in segments)
                for name in ("frames_accepted", "frames_skipped", "frames_dropped")
            },
            "segments": segments,
        }
        if final:
            out["completed"] = self._completed
        return out


def earlier_segments(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The segments of a stored record, each with how it ended: one that never ended was killed.
    A version 3 record (no segments) is one segment."""
    if isinstance(record.get("segments"), list):
        segments = [dict(s) for s in record["segments"] if isinstance(s, Mapping)]
    else:
        completed = bool(record.get("completed"))
        stopped = record.get("stop") is not None
        segments = [
            {
                "start": record.get("start"),
                "stop": record.get("stop"),
                "frames_accepted": record.get("frames_accepted", 0),
                "frames_skipped": record.get("frames_skipped", 0),
                "frames_dropped": record.get("frames_dropped", 0),
                "ended": "completed" if completed else ("failed" if stopped else None),
            }
        ]
        if segments[0]["ended"] == "failed" and "failure" in record:
            segments[0]["failure"] = record["failure"]
    for segment in segments:
        if segment.get("ended") is None:
            segment["ended"] = "killed"
    return segments


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
