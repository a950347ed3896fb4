"""The DECTRIS decoders against an independent sender written from the specs (``dectris_spec.py``).

Pixel-exact round trips for every pixel type, byte order, array tag and compression; the start's
fields one by one; every kind of bad input rejected with its reason and nothing else raised.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from acqzarr.ingest.dectris.compression import (
    MAX_PAYLOAD_BYTES,
    decompress_tag,
    decompress_v1,
    parse_v1_encoding,
)
from acqzarr.ingest.dectris.messages import (
    DetectorMessageError,
)
from dectris_spec import (
    bslz4,
    hdf5_lz4,
    poisson_frame,
    raw_lz4,
)

DTYPES = ["uint8", "uint16", "uint32"]
CAPTURED = Path(__file__).parent / "fixtures" / "dectris_stream2_eiger2_16m"


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
