"""The DECTRIS decoders against an independent sender written from the specs (``dectris_spec.py``).

Pixel-exact round trips for every pixel type, byte order, array tag and compression; the start's
fields one by one; every kind of bad input rejected with its reason and nothing else raised.
"""

from __future__ import annotations

import json
import os
import random
import struct
import sys
import time
from fractions import Fraction
from pathlib import Path

import bitshuffle
import cbor2
import numpy as np
import pytest

from acqzarr.errors import ConfigError
from acqzarr.ingest.dectris import decoder_for
from acqzarr.ingest.dectris.compression import (
    MAX_PAYLOAD_BYTES,
    decompress_tag,
    decompress_v1,
    parse_v1_encoding,
)
from acqzarr.ingest.dectris.messages import (
    DetectorEnd,
    DetectorImage,
    DetectorMessageError,
    DetectorStart,
)
from acqzarr.ingest.dectris.stream1 import V1_CHANNEL, Stream1Decoder
from acqzarr.ingest.dectris.stream2 import Stream2Decoder
from dectris_spec import (
    CBORTag,
    bslz4,
    eiger_start,
    end_message,
    hdf5_lz4,
    image_message,
    multidim,
    poisson_frame,
    raw_lz4,
    start_message,
    typed_array,
    v1_config,
    v1_end,
    v1_header,
    v1_image,
)

DTYPES = ["uint8", "uint16", "uint32"]
# Stream V2 messages a DECTRIS EIGER2 Si 16M sent (series 15614, 2023-10-03, Diamond Light Source),
# as DiamondLightSource/tickit-devices publishes them (src/tickit_devices/eiger/data/stream2/,
# Apache-2.0: start.cbor, image.cbor, end.cbor).  Third-party data is not committed here: the test
# runs where they are placed beside the project (shared/dectris_stream2_eiger2_16m) or named by
# ACQZARR_CAPTURED_STREAM2, and is skipped, saying so, elsewhere.
CAPTURED = Path(
    os.environ.get(
        "ACQZARR_CAPTURED_STREAM2",
        Path(__file__).resolve().parents[2] / "shared" / "dectris_stream2_eiger2_16m",
    )
)


