"""Property tests: any valid geometry round-trips exactly (zarr-python as the oracle)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import acqzarr as az
from builders import stream_settings
from readback import read_zarr


@st.composite
def geometries(draw: st.DrawFn) -> dict[str, Any]:
    ndim = draw(st.integers(2, 5))
    version = draw(st.sampled_from([2, 3]))
    bounded = draw(st.booleans())
    steps = draw(st.integers(0, 9))  # append-axis steps written
    rest = [draw(st.integers(1, 3 if i < ndim - 3 else 21)) for i in range(ndim - 1)]
    sizes = [max(steps, 1) if bounded else 0, *rest]
    chunks = [draw(st.integers(1, 5))] + [draw(st.integers(1, max(1, s + 2))) for s in rest]
    shards = [draw(st.integers(1, 3)) for _ in range(ndim)] if version == 3 else [1] * ndim
    dtype = draw(st.sampled_from(["uint8", "int16", "uint32", "float64"]))
    compressed = draw(st.booleans())
    split = draw(st.integers(1, 4))  # how many frames per append call
    return dict(
        ndim=ndim,
        version=version,
        sizes=sizes,
        chunks=chunks,
        shards=shards,
        dtype=dtype,
        compressed=compressed,
        steps=steps,
        split=split,
    )


@given(geometries())
def test_any_geometry_round_trips(g: dict[str, Any]) -> None:
    frame_nd = 1 if g["ndim"] == 2 else 2
    full_shape = (g["steps"], *g["sizes"][1:])
    rng = np.random.default_rng(g["steps"])
    expected = (rng.random(full_shape) * 100).astype(g["dtype"])
    expected.reshape(-1)[::3] = 0  # some zeros, so fill-value chunks appear in small geometries
    frames = expected.reshape(-1, *full_shape[-frame_nd:])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.zarr"
        settings = stream_settings(
            path,
            g["version"],
            g["sizes"],
            g["chunks"],
            shards=g["shards"],
            key="a",
            dtype=g["dtype"],
            compression=az.Blosc() if g["compressed"] else None,
        )
        with az.open_stream(settings) as stream:
            for i in range(0, len(frames), g["split"]):
                stream.append(frames[i : i + g["split"]])
        got = read_zarr(path / "a" / "0")
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
