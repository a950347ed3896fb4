"""The server's status as it answers it: the counters (``status.py``) filled in with the state of
every series the life cycle holds, for the status socket and the console line."""

from __future__ import annotations

import logging
import time
from typing import Any

from .detectors import DetectorInputs
from .lifecycle import SeriesLifecycle
from .status import Counters, Rejections, format_line

__all__ = ["Reporter"]

log = logging.getLogger("acqzarr.ingest")


class Reporter:
    """The server's status: the counters with the state of every series it holds, as the status
    socket's answer (``snapshot``) and the console line (``tick``)."""

    def __init__(
        self,
        counters: Counters,
        rejections: Rejections,
        lifecycle: SeriesLifecycle,
        detectors: DetectorInputs | None = None,
    ) -> None:
        self.counters = counters
        self.detectors = detectors
        self.rejections = rejections
        self.lifecycle = lifecycle
        self._last_line: tuple[int, int, int, int] | None = None

    def snapshot(self) -> dict[str, Any]:
        lifecycle = self.lifecycle
        lifecycle.reap()
        detectors = self.detectors
        if detectors:
            detectors.reap()
        c = self.counters
        now = time.monotonic()
        finalizing = lifecycle.finalizer.pending
        c.bytes_written_open = sum(s.bytes_written() for s in lifecycle.open.values()) + sum(
            f.series.bytes_written() for f in finalizing.values()
        )
        if detectors:
            c.bytes_written_open += detectors.bytes_written_open()
            c.detectors = detectors.snapshot()
        c.open_series = {
            sid: {
                "frames": s.frames,
                "gaps": s.gaps,
                "rejected": sum(s.rejected.values()),
                "idle_s": round(now - s.last_activity, 3),
            }
            for sid, s in lifecycle.open.items()
        }
        c.finalizing_series = {
            sid: {"end": f.end, "frames": f.series.frames, "finalizing_s": round(now - f.since, 3)}
            for sid, f in finalizing.items()
        }
        c.waiting_series = list(lifecycle.opener.waiting)
        c.held_bytes = lifecycle.opener.nbytes
        return c.snapshot()

    def tick(self, force: bool = False) -> None:
        """Recompute the rates; log the console line if anything is open or changed (or ``force``)."""
        c = self.counters
        c.tick()
        if self.detectors:
            self.detectors.tick()
        self.rejections.summarise()
        state = (c.frames, sum(c.rejected.values()), c.gaps, c.series_finished)
        busy = bool(self.lifecycle.open or self.lifecycle.finalizer.pending)
        if self.detectors:
            busy = busy or any(d["series"] or d["finalizing"] for d in self.detectors.snapshot().values())
        if force or busy or state != self._last_line:
            log.info("%s", format_line(self.snapshot()))
            self._last_line = state
