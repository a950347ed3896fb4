"""The ``acqzarr_session`` record in each image group: what wrote the image, and how it went.

One schema for every way of writing (the Python API, ``acqzarr record``,
``acqzarr serve``).  The stream writes it when it opens, with
``completed: false``, rewrites it with every publish of the image (in the same
atomic change as the image's shapes, so its counters always describe the
frames a reader finds) and writes it a last time at a clean close with
``completed`` true, unless the caller said otherwise.  A store whose record
says ``completed: false`` was killed, failed, or was closed as incomplete.

Fields (version 3)::

    version, software          schema version, "acqzarr <version>"
    start, stop                ISO 8601 UTC; stop is null until close
    completed                  see above
    frames_on_disk             frames inside the published image (readable now)
    frames_accepted            frames accepted by append so far (may exceed it while running)
    frames_skipped             slots left empty: skip(), and holes closed at close
    frames_dropped             frames the source reports lost (camera drops, transport gaps)
    source                     who wrote it: {"kind": "python" | "record" | "serve", ...}
    settings                   the stream settings
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._version import __version__

__all__ = ["SESSION_KEY", "SESSION_VERSION", "RecordTotals", "SessionRecord"]

SESSION_KEY = "acqzarr_session"
SESSION_VERSION = 3
# Fields the stream keeps itself; a caller's update of any other field is merged in.
_OWN = frozenset({"version", "software", "start", "stop", "frames_on_disk", "frames_accepted", "settings"})


@dataclass(frozen=True)
class RecordTotals:
    frames_on_disk: int = 0
    frames_accepted: int = 0
    frames_skipped: int = 0


class SessionRecord:
    """The record of one image; ``update`` merges what the caller knows (source, drops, completed)."""

    def __init__(self, settings: Mapping[str, Any], source: Mapping[str, Any] | None) -> None:
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
        out = {**self._fields, **counters.__dict__}
        if final:
            out["completed"] = self._completed
        return out


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
