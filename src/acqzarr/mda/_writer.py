"""``MDAWriter``: a pymmcore-plus data handler that streams an MDA into an acqzarr store.

pymmcore-plus calls a handler's ``sequenceStarted``, ``frameReady``,
``sequenceCanceled`` and ``sequenceFinished`` on a relay thread, and an
exception there ends that thread silently while ``run()`` returns normally.
So no method here raises: the first error is kept, logged at ERROR on the
``acqzarr.mda`` logger, the run is cancelled (``core.mda.cancel()``), the
store is finalized with what was written (its session record says
``completed: false``), and ``raise_if_failed()`` (or leaving a ``with
MDAWriter(...)`` block, or ``acqzarr.mda.record``) raises it in the user's
thread once ``run()`` has returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import useq

from ..engine.resume import stored_dimensions
from ..engine.stream import ArrayStats, Stream, open_stream
from ..errors import WriterError
from ..metadata.zarr_versions import spec_for
from ..settings import Blosc, Multiscale, StreamSettings
from ..stores import open_store
from ._frame_meta import event_index, frame_metadata, jsonable
from ._live import LatestFrames, LiveFrame
from ._process import WriterProcess
from ._sequence import SequenceLayout, read_sequence
from ._settings import build_settings

__all__ = ["MDAWriter"]

logger = logging.getLogger("acqzarr.mda")
_DEFAULT = Blosc()
# The attribute (in every image group) holding the sequence and pymmcore-plus's summary metadata.
ATTRIBUTE = "pymmcore_plus"


class MDAWriter:
    """Write a pymmcore-plus MDA to a Zarr store: ``core.mda.run(seq, output=MDAWriter("run.zarr"))``.

    The stream opens at ``sequenceStarted`` from the sequence
    (``settings_from_sequence``) and the camera's image info in the summary
    metadata (or, when a caller gives no summary, at the first frame from its
    shape and dtype).  Each frame goes to its ``event.index``; events that
    never come (skipped, or a cancelled run) are holes, read as 0 and counted
    in ``stats().frames_skipped``.  The writer is reusable: each run starts a
    new stream (pass ``overwrite=True`` to write the same path again, or
    ``resume=True`` to continue it).

    With ``resume=True`` a sequence goes on where the store stops: its time
    axis grows without end, and each event's ``t`` lands after the timepoints
    the store already holds (``stats().resumed_at`` of them), so a sequence
    run again after a crash (or to add timepoints) extends the same images.  A
    store written with other settings (channels' count, z, chunks, shards,
    ...) is refused untouched (``engine/resume.py``).

    Parameters
    ----------
    store
        Path of the Zarr store (or ``s3://bucket/prefix``).
    core
        The ``CMMCorePlus`` (or ``UniMMCore``) running the MDA, cancelled when
        writing fails.  None takes ``CMMCorePlus.instance()`` at the start of
        the run (the first core created in the process) and warns when that
        core is not the one running.
    version, compression, chunks, shards, pyramid, overwrite, **stream
        Storage settings, as in ``settings_from_sequence``.
    resume
        Continue the store (``existing="resume"``) instead of starting a new one.
    process
        Write in a separate process (``_process.py``, POSIX): the frames go there through
        shared memory, so the stream's Python does not share the GIL with the MDA's threads
        (512x512 frames: 1.2x the in-process rate here, ``benchmarks/mda.py``).  The process
        starts here (about a second, paid before the MDA) and lives until ``close()``, the end
        of a ``with`` block, or the end of this process.  Errors, cancelling, ``stats()``,
        ``images``, ``settings`` and ``latest()`` work as in-process; ``stream`` is None.
        ``stats()`` during a run asks the process, which answers once it has appended every
        frame sent before (at most a ring of 32): with a disk that holds the stream back, that
        waits as long as the frames do.
    """

    def __init__(
        self,
        store: str | Path,
        *,
        core: Any = None,
        version: int = 3,
        compression: Blosc | None = _DEFAULT,
        chunks: Mapping[str, int] | None = None,
        shards: Mapping[str, int] | None = None,
        pyramid: Multiscale | int | None = None,
        overwrite: bool = False,
        resume: bool = False,
        process: bool = False,
        **stream: Any,
    ) -> None:
        self.store = str(store)
        self._core = core
        self._resume = resume
        self._options: dict[str, Any] = dict(
            version=version,
            compression=compression,
            chunks=chunks,
            shards=shards,
            pyramid=pyramid,
            overwrite=overwrite,
            **stream,
        )
        self._lock = threading.Lock()
        self._reset()
        # The writer process's MDAWriter takes the same keywords (and sets ``existing`` itself).
        child = {**self._options, "resume": resume}
        self._child = WriterProcess(self.store, child, self._fail) if process else None
        if resume:
            self._options["existing"] = "resume"

    def _reset(self) -> None:
        self._stream: Stream | None = None
        self._layout: SequenceLayout | None = None
        self._sequence: useq.MDASequence | None = None
        self._summary: Mapping[str, Any] | None = None
        self._runner: Any = None
        self._error: BaseException | None = None
        self._canceled = False
        self._finished = False
        self._final_stats: dict[str, ArrayStats] = {}
        self._t_offset: dict[str, int] = {}  # per image: timepoints the resumed store held
        self._paths: list[str] | None = None  # the image of each position p (the stream's settings)
        self._opened: dict[str, Any] | None = None  # in process mode: the child's open stream
        self.live = LatestFrames()

    # -- pymmcore-plus's handler protocol (relay thread; never raises) --------
    def sequenceStarted(
        self, sequence: useq.MDASequence, summary_meta: Mapping[str, Any] | None = None
    ) -> None:
        """Open the store for ``sequence`` (the relay thread calls this before any frame)."""
        with self._lock:
            if self._stream is not None and not self._finished:
                self._close("a new sequence started before the last one finished")
            self._reset()
            self._sequence = sequence
            self._summary = summary_meta
            self._runner = self._find_runner()
            try:
                self._layout = layout = read_sequence(sequence)
                infos = (summary_meta or {}).get("image_infos") or ()
                if len(infos) > 1:
                    raise WriterError(
                        f"{len(infos)} cameras in the summary metadata; MDAWriter writes one camera"
                    )
                if self._child is not None:
                    self._adopt(self._child.call("start", sequence, summary_meta))
                elif infos:
                    self._open(layout, infos[0])
            except BaseException as exc:
                self._fail(exc)

    def frameReady(
        self, img: np.ndarray[Any, Any], event: useq.MDAEvent, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Put ``img`` at ``event.index`` with ``meta`` as its per-frame metadata."""
        if self._error is not None or self._finished:
            return  # the run is being cancelled; the store keeps what was written before
        try:
            index = event_index(event.index)
            metadata = frame_metadata(meta, event, index)
            if self._child is None:
                own, path = self._put(img, index, metadata)
            else:
                own, path = self._send(img, index, metadata)
            self.live.put(img, own, path)
        except BaseException as exc:
            self._fail(exc)

    def _put(
        self, img: np.ndarray[Any, Any], event_index: Mapping[str, int], metadata: dict[str, Any]
    ) -> tuple[dict[str, int], str]:
        """Append ``img`` where the event's index puts it: (its index in its image, the image)."""
        stream = self._stream or self._open_for({"plane_shape": img.shape, "dtype": str(img.dtype)})
        own, index, path = self._place(event_index)
        stream.append(img, index=index, metadata=metadata)
        return own, path

    def _send(
        self, img: np.ndarray[Any, Any], event_index: Mapping[str, int], metadata: dict[str, Any]
    ) -> tuple[dict[str, int], str]:
        """``_put`` in the writer process: the frame goes through shared memory."""
        child = self._child
        assert child is not None
        if not self._opened:
            self._adopt(child.call("open", {"plane_shape": img.shape, "dtype": str(img.dtype)}))
        own, _, path = self._place(event_index)
        child.frame(img, event_index, metadata)
        return own, path

    def _adopt(self, opened: dict[str, Any] | None) -> None:
        """Take the child's open stream (its image paths, resumed offsets, images, settings)."""
        if opened is not None:
            self._opened = opened
            self._paths = opened["paths"]
            self._t_offset = opened["t_offset"]

    def _place(self, event_index: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int], str]:
        """An event's index as (the frame's index in its image, the stream's index, the image)."""
        layout = self._layout
        if layout is None:  # no sequenceStarted: a handler driven by hand
            layout = self._layout = read_sequence(useq.MDASequence())
        own, p = layout.image_index(event_index)
        path = "" if p is None or self._paths is None else self._paths[p]
        offset = self._t_offset.get(path, 0)
        if offset and "t" in own:
            own = {**own, "t": own["t"] + offset}
        return own, (own if p is None else {**own, "p": p}), path

    def _open_for(self, image_info: Mapping[str, Any]) -> Stream:
        """The stream, opened for frames of ``image_info`` if it is not open yet."""
        with self._lock:
            if self._layout is None:
                self._layout = read_sequence(useq.MDASequence())
            return self._stream or self._open(self._layout, image_info)

    def sequenceCanceled(self, sequence: useq.MDASequence) -> None:
        self._canceled = True

    def sequenceFinished(self, sequence: useq.MDASequence) -> None:
        """Finalize the store: holes for events that never came, the session record's outcome."""
        with self._lock:
            self._close(None)

    # -- the user's side --------------------------------------------------------
    @property
    def error(self) -> BaseException | None:
        """The first error while writing (the run was cancelled because of it), or None."""
        return self._error

    @property
    def canceled(self) -> bool:
        """Whether the run was cancelled (by the user, or by this writer after an error)."""
        return self._canceled

    @property
    def stream(self) -> Stream | None:
        """The open stream (None before the first run starts); closed after the run finished."""
        return self._stream

    @property
    def settings(self) -> StreamSettings | None:
        if self._opened is not None:
            settings: StreamSettings = self._opened["settings"]
            return settings
        return None if self._stream is None else self._stream.settings

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id (``process=True``), e.g. to watch its CPU; None in-process."""
        return None if self._child is None else self._child.pid

    def raise_if_failed(self) -> None:
        """Raise the writing error (as a WriterError from it) if there was one."""
        if self._error is not None:
            raise WriterError(
                f"MDAWriter({self.store!r}) failed and cancelled the run: {self._error!r}"
            ) from (self._error)

    def stats(self, image: str | None = None) -> ArrayStats:
        """Progress of ``image`` (a group path; the only image when None), also after the run."""
        if image is None and len(self.images) == 1:
            image = self.images[0]
        if image in self._final_stats:
            return self._final_stats[image]
        if self._child is not None and self._opened is not None:
            stats: ArrayStats = self._child.call("stats", image)
            return stats
        if self._stream is None:
            raise WriterError("no stream yet: the MDA has not started")
        return self._stream.stats(image)

    @property
    def images(self) -> list[str]:
        """Group paths of the images in the store ('' for a single image at the root)."""
        if self._opened is not None:
            return list(self._opened["images"])
        return [] if self._stream is None else self._stream.keys

    def latest(self, image: str | None = None, channel: int | None = None) -> LiveFrame | None:
        """The newest frame received (of ``image`` and ``channel`` when given), for a live view."""
        return self.live.get(image, channel)

    def __enter__(self) -> MDAWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if exc is None:
            self.raise_if_failed()
        elif self._error is not None:
            exc.add_note(f"MDAWriter({self.store!r}) failed too: {self._error!r}")

    def close(self) -> None:
        """Stop the writer process (``process=True``; after the frames it was sent).  A run still
        open then is closed as failed there, its frames kept.  Nothing to do in-process."""
        if self._child is not None:
            self._child.close()

    # -- inside ------------------------------------------------------------------
    def _open(self, layout: SequenceLayout, image_info: Mapping[str, Any]) -> Stream:
        if self._resume and "t" in layout.sizes:  # time goes on past what the store holds
            layout = dataclasses.replace(layout, sizes={**layout.sizes, "t": 0})
        settings = build_settings(layout, image_info, self.store, **self._options)
        if self._resume:
            settings = self._stored_chunking(settings, layout, image_info)
        stream = self._stream = open_stream(settings, source=_source())
        self._paths = settings.position_paths
        self._t_offset = {key: stream.stats(key).resumed_at for key in stream.keys}
        attrs: dict[str, Any] = {"format": "acqzarr-mda", "version": 1}
        if self._sequence is not None:
            attrs["sequence"] = jsonable(self._sequence)
        if self._summary is not None:
            attrs["summary"] = jsonable({k: v for k, v in self._summary.items() if k != "mda_sequence"})
        for key in stream.keys:
            stream.write_metadata({ATTRIBUTE: attrs}, key=key)
        return stream

    def _close(self, reason: str | None) -> None:
        """Close the stream once, recording how the run ended; keep a close error as the error."""
        if self._finished:
            return
        self._finished = True
        if self._child is not None:
            self._close_child()
            return
        stream = self._stream
        if stream is None:
            return
        outcome = "failed" if self._error is not None else "canceled" if self._canceled else "completed"
        try:
            if outcome != "completed" or reason is not None:
                fields: dict[str, Any] = {"completed": False, "mda_outcome": outcome}
                if self._error is not None:
                    fields["error"] = repr(self._error)
                if reason is not None:
                    fields["mda_outcome"] = reason
                for key in stream.keys:  # written now: a failed stream's close cannot publish it
                    stream.update_session(fields, key=key)
            else:
                for key in stream.keys:
                    stream.update_session({"mda_outcome": outcome}, key=key, write=False)
        except BaseException as exc:
            self._fail(exc)
        try:
            stream.close()
        except BaseException as exc:
            self._fail(exc)
        self._final_stats = {key: stream.stats(key) for key in stream.keys}

    def _close_child(self) -> None:
        """``_close`` in the writer process: the stats, images and settings come back from there."""
        assert self._child is not None
        error = None if self._error is None else repr(self._error)
        try:
            done = self._child.call("finish", self._canceled, error)
        except BaseException as exc:
            self._fail(exc)
            return
        self._final_stats = done["stats"]
        self._adopt(done["opened"])

    def _fail(self, exc: BaseException) -> None:
        """Keep the first error, say so, and stop the acquisition."""
        if self._error is not None:
            self._error.add_note(f"later error while writing: {exc!r}")
            return
        self._error = exc
        logger.error("MDAWriter(%r) failed, cancelling the MDA: %r", self.store, exc, exc_info=exc)
        runner = self._runner
        if runner is not None:
            try:
                runner.cancel()
            except Exception as cancel_exc:  # reported with the error, never raised on the relay
                exc.add_note(f"cancelling the MDA failed: {cancel_exc!r}")

    def _stored_chunking(
        self, settings: StreamSettings, layout: SequenceLayout, image_info: Mapping[str, Any]
    ) -> StreamSettings:
        """Continue a store with the chunks and shards it was written with, on every axis the caller
        did not set: the defaults depend on the sequence and on acqzarr's version, and a store
        written with others is otherwise refused as another dataset."""
        store = open_store(settings.store, s3=settings.s3)
        spec = spec_for(settings.version, settings.dimension_separator)
        stored = {d.get("name"): d for d in stored_dimensions(settings, store, spec) or []}
        chunks = dict(self._options.get("chunks") or {})
        shards = dict(self._options.get("shards") or {})
        adopted = False
        for asked in settings.arrays[0].dimensions:
            old = stored.get(asked.name, {})
            for given, field, value in ((chunks, "chunk", asked.chunk), (shards, "shard", asked.shard)):
                if asked.name not in given and isinstance(old.get(field), int):
                    given[asked.name] = old[field]  # every one: a default shard follows the chunk
                    adopted = adopted or old[field] != value
        if not adopted:
            return settings  # resume_points accepts the store as it is, or refuses it with the reasons
        return build_settings(
            layout, image_info, self.store, **{**self._options, "chunks": chunks, "shards": shards}
        )

    def _find_runner(self) -> Any:
        """The MDA runner to cancel on error: ``core.mda`` of the given core, else of the global one."""
        core = self._core
        if core is None:
            try:
                from pymmcore_plus import CMMCorePlus
            except ImportError:
                return None
            core = CMMCorePlus.instance()
            if not core.mda.is_running():
                logger.warning(
                    "MDAWriter(%r): CMMCorePlus.instance() is not running this MDA; pass core= so an "
                    "error while writing can cancel the run",
                    self.store,
                )
        return core.mda


def _source() -> dict[str, Any]:
    """The session record's ``source``: pymmcore-plus and useq versions."""
    from importlib.metadata import PackageNotFoundError, version

    source: dict[str, Any] = {"kind": "mda"}
    for package in ("pymmcore-plus", "useq-schema"):
        with contextlib.suppress(PackageNotFoundError):
            source[package] = version(package)
    return source
