"""The shard format pinned byte for byte, with an independent crc32c implementation as a check."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
import zarr

import acqzarr as az
from acqzarr.codecs import ShardLayout
from builders import frames_for, stream_settings

FIXTURES = Path(__file__).parent / "fixtures"
EMPTY = 2**64 - 1


def crc32c_reference(data: bytes) -> int:
    """Bitwise CRC-32C (Castagnoli, reflected polynomial 0x82F63B78): slow, obviously correct."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_reference_matches_the_standard_check_value() -> None:
    assert crc32c_reference(b"123456789") == 0xE3069283  # RFC 3720 / iSCSI check value


def test_shard_index_golden_bytes() -> None:
    layout = ShardLayout((2, 2))
    chunks = [b"A" * 10, None, b"B" * 5, b"C" * 3]
    sizes = [None if c is None else len(c) for c in chunks]
    shard = b"".join(c for c in chunks if c is not None) + layout.index(sizes)
    golden = (FIXTURES / "shard_2x2_index.bin").read_bytes()
    assert shard == golden
    # Decode the golden bytes by the spec: data, then 4 (offset, nbytes) LE uint64 pairs, then crc32c.
    body, index_bytes, crc = golden[:18], golden[18:-4], golden[-4:]
    assert body == b"A" * 10 + b"B" * 5 + b"C" * 3
    pairs = struct.unpack("<8Q", index_bytes)
    assert pairs == (0, 10, EMPTY, EMPTY, 10, 5, 15, 3)
    assert int.from_bytes(crc, "little") == crc32c_reference(index_bytes)


def test_written_shard_matches_its_index(tmp_path: Path) -> None:
    """A real shard: the index at the end points at blosc chunks that decode to the frames."""
    from numcodecs import Blosc

    path = tmp_path / "s.zarr"
    data = frames_for((32, 32), 4, "uint16")
    data[:, :16, 16:] = 0  # chunk (0, 0, 1) is fill value -> an empty index entry
    settings = stream_settings(path, 3, shape=(0, 32, 32), chunks=(4, 16, 16), shards=[1, 2, 2])
    with az.open_stream(settings) as stream:
        stream.append(data)
    shard = (path / "cam0" / "0" / "c" / "0" / "0" / "0").read_bytes()
    index_bytes = shard[-(4 * 16 + 4) : -4]
    assert int.from_bytes(shard[-4:], "little") == crc32c_reference(index_bytes)
    index = np.frombuffer(index_bytes, "<u8").reshape(2, 2, 2)
    assert tuple(index[0, 1]) == (EMPTY, EMPTY)
    codec = Blosc()
    for y, x in [(0, 0), (1, 0), (1, 1)]:
        off, n = (int(v) for v in index[y, x])
        chunk = np.frombuffer(codec.decode(shard[off : off + n]), np.uint16).reshape(4, 16, 16)
        np.testing.assert_array_equal(chunk, data[:, y * 16 : (y + 1) * 16, x * 16 : (x + 1) * 16])
    # Chunks are packed back to back from offset 0, index directly after them.
    used = sorted((int(o), int(n)) for o, n in index.reshape(-1, 2) if o != EMPTY)
    assert used[0][0] == 0
    assert all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(used))
    assert used[-1][0] + used[-1][1] == len(shard) - 68
    np.testing.assert_array_equal(zarr.open_array(str(path / "cam0" / "0"), mode="r")[:], data)


def test_shard_index_reads_the_golden_bytes_back() -> None:
    """ShardIndex decodes what the spec's golden shard holds, and encodes it back byte for byte."""
    from acqzarr.codecs import ShardIndex

    golden = (FIXTURES / "shard_2x2_index.bin").read_bytes()
    index = ShardIndex.decode(golden, 4)
    assert [index.chunk(i) for i in range(4)] == [(0, 10), None, (10, 5), (15, 3)]
    assert index.present() == [(0, 10), (10, 5), (15, 3)]
    assert index.encode() == golden[18:]


def test_shard_index_refuses_a_cut_or_corrupt_index() -> None:
    from acqzarr.codecs import ShardIndex

    golden = (FIXTURES / "shard_2x2_index.bin").read_bytes()
    with pytest.raises(ValueError, match="cannot hold"):
        ShardIndex.decode(golden[-20:], 4)
    corrupt = bytearray(golden)
    corrupt[20] ^= 1
    with pytest.raises(ValueError, match="crc32c"):
        ShardIndex.decode(bytes(corrupt), 4)
