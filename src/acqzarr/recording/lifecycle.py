"""A recording's life cycle, the same for ``acqzarr record`` and ``acqzarr serve``.

Both commands open a stream saying who writes (the session record's
``source``), append frames with their per-frame metadata while counting the
frames the source reports lost, and at the end write how each image's
recording ended and close the stream.  The end is the part that is easy to
get wrong, so it lives here once:

* every image's end is written before the close, so a close that then fails
  (a writer or the store gave up) still leaves a record in the store that
  says how the recording ended, with ``completed: false`` and ``stop: null``
  (only a clean close sets those);
* every step is tried whatever failed before it, and the failure reaches the
  caller: the first one raised, later ones attached as notes.

What is not shared stays with the caller: camera threads and stop signals in
``recording/command.py``; message sequence numbers, gaps, protocol checks and the
``user_data`` cap in ``ingest/series.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine.stream import Stream, open_stream
from ..settings import StreamSettings
from ..stores import Store

__all__ = ["Counts", "End", "Recording"]


@dataclass(frozen=True)
class Counts:
    """One image's frames so far, as its session record counts them."""

    accepted: int  # frames append accepted (``frames_accepted``)
    skipped: int  # slots left empty (``frames_skipped``)
    dropped: int  # frames the source reported lost before the accepted ones (``frames_dropped``)


@dataclass(frozen=True)
class End:
    """How one image's recording ended: whether it is complete, and what else its record says.

    ``fields`` are session record fields the caller owns, e.g. ``interrupted``
    (the signal that stopped a recording), a final ``frames_dropped`` from the
    camera's own count, or a ``source`` that says how the series ended.
    """

    completed: bool
    fields: Mapping[str, Any] = field(default_factory=dict)


class Recording:
    """A stream being recorded into, from its opening to its session records' last word.

    ``source`` describes who writes, for every image (``describe`` refines it
    per image); ``stream`` is there for progress and reading back (``stats``,
    ``memory``, ``session``).
    """

    def __init__(
        self, settings: StreamSettings, store: Store | None = None, *, source: Mapping[str, Any]
    ) -> None:
        self.stream: Stream = open_stream(settings, store, source=source)
        self._dropped = dict.fromkeys(self.stream.keys, 0)

    @property
    def keys(self) -> list[str]:
        return self.stream.keys

    def describe(self, key: str, source: Mapping[str, Any], *, write: bool = True) -> None:
        """Set image ``key``'s ``source``; ``write=False`` leaves it to the image's next publish."""
        self.stream.update_session({"source": dict(source)}, key=key, write=write)

    def append(
        self,
        frame: Any,
        key: str,
        metadata: Mapping[str, Any],
        *,
        lost: int = 0,
        index: Mapping[str, int] | None = None,
    ) -> None:
        """Append one frame with its metadata (at ``index``, as ``Stream.append`` takes it, or next in
        acquisition order); ``lost`` frames the source says went missing just before it are counted
        once the frame is accepted, and shown with the image's next publish."""
        self.stream.append(frame, key=key, index=index, metadata=metadata)
        if lost:
            self._dropped[key] += lost
            self.stream.update_session({"frames_dropped": self._dropped[key]}, key=key, write=False)

    def counts(self, key: str) -> Counts:
        stats = self.stream.stats(key)
        return Counts(stats.frames_appended, stats.frames_skipped, self._dropped[key])

    def finish(self, ends: Mapping[str, End], failure: BaseException | None = None) -> None:
        """Write each image's end, then close the stream (flushing everything accepted).

        ``failure`` is what already ended the recording (a camera that failed);
        it is raised once the stream is closed.  Otherwise the first failure of
        writing an end or of closing is raised; later ones become its notes.
        An image whose end could not be written is closed as incomplete.
        """
        errors: list[BaseException] = [] if failure is None else [failure]
        for key, end in ends.items():
            try:
                self.stream.update_session({**end.fields, "completed": end.completed}, key=key)
            except Exception as exc:  # the close must still run
                errors.append(exc)
                if key in self.keys:  # part of the end may be missing: never claim it complete
                    self.stream.update_session({"completed": False}, key=key, write=False)
        try:
            self.stream.close()
        except Exception as exc:
            errors.append(exc)
        if errors:
            first, *later = errors
            for other in later:
                first.add_note(f"while ending the recording: {other!r}")
            raise first
