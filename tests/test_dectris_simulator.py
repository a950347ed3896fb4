"""The DECTRIS detector simulator (drivers/acqzarr_drivers/dectris.py) sends what the specs say.

Every message is decoded here by a decoder written in this file from the specs alone
(``stream_v2/README.md``, ``cbor/dectris-compression-tag.md``, RFC 8746 for the typed arrays;
Stream V1's public descriptions) with cbor2 and DECTRIS's own ``dectris.compression.decompress``,
and compared with the frames the simulator was asked to send, pixel for pixel.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import cbor2
import numpy as np
import pytest
import zmq
from acqzarr_drivers.dectris import (
    DetectorSimulator,
    DetectorSimulatorOptions,
    NoReceiver,
    counting_frames,
    detector_mask,
    pool_frame,
)
from acqzarr_drivers.dectris_wire import bslz4, lz4_hdf5
from dectris.compression import decompress
from pydantic import ValidationError

from acqzarr.cli import main
from ingest_helpers import free_port

# -- an independent Stream V2 decoder, from the spec -------------------------------------------
_TYPED = {64: "u1", 65: ">u2", 66: ">u4", 67: ">u8", 68: "u1", 69: "<u2", 70: "<u4", 71: "<u8",
          72: "i1", 73: ">i2", 74: ">i4", 75: ">i8", 77: "<i2", 78: "<i4", 79: "<i8",
          80: ">f2", 81: ">f4", 82: ">f8", 84: "<f2", 85: "<f4", 86: "<f8"}  # fmt: skip
SEEN_TAGS: set[int] = set()


def _tag_hook(tag: cbor2.CBORTag, immutable: bool) -> Any:
    SEEN_TAGS.add(tag.tag)
    if tag.tag == 56500:  # [algorithm, element size, compressed bytes] -> the bytes it stands for
        algorithm, elem_size, encoded = tag.value
        return decompress(encoded, algorithm, elem_size=elem_size)
    if tag.tag in _TYPED:
        assert isinstance(tag.value, bytes), f"typed array tag {tag.tag} holds {type(tag.value)}"
        return np.frombuffer(tag.value, _TYPED[tag.tag])
    if tag.tag in (40, 1040):  # multi-dimensional array: [dimensions, typed array]
        dims, contents = tag.value
        return contents.reshape(dims, order="F" if tag.tag == 1040 else "C")
    return tag


def decode_v2(message: bytes) -> dict[str, Any]:
    out: dict[str, Any] = cbor2.loads(message, tag_hook=_tag_hook)
    assert next(iter(out)) == "type", "a Stream V2 map begins with the key 'type'"
    return out


def _rational(value: Any) -> Fraction:
    assert isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)
    return Fraction(value[0], value[1])


# Every field of the spec's start message and its type (Float: float, Integer: int, ...).
START_FIELDS: dict[str, Any] = {
    "arm_date": dt.datetime, "beam_center_x": float, "beam_center_y": float, "channels": list,
    "count_time": float, "countrate_correction_enabled": bool,
    "countrate_correction_lookup_table": np.ndarray, "detector_description": str,
    "detector_serial_number": str, "detector_translation": list, "flatfield": dict,
    "flatfield_enabled": bool, "frame_time": float, "goniometer": dict, "image_dtype": str,
    "image_size_x": int, "image_size_y": int, "incident_energy": float,
    "incident_wavelength": float, "number_of_images": int, "pixel_mask": dict,
    "pixel_mask_enabled": bool, "pixel_size_x": float, "pixel_size_y": float,
    "saturation_value": int, "sensor_material": str, "sensor_thickness": float, "series_id": int,
    "series_unique_id": str, "threshold_energy": dict, "user_data": object,
    "virtual_pixel_interpolation_enabled": bool,
}  # fmt: skip


# -- running the simulator against a PULL socket -------------------------------------------------
class Run:
    """The simulator in a thread, bound to a free loopback port; ``messages()`` receives."""

    def __init__(self, **options: Any) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.options = DetectorSimulatorOptions(bind=self.endpoint, connect_timeout=30, **options)
        self.sim = DetectorSimulator(self.options, say=lambda _: None)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.sim.run()
        except BaseException as exc:
            self.errors.append(exc)

    def messages(self, count: int) -> Iterator[list[bytes]]:
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.connect(self.endpoint)
        self.thread.start()
        try:
            for _ in range(count):
                assert pull.poll(30_000), f"nothing received; simulator errors: {self.errors}"
                yield pull.recv_multipart()
        finally:
            pull.close(0)
            ctx.term()
            self.thread.join(30)
        assert not self.errors


def expected(o: DetectorSimulatorOptions) -> np.ndarray:
    return counting_frames(o.pool, o.height, o.width, o.dtype, o.channels, o.seed, o.mean_counts)


# -- compression ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_bslz4_and_lz4_payloads_decompress_with_dectris_compression(dtype: str) -> None:
    frames = counting_frames(1, 70, 90, dtype)[0, 0]
    noise = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, (33, 17), dtype=dtype)  # incompressible
    for a in (frames, noise, frames[:1, :3]):
        a = np.ascontiguousarray(a)
        packed = bslz4(a)
        assert int.from_bytes(packed[:8], "big") == a.nbytes
        assert int.from_bytes(packed[8:12], "big") == 8192  # block size in bytes
        assert decompress(packed, "bslz4", elem_size=a.itemsize) == a.tobytes()
        assert decompress(lz4_hdf5(a.data), "lz4") == a.tobytes()


def test_counting_frames_look_like_an_eiger() -> None:
    f = counting_frames(2, 1062, 1028, "uint32", channels=2)
    mask = detector_mask(1062, 1028)
    assert f.shape == (2, 2, 1062, 1028) and f.dtype == np.uint32
    gap = (mask & 1) != 0
    assert gap.sum() == 38 * 1028  # one gap of 38 rows between the two modules of a 1M
    assert (f[:, :, mask != 0] == 2**32 - 1).all()  # NODATA where masked
    counts = f[:, :, mask == 0]
    assert 1 <= np.median(counts[:, 0]) <= 4 and counts.max() <= 1_000_000
    assert (counts[:, 1] <= counts[:, 0]).all() and counts[:, 1].mean() < counts[:, 0].mean() / 2
    assert np.array_equal(f, counting_frames(2, 1062, 1028, "uint32", channels=2))  # deterministic
    assert len(bslz4(f[0, 0])) < f[0, 0].nbytes / 8  # compresses as counting data does


# -- Stream V2 -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("compression", "dtype", "channels", "byte_order"),
    [
        ("bslz4", "uint32", 2, "little"),
        ("bslz4", "uint16", 1, "big"),
        ("lz4", "uint16", 2, "little"),
        ("none", "uint8", 1, "little"),
    ],
)
def test_stream2_series_decodes_to_the_frames_sent(
    compression: str, dtype: str, channels: int, byte_order: str
) -> None:
    run = Run(frames=5, width=60, height=44, dtype=dtype, channels=channels, pool=3,
              compression=compression, byte_order=byte_order, series=2, series_id=7)  # fmt: skip
    o, want = run.options, expected(run.options)
    names = [f"threshold_{k + 1}" for k in range(channels)]
    SEEN_TAGS.clear()
    msgs = [m for m in run.messages(2 * (o.frames + 2))]
    assert all(len(m) == 1 for m in msgs), "Stream V2: one ZeroMQ part per message"
    decoded = [decode_v2(m[0]) for m in msgs]
    assert 0 not in SEEN_TAGS  # cbor2 decodes tag 0 itself; checked below as datetime
    for k in range(2):
        start, *images, end = decoded[k * (o.frames + 2) : (k + 1) * (o.frames + 2)]
        assert start["type"] == "start" and end["type"] == "end"
        assert set(START_FIELDS) <= set(start), set(START_FIELDS) - set(start)
        for name, kind in START_FIELDS.items():
            assert isinstance(start[name], kind), (name, type(start[name]))
        assert start["series_id"] == 7 + k and end["series_id"] == 7 + k
        assert start["series_unique_id"] == end["series_unique_id"]
        assert start["image_size_x"] == 60 and start["image_size_y"] == 44 and start["image_dtype"] == dtype
        assert start["channels"] == names and start["number_of_images"] == 5
        assert set(start["threshold_energy"]) == set(names)
        assert all(isinstance(v, float) for v in start["threshold_energy"].values())
        assert start["arm_date"].tzinfo is not None
        assert all(isinstance(v, float) for v in start["detector_translation"])
        assert all(set(axis) == {"start", "increment"} for axis in start["goniometer"].values())
        assert start["user_data"] == {"source": "acqzarr simulate-detector"}
        for c in names:
            assert start["pixel_mask"][c].dtype == np.dtype("<u4")
            assert np.array_equal(start["pixel_mask"][c], detector_mask(44, 60))
            assert start["flatfield"][c].shape == (44, 60) and start["flatfield"][c].dtype == np.dtype("<f4")
        table = start["countrate_correction_lookup_table"]  # a TypedArray: one dimension
        assert table.ndim == 1 and table.dtype == np.dtype("<u4")
        assert (np.diff(table.astype(np.int64)) > 0).all()
        for i, img in enumerate(images):
            assert img["type"] == "image" and img["image_id"] == i and img["series_id"] == 7 + k
            assert img["series_unique_id"] == start["series_unique_id"]
            assert isinstance(img["series_date"], dt.datetime)
            t0, t1, real = (_rational(img[f]) for f in ("start_time", "stop_time", "real_time"))
            assert t1 - t0 == real and float(real) == pytest.approx(start["count_time"])
            assert float(t0) == pytest.approx(i * start["frame_time"])
            assert img["user_data"] == {"pool_frame": pool_frame(i, o.pool)}
            assert list(img["data"]) == names
            for c, name in enumerate(names):
                got = img["data"][name]
                assert got.shape == (44, 60)
                assert got.dtype == np.dtype(dtype).newbyteorder("<" if byte_order == "little" else ">")
                assert np.array_equal(got, want[pool_frame(i, o.pool), c]), (i, name)
    assert {40, 56500 if compression != "none" else 40} <= SEEN_TAGS
    report = run.sim.report
    assert report.images == 10 and report.series == 2


def test_basic_header_detail_leaves_out_masks_flatfields_and_tables() -> None:
    run = Run(frames=1, width=16, height=8, header_detail="basic")
    start = decode_v2(next(iter(run.messages(3)))[0])
    assert not {"pixel_mask", "flatfield", "countrate_correction_lookup_table"} & set(start)
    assert start["image_size_x"] == 16


# -- Stream V1 -----------------------------------------------------------------------------------
def _v1_pixels(info: dict[str, Any], data: bytes) -> np.ndarray:
    """V1 image data from its ``dimage_d-1.0`` part: shape is [x, y], encoding bsNN-lz4< (bitshuffle
    HDF5 framing), lz4< (one bare LZ4 block) or < (raw little-endian)."""
    dtype = np.dtype(info["type"]).newbyteorder("<")
    width, height = info["shape"]
    assert info["size"] == len(data)
    enc = info["encoding"]
    if enc.startswith("bs") and enc.endswith("-lz4<"):
        assert enc == f"bs{dtype.itemsize * 8}-lz4<"
        raw = decompress(data, "bslz4", elem_size=dtype.itemsize)
    elif enc == "lz4<":
        # A bare LZ4 block, framed for dectris' HDF5-LZ4 decompressor: size, one block, its length.
        nbytes = width * height * dtype.itemsize
        framed = nbytes.to_bytes(8, "big") + nbytes.to_bytes(4, "big") + len(data).to_bytes(4, "big") + data
        raw = decompress(framed, "lz4")
    else:
        assert enc == "<"
        raw = data
    return np.frombuffer(raw, dtype).reshape(height, width)


@pytest.mark.parametrize(
    ("compression", "dtype"), [("bslz4", "uint32"), ("lz4", "uint16"), ("none", "uint16")]
)
def test_stream1_series_decodes_to_the_frames_sent(compression: str, dtype: str) -> None:
    import hashlib

    run = Run(protocol="dectris-stream1", frames=4, width=36, height=20, dtype=dtype, pool=2,
              compression=compression, series_id=3)  # fmt: skip
    o, want = run.options, expected(run.options)
    header, *images, end = list(run.messages(o.frames + 2))
    h0 = json.loads(header[0])
    assert h0 == {"htype": "dheader-1.0", "series": 3, "header_detail": "all"}
    config = json.loads(header[1])
    assert config["x_pixels_in_detector"] == 36 and config["y_pixels_in_detector"] == 20
    assert config["nimages"] == 4 and config["bit_depth_image"] == np.dtype(dtype).itemsize * 8
    for key in ("count_time", "frame_time", "photon_energy", "wavelength", "x_pixel_size", "y_pixel_size",
                "beam_center_x", "beam_center_y", "threshold_energy", "sensor_thickness"):  # fmt: skip
        assert isinstance(config[key], float), key
    assert isinstance(config["description"], str) and isinstance(config["detector_number"], str)
    tables = {json.loads(header[j])["htype"]: (json.loads(header[j]), header[j + 1]) for j in (2, 4, 6)}
    assert set(tables) == {"dflatfield-1.0", "dpixelmask-1.0", "dcountrate_table-1.0"}
    info, blob = tables["dpixelmask-1.0"]
    assert info["shape"] == [36, 20] and info["type"] == "uint32"
    assert np.array_equal(np.frombuffer(blob, "<u4").reshape(20, 36), detector_mask(20, 36))
    assert json.loads(header[8]) == o.header_appendix  # the header appendix, last
    assert len(header) == 9
    for i, parts in enumerate(images):
        assert len(parts) == 5
        p1, p2, data, p4, appendix = parts
        d1, d2, d4 = json.loads(p1), json.loads(p2), json.loads(p4)
        assert d1["htype"] == "dimage-1.0" and d1["series"] == 3 and d1["frame"] == i
        assert d1["hash"] == hashlib.md5(data).hexdigest()
        assert d2["htype"] == "dimage_d-1.0" and d2["type"] == dtype
        assert np.array_equal(_v1_pixels(d2, data), want[pool_frame(i, o.pool), 0])
        assert d4["htype"] == "dconfig-1.0"
        assert all(isinstance(d4[k], int) for k in ("start_time", "stop_time", "real_time"))
        assert d4["stop_time"] - d4["start_time"] == d4["real_time"]
        assert d4["start_time"] == pytest.approx(i * o.frame_time * 1e9, abs=1)
        assert json.loads(appendix) == {"pool_frame": pool_frame(i, o.pool)}
    assert [json.loads(p) for p in end] == [{"htype": "dseries_end-1.0", "series": 3}]


def test_stream1_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValidationError, match="one threshold channel"):
        DetectorSimulatorOptions(protocol="dectris-stream1", channels=2)
    with pytest.raises(ValidationError, match="little-endian"):
        DetectorSimulatorOptions(protocol="dectris-stream1", byte_order="big")


def test_without_a_receiver_it_stops_after_the_timeout() -> None:
    options = DetectorSimulatorOptions(bind=f"tcp://127.0.0.1:{free_port()}", connect_timeout=0.2, frames=1,
                                       width=8, height=8)  # fmt: skip
    with pytest.raises(NoReceiver, match="no receiver connected"):
        DetectorSimulator(options, say=lambda _: None).run()


# -- the command ---------------------------------------------------------------------------------
def test_simulate_detector_command_waits_then_sends(capsys: pytest.CaptureFixture[str]) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    argv = ["simulate-detector", "--protocol", "dectris-stream2", "--bind", endpoint, "--frames", "3",
            "--size", "40x24", "--dtype", "uint16", "--channels", "2", "--fps", "200", "--series", "1",
            "--connect-timeout", "30"]  # fmt: skip
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(main(argv)), daemon=True)
    thread.start()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(endpoint)
    try:
        got = []
        for _ in range(5):
            assert pull.poll(30_000)
            got.append(decode_v2(pull.recv()))
    finally:
        pull.close(0)
        ctx.term()
    thread.join(30)
    assert codes == [0]
    assert [m["type"] for m in got] == ["start", "image", "image", "image", "end"]
    assert got[0]["image_size_x"] == 40 and got[0]["image_size_y"] == 24  # --size is WIDTHxHEIGHT
    assert got[0]["frame_time"] == pytest.approx(1 / 200)
    want = counting_frames(4, 24, 40, "uint16", channels=2)
    assert np.array_equal(got[3]["data"]["threshold_2"], want[2, 1])
    out = capsys.readouterr().out
    assert "waiting for a receiver to connect" in out and endpoint in out
    assert "sent 3 images" in out


def test_simulate_detector_command_refuses_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate-detector", "--protocol", "dectris-stream1", "--channels", "2"]) == 2
    assert "one threshold channel" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate-detector", "--size", "1028"])
