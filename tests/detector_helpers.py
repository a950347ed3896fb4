"""A detector for the serve tests: a PUSH socket the test binds, and the wire its messages travel in.

Until the Stream V2/V1 decoders are in, the wire is a test framing: each
message is one ZeroMQ part holding the pickled model value
(``acqzarr.ingest.dectris.messages``), and ``FakeDecoder`` turns it back.
``encode`` and ``DECODERS`` are the one place that knows: switching the tests
to real Stream V2 bytes is making ``encode`` write CBOR and ``DECODERS`` None
(the server's own decoders).

``python tests/detector_helpers.py CONFIG`` runs ``acqzarr serve CONFIG`` with
the fake decoder, for the tests that kill a server process.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from acqzarr.ingest.dectris.messages import (
    DetectorEnd,
    DetectorImage,
    DetectorMessage,
    DetectorMessageError,
    DetectorStart,
    WireDecoder,
)

REFUSE = b"refuse:"  # a message the fake decoder refuses, with the reason that follows
MAGIC = b"acqzarr-test-wire:"  # before every pickled message: random bytes are never unpickled


class FakeDecoder:
    """The test framing's decoder: one part, MAGIC + a pickled model value; ``refuse:<reason>`` raises
    DetectorMessageError(reason), anything else that is not a model value is 'malformed'.
    ``expected`` lists what the server told it to expect (the real decoders' ``expect``)."""

    def __init__(self) -> None:
        self.expected: list[str | None] = []

    def expect(self, start: DetectorStart | None) -> None:
        self.expected.append(None if start is None else start.series_unique_id)

    def decode(self, parts: Sequence[bytes | memoryview]) -> DetectorMessage:
        if len(parts) != 1:
            raise DetectorMessageError("malformed", f"{len(parts)} parts, expected 1")
        data = bytes(parts[0])
        if data.startswith(REFUSE):
            raise DetectorMessageError(data[len(REFUSE) :].decode(), "refused by the decoder")
        if not data.startswith(MAGIC):  # (unpickling random bytes can take seconds)
            raise DetectorMessageError("malformed", "not a message of the test wire")
        try:
            value = pickle.loads(data[len(MAGIC) :])
        except Exception as exc:
            raise DetectorMessageError("malformed", f"not a message: {exc!r}") from None
        if not isinstance(value, DetectorStart | DetectorImage | DetectorEnd):
            raise DetectorMessageError("unknown_type", f"{type(value).__name__}")
        return value


def fake_decoders(protocol: str) -> WireDecoder:
    return FakeDecoder()


DECODERS: Callable[[str], WireDecoder] | None = fake_decoders


def encode(message: DetectorMessage) -> list[bytes]:
    """The ZeroMQ parts of ``message`` on the wire."""
    return [MAGIC + pickle.dumps(message)]


# -- Stream V2, written from the spec (dectris/documentation, stream_v2/README.md) ---------------
# RFC 8746 typed-array tags: (kind, itemsize, byte order) -> tag.
_TYPED_TAGS = {
    ("u", 1, "|"): 64,
    ("u", 2, ">"): 65,
    ("u", 4, ">"): 66,
    ("u", 8, ">"): 67,
    ("u", 2, "<"): 69,
    ("u", 4, "<"): 70,
    ("u", 8, "<"): 71,
    ("i", 1, "|"): 72,
    ("i", 2, ">"): 73,
    ("i", 4, ">"): 74,
    ("i", 8, ">"): 75,
    ("i", 2, "<"): 77,
    ("i", 4, "<"): 78,
    ("i", 8, "<"): 79,
    ("f", 4, ">"): 81,
    ("f", 8, ">"): 82,
    ("f", 4, "<"): 85,
    ("f", 8, "<"): 86,
}


def _typed(array: np.ndarray[Any, Any]) -> Any:
    """A numpy array as CBOR: a typed array (RFC 8746), inside tag 40 (a multi-dimensional array,
    row-major) when it has more than one axis."""
    import cbor2

    order = array.dtype.byteorder
    order = "<" if order == "=" and sys.byteorder == "little" else ">" if order == "=" else order
    tag = _TYPED_TAGS[(array.dtype.kind, array.dtype.itemsize, order)]
    flat = cbor2.CBORTag(tag, np.ascontiguousarray(array).tobytes())
    return flat if array.ndim == 1 else cbor2.CBORTag(40, [list(array.shape), flat])


def _rational(value: Fraction | None) -> list[int] | None:
    return None if value is None else [value.numerator, value.denominator]


def encode_stream2(message: DetectorMessage) -> list[bytes]:
    """``message`` as a Stream V2 message: one CBOR map per ZeroMQ message (uncompressed arrays)."""
    import cbor2

    ids = {"series_id": message.series_id, "series_unique_id": message.series_unique_id}
    if isinstance(message, DetectorStart):
        y, x = message.image_size
        doc: dict[str, Any] = {
            "type": "start",
            **ids,
            **message.fields,
            "channels": list(message.channels),
            "image_size_x": x,
            "image_size_y": y,
            "image_dtype": message.dtype.name,
            "number_of_images": message.number_of_images,
            "frame_time": message.frame_time_s,
            "threshold_energy": dict(message.threshold_energy_ev),
            "user_data": message.user_data,
        }
        if message.pixel_size_m is not None:
            doc["pixel_size_y"], doc["pixel_size_x"] = message.pixel_size_m
        for name, array in message.arrays.items():
            field, _, channel = name.partition("/")
            if channel:
                doc.setdefault(field, {})[channel] = _typed(array)
            else:
                doc[field] = _typed(array)
    elif isinstance(message, DetectorImage):
        doc = {
            "type": "image",
            **ids,
            "image_id": message.image_id,
            "data": {ch: _typed(a) for ch, a in message.data.items()},
            "real_time": _rational(message.real_time),
            "start_time": _rational(message.start_time),
            "stop_time": _rational(message.stop_time),
            "series_date": message.series_date,
            "user_data": message.user_data,
        }
    else:
        doc = {"type": "end", **ids, **message.fields}
    return [cbor2.dumps({k: v for k, v in doc.items() if v is not None})]


def have_stream2_decoder() -> bool:
    """Whether this installation decodes Stream V2 (``acqzarr.ingest.dectris.decoder_for``)."""
    import importlib

    return hasattr(importlib.import_module("acqzarr.ingest.dectris"), "decoder_for")


# -- a series --------------------------------------------------------------------------------
CHANNELS = ("threshold_1", "threshold_2")


def start(
    uid: str,
    n: int | None = 5,
    *,
    channels: tuple[str, ...] = CHANNELS,
    size: tuple[int, int] = (6, 8),
    dtype: str = "<u4",
    series_id: int = 7,
    with_arrays: bool = True,
) -> DetectorStart:
    """A start of series ``uid`` with masks, flat fields (unless not ``with_arrays``) and scalar fields."""
    y, x = size
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for i, ch in enumerate(channels if with_arrays else ()):
        mask = np.zeros(size, np.uint32)
        mask[1, 2 + i] = 1
        mask[y - 1, 0] = 2**31
        arrays[f"pixel_mask/{ch}"] = mask
        arrays[f"flatfield/{ch}"] = np.linspace(0.5, 1.5 + i, y * x, dtype=np.float32).reshape(size)
    if with_arrays:
        arrays["countrate_correction_lookup_table"] = np.arange(12, dtype=np.uint32) * 3
    return DetectorStart(
        series_id=series_id,
        series_unique_id=uid,
        image_size=size,
        dtype=np.dtype(dtype),
        channels=channels,
        number_of_images=n,
        pixel_size_m=(75e-6, 75e-6),
        frame_time_s=0.01,
        threshold_energy_ev={ch: 4000.0 + 1000 * i for i, ch in enumerate(channels)},
        fields={
            "incident_energy": 8041.0,
            "incident_wavelength": 1.5419,
            "detector_serial_number": "E-32-0123",
            "detector_description": "Dectris EIGER2 Si 1M",
            "sensor_material": "Si",
            "sensor_thickness": 0.00045,
            "beam_center_x": 512.5,
            "beam_center_y": 520.25,
            "count_time": 0.0099,
            "goniometer": {"omega": {"increment": 0.1, "start": 10.0}},
        },
        arrays=arrays,
        user_data={"sample": "lysozyme", "run": 3},
    )


def pixels(s: DetectorStart, image_id: int, channel: int) -> np.ndarray[Any, Any]:
    """The pixels of image ``image_id``, channel ``channel`` of series ``s``: all differ."""
    y, x = s.image_size
    base = np.arange(y * x, dtype=np.uint64).reshape(y, x) * 3 + image_id * 1000 + channel * 100_000
    return (base % (np.iinfo(s.dtype).max + 1)).astype(s.dtype)


def image(s: DetectorStart, image_id: int, **changes: Any) -> DetectorImage:
    fields: dict[str, Any] = {
        "series_id": s.series_id,
        "series_unique_id": s.series_unique_id,
        "image_id": image_id,
        "data": {ch: pixels(s, image_id, c) for c, ch in enumerate(s.channels)},
        "real_time": Fraction(99, 10_000),
        "start_time": Fraction(image_id, 100),
        "stop_time": Fraction(image_id, 100) + Fraction(99, 10_000),
        "series_date": "2026-12-07T06:00:00.000Z",
        "user_data": {"shot": image_id},
    }
    return DetectorImage(**{**fields, **changes})


def end(s: DetectorStart, **fields: Any) -> DetectorEnd:
    return DetectorEnd(series_id=s.series_id, series_unique_id=s.series_unique_id, fields=fields)


class Detector:
    """The detector's side: a PUSH socket bound on loopback (``endpoint``) that the server connects
    to, sending messages as ``wire`` encodes them (``encode``: the test wire)."""

    def __init__(self, endpoint: str, wire: Callable[[DetectorMessage], list[bytes]] = encode) -> None:
        self.endpoint = endpoint
        self.wire = wire
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock: zmq.Socket[bytes] | None = None
        self.bind()

    def bind(self) -> None:
        sock = self.ctx.socket(zmq.PUSH)
        sock.linger = 5000
        sock.sndtimeo = 30_000  # a server that never connects fails the test instead of hanging it
        for _ in range(100):  # the port of a socket just closed can take a moment to be free
            try:
                sock.bind(self.endpoint)
                break
            except zmq.ZMQError:
                time.sleep(0.05)
        else:
            sock.bind(self.endpoint)
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=5000)
            self.sock = None

    def send(self, message: DetectorMessage) -> None:
        assert self.sock is not None
        self.sock.send_multipart(self.wire(message))

    def send_raw(self, *parts: bytes) -> None:
        assert self.sock is not None
        self.sock.send_multipart(list(parts))

    def series(self, s: DetectorStart, order: Sequence[int] | None = None) -> None:
        """Start, every image (in ``order``), end."""
        self.send(s)
        ids = range(s.number_of_images or 0) if order is None else order
        for i in ids:
            self.send(image(s, i))
        self.send(end(s, images_sent=len(ids)))

    def term(self) -> None:
        self.close()
        self.ctx.term()


if __name__ == "__main__":  # a serve process with the fake decoder (tests that kill it)
    import logging

    from acqzarr.ingest.config import load_serve_config
    from acqzarr.ingest.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.path.insert(0, str(Path(__file__).parent))
    serve(load_serve_config(sys.argv[1]), decoders=DECODERS)
