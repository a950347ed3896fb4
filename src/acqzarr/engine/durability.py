"""The durability deadline: no accepted frame stays unreadable (and lost to a kill) for long.

A frame becomes readable when its band is complete, stored and published.
At camera rates that takes milliseconds; in a time lapse a band (a chunk, or
a shard, deep along the append axis) can take hours to fill, and every frame
in it would sit in memory, invisible and lost to a kill.  So a stream with a
deadline (``StreamSettings.max_unflushed_seconds``) runs one thread that,
every quarter of the deadline, looks at each image: when a frame it accepted
has been waiting a quarter of the deadline or more (between one and two
looks), the image takes a *checkpoint* (``Image.checkpoint``): copies of its
open bands are written as they are on every level, open shards with them,
and the image is published up to the steps of the append axis whose frames
are all in (a z stack in progress waits for its last frame, so that nothing
shown ever changes).  The objects are written again when their bands
complete (each write atomic, as always).  That leaves the other half of the
deadline for the writes.

It costs nothing while bands fill faster than that: the thread then only
compares two counters per image four times per deadline.  What it costs when
it does checkpoint is in docs/performance.md.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from .image import Image

__all__ = ["DurabilityDeadline"]


class DurabilityDeadline:
    """One stream's deadline thread (started at once; ``stop`` before the images finish)."""

    def __init__(
        self, seconds: float, images: Sequence[Image], fail: Callable[[BaseException], None]
    ) -> None:
        self.seconds = seconds
        self._period = seconds / 4
        self._images = list(images)
        self._fail = fail
        # Per image: (time, frames accepted by then) at each look since the first frame that was
        # not yet readable; the oldest such frame was accepted before the first entry's time.
        self._looks: list[deque[tuple[float, int]]] = [deque() for _ in self._images]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="acqzarr-durability", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._period):
                self.look(time.monotonic())
        except BaseException as exc:  # never silent: the stream's next call raises it
            self._fail(exc)

    def look(self, now: float) -> None:
        """Checkpoint every image whose oldest unreadable frame has waited a period or more."""
        for image, looks in zip(self._images, self._looks, strict=True):
            accepted, readable = image.counts.filled, image.publisher.frames_flushed
            if not looks or accepted > looks[-1][1]:
                looks.append((now, accepted))
            while looks and looks[0][1] <= readable:
                looks.popleft()
            # 0.9: a timed wait may return a little early
            if looks and now - looks[0][0] >= 0.9 * self._period:
                image.checkpoint()
