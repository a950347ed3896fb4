"""Pyramids written while streaming equal a numpy reference computed from the full input."""

from __future__ import annotations

import importlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

import acqzarr as az
from acqzarr.engine.reducers import downsample
from builders import array_settings, dims, stream_settings
from readback import assert_reads_back, read_tensorstore, read_zarr


def reference_level(data: np.ndarray[Any, Any], space_axes: list[int], method: str) -> np.ndarray[Any, Any]:
    """Halve ``data`` along ``space_axes`` the slow, obvious way: gather each block with the edge
    index clamped (replicate-edge), then reduce; integer means in exact Python integers."""
    index_sets = []
    for ax in space_axes:
        n = data.shape[ax]
        out = -(-n // 2)
        index_sets.append((ax, [np.minimum(2 * np.arange(out) + d, n - 1) for d in (0, 1)]))
    if method == "decimate":
        result = data
        for ax, (even, _odd) in index_sets:
            result = np.take(result, even, axis=ax)
        return result
    samples = []
    for choice in itertools.product((0, 1), repeat=len(index_sets)):
        block = data
        for (ax, pair), d in zip(index_sets, choice, strict=True):
            block = np.take(block, pair[d], axis=ax)
        samples.append(block)
    stack = np.stack(samples)
    if method == "min":
        return stack.min(axis=0)
    if method == "max":
        return stack.max(axis=0)
    if data.dtype.kind == "f":
        return stack.astype(np.float64).mean(axis=0).astype(data.dtype)
    total = stack.astype(object).sum(axis=0)
    n = len(samples)
    return ((total + n // 2) // n).astype(data.dtype)


def reference_pyramid(data: np.ndarray[Any, Any], kinds: list[str], levels: int, method: str) -> list[Any]:
    space = [i for i, k in enumerate(kinds) if k == "space"]
    out = [data]
    for _ in range(levels - 1):
        out.append(reference_level(out[-1], space, method))
    return out


def sample_data(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.normal(0, 100, shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)  # extremes: overflow tests


def record(
    path: Path,
    version: int,
    data: np.ndarray[Any, Any],
    kinds: list[str],
    names: str,
    chunks: tuple[int, ...],
    multiscale: az.Multiscale,
    *,
    bounded: bool = False,
    compression: az.Blosc | None = az.Blosc(),
) -> az.StreamSettings:
    shape = (data.shape[0] if bounded else 0, *data.shape[1:])
    settings = stream_settings(
        path,
        version,
        shape,
        chunks,
        kinds=kinds,
        names=names,
        key="img",
        dtype=data.dtype.name,
        compression=compression,
        multiscale=multiscale,
    )
    frame_nd = 1 if data.ndim == 2 else 2
    frames = data.reshape(-1, *data.shape[-frame_nd:])
    with az.open_stream(settings) as stream:
        stream.append(frames[:3])
        for f in frames[3:]:
            stream.append(f)
    return settings


@pytest.mark.parametrize("method", ["decimate", "mean", "min", "max"])
@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "int16", "int32", "uint64", "int64", "float32", "float64"]
)
def test_every_level_matches_the_reference(tmp_path: Path, version: int, method: str, dtype: str) -> None:
    data = sample_data((9, 37, 50), dtype)
    kinds = ["time", "space", "space"]
    record(
        tmp_path / "s.zarr", version, data, kinds, "tyx", (4, 16, 16), az.Multiscale(levels=3, method=method)
    )
    for level, expected in enumerate(reference_pyramid(data, kinds, 3, method)):
        path = tmp_path / "s.zarr" / "img" / str(level)
        if method == "mean" and data.dtype.kind == "f":
            # A float mean's last bits depend on summation order, which neither side pins down:
            # allow a few ulps of the largest input (errors scale with the inputs, not the mean).
            atol = 64 * float(np.finfo(data.dtype).eps) * float(np.abs(data).max())
            for got in (read_zarr(path), read_tensorstore(path, version)):
                assert got.dtype == expected.dtype
                np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
        else:
            assert_reads_back(path, version, expected)


@pytest.mark.parametrize("method", ["mean", "min", "decimate"])
@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((9, 37, 50), (4, 15, 7)),  # odd frame chunks: pairs straddle tiles, planes are read out first
        ((5, 300, 262), (2, 150, 132)),  # tiles taller than one strip of the reducer (64 rows)
    ],
    ids=["odd-chunks", "tall-tiles"],
)
def test_levels_match_the_reference_whatever_the_frame_chunks(
    tmp_path: Path, version: int, method: str, shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    """Planes halve tile by tile inside the band when the frame chunks are even, and are copied
    out of the band first when they are not: both give the reference pyramid."""
    data = sample_data(shape, "uint16")
    kinds = ["time", "space", "space"]
    record(tmp_path / "s.zarr", version, data, kinds, "tyx", chunks, az.Multiscale(levels=3, method=method))
    for level, expected in enumerate(reference_pyramid(data, kinds, 3, method)):
        assert_reads_back(tmp_path / "s.zarr" / "img" / str(level), version, expected)


@pytest.mark.parametrize("method", ["mean", "decimate"])
def test_z_as_append_axis_pairs_planes(tmp_path: Path, version: int, method: str) -> None:
    data = sample_data((7, 20, 22), "uint16")  # 7 planes: the last pairs with itself
    kinds = ["space", "space", "space"]
    record(
        tmp_path / "s.zarr", version, data, kinds, "zyx", (2, 8, 8), az.Multiscale(levels=3, method=method)
    )
    levels = reference_pyramid(data, kinds, 3, method)
    assert levels[1].shape == (4, 10, 11)
    assert levels[2].shape == (2, 5, 6)
    for level, expected in enumerate(levels):
        assert_reads_back(tmp_path / "s.zarr" / "img" / str(level), version, expected)


def test_inner_z_and_channels(tmp_path: Path, version: int) -> None:
    data = sample_data((3, 2, 5, 12, 14), "uint16")
    kinds = ["time", "channel", "space", "space", "space"]
    record(tmp_path / "s.zarr", version, data, kinds, "tczyx", (2, 1, 2, 8, 8), az.Multiscale(levels=3))
    levels = reference_pyramid(data, kinds, 3, "mean")
    assert levels[1].shape == (3, 2, 3, 6, 7)
    for level, expected in enumerate(levels):
        assert_reads_back(tmp_path / "s.zarr" / "img" / str(level), version, expected)


def test_bounded_append_axis_and_raw_chunks(tmp_path: Path, version: int) -> None:
    data = sample_data((5, 9, 9), "uint8")
    kinds = ["space", "space", "space"]
    record(
        tmp_path / "s.zarr",
        version,
        data,
        kinds,
        "zyx",
        (2, 4, 4),
        az.Multiscale(levels=3, method="max"),
        bounded=True,
        compression=None,
    )
    for level, expected in enumerate(reference_pyramid(data, kinds, 3, "max")):
        assert_reads_back(tmp_path / "s.zarr" / "img" / str(level), version, expected)


def test_auto_levels_stop_at_one_chunk_and_clamp_chunks(tmp_path: Path, version: int) -> None:
    data = sample_data((3, 100, 60), "uint16")
    record(
        tmp_path / "s.zarr", version, data, ["time", "space", "space"], "tyx", (2, 16, 16), az.Multiscale()
    )
    shapes = [zarr.open_array(str(tmp_path / "s.zarr" / "img" / str(i)), mode="r").shape for i in range(4)]
    assert shapes == [(3, 100, 60), (3, 50, 30), (3, 25, 15), (3, 13, 8)]
    assert not (tmp_path / "s.zarr" / "img" / "4").exists()
    top = zarr.open_array(str(tmp_path / "s.zarr" / "img" / "3"), mode="r")
    assert top.chunks == (2, 13, 8)


def _multiscale_block(path: Path, version: int) -> dict[str, Any]:
    if version == 2:
        return json.loads((path / ".zattrs").read_text())
    return json.loads((path / "zarr.json").read_text())["attributes"]["ome"]


@pytest.mark.parametrize("method", ["mean", "decimate"])
def test_ngff_metadata_for_levels(tmp_path: Path, version: int, method: str) -> None:
    data = sample_data((4, 40, 36), "uint16")
    data[:] = np.clip(data, 100, 4000)
    d = dims((0, 40, 36), (2, 16, 16), [1, 2, 2] if version == 3 else None)
    d = [
        d[0].model_copy(update={"unit": "second", "scale": 2.0}),
        *(x.model_copy(update={"unit": "micrometer", "scale": 0.5}) for x in d[1:]),
    ]
    settings = az.StreamSettings(
        store=str(tmp_path / "s.zarr"),
        version=version,
        arrays=[
            az.ArraySettings(
                key="img", dtype="uint16", dimensions=d, multiscale=az.Multiscale(levels=3, method=method)
            )
        ],
    )
    with az.open_stream(settings) as stream:
        stream.append(data)
    group = zarr.open_group(str(tmp_path / "s.zarr" / "img"), mode="r", zarr_format=version)
    (Image04 if version == 2 else Image05).from_zarr(group)
    block = _multiscale_block(tmp_path / "s.zarr" / "img", version)
    ms = block["multiscales"][0]
    assert [ds["path"] for ds in ms["datasets"]] == ["0", "1", "2"]
    assert ms["type"] == method
    assert ms["metadata"]["method"] == "acqzarr.engine.reducers.downsample"  # see test_collections.py
    module, _, name = ms["metadata"]["method"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is downsample  # it names the real function
    assert ms["metadata"]["kwargs"] == {"method": repr(method), "axes": "(1, 2)"}
    scales = [ds["coordinateTransformations"][0]["scale"] for ds in ms["datasets"]]
    assert scales == [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    translations = [ds["coordinateTransformations"][1:] for ds in ms["datasets"]]
    if method == "mean":
        assert translations == [
            [],
            [{"type": "translation", "translation": [0.0, 0.25, 0.25]}],
            [{"type": "translation", "translation": [0.0, 0.75, 0.75]}],
        ]
    else:
        assert translations == [[], [], []]
    # What napari-ome-zarr reads to show the image: axis types, level-0 scale, the omero block.
    assert [a["type"] for a in ms["axes"]] == ["time", "space", "space"]
    (channel,) = block["omero"]["channels"]
    window = channel["window"]
    assert (window["min"], window["max"]) == (0, 65535)
    assert data.min() <= window["start"] <= window["end"] <= data.max()
    assert window["end"] - window["start"] > 3000  # taken from the data, not the dtype range
    if version == 2:
        assert Image04.from_zarr(group).attributes.omero is not None


def test_omero_has_one_channel_per_channel_index(tmp_path: Path) -> None:
    data = sample_data((2, 3, 16, 16), "uint8")
    data[:, 0] = 10
    data[:, 1] = 200
    data[:, 2] = np.arange(16, dtype=np.uint8)[None, None, :] + 50
    record(
        tmp_path / "s.zarr",
        3,
        data,
        ["time", "channel", "space", "space"],
        "tcyx",
        (1, 1, 8, 8),
        az.Multiscale(levels=2),
    )
    channels = _multiscale_block(tmp_path / "s.zarr" / "img", 3)["omero"]["channels"]
    windows = [(c["window"]["start"], c["window"]["end"]) for c in channels]
    assert windows[:2] == [(10, 10), (200, 200)]
    assert windows[2][0] == 50 and 50 < windows[2][1] <= 65  # a subsample: within the data's range
    assert len({c["color"] for c in channels}) == 3


def test_write_metadata_merges_beside_the_ome_block(tmp_path: Path, version: int) -> None:
    settings = record(
        tmp_path / "a.zarr",
        version,
        sample_data((2, 8, 8), "uint8"),
        ["time", "space", "space"],
        "tyx",
        (1, 4, 4),
        az.Multiscale(levels=2),
    )
    settings = settings.model_copy(update={"store": str(tmp_path / "s.zarr")})
    with az.open_stream(settings) as stream:
        stream.write_metadata({"sample": "HeLa", "objective": {"mag": 60}}, key="img")
        stream.write_metadata({"operator": "ada"})
        with pytest.raises(az.ConfigError, match=r"\['multiscales', 'ome'\] are written by acqzarr"):
            stream.write_metadata({"ome": {}, "multiscales": []})
        with pytest.raises(az.ConfigError, match="not valid JSON"):
            stream.write_metadata({"bad": float("nan")})
        with pytest.raises(az.ConfigError, match="not valid JSON"):
            stream.write_metadata({"bad": object()})
        stream.append(sample_data((3, 8, 8), "uint8"))
    path = tmp_path / "s.zarr" / "img"
    attrs = (
        json.loads((path / ".zattrs").read_text())
        if version == 2
        else json.loads((path / "zarr.json").read_text())["attributes"]
    )
    assert attrs["sample"] == "HeLa" and attrs["objective"] == {"mag": 60} and attrs["operator"] == "ada"
    assert "bad" not in attrs
    (Image04 if version == 2 else Image05).from_zarr(
        zarr.open_group(str(path), mode="r", zarr_format=version)
    )


KILLED_WRITER = """
import sys, numpy as np, acqzarr as az
settings = az.StreamSettings.model_validate_json(sys.argv[1])
rng = np.random.default_rng(0)
stream = az.open_stream(settings)
i, last = 0, -1
while True:
    stream.append(((np.arange(33 * 41).reshape(33, 41) * 7 + i * 13) % 4096).astype(np.uint16))
    i += 1
    flushed = min(stream.stats().frames_flushed, 10**9)
    if flushed != last:
        print(f"flushed {flushed}", flush=True)
        last = flushed
"""


@pytest.mark.slow
def test_sigkill_mid_stream_leaves_a_valid_pyramid_prefix(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    settings = stream_settings(
        path, version, (0, 33, 41), (4, 16, 16), key="img", multiscale=az.Multiscale(levels=3)
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, settings.model_dump_json()], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen, deadline = 0, time.monotonic() + 60
    while seen < 12 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("flushed ") and int(line.split()[1]) > 0:
            seen = int(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert seen >= 12
    group = zarr.open_group(str(path / "img"), mode="r", zarr_format=version)
    (Image04 if version == 2 else Image05).from_zarr(group)
    n0 = zarr.open_array(str(path / "img" / "0"), mode="r").shape[0]
    assert n0 >= seen
    full = np.stack(
        [((np.arange(33 * 41).reshape(33, 41) * 7 + i * 13) % 4096).astype(np.uint16) for i in range(n0)]
    )
    expected = reference_pyramid(full, ["time", "space", "space"], 3, "mean")
    for level in range(3):
        got = np.asarray(zarr.open_array(str(path / "img" / str(level)), mode="r")[:])
        assert got.shape[0] <= n0
        np.testing.assert_array_equal(got, expected[level][: got.shape[0]])


def test_every_array_of_a_multi_array_stream(tmp_path: Path, version: int) -> None:
    a = sample_data((5, 30, 26), "uint16", seed=1)
    b = sample_data((6, 17, 9), "uint8", seed=2)
    settings = az.StreamSettings(
        store=str(tmp_path / "s.zarr"),
        version=version,
        arrays=[
            array_settings(
                version, (0, 30, 26), (2, 8, 8), key="a", multiscale=az.Multiscale(levels=3, method="min")
            ),
            array_settings(
                version,
                (0, 17, 9),
                (4, 8, 8),
                key="b",
                dtype="uint8",
                multiscale=az.Multiscale(levels=2, method="decimate"),
                compression=None,
            ),
        ],
    )
    with az.open_stream(settings) as stream:
        for i in range(6):
            if i < 5:
                stream.append(a[i], key="a")
            stream.append(b[i], key="b")
    kinds = ["time", "space", "space"]
    for level, expected in enumerate(reference_pyramid(a, kinds, 3, "min")):
        assert_reads_back(tmp_path / "s.zarr" / "a" / str(level), version, expected)
    for level, expected in enumerate(reference_pyramid(b, kinds, 2, "decimate")):
        assert_reads_back(tmp_path / "s.zarr" / "b" / str(level), version, expected)


@pytest.mark.parametrize(
    ("kinds", "names", "chunks", "halved"),
    [
        (["time", "space", "space"], "tyx", (2, 8, 8), False),
        (["space", "space", "space"], "zyx", (3, 8, 8), True),  # z appended: levels pair planes
    ],
)
def test_every_publish_shows_all_levels_over_the_same_extent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kinds: list[str], names: str, chunks: Any, halved: bool
) -> None:
    """Each publish writes every level's shape at once, and the shapes on disk then agree:
    level k covers ceil(n / 2**k) planes of a halved append axis, the same n otherwise."""
    from acqzarr.engine.documents import ImageDocuments

    seen: list[list[int]] = []
    original = ImageDocuments.publish

    def spy(self: ImageDocuments, extents: list[int], frames: int) -> None:
        original(self, extents, frames)
        seen.append(
            [zarr.open_array(str(tmp_path / "s.zarr" / "img" / str(k)), mode="r").shape[0] for k in range(3)]
        )

    monkeypatch.setattr(ImageDocuments, "publish", spy)
    monkeypatch.setattr("acqzarr.engine.publish.PUBLISH_INTERVAL", 0.0)  # every stored band publishes
    monkeypatch.setattr("acqzarr.engine.publish.PUBLISH_SHARE", 1.0)
    data = sample_data((41, 24, 24), "uint16")
    record(tmp_path / "s.zarr", 3, data, kinds, names, chunks, az.Multiscale(levels=3))
    assert len(seen) > 3 and seen[-1][0] == 41
    for shapes in seen:
        n = shapes[0]
        assert shapes == [-(-n // 2**k) if halved else n for k in range(3)], seen


def test_close_waits_for_every_level_even_when_downsampling_lags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each level's finish queues the next level's on the downsampling thread; close must wait for
    those chained jobs too (it once stopped the thread before them, leaving the last level short)."""
    from acqzarr.engine.pyramid import PyramidLevel

    original = PyramidLevel._finish

    def slow(self: PyramidLevel, extent: int, failed: bool) -> None:
        time.sleep(0.05)
        original(self, extent, failed)

    monkeypatch.setattr(PyramidLevel, "_finish", slow)
    data = sample_data((61, 64, 64), "uint16")  # the last band of every level completes at close
    kinds = ["time", "space", "space"]
    record(tmp_path / "s.zarr", 3, data, kinds, "tyx", (8, 8, 8), az.Multiscale(levels=4))
    expected = reference_pyramid(data, ["time", "space", "space"], 4, "mean")
    for k in range(4):
        assert_reads_back(tmp_path / "s.zarr" / "img" / str(k), 3, expected[k])
