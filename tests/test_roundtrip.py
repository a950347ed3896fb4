"""What goes in comes out: bytes read back by zarr-python and tensorstore equal the frames appended."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import acqzarr as az
from builders import array_settings, frames_for, stream_settings
from readback import assert_reads_back

DTYPES = list(az.settings.DTYPES)


@pytest.mark.parametrize("compression", [az.Blosc(), None], ids=["blosc", "raw"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips(
    tmp_path: Path, version: int, dtype: str, compression: az.Blosc | None
) -> None:
    # 37x50 frames with 16x16 chunks and 2x2-chunk shards: nothing divides evenly.
    settings = stream_settings(tmp_path / "s.zarr", version, dtype=dtype, compression=compression)
    data = frames_for((37, 50), 8, dtype)
    with az.open_stream(settings) as stream:
        for frame in data:
            stream.append(frame)
    assert_reads_back(tmp_path / "s.zarr" / "cam0" / "0", version, data)


@pytest.mark.parametrize("cname", ["lz4", "lz4hc", "zstd", "blosclz", "zlib"])
@pytest.mark.parametrize("shuffle", ["none", "byte", "bit"])
def test_every_blosc_setting_round_trips(tmp_path: Path, cname: str, shuffle: str) -> None:
    blosc = az.Blosc(cname=cname, clevel=5, shuffle=shuffle)  # type: ignore[arg-type]
    data = frames_for((37, 50), 7, "uint16")
    for version in (2, 3):
        path = tmp_path / f"v{version}.zarr"
        with az.open_stream(stream_settings(path, version, compression=blosc)) as stream:
            stream.append(data)
        assert_reads_back(path / "cam0" / "0", version, data)


def test_two_dimensional_array_appends_lines(tmp_path: Path, version: int) -> None:
    """A (y, x) array takes 1-D frames (a line-scan camera), appended along y."""
    settings = stream_settings(
        tmp_path / "s.zarr", version, (0, 45), (8, 16), shards=(2, 2), key="line", dtype="uint8"
    )
    data = frames_for((45,), 21, "uint8")
    with az.open_stream(settings) as stream:
        stream.append(data[:5])
        for line in data[5:]:
            stream.append(line)
    assert_reads_back(tmp_path / "s.zarr" / "line" / "0", version, data)


@pytest.mark.parametrize(
    ("shape", "chunks", "kinds", "names"),
    [
        ((0, 3, 20, 22), (2, 2, 8, 8), ["time", "channel", "space", "space"], "tcyx"),
        ((0, 20, 22), (3, 8, 8), ["space", "space", "space"], "zyx"),
        ((0, 2, 5, 20, 22), (2, 1, 2, 8, 8), ["time", "channel", "space", "space", "space"], "tczyx"),
        ((0, 3, 4, 9), (4, 2, 3, 4), ["time", "other", "space", "space"], "tayx"),
    ],
    ids=["tcyx", "zyx-append-z", "tczyx", "t-other-yx"],
)
def test_higher_dimensional_arrays_fill_inner_axes_in_c_order(
    tmp_path: Path,
    version: int,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    kinds: list[str],
    names: str,
) -> None:
    settings = stream_settings(
        tmp_path / "s.zarr", version, shape, chunks, kinds=kinds, names=names, key="img"
    )
    inner = shape[1:-2]
    steps = 5  # append-axis steps, not a multiple of the append chunk
    expected = frames_for((*inner, *shape[-2:]), steps, "uint16")
    flat = expected.reshape(-1, *shape[-2:])  # camera order: inner axes vary fastest
    with az.open_stream(settings) as stream:
        stream.append(flat[:3])
        for frame in flat[3:]:
            stream.append(frame)
    assert_reads_back(tmp_path / "s.zarr" / "img" / "0", version, expected)


def test_several_arrays_with_their_own_settings(tmp_path: Path, version: int) -> None:
    settings = az.StreamSettings(
        store=str(tmp_path / "s.zarr"),
        version=version,
        arrays=[
            array_settings(version, (0, 30, 40), (4, 16, 16)),
            array_settings(
                version,
                (0, 17, 9),
                (3, 8, 8),
                shards=(2, 1, 1),
                key="rig/cam1",
                dtype="uint8",
                compression=None,
            ),
        ],
    )
    a = frames_for((30, 40), 10, "uint16", seed=1)
    b = frames_for((17, 9), 13, "uint8", seed=2)
    with az.open_stream(settings) as stream:
        for i in range(13):
            if i < 10:
                stream.append(a[i], key="cam0")
            stream.append(b[i], key="rig/cam1")
    assert_reads_back(tmp_path / "s.zarr" / "cam0" / "0", version, a)
    assert_reads_back(tmp_path / "s.zarr" / "rig" / "cam1" / "0", version, b)


def test_root_key_puts_the_image_at_the_store_root(tmp_path: Path, version: int) -> None:
    settings = stream_settings(tmp_path / "s.zarr", version, key="")
    data = frames_for((37, 50), 4, "uint16")
    with az.open_stream(settings) as stream:
        stream.append(data)
    assert_reads_back(tmp_path / "s.zarr" / "0", version, data)


def test_stacks_crossing_layer_boundaries(tmp_path: Path, version: int) -> None:
    data = frames_for((37, 50), 23, "int16")
    with az.open_stream(stream_settings(tmp_path / "s.zarr", version, dtype="int16")) as stream:
        stream.append(data[:2])
        stream.append(data[2:13])  # spans several 3-frame layers
        stream.append(data[13:])
    assert_reads_back(tmp_path / "s.zarr" / "cam0" / "0", version, data)


def test_stacks_of_z_planes_fill_runs_inside_and_across_bands(tmp_path: Path, version: int) -> None:
    """A stack fills its frames as runs along the band's last index axis (z here): runs that
    start mid-band, cross into the next z band and the next timepoint, and one-frame calls."""
    settings = stream_settings(
        tmp_path / "s.zarr",
        version,
        (0, 7, 21, 18),
        (2, 3, 8, 8),
        kinds=["time", "space", "space", "space"],
        names="tzyx",
    )
    data = frames_for((21, 18), 4 * 7, "uint16").reshape(4, 7, 21, 18)
    flat = data.reshape(-1, 21, 18)
    with az.open_stream(settings) as stream:
        stream.append(flat[:2])  # z 0-1 of a 3-deep band
        stream.append(flat[2:9])  # z 2 | 3-5 | 6, then t 1 z 0-1
        stream.append(flat[9])
        stream.append(flat[10:25])  # several timepoints at once
        for frame in flat[25:]:
            stream.append(frame)
    assert_reads_back(tmp_path / "s.zarr" / "cam0" / "0", version, data)


def test_non_contiguous_and_read_only_views_are_accepted(tmp_path: Path, version: int) -> None:
    big = frames_for((74, 100), 6, "uint16")
    data = big[:, ::2, ::2]  # strided view, shape (6, 37, 50)
    assert not data.flags.c_contiguous
    fortran = np.asfortranarray(data[0])
    readonly = data[1].copy()
    readonly.flags.writeable = False
    with az.open_stream(stream_settings(tmp_path / "s.zarr", version)) as stream:
        stream.append(fortran)
        stream.append(readonly)
        stream.append(data[2:])
    assert_reads_back(tmp_path / "s.zarr" / "cam0" / "0", version, np.ascontiguousarray(data))


def test_bounded_append_axis_with_partial_last_chunk(tmp_path: Path, version: int) -> None:
    settings = stream_settings(tmp_path / "s.zarr", version, shape=(10, 37, 50), chunks=(4, 16, 16))
    data = frames_for((37, 50), 10, "uint16")
    with az.open_stream(settings) as stream:
        stream.append(data)
        # The last (partial) layer is flushed as soon as the axis is full, before close.
        stream.flush()
        assert stream.stats().frames_flushed == 10
    assert_reads_back(tmp_path / "s.zarr" / "cam0" / "0", version, data)


@pytest.mark.parametrize("shard_t", [2, 3])
def test_shards_spanning_several_layers(tmp_path: Path, shard_t: int) -> None:
    settings = stream_settings(tmp_path / "s.zarr", 3, chunks=(2, 16, 16), shards=[shard_t, 2, 2])
    data = frames_for((37, 50), 2 * shard_t * 2 + 3, "uint16")  # two full shard rows + a partial one
    with az.open_stream(settings) as stream:
        stream.append(data)
    assert_reads_back(tmp_path / "s.zarr" / "cam0" / "0", 3, data)


def test_fill_value_chunks_are_not_written(tmp_path: Path, version: int) -> None:
    settings = stream_settings(
        tmp_path / "s.zarr",
        version,
        shape=(0, 32, 32),
        chunks=(2, 16, 16),
        shards=[1, 1, 1] if version == 3 else None,
    )
    data = np.zeros((4, 32, 32), np.uint16)
    data[0, 20, 20] = 7  # only chunk (0, 1, 1) holds data
    data[3, 0, 0] = 1  # only chunk (1, 0, 0) holds data
    with az.open_stream(settings) as stream:
        stream.append(data)
    array_dir = tmp_path / "s.zarr" / "cam0" / "0"
    objects = sorted(
        p.relative_to(array_dir).as_posix()
        for p in array_dir.rglob("*")
        if p.is_file() and "json" not in p.name and not p.name.startswith(".z")
    )
    expected = ["0.1.1", "1.0.0"] if version == 2 else ["c/0/1/1", "c/1/0/0"]
    assert objects == expected
    assert_reads_back(array_dir, version, data)


def test_stream_with_no_frames_is_a_valid_empty_array(tmp_path: Path, version: int) -> None:
    with az.open_stream(stream_settings(tmp_path / "s.zarr", version)):
        pass
    assert_reads_back(tmp_path / "s.zarr" / "cam0" / "0", version, np.zeros((0, 37, 50), np.uint16))


def test_memory_store_holds_the_same_objects_as_the_filesystem(tmp_path: Path, version: int) -> None:
    data = frames_for((37, 50), 7, "uint16")
    settings = stream_settings(tmp_path / "s.zarr", version)
    mem = az.MemoryStore()
    with az.open_stream(settings, store=mem) as stream:
        stream.append(data)
    with az.open_stream(settings) as stream:
        stream.append(data)
    disk = az.LocalStore(tmp_path / "s.zarr")
    assert sorted(mem.list()) == sorted(disk.list())
    for key in mem.list():
        if key == "cam0/" + ("zarr.json" if version == 3 else ".zattrs"):  # the session's times differ
            docs = [json.loads(store.get(key)) for store in (mem, disk)]
            for doc in docs:
                record = doc.get("attributes", doc)["acqzarr_session"]
                for when in ("start", "stop"):
                    record.pop(when)
                    for segment in record["segments"]:
                        segment.pop(when)
            assert docs[0] == docs[1]
        else:
            assert mem.get(key) == disk.get(key), key
