"""``acqzarr.read.arrays``: frames of arrays another writer (zarr-python) made, read without it."""

from __future__ import annotations

from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec as ZarrBlosc
from zarr.codecs import ZstdCodec

from acqzarr.read.arrays import ArrayReader
from acqzarr.stores import LocalStore


def _frames(reader: ArrayReader) -> np.ndarray:
    return np.stack([reader[i] for i in range(len(reader))])


def _data(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    rng = np.random.default_rng(sum(shape))
    return rng.integers(0, 1000, size=shape).astype(dtype)


@pytest.mark.parametrize(
    "create",
    [
        pytest.param(
            dict(
                zarr_format=2,
                chunks=(3, 16, 16),
                compressors=numcodecs.Blosc("lz4", 5, numcodecs.Blosc.BITSHUFFLE),
            ),
            id="v2-blosc-dot",
        ),
        pytest.param(
            dict(
                zarr_format=2,
                chunks=(2, 7, 9),
                compressors=None,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            ),
            id="v2-raw-slash-edges",
        ),
        pytest.param(
            dict(zarr_format=2, chunks=(4, 10, 10), compressors=None, dtype=">i4"), id="v2-big-endian"
        ),
        pytest.param(
            dict(
                zarr_format=3,
                chunks=(2, 8, 8),
                shards=(4, 16, 24),
                compressors=ZarrBlosc(cname="zstd", clevel=1),
            ),
            id="v3-sharded",
        ),
        pytest.param(
            dict(zarr_format=3, chunks=(5, 20, 13), compressors=ZstdCodec(level=3)), id="v3-plain-edges"
        ),
    ],
)
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_frames_match_zarr_python(tmp_path: Path, create: dict, dtype: str) -> None:
    data = _data((9, 20, 26), dtype)
    create = dict(create)
    dtype = create.pop("dtype", dtype)
    data = data.astype(dtype)
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=data.shape, dtype=dtype, **create)
    arr[:] = data
    reader = ArrayReader(LocalStore(tmp_path / "a.zarr"))
    assert reader.shape == (9, 20, 26) and reader.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(_frames(reader), arr[:])
    # Random access (going back to an earlier chunk row) works too.
    np.testing.assert_array_equal(reader[2], data[2])
    np.testing.assert_array_equal(reader[-1], data[-1])


def test_leading_axes_are_flattened_and_unwritten_chunks_read_as_fill(tmp_path: Path) -> None:
    arr = zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=(3, 2, 16, 16),
        chunks=(1, 1, 8, 8),
        shards=(2, 2, 16, 16),
        dtype="uint8",
        fill_value=9,
        zarr_format=3,
    )
    arr[0, 1, :8, 8:] = 1  # one inner chunk in shard 0; shard 1 (t=2) never written
    reader = ArrayReader(LocalStore(tmp_path / "a.zarr"))
    assert reader.shape == (6, 16, 16)
    frames = _frames(reader)
    np.testing.assert_array_equal(frames, arr[:].reshape(6, 16, 16))
    assert (frames[1, :8, 8:] == 1).all() and (frames[4:] == 9).all()


def test_acqzarr_stores_replay_through_the_reader(tmp_path: Path) -> None:
    import acqzarr as az
    from builders import stream_settings

    frames = _data((10, 24, 32), "uint16")
    for version in (2, 3):
        settings = stream_settings(
            tmp_path / f"v{version}.zarr", version, (0, 24, 32), (4, 8, 8), shards=(2, 2, 2), key=""
        )
        with az.open_stream(settings) as stream:
            stream.append(frames)
        reader = ArrayReader(LocalStore(tmp_path / f"v{version}.zarr"), "0")
        np.testing.assert_array_equal(_frames(reader), frames)


def test_what_it_cannot_read_is_refused_with_the_reason(tmp_path: Path) -> None:
    strings = zarr.create_array(
        str(tmp_path / "s.zarr"), shape=(2, 2, 2), chunks=(1, 2, 2), dtype=str, zarr_format=2
    )
    strings[:] = "a"
    with pytest.raises(ValueError, match="string array"):
        ArrayReader(LocalStore(tmp_path / "s.zarr"))
    filtered = zarr.create_array(
        str(tmp_path / "f.zarr"),
        shape=(2, 4, 4),
        chunks=(1, 4, 4),
        dtype="int32",
        filters=[numcodecs.Delta(dtype="int32")],
        zarr_format=2,
    )
    filtered[:] = 1
    with pytest.raises(ValueError, match=r"codecs \['delta'\] are not supported"):
        ArrayReader(LocalStore(tmp_path / "f.zarr"))
    zarr.create_group(str(tmp_path / "g.zarr"), zarr_format=3)
    with pytest.raises(ValueError, match="not a Zarr array"):
        ArrayReader(LocalStore(tmp_path / "g.zarr"))
    with pytest.raises(ValueError, match="not a Zarr array"):
        ArrayReader(LocalStore(tmp_path / "missing.zarr"))