def reason_of(fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(DetectorMessageError) as info:
        fn(*args, **kwargs)
    return info.value.reason


# -- 1. compression -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_bslz4_tag_round_trip_every_dtype(dtype: str) -> None:
    frame = poisson_frame((37, 53), dtype)  # not a whole number of 8-item groups: the tail is raw
    payload = bslz4(frame)
    out = decompress_tag(["bslz4", frame.itemsize, payload])
    assert np.array_equal(np.frombuffer(out, frame.dtype).reshape(frame.shape), frame)


@pytest.mark.parametrize("size", [0, 1, 100, 8192, 8193, 50_000])
def test_lz4_tag_round_trip_hdf5_framing(size: int) -> None:
    rng = np.random.default_rng(size)
    data = rng.poisson(0.5, size).astype(np.uint8).tobytes()
    assert decompress_tag(["lz4", 0, hdf5_lz4(data, block_bytes=4096)]) == data


def test_lz4_tag_incompressible_block_stored_as_is() -> None:
    data = np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    framed = hdf5_lz4(data, block_bytes=8192)
    assert struct.unpack(">I", framed[12:16])[0] == 8192  # stored: its length is the block size
    assert decompress_tag(["lz4", 0, framed]) == data


def test_truncated_and_corrupt_payloads_are_bad_compression() -> None:
    frame = poisson_frame((64, 64), "uint16", mean=3.0)
    payload = bslz4(frame)
    for cut in (0, 5, 11, 12, 20, len(payload) // 2, len(payload) - 1):
        assert reason_of(decompress_tag, ["bslz4", 2, payload[:cut]]) == "bad_compression"
    corrupt = bytearray(payload)
    corrupt[12:16] = struct.pack(">I", 10**6)  # the first block's length runs past the end
    assert reason_of(decompress_tag, ["bslz4", 2, bytes(corrupt)]) == "bad_compression"
    for value in (["bslz4", 3, payload], ["bslz4", 2, "text"], ["zstd", 0, payload], ["bslz4", 2], 7):
        assert reason_of(decompress_tag, value) == "bad_compression"


def test_declared_sizes_are_checked_before_allocating() -> None:
    frame = poisson_frame((64, 64), "uint32")
    payload = bslz4(frame)
    huge = struct.pack(">Q", 1 << 62) + payload[8:]
    assert reason_of(decompress_tag, ["bslz4", 4, huge]) == "bad_compression"
    # A size LZ4 could not expand these bytes to, though under the cap: refused, not tried.
    inflated = struct.pack(">Q", 512 * len(payload)) + payload[8:]
    with pytest.raises(DetectorMessageError, match="impossible"):
        decompress_tag(["bslz4", 4, inflated])
    # The caller's cap (one frame of the series).
    assert reason_of(decompress_tag, ["bslz4", 4, payload], max_bytes=frame.nbytes - 4) == "bad_compression"
    wrong = struct.pack(">Q", frame.nbytes + 4) + payload[8:]
    assert reason_of(decompress_tag, ["bslz4", 4, wrong]) == "bad_compression"
    assert MAX_PAYLOAD_BYTES == 4 << 30


@pytest.mark.parametrize(
    ("encoding", "shuffle", "lz4", "order"),
    [("<", None, False, "<"), (">", None, False, ">"), ("lz4<", None, True, "<"),
     ("bs32-lz4<", 4, True, "<"), ("bs16-lz4<", 2, True, "<"), ("bs8-lz4<", 1, True, "<")],
)  # fmt: skip
def test_v1_encodings_parse(encoding: str, shuffle: int | None, lz4: bool, order: str) -> None:
    parsed = parse_v1_encoding(encoding)
    assert (parsed.shuffle_bytes, parsed.lz4, parsed.byteorder) == (shuffle, lz4, order)


@pytest.mark.parametrize("bad", ["", "zip<", "bs12-lz4<", "bs32<", "lz4", None, 5])
def test_v1_bad_encodings(bad: object) -> None:
    assert reason_of(parse_v1_encoding, bad) == "bad_compression"


def test_v1_lz4_raw_block_and_hdf5_framed() -> None:
    frame = poisson_frame((30, 40), "uint32")
    raw = frame.tobytes()
    enc = parse_v1_encoding("lz4<")
    assert decompress_v1(enc, raw_lz4(raw), len(raw), "x") == raw
    assert decompress_v1(enc, hdf5_lz4(raw), len(raw), "x") == raw
    assert reason_of(decompress_v1, enc, raw_lz4(raw)[:-3], len(raw), "x") == "bad_compression"
    assert reason_of(decompress_v1, enc, raw_lz4(raw), len(raw) + 4, "x") == "bad_compression"
    assert reason_of(decompress_v1, parse_v1_encoding("<"), raw[:-1], len(raw), "x") == "bad_compression"


# -- 2. Stream V2 -------------------------------------------------------------------------------


def decode2(message: bytes, decoder: Stream2Decoder | None = None):  # type: ignore[no-untyped-def]
    return (decoder or Stream2Decoder()).decode([message])


def test_start_fields_one_by_one() -> None:
    fields, arrays = eiger_start(64, 48, "uint32", ("threshold_1", "threshold_2"), ntrigger=3)
    start = decode2(start_message(**fields))
    assert isinstance(start, DetectorStart)
    assert start.series_id == 7
    assert start.series_unique_id == "6b0b8f4e-series-7"
    assert start.image_size == (48, 64)
    assert start.dtype == np.dtype("<u4")
    assert start.channels == ("threshold_1", "threshold_2")
    assert start.number_of_images == 15  # 5 images x 3 triggers
    assert start.pixel_size_m == (7.5e-05, 7.5e-05)
    assert start.frame_time_s == 0.01
    assert start.threshold_energy_ev == {"threshold_1": 6200.0, "threshold_2": 7200.0}
    assert start.user_data == {"sample": "lysozyme", "run": 3}
    expected = {
        "arm_date": "2026-12-07T06:00:00.125000+00:00",
        "beam_center_x": 31.5,
        "beam_center_y": 22.25,
        "count_time": 0.0099,
        "countrate_correction_enabled": True,
        "detector_description": "Dectris EIGER2 Si 1M",
        "detector_serial_number": "E-32-0100",
        "detector_translation": [0.0, 0.0, 0.12],
        "flatfield_enabled": True,
        "goniometer": {"omega": {"increment": 0.1, "start": 10.0}, "phi": {"increment": 0.0, "start": 0.0}},
        "incident_energy": 12398.4,
        "incident_wavelength": 1.0,
        "pixel_mask_enabled": True,
        "saturation_value": 1048575,
        "sensor_material": "Si",
        "sensor_thickness": 0.00045,
        "virtual_pixel_interpolation_enabled": False,
    }
    assert dict(start.fields) == expected
    json.dumps(start.fields)  # JSON-able as it is
    assert sorted(start.arrays) == sorted(arrays)
    for name, array in arrays.items():
        got = start.arrays[name]
        assert got.dtype == array.dtype.newbyteorder("<") and got.shape == array.shape, name
        assert np.array_equal(got, array), name


def test_start_basic_without_arrays_and_unknown_fields_kept() -> None:
    extra = {"jungfraujoch_extra": {"gain": [1, 2]}, "big": typed_array(np.arange(500))}
    fields, _ = eiger_start(header_all=False, **extra)
    start = decode2(start_message(**fields))
    assert isinstance(start, DetectorStart)
    assert start.fields["jungfraujoch_extra"] == {"gain": [1, 2]}
    assert np.array_equal(start.arrays["big"], np.arange(500))  # a large array: an array, not JSON
    assert set(start.arrays) == {"big"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("compression", [None, "bslz4", "lz4"])
@pytest.mark.parametrize("column_major", [False, True])
def test_image_round_trip(dtype: str, byteorder: str, compression: str | None, column_major: bool) -> None:
    frames = {c: poisson_frame((33, 47), dtype, seed=i) for i, c in enumerate(("threshold_1", "threshold_2"))}
    msg = image_message(
        series_id=7,
        series_unique_id="u",
        image_id=3,
        data={c: multidim(f, byteorder, compression, column_major) for c, f in frames.items()},
        real_time=[99_000, 10_000_000],
        start_time=[30_000_000, 100_000_000],
        stop_time=[3_099_000, 10_000_000],
        series_date=CBORTag(0, "2026-12-07T06:00:00+00:00"),
        user_data={"pos": [1.5, 2.0]},
    )
    image = decode2(msg)
    assert isinstance(image, DetectorImage)
    assert (image.series_id, image.series_unique_id, image.image_id) == (7, "u", 3)
    assert set(image.data) == set(frames)
    for c, f in frames.items():
        got = image.data[c]
        assert got.dtype == np.dtype(dtype).newbyteorder("<") and got.flags.c_contiguous
        assert np.array_equal(got, f)
    assert image.real_time == Fraction(99, 10_000)
    assert image.start_time == Fraction(3, 10)
    assert image.stop_time == Fraction(3_099_000, 10_000_000)
    assert image.series_date == "2026-12-07T06:00:00+00:00"
    assert image.user_data == {"pos": [1.5, 2.0]}


def test_self_described_cbor_tag_55799_around_messages() -> None:
    """Real detectors put tag 55799 (RFC 8949 self-described CBOR) around each message."""
    fields, arrays = eiger_start(header_all=True)
    start = decode2(cbor2.dumps(CBORTag(55799, {"type": "start", **fields})))
    assert isinstance(start, DetectorStart) and start.image_size == (48, 64)
    assert np.array_equal(start.arrays["pixel_mask/threshold_1"], arrays["pixel_mask/threshold_1"])
    frame = poisson_frame((48, 64), "uint32")
    wrapped = {"type": "image", "image_id": 4, "data": {"threshold_1": multidim(frame, ">", "bslz4")},
               "real_time": [1, 3], "user_data": [1, {"a": 2}]}  # fmt: skip
    image = decode2(cbor2.dumps(CBORTag(55799, wrapped)))
    assert isinstance(image, DetectorImage)
    assert np.array_equal(image.data["threshold_1"], frame)
    assert image.real_time == Fraction(1, 3) and image.user_data == [1, {"a": 2}]


def test_metadata_cannot_expand_into_huge_attributes() -> None:
    """Compressed payloads in metadata share a 4 MiB budget per message, and an array nested in
    metadata may not exceed 65,536 items: a small message cannot turn into a huge JSON attribute."""
    chunk = typed_array(np.zeros(1 << 16, np.uint8), "<", "bslz4")  # 64 KiB from a few hundred bytes
    many = image_message(
        image_id=0, data={"t": multidim(np.zeros((4, 4), np.uint8))}, user_data=[chunk] * 100
    )
    assert len(many) < 100_000
    assert reason_of(decode2, many) == "bad_compression"
    big = typed_array(np.zeros(1 << 17, np.uint8))
    assert reason_of(decode2, image_message(image_id=0, data={"t": multidim(np.zeros((4, 4), np.uint8))},
                                            user_data={"a": big})) == "malformed"  # fmt: skip
    few = image_message(image_id=0, data={"t": multidim(np.zeros((4, 4), np.uint8))}, user_data=[chunk] * 3)
    image = decode2(few)
    assert (
        isinstance(image, DetectorImage) and len(image.user_data) == 3 and len(image.user_data[0]) == 1 << 16
    )


def test_start_arrays_capped_by_the_start_geometry() -> None:
    """A start's arrays may not decompress to more than 8 bytes a pixel of its frame (1 MiB at
    least): a 64x48 start cannot carry a pixel mask that declares 4 GiB."""
    fields, _ = eiger_start(64, 48, header_all=False)
    payload = bslz4(np.zeros((512, 1024), np.uint32))  # 2 MiB, more than 1 MiB and 8 x 64 x 48
    fields["pixel_mask"] = {
        "threshold_1": CBORTag(40, [[512, 1024], CBORTag(70, CBORTag(56500, ["bslz4", 4, payload]))])
    }
    assert reason_of(decode2, start_message(**fields)) == "bad_compression"
    arrays = {"flatfield": np.zeros((48, 64), np.float32), "pixel_mask": np.zeros((48, 64), np.uint32),
              "countrate_table": np.zeros((1000, 2), np.float32)}  # fmt: skip
    parts = v1_header(5, "all", v1_config(64, 48, 32), arrays)
    parts[2] = json.dumps({"htype": "dflatfield-1.0", "shape": [32768, 32768], "type": "float32"}).encode()
    assert reason_of(Stream1Decoder().decode, parts) == "bad_start"


def test_image_channels_share_one_cap() -> None:
    frame = poisson_frame((64, 64), "uint16")
    data = {f"c{i}": multidim(frame, "<", "bslz4") for i in range(4)}
    msg = image_message(image_id=0, data=data)
    assert isinstance(Stream2Decoder(max_payload_bytes=4 * frame.nbytes).decode([msg]), DetectorImage)
    assert reason_of(Stream2Decoder(max_payload_bytes=3 * frame.nbytes).decode, [msg]) == "bad_compression"


def test_eiger_sized_frames_exact() -> None:
    for shape, dtype in (((1062, 1028), "uint32"), ((2162, 2068), "uint16")):
        frame = poisson_frame(shape, dtype, mean=0.1)
        image = decode2(image_message(image_id=0, data={"threshold_1": multidim(frame, "<", "bslz4")}))
        assert isinstance(image, DetectorImage)
        assert np.array_equal(image.data["threshold_1"], frame)


def test_end_and_plain_array_and_expect_cap() -> None:
    end = decode2(end_message(series_id=7, series_unique_id="u", extra=1))
    assert end == DetectorEnd(7, "u", {"extra": 1})
    plain = decode2(image_message(image_id=1, data={"t": CBORTag(40, [[2, 3], [1, 2, 3, 4, 5, 6]])}))
    assert isinstance(plain, DetectorImage)
    assert plain.data["t"].tolist() == [[1, 2, 3], [4, 5, 6]]
    fields, _ = eiger_start(16, 8, "uint16", header_all=False)
    decoder = Stream2Decoder()
    start = decoder.decode([start_message(**fields)])
    assert isinstance(start, DetectorStart)
    decoder.expect(start)
    big = {"threshold_1": multidim(poisson_frame((16, 16), "uint16"), "<", "bslz4")}  # twice the frame
    same_series = image_message(image_id=0, series_id=7, series_unique_id="6b0b8f4e-series-7", data=big)
    assert reason_of(decoder.decode, [same_series]) == "bad_compression"
    # Another series' images (the next one, decoded before its start was taken) keep the default
    # cap, and so does a start, whose arrays may be larger than the last series' frame.
    next_series = image_message(image_id=0, series_id=8, series_unique_id="next", data=big)
    assert isinstance(decoder.decode([next_series]), DetectorImage)
    bigger, arrays = eiger_start(64, 48, "uint32", series_id=8, unique="next")
    bigger_start = decoder.decode([start_message(**bigger)])
    assert isinstance(bigger_start, DetectorStart)
    assert np.array_equal(bigger_start.arrays["pixel_mask/threshold_1"], arrays["pixel_mask/threshold_1"])
    decoder.expect(None)
    assert isinstance(decoder.decode([same_series]), DetectorImage)


def test_bad_v2_messages_each_with_its_reason() -> None:
    frame = poisson_frame((8, 8), "uint16")
    good_data = {"threshold_1": multidim(frame, "<", "bslz4")}
    payload = bslz4(frame)
    cases: list[tuple[bytes, str]] = [
        (b"\xff\x00garbage", "malformed"),
        (b"", "malformed"),
        (cbor2.dumps([1, 2]), "malformed"),
        (cbor2.dumps({"no": "type"}), "unknown_type"),
        (cbor2.dumps({"type": "config"}), "unknown_type"),
        (image_message(image_id=-1, data=good_data), "bad_image"),
        (image_message(image_id="1", data=good_data), "bad_image"),
        (image_message(image_id=0), "bad_image"),
        (image_message(image_id=0, data={"t": typed_array(frame)}), "bad_image"),  # 1-D
        (image_message(image_id=0, data={"t": CBORTag(40, [[8, 8], CBORTag(83, b"\0" * 1024)])}),
         "malformed"),
        (image_message(image_id=0, data={"t": CBORTag(40, [[8, 9], typed_array(frame)])}), "malformed"),
        (image_message(image_id=0, data={"t": CBORTag(40, [[8, 8], CBORTag(65, b"\0" * 127)])}), "malformed"),
        (image_message(image_id=0, data={"t": CBORTag(69, CBORTag(56500, ["bslz4", 2, payload[:30]]))}),
         "bad_compression"),
        (image_message(image_id=0, data=good_data, real_time=[1, 0]), "bad_image"),
        (image_message(image_id=0, data=good_data, series_id="x"), "malformed"),
        (image_message(image_id=0, data={"t": CBORTag(40, [[2, 2], ["a", "b", "c", "d"]])}), "malformed"),
    ]  # fmt: skip
    for message, reason in cases:
        assert reason_of(decode2, message) == reason, message[:60]
    assert reason_of(Stream2Decoder().decode, [b"a", b"b"]) == "malformed"
    # Value sharing: one 1 MB array referenced 1,000 times (a 1 GB list once turned into JSON).
    shared = b"\xa2\x64type\x63end\x61x\x99\x03\xe8\xd8\x1c" + cbor2.dumps(typed_array(np.zeros(1 << 18)))
    shared += b"\xd8\x1d\x00" * 999
    assert reason_of(decode2, shared) == "malformed"
    assert (
        reason_of(decode2, cbor2.dumps({"type": "end", "x": CBORTag(256, ["a", CBORTag(25, 0)])}))
        == "malformed"
    )
    nested: list[object] = [0]
    for _ in range(80):
        nested = [nested]
    deep = cbor2.dumps({"type": "end", "x": nested})
    assert reason_of(decode2, deep) == "malformed"


@pytest.mark.parametrize(
    ("override", "why"),
    [({"image_size_x": 65537}, "image_size_x"), ({"image_size_y": 0}, "image_size_y"),
     ({"image_size_x": 60000, "image_size_y": 60000}, "bytes"), ({"image_dtype": "float64"}, "image_dtype"),
     ({"image_size_x": None}, "image_size_x"), ({"image_size_x": 2.5}, "image_size_x"),
     ({"channels": []}, "channels"), ({"channels": ["a", "a"]}, "channels"),
     ({"pixel_size_x": -1.0}, "pixel_size_x"),
     ({"number_of_images": -3}, "number_of_images"), ({"ntrigger": 0}, "ntrigger")],
)  # fmt: skip
def test_absurd_or_missing_geometry_is_bad_start(override: dict[str, object], why: str) -> None:
    fields, _ = eiger_start(header_all=False)
    fields.update(override)
    with pytest.raises(DetectorMessageError) as info:
        decode2(start_message(**fields))
    assert info.value.reason == "bad_start"
    assert why in str(info.value)


# -- 3. Stream V1 -------------------------------------------------------------------------------


def test_v1_start_basic_and_all() -> None:
    decoder = Stream1Decoder()
    start = decoder.decode(v1_header(4, "basic", v1_config(64, 48, 16), appendix={"user": "x"}))
    assert isinstance(start, DetectorStart)
    assert start.series_id == 4 and start.series_unique_id is None
    assert start.image_size == (48, 64) and start.dtype == np.dtype("<u2")
    assert start.channels == (V1_CHANNEL,) == ("threshold_1",)
    assert start.number_of_images == 8  # nimages 4 x ntrigger 2
    assert start.pixel_size_m == (7.5e-05, 7.5e-05)
    assert start.frame_time_s == 0.01
    assert start.threshold_energy_ev == {"threshold_1": 4020.5}
    assert start.user_data == {"user": "x"}
    assert start.fields["photon_energy"] == 8041.0 and start.fields["description"] == "Dectris EIGER 1M"
    assert start.fields["header_detail"] == "basic"
    assert start.arrays == {}
    rng = np.random.default_rng(5)
    arrays = {
        "flatfield": rng.uniform(0.9, 1.1, (48, 64)).astype(np.float32),
        "pixel_mask": (rng.random((48, 64)) < 0.05).astype(np.uint32),
        "countrate_table": rng.uniform(0, 1e6, (1000, 2)).astype(np.float32),
    }
    full = decoder.decode(v1_header(5, "all", v1_config(64, 48, 32), arrays, appendix=b"plain text"))
    assert isinstance(full, DetectorStart)
    assert full.dtype == np.dtype("<u4") and full.user_data == "plain text"
    assert np.array_equal(full.arrays["flatfield/threshold_1"], arrays["flatfield"])
    assert np.array_equal(full.arrays["pixel_mask/threshold_1"], arrays["pixel_mask"])
    assert np.array_equal(full.arrays["countrate_correction_lookup_table"], arrays["countrate_table"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("encoding", ["bs{bits}-lz4<", "lz4<", "<", ">"])
def test_v1_image_round_trip(dtype: str, encoding: str) -> None:
    frame = poisson_frame((37, 45), dtype)  # [x, y] = [45, 37]: not square, so the order is checked
    enc = encoding.format(bits=np.dtype(dtype).itemsize * 8)
    image = Stream1Decoder().decode(v1_image(4, 2, frame, enc, appendix={"n": 2}))
    assert isinstance(image, DetectorImage)
    assert image.series_id == 4 and image.image_id == 2
    got = image.data[V1_CHANNEL]
    assert got.shape == (37, 45) and got.dtype == np.dtype(dtype).newbyteorder("<")
    assert np.array_equal(got, frame)
    assert image.start_time == Fraction(1, 1000) and image.stop_time == Fraction(11, 1000)
    assert image.real_time == Fraction(99, 10_000)
    assert image.user_data == {"n": 2}


def test_v1_expect_caps_only_that_series() -> None:
    decoder = Stream1Decoder()
    start = decoder.decode(v1_header(4, "basic", v1_config(16, 8, 16)))
    assert isinstance(start, DetectorStart)
    decoder.expect(start)
    big = poisson_frame((16, 16), "uint16")  # twice the series' frame
    assert reason_of(decoder.decode, v1_image(4, 0, big, "bs16-lz4<")) == "bad_image"
    assert isinstance(decoder.decode(v1_image(5, 0, big, "bs16-lz4<")), DetectorImage)  # the next series
    decoder.expect(None)
    assert isinstance(decoder.decode(v1_image(4, 0, big, "bs16-lz4<")), DetectorImage)


def test_v1_end_and_bad_messages() -> None:
    decoder = Stream1Decoder()
    assert decoder.decode(v1_end(4)) == DetectorEnd(4, None, {})
    frame = poisson_frame((8, 8), "uint32")
    image = v1_image(4, 0, frame)
    info = json.loads(image[1])
    cases: list[tuple[list[bytes], str]] = [
        ([], "malformed"),
        ([b"not json"], "malformed"),
        ([b"[1]"], "malformed"),
        ([b'{"htype": "dconfig-1.0"}'], "unknown_type"),
        ([b'{"series": 1}'], "unknown_type"),
        (v1_header(4, "none"), "bad_start"),
        (v1_header(4, "basic", v1_config(70000, 10)), "bad_start"),
        (v1_header(4, "basic", v1_config(64, 48, 12)), "bad_start"),
        (v1_header(4, "basic")[:1], "malformed"),
        (image[:3], "malformed"),
        ([image[0], json.dumps({**info, "shape": [9, 8]}).encode(), *image[2:]], "bad_compression"),
        ([image[0], json.dumps({**info, "shape": [10**6, 10**6]}).encode(), *image[2:]], "bad_image"),
        ([image[0], json.dumps({**info, "type": "object"}).encode(), *image[2:]], "bad_image"),
        ([image[0], json.dumps({**info, "encoding": "gzip<"}).encode(), *image[2:]], "bad_compression"),
        ([image[0], image[1], image[2][:-8], image[3]], "bad_compression"),
        ([json.dumps({"htype": "dimage-1.0", "series": 4, "frame": -1}).encode(), *image[1:]], "bad_image"),
        ([*image[:3], b'{"start_time": "x"}'], "bad_image"),
        ([*v1_end(4), b"x"], "malformed"),
        ([b'{"htype": "dseries_end-1.0", "x": ' + b"[" * 900 + b"]" * 900 + b"}"], "malformed"),  # deep
    ]
    for parts, reason in cases:
        assert reason_of(decoder.decode, parts) == reason, parts[:2]


# -- 4. decoder_for -----------------------------------------------------------------------------


def test_decoder_for() -> None:
    assert isinstance(decoder_for("dectris-stream2"), Stream2Decoder)
    assert isinstance(decoder_for("dectris-stream1"), Stream1Decoder)
    assert decoder_for("dectris-stream2") is not decoder_for("dectris-stream2")
    with pytest.raises(ConfigError, match="dectris-stream2"):
        decoder_for("eiger")


@pytest.mark.parametrize(("missing", "protocol"), [("cbor2", "dectris-stream2"),
                                                   ("dectris.compression", "dectris-stream1")])  # fmt: skip
def test_decoder_for_without_the_extra(monkeypatch: pytest.MonkeyPatch, missing: str, protocol: str) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'acqzarr\[dectris\]'"):
        decoder_for(protocol)


# -- 6. fuzz -------------------------------------------------------------------------------------


def mutate(rng: random.Random, message: bytes) -> bytes:
    data = bytearray(message)
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if op < 0.5 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op < 0.7 and data:
            del data[rng.randrange(len(data)) :]
        elif op < 0.85 and data:
            i = rng.randrange(len(data))
            data[i] = rng.choice([0x00, 0xFF, 0x1B, 0x5B, 0x9B, 0xBB, 0xD8])
        else:
            i = rng.randrange(len(data) + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 9))
    return bytes(data)


def test_fuzz_mutated_messages_raise_only_detector_errors() -> None:
    """1,500 bit-flipped, truncated and spliced messages of every kind: each decodes or raises
    DetectorMessageError, never anything else, and all of them take a bounded time."""
    rng = random.Random(20261207)
    fields, _ = eiger_start(24, 16, "uint16", ("threshold_1", "threshold_2"))
    frame = poisson_frame((16, 24), "uint16", mean=2.0)
    v2 = [
        start_message(**fields),
        image_message(image_id=1, series_id=7, data={"threshold_1": multidim(frame, "<", "bslz4"),
                                                      "threshold_2": multidim(frame, ">", "lz4", True)},
                      real_time=[1, 100], series_date=CBORTag(0, "2026-12-07T06:00:00+00:00")),
        image_message(image_id=2, data={"threshold_1": multidim(frame)}),
        end_message(series_id=7),
        cbor2.dumps(CBORTag(55799, {"type": "image", "image_id": 3,
                                    "data": {"t": multidim(frame, "<", "lz4")}})),
        *(  # a real detector's start and end, where they are placed (see CAPTURED)
            (CAPTURED / name).read_bytes()
            for name in ("start.cbor", "end.cbor")
            if (CAPTURED / name).is_file()
        ),
    ]  # fmt: skip
    v1 = [v1_header(3, "basic", v1_config(24, 16, 16)), v1_image(3, 1, frame, "bs16-lz4<"),
          v1_image(3, 2, frame, "lz4<"), v1_end(3)]  # fmt: skip
    decoders = (Stream2Decoder(), Stream1Decoder())
    outcomes = {"decoded": 0, "rejected": 0}
    t0 = time.perf_counter()
    for i in range(1500):
        if i % 2:
            parts = [mutate(rng, rng.choice(v2))]
            decoder = decoders[0]
        else:
            parts = list(rng.choice(v1))
            k = rng.randrange(len(parts))
            parts[k] = mutate(rng, parts[k])
            decoder = decoders[1]  # type: ignore[assignment]
        try:
            decoder.decode(parts)
            outcomes["decoded"] += 1
        except DetectorMessageError:
            outcomes["rejected"] += 1
    elapsed = time.perf_counter() - t0
    assert outcomes["rejected"] > 500 and outcomes["decoded"] > 50, outcomes
    assert elapsed < 60, elapsed


# -- captured from a real detector ---------------------------------------------------------------


def keep_tag(first: object, second: object) -> object:
    """A tag hook that leaves every tag as it is (cbor2 6 passes (tag, immutable), 5 (decoder, tag))."""
    return first if isinstance(first, CBORTag) else second


@pytest.mark.skipif(not (CAPTURED / "start.cbor").is_file(), reason=f"no captured series at {CAPTURED}")
def test_captured_eiger2_16m_series() -> None:
    """A series a DECTRIS EIGER2 Si 16M sent (see CAPTURED), decoded independently: the pixels
    against the bitshuffle package's decompression of the same payload."""
    decoder = Stream2Decoder()
    start = decoder.decode([(CAPTURED / "start.cbor").read_bytes()])
    assert isinstance(start, DetectorStart)
    assert (start.series_id, start.series_unique_id) == (15614, "01HBV3JPF9T4ZDPADX6EMK6XMZ")
    assert start.image_size == (4362, 4148)
    assert start.dtype is None  # no image_dtype before the 2023 spec: the first image decides
    assert start.channels == ("threshold_1",)
    assert start.number_of_images == 1
    assert start.pixel_size_m == (7.5e-05, 7.5e-05)
    assert start.frame_time_s == 0.004317572232502031
    assert start.threshold_energy_ev == {"threshold_1": 6750.149914699146, "threshold_2": 18900.41976115761}
    assert start.fields["detector_description"] == "Dectris EIGER2 Si 16M"
    assert start.fields["saturation_value"] == 21517
    assert start.fields["arm_date"] == "2023-10-03T17:47:48.329000+02:00"
    assert start.fields["goniometer"]["chi"] == {"increment": 0.0, "start": 30.0}
    # The placeholders the fixture's publishers put in place of the arrays: kept, not refused.
    assert start.fields["pixel_mask"] == {"threshold_1": "AAAAAA=="}
    assert start.arrays == {}
    decoder.expect(start)
    raw = (CAPTURED / "image.cbor").read_bytes()
    image = decoder.decode([raw])
    assert isinstance(image, DetectorImage)
    assert image.image_id == 0
    assert image.real_time == Fraction(215873, 50_000_000)
    assert image.start_time == 0
    assert image.series_date == "2023-10-03T17:47:49.434000+02:00"
    pixels = image.data["threshold_1"]
    assert pixels.shape == (4362, 4148) and pixels.dtype == np.dtype("<u2")
    tag = cbor2.loads(raw, tag_hook=keep_tag)["data"]["threshold_1"]
    algorithm, elem, payload = tag.value[1].value.value
    assert (tag.tag, tag.value[1].tag, algorithm, elem) == (40, 69, "bslz4", 2)
    block = struct.unpack(">I", payload[8:12])[0] // 2
    expected = bitshuffle.decompress_lz4(
        np.frombuffer(payload[12:], np.uint8), (4362, 4148), np.dtype("<u2"), block
    )
    assert np.array_equal(pixels, expected)
    assert pixels.max() > 0
    end = decoder.decode([(CAPTURED / "end.cbor").read_bytes()])
    assert end == DetectorEnd(15614, "01HBV3JPF9T4ZDPADX6EMK6XMZ", {})
