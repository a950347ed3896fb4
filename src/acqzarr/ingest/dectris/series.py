"""One detector series in one store: what a start, its images and its end become in OME-Zarr.

The mapping, field by field (docs/protocol.md has the table for users):

* ``image_size`` -> the frame (y, x); ``image_dtype`` -> the array's dtype, in the machine's byte
  order (big-endian data is swapped on the way in); ``channels`` -> a ``c`` axis labelled with
  the channel names when there is more than one (one channel: no ``c`` axis, the image's one
  channel carries its name); ``number_of_images`` -> the ``t`` extent, unbounded when unknown.
* ``pixel_size`` (m) -> the y/x scales in micrometer; ``frame_time`` -> the t scale in seconds.
* ``image_id`` -> the t index: images may arrive in any order; an id that never arrives is a
  hole (fill value 0, counted as skipped in the session record).
* ``real_time``, ``start_time``, ``stop_time`` -> per-frame float64 columns in seconds
  (``<image>/acqzarr_frames/<name>``); ``series_date`` and the image's ``user_data`` -> the
  per-frame JSON column.
* The start's scalar fields -> the image's attributes under ``"dectris"`` (``ATTRIBUTES_KEY``);
  its arrays (``pixel_mask/<channel>``, ``flatfield/<channel>``, count-rate tables ...) -> Zarr
  arrays at ``<image>/dectris/<name>`` (``ARRAYS_GROUP``), never JSON.
* The end's fields and what arrived -> the session record's ``source``; ``completed`` only when
  the end was seen and every image arrived.

A series' memory is its stream's in-flight cap, the detector input's share
included (``DecodeBudget``): the messages waiting in the receive pipe and the
decode queue come out of the cap the stream would have had, so a detector
series holds no more than an acqzarr sender's series of the same frames.

The image is the store's root (key ''), so a viewer opens the series' store directly.  Opening
runs on an open thread; ``image`` on the server's receive thread; ``finalize`` on a finalize
thread.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import time
from collections import Counter
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ...engine.memory import plan_memory
from ...errors import ConfigError, FrameError, ProtocolError
from ...recording.lifecycle import End, Recording
from ...settings import SHARDED_VERSIONS, Channel, Dimension, StreamSettings
from ...settings.locations import is_s3
from ..config import DetectorInput, series_memory
from .messages import DetectorEnd, DetectorImage, DetectorMessageError, DetectorStart

__all__ = [
    "ARRAYS_GROUP",
    "ATTRIBUTES_KEY",
    "FRAME_COLUMNS",
    "IMAGE_KEY",
    "DecodeBudget",
    "DetectorSeries",
    "declared_dtype",
    "decode_budget",
    "queue_floor",
    "safe_name",
    "series_stream_settings",
    "store_path",
]

IMAGE_KEY = ""  # the image is the store's root
ATTRIBUTES_KEY = "dectris"  # the start's scalar fields, in the image's attributes
ARRAYS_GROUP = "dectris"  # the start's arrays: <image>/dectris/<name>
FRAME_COLUMNS = {"real_time": "float64", "start_time": "float64", "stop_time": "float64"}
_MAX_NAME = 120  # characters of one id in a store path
_UNKNOWN_ITEMSIZE = 4  # bytes a pixel is taken for while a start does not say (uint32, DECTRIS' widest)
_MESSAGE_FIELDS_BYTES = 64 << 10  # a message's bytes around its pixels: CBOR map, times, user data


def safe_name(value: object) -> str:
    """``value`` as one plain path segment: characters other than letters, digits, '_', '.', '-'
    become '_', a leading '.' or '-' too (so '..' is '_.'), at most 120 characters; 'none' for None."""
    text = "none" if value is None else str(value)
    out = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_.-") else "_" for ch in text)[:_MAX_NAME]
    if not out or out[0] in ".-":
        out = "_" + out[1:] if out else "_"
    return out


def store_path(detector: DetectorInput, root: str, start: DetectorStart) -> str:
    """Where the series of ``start`` goes: ``root`` / the detector's store template, the ids made
    plain names (``safe_name``); ProtocolError('bad_path') if it would still leave ``root``."""
    uid, sid = start.series_unique_id, start.series_id
    fields = {
        "detector": detector.name,
        "series_unique_id": safe_name(uid),
        "series_id": safe_name(sid),
        "series": safe_name(uid if uid is not None else sid),
        "date": dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S"),
    }
    relative = detector.store.format(**fields)
    if is_s3(root):
        return f"{root}/{relative}"
    path = Path(root) / relative
    base = Path(root).resolve()
    if not path.resolve().is_relative_to(base) or path.resolve() == base:
        raise ProtocolError("bad_path", f"series {uid or sid!r}: {relative!r} resolves outside the root")
    return str(path)


def declared_dtype(start: DetectorStart) -> np.dtype[Any] | None:
    """The dtype the start declares, or None when it does not say (Stream V2 before firmware
    2023.x has no ``image_dtype``): the series' first image then decides (the server opens the
    store with it)."""
    dtype: np.dtype[Any] | None = getattr(start, "dtype", None)
    return dtype


@dataclasses.dataclass(frozen=True)
class DecodeBudget:
    """What a detector input holds of a series outside its stream, in bytes, and why it is bounded.

    Each message is two things at once while it waits: its bytes as received (at most about a
    frame and its fields: DECTRIS compresses, and an uncompressed image is one frame) and, once
    decoded, the frame.  So a message is reckoned at ``message_bytes`` (two frames and 64 KiB)
    before it is taken, and the queue holds messages only while what is in it (received bytes,
    decoded frames, a frame for each still decoding) leaves room for one more
    (``queue_bytes``).  ``queue_messages`` (the
    decode threads and one decoded message waiting for the loop) are always taken, whatever
    their size, so the decoders never wait for a free place; ``queue_bytes`` is sized for them.
    The receive pipe holds ``pipe_messages``, the detector's ``rcvhwm``, each reckoned at a frame
    (the mark is set when the socket is made, before any frame size is known: libzmq 4.3 stalls
    a connected pipe whose mark changes, so it is small by default).  ``total`` comes out of
    the series' stream cap
    (``series_stream_settings``).  The decoders' own copies of the messages they decode (a few
    per decode thread, compressed) are not counted.
    """

    frame_bytes: int  # one image decoded: every channel
    queue_messages: int  # taken whatever their size: the decode threads, and one decoded waiting
    queue_bytes: int  # the images the decode queue holds at most: queue_messages of message_bytes
    pipe_messages: int  # the receive high-water mark: messages waiting in ZeroMQ's pipe
    # The start's arrays (masks, flat fields), received and decoded: the start waits in the queue
    # beside the first images until the loop applies it (4 MiB for a 512x512 pair of channels).
    start_bytes: int = 0

    @property
    def message_bytes(self) -> int:
        """What one more message is reckoned at before it is taken: received and decoded."""
        return 2 * self.frame_bytes + _MESSAGE_FIELDS_BYTES

    @property
    def queue_max_bytes(self) -> int:
        """The most the decode queue holds: its images, and the start while it waits among them."""
        return self.queue_bytes + self.start_bytes

    @property
    def total(self) -> int:
        """The bytes the input may hold for the series beside its stream: the queue's images and the
        receive pipe.  The start is left out: it waits in the queue only until the loop applies
        it, which opens the stream, so its arrays and the stream's bands are never held at once."""
        return self.queue_bytes + self.pipe_messages * self.frame_bytes


def queue_floor(detector: DetectorInput) -> int:
    """Messages the decode queue always takes, whatever their size (``DecodeBudget``): one
    decoding on each decode thread and one decoded, waiting for the loop."""
    return detector.decode_threads + 1


def decode_budget(detector: DetectorInput, start: DetectorStart) -> DecodeBudget:
    """The ``DecodeBudget`` of ``start``'s series on ``detector`` (a start without a dtype is
    reckoned at 4 bytes a pixel until its first image says)."""
    dtype = declared_dtype(start)
    itemsize = dtype.itemsize if dtype is not None else _UNKNOWN_ITEMSIZE
    y, x = start.image_size
    frame = y * x * itemsize * max(1, len(start.channels))
    messages = queue_floor(detector)
    return DecodeBudget(
        frame_bytes=frame,
        queue_messages=messages,
        queue_bytes=messages * (2 * frame + _MESSAGE_FIELDS_BYTES),
        pipe_messages=detector.rcvhwm,
        start_bytes=2 * sum(a.nbytes for a in start.arrays.values()) + _MESSAGE_FIELDS_BYTES,
    )


def series_stream_settings(
    detector: DetectorInput, start: DetectorStart, path: str, s3: Any
) -> StreamSettings:
    """The stream settings of a series (ProtocolError('bad_start') for a geometry no array takes).

    Its in-flight cap is the stream's default less what the detector input holds of the series
    (``DecodeBudget.total``), never below what the stream needs, so the series' memory on the
    server is the cap an acqzarr sender's series of the same frames would have."""
    dtype = declared_dtype(start)
    if dtype is None:
        raise DetectorMessageError("bad_start", "the series' dtype is not known yet")
    native = dtype.newbyteorder("=")
    y, x = start.image_size
    t_size = start.number_of_images or 0
    t_scale = start.frame_time_s if start.frame_time_s and math.isfinite(start.frame_time_s) else None
    shard = detector.chunks_per_shard if detector.version in SHARDED_VERSIONS else 1  # v2: no shards
    dims: list[Dimension] = [
        Dimension(
            name="t",
            kind="time",
            size=t_size,
            chunk=detector.frames_per_chunk,
            shard=shard,
            unit="second" if t_scale is not None else None,
            scale=t_scale if t_scale is not None else 1.0,
        )
    ]
    if len(start.channels) > 1:
        dims.append(Dimension(name="c", kind="channel", size=len(start.channels), chunk=1))
    pixel = start.pixel_size_m
    good = pixel is not None and all(math.isfinite(p) and p > 0 for p in pixel)
    for name, size, i in (("y", y, 0), ("x", x, 1)):
        scale = pixel[i] * 1e6 if good and pixel is not None else 1.0
        chunk = size if detector.tile is None else min(size, detector.tile[i])
        dims.append(
            Dimension(
                name=name,
                kind="space",
                size=size,
                chunk=chunk,
                shard=-(-size // chunk) if detector.version in SHARDED_VERSIONS else 1,  # whole frames
                unit="micrometer" if good else None,
                scale=scale,
            )
        )
    array = {
        "key": IMAGE_KEY,
        "dtype": native.name,
        "dimensions": dims,
        "compression": detector.compression,
        "channels": [Channel(label=name) for name in start.channels],
        "frame_columns": FRAME_COLUMNS,
    }
    fields = {
        "store": path,
        "version": detector.version,
        "arrays": [array],
        "s3": s3,
        "threads": detector.threads,
        "fsync": detector.fsync,
    }
    try:
        settings = StreamSettings.from_mapping(fields, source=f"detector {detector.name}")
        plan = plan_memory(settings)
        cap = max(plan.required, plan.default_cap - decode_budget(detector, start).total)
        return StreamSettings.from_mapping(
            {**fields, "max_inflight_bytes": cap}, source=f"detector {detector.name}"
        )
    except ConfigError as exc:
        raise DetectorMessageError("bad_start", f"no store takes this series: {exc}") from None


class DetectorSeries:
    """An open series of detector ``detector``: its recording, the images that arrived, the
    rejections, and what goes into the store and the session record."""

    def __init__(
        self,
        detector: DetectorInput,
        start: DetectorStart,
        settings: StreamSettings,
        max_series_memory: int,
    ) -> None:
        need = series_memory(settings)
        if need > max_series_memory:
            raise ProtocolError(
                "bad_start",
                f"the series would reserve {need} bytes; max_series_memory is {max_series_memory}",
            )
        self.detector = detector
        self.start = start
        self.settings = settings
        self.id = str(start.series_unique_id if start.series_unique_id is not None else start.series_id)
        self.store = settings.store
        dtype = declared_dtype(start)
        if dtype is None:
            raise DetectorMessageError("bad_start", "the series' dtype is not known")
        self.native = dtype.newbyteorder("=")
        self.channels = start.channels
        self.received = 0  # image messages for this series
        self.written = 0
        self.rejected: Counter[str] = Counter()
        self.seen: set[int] = set()
        self.highest = -1  # the highest image_id taken
        self.last_activity = time.monotonic()
        self.recording = Recording(settings, source=self.source(None, None))
        try:
            self._describe()
        except BaseException:
            self.recording.stream.close()
            raise
        # Its arrays are in the store now; a 4M detector's masks and flat fields are ~50 MiB the
        # series would otherwise hold to its end, outside its cap.
        self.start = dataclasses.replace(start, arrays={})

    def _describe(self) -> None:
        """The start's scalar fields into the image's attributes, its arrays into the store."""
        start = self.start
        stream = self.recording.stream
        arrays: dict[str, str] = {}
        for name, data in start.arrays.items():
            path = f"{ARRAYS_GROUP}/" + "/".join(safe_name(part) for part in name.split("/"))
            names = ("y", "x") if np.ndim(data) == 2 else None
            stream.write_array(path, data, key=IMAGE_KEY, dimension_names=names)
            arrays[name] = path
        block = {
            **{k: _plain(v) for k, v in start.fields.items()},
            "protocol": self.detector.protocol,
            "detector": self.detector.name,
            "series_id": start.series_id,
            "series_unique_id": start.series_unique_id,
            "image_size": list(start.image_size),
            "image_dtype": self.native.name,
            "channels": list(start.channels),
            "threshold_energy_ev": {k: _plain(v) for k, v in start.threshold_energy_ev.items()},
            "number_of_images": start.number_of_images,
            "pixel_size_m": None if start.pixel_size_m is None else [_plain(p) for p in start.pixel_size_m],
            "frame_time_s": _plain(start.frame_time_s),
            "user_data": _plain(start.user_data),
            "arrays": arrays,
        }
        stream.write_metadata({ATTRIBUTES_KEY: block}, key=IMAGE_KEY)

    def matches(self, series_id: int | None, series_unique_id: str | None) -> bool:
        """Whether a message with these ids belongs to this series (an id a message leaves out
        matches)."""
        s = self.start
        return (series_id is None or s.series_id is None or series_id == s.series_id) and (
            series_unique_id is None or s.series_unique_id is None or series_unique_id == s.series_unique_id
        )

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def image(self, image: DetectorImage) -> None:
        """Check and append every channel of ``image`` at t = image_id; ProtocolError if it cannot
        be taken (nothing of it is written then, but for a writer that fails mid-way)."""
        self.received += 1
        n = self.start.number_of_images
        iid = image.image_id
        if iid < 0 or (n is not None and iid >= n):
            raise ProtocolError("bad_image", f"image_id {iid} outside the series' {n} images")
        if iid in self.seen:
            raise ProtocolError("duplicate_image", f"image_id {iid} arrived already")
        highest = self.highest
        if iid > highest + self.detector.max_id_jump:
            raise ProtocolError(
                "bad_image",
                f"image_id {iid} jumps more than max_id_jump ({self.detector.max_id_jump}) past the highest "
                f"image so far ({highest})",
            )
        if set(image.data) != set(self.channels):
            raise ProtocolError(
                "bad_image",
                f"image {iid} has channels {sorted(image.data)}, the series {list(self.channels)}",
            )
        frames = []
        for name in self.channels:
            frame = image.data[name]
            if frame.shape != self.start.image_size or frame.dtype.newbyteorder("=") != self.native:
                raise ProtocolError(
                    "bad_image",
                    f"image {iid} channel {name!r}: {frame.shape} {frame.dtype}, the series takes "
                    f"{self.start.image_size} {self.native}",
                )
            frames.append(frame if frame.dtype.isnative else frame.astype(self.native))
        meta: dict[str, Any] = {
            "real_time": _seconds(image.real_time),
            "start_time": _seconds(image.start_time),
            "stop_time": _seconds(image.stop_time),
        }
        if image.series_date is not None:
            meta["series_date"] = image.series_date
        if image.user_data is not None:
            meta["user_data"] = _plain(image.user_data)
        extra = getattr(image, "fields", None)  # any other field of the image (a decoder may give them)
        if extra:
            meta["fields"] = _plain(extra)
        several = len(self.channels) > 1
        for c, frame in enumerate(frames):
            index = {"t": iid, "c": c} if several else {"t": iid}
            try:
                self.recording.append(frame, IMAGE_KEY, meta, index=index)
            except FrameError as exc:
                if c == 0:
                    raise ProtocolError("bad_image", str(exc)) from None
                raise  # a later channel failed after an earlier one landed: the writer's fault
        self.seen.add(iid)
        self.highest = max(self.highest, iid)
        self.written += 1

    def complete(self, end: str) -> bool:
        """The end was seen and every image arrived."""
        n = self.start.number_of_images
        expected = n if n is not None else (max(self.seen) + 1 if self.seen else 0)
        return end == "series_end" and self.written == expected

    def source(self, end: str | None, end_message: DetectorEnd | None) -> dict[str, Any]:
        """The session record's ``source``: the detector, the series and what happened to it."""
        n = self.start.number_of_images
        return {
            "kind": "serve",
            "protocol": self.detector.protocol,
            "detector": self.detector.name,
            "connect": self.detector.connect,
            "series_id": self.start.series_id,
            "series_unique_id": self.start.series_unique_id,
            "end": end,
            "images_expected": n,
            "images_received": self.received,
            "images_written": self.written,
            "images_missing": None if n is None else n - self.written,
            "rejected": dict(sorted(self.rejected.items())),
            "end_fields": None
            if end_message is None
            else {k: _plain(v) for k, v in end_message.fields.items()},
        }

    def flushed(self) -> int:
        """Images whose every channel is stored (in the order the stream stores them)."""
        return self.recording.stream.stats(IMAGE_KEY).frames_flushed // len(self.channels)

    def bytes_written(self) -> int:
        return self.recording.stream.stats(IMAGE_KEY).bytes_written

    def summary(self, end: str) -> dict[str, Any]:
        """What the status lists of a finalized series (``recent_series``), before the close's
        own figures; the keys of an acqzarr-protocol series' summary, and the detector's."""
        return {
            "series_id": self.id,
            "detector": self.detector.name,
            "store": self.store,
            "end": end,
            "completed": False,
            "frames_total": self.written,  # images (each with every channel)
            "images_expected": self.start.number_of_images,
            "gaps": 0,  # PUSH/PULL loses nothing; missing images are images_expected - frames_total
            "rejected": dict(sorted(self.rejected.items())),
            "bytes_written": 0,
            "sender_start_ns": None,
            "start": None,
            "stop": None,
        }

    def finalize(self, end: str, end_message: DetectorEnd | None) -> dict[str, Any]:
        """Write the session record's end and close the stream; the series' summary (with
        ``error`` when that failed: never raised).  ``end``: series_end, idle_timeout,
        new_series, write_error or shutdown."""
        completed = self.complete(end)
        summary = {**self.summary(end), "completed": completed}
        try:
            self.recording.finish({IMAGE_KEY: End(completed, {"source": self.source(end, end_message)})})
        except Exception as exc:  # the server goes on; the summary says it
            summary.update(completed=False, error=repr(exc))
        try:
            summary["bytes_written"] = self.bytes_written()
            record = self.recording.stream.session(IMAGE_KEY)
            summary.update(start=record["start"], stop=record["stop"], skipped=record.get("frames_skipped"))
        except Exception:  # the record itself failed: what is known still goes out
            pass
        return summary


def _seconds(value: Fraction | float | None) -> float | None:
    return None if value is None else float(value)


def _plain(value: Any) -> Any:
    """A value as JSON takes it: numpy scalars and arrays as numbers and lists, fractions as
    floats, non-finite floats as None (JSON has none), anything else unknown as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float | Fraction):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)
