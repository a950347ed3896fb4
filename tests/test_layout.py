"""ArrayLayout: a frame's axes, its band and slot, and the chunk-major band buffer, checked without a stream.

The oracle for the copies is the definition in ``layout.py``'s docstring, written out sample by sample:
sample ``p`` of the frame in slot ``w`` lands at ``band[p // frame_chunks, w, p % frame_chunks]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import acqzarr as az
from acqzarr.writers.layout import ArrayLayout
from builders import dims


def layout_of(
    shape: Sequence[int],
    chunks: Sequence[int],
    *,
    shards: Sequence[int] | None = None,
    dtype: str = "uint16",
) -> ArrayLayout:
    settings = az.ArraySettings(key="a", dtype=dtype, dimensions=dims(shape, chunks, shards))  # type: ignore[arg-type]
    return ArrayLayout(settings, sharded=shards is not None)


def reference_band(
    layout: ArrayLayout, frames: dict[tuple[int, ...], np.ndarray[Any, Any]], fill: int
) -> np.ndarray[Any, Any]:
    """The band buffer holding ``frames`` (slot -> frame), everything else ``fill``, one sample at a time."""
    band = np.full(layout.band_shape, fill, layout.dtype)
    for within, frame in frames.items():
        for p in np.ndindex(*frame.shape):
            tile = tuple(i // c for i, c in zip(p, layout.frame_chunks, strict=True))
            inner = tuple(i % c for i, c in zip(p, layout.frame_chunks, strict=True))
            band[(*tile, *within, *inner)] = frame[p]
    return band


def random_frame(layout: ArrayLayout, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    # 1.. keeps every sample distinct from the fill values the tests use (0 and the sentinel below).
    return rng.integers(1, 60000, layout.frame_shape).astype(layout.dtype)


SENTINEL = 65535

# (shape, chunks): every axis count, sizes that do not divide by the chunks, a chunk larger than its axis,
# and one that divides exactly (only full tiles).
CASES = [
    pytest.param((0, 37), (4, 16), id="2d-unbounded"),
    pytest.param((9, 10), (4, 16), id="2d-chunk-over-size"),
    pytest.param((0, 37, 50), (3, 16, 16), id="3d"),
    pytest.param((6, 32, 48), (2, 16, 16), id="3d-divides"),
    pytest.param((0, 3, 21, 10), (2, 2, 8, 4), id="4d"),
    pytest.param((5, 2, 7, 13, 9), (2, 1, 3, 5, 4), id="5d"),
]


# -- axes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chunks", "index_names", "frame_shape", "frame_grid"),
    [
        ((0, 37), (4, 16), ("y",), (37,), (3,)),
        ((0, 37, 50), (3, 16, 16), ("t",), (37, 50), (3, 4)),
        ((0, 3, 21, 10), (2, 2, 8, 4), ("t", "c"), (21, 10), (3, 3)),
        ((5, 2, 7, 13, 9), (2, 1, 3, 5, 4), ("t", "c", "z"), (13, 9), (3, 3)),
    ],
    ids=["2d", "3d", "4d", "5d"],
)
def test_the_frame_is_the_last_two_axes_or_the_last_of_a_2_axis_array(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    index_names: tuple[str, ...],
    frame_shape: tuple[int, ...],
    frame_grid: tuple[int, ...],
) -> None:
    lay = layout_of(shape, chunks)
    n_index = len(index_names)
    assert lay.ndim == len(shape)
    assert lay.frame_ndim == len(shape) - n_index
    assert lay.index_ndim == n_index
    assert lay.index_names == index_names
    assert lay.frame_shape == frame_shape
    assert lay.index_shape == shape[:n_index]
    assert lay.index_chunks == chunks[:n_index]
    assert lay.frame_chunks == chunks[n_index:]
    assert lay.frame_grid == frame_grid
    assert lay.band_shape == (*frame_grid, *chunks)
    assert lay.band_slots == int(np.prod(chunks[:n_index]))
    assert lay.frame_bytes == int(np.prod(frame_shape)) * 2
    assert lay.chunk_nbytes == int(np.prod(chunks)) * 2
    assert lay.band_nbytes == int(np.prod(frame_grid)) * lay.chunk_nbytes


def test_shard_shape_and_the_frame_part_of_the_shard_grid() -> None:
    lay = layout_of((0, 2, 21, 10), (2, 1, 8, 4), shards=(1, 2, 2, 2))
    assert lay.chunks_per_shard == (1, 2, 2, 2)
    assert lay.shard_shape == (2, 2, 16, 8)
    assert lay.index_chunks_per_shard == (1, 2)
    assert lay.frame_chunks_per_shard == (2, 2)
    assert lay.frame_shard_grid == (2, 2)  # frame grid (3, 3) in shards of 2 x 2 chunks
    unsharded = layout_of((0, 2, 21, 10), (2, 1, 8, 4))
    assert unsharded.chunks_per_shard == (1, 1, 1, 1)
    assert unsharded.shard_shape == unsharded.chunks


def test_shape_for_puts_the_extent_on_the_append_axis() -> None:
    assert layout_of((0, 37, 50), (3, 16, 16)).shape_for(12) == (12, 37, 50)
    assert layout_of((5, 2, 7, 13, 9), (2, 1, 3, 5, 4)).shape_for(3) == (3, 2, 7, 13, 9)
    assert layout_of((0, 37), (4, 16)).shape_for(0) == (0, 37)


def test_describe_names_every_index_axis() -> None:
    assert layout_of((5, 2, 7, 13, 9), (2, 1, 3, 5, 4)).describe((3, 1, 17)) == "{t: 3, c: 1, z: 17}"
    assert layout_of((0, 37), (4, 16)).describe((8,)) == "{y: 8}"


# -- bands ----------------------------------------------------------------


def test_band_of_splits_an_index_into_band_and_slot() -> None:
    lay = layout_of((5, 2, 7, 13, 9), (2, 1, 3, 5, 4))
    assert lay.band_of((0, 0, 0)) == ((0, 0, 0), (0, 0, 0))
    assert lay.band_of((4, 1, 6)) == ((2, 1, 2), (0, 0, 0))
    assert lay.band_of((3, 1, 5)) == ((1, 1, 1), (1, 0, 2))
    assert layout_of((0, 37, 50), (3, 16, 16)).band_of((1000,)) == ((333,), (1,))


def test_band_extent_shortens_edge_bands() -> None:
    lay = layout_of((5, 2, 7, 13, 9), (2, 1, 3, 5, 4))
    assert lay.band_extent((0, 0, 0), None) == (2, 1, 3)
    assert lay.band_extent((1, 1, 1), None) == (2, 1, 3)
    assert lay.band_extent((2, 1, 2), None) == (1, 1, 1)  # t: 5 - 4, z: 7 - 6
    assert lay.band_extent((2, 0, 0), None) == (1, 1, 3)


def test_band_extent_of_an_unbounded_append_axis_is_a_full_chunk_until_the_extent_is_known() -> None:
    lay = layout_of((0, 3, 21, 10), (4, 2, 8, 4))
    assert lay.band_extent((0, 0), None) == (4, 2)
    assert lay.band_extent((10**6, 1), None) == (4, 1)  # c: 3 - 2
    # At close the append axis ends at the extent: the last row is cut, rows past it are empty.
    assert lay.band_extent((0, 0), 10) == (4, 2)
    assert lay.band_extent((2, 0), 10) == (2, 2)
    assert lay.band_extent((2, 1), 10) == (2, 1)
    assert lay.band_extent((3, 0), 10) == (0, 2)


def test_the_final_extent_also_bounds_a_bounded_append_axis() -> None:
    lay = layout_of((9, 37, 50), (4, 16, 16))
    assert lay.band_extent((2,), None) == (1,)
    assert lay.band_extent((1,), 6) == (2,)
    assert lay.band_extent((1,), 3) == (0,)


def test_row_bands_lists_every_band_of_one_append_step_in_c_order() -> None:
    lay = layout_of((5, 2, 7, 13, 9), (2, 1, 3, 5, 4))
    assert lay.band_grid_rest == (2, 3)
    assert lay.bands_per_row == 6
    assert lay.row_bands(4) == [(4, 0, 0), (4, 0, 1), (4, 0, 2), (4, 1, 0), (4, 1, 1), (4, 1, 2)]
    assert layout_of((0, 37, 50), (3, 16, 16)).row_bands(7) == [(7,)]
    assert layout_of((0, 37), (4, 16)).row_bands(0) == [(0,)]


def test_chunk_grid_coords_cover_the_frame_grid_in_c_order() -> None:
    lay = layout_of((0, 37, 50), (3, 16, 16))
    coords = lay.chunk_grid_coords()
    assert coords == sorted(coords)
    assert coords == [(y, x) for y in range(3) for x in range(4)]


# -- copies into the band buffer --------------------------------------------


def slots(lay: ArrayLayout) -> list[tuple[int, ...]]:
    return list(np.ndindex(*lay.index_chunks))


@pytest.mark.parametrize(("shape", "chunks"), CASES)
def test_copy_frame_puts_every_sample_where_the_chunk_major_layout_says(
    shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    lay = layout_of(shape, chunks)
    rng = np.random.default_rng(1)
    written = {w: random_frame(lay, rng) for w in slots(lay)[::2]}  # every other slot, the rest untouched
    band = np.full(lay.band_shape, SENTINEL, lay.dtype)
    for within, frame in written.items():
        lay.copy_frame(band, within, frame)
    np.testing.assert_array_equal(band, reference_band(lay, written, SENTINEL))


@pytest.mark.parametrize(("shape", "chunks"), CASES)
def test_copy_frames_puts_a_run_of_frames_where_one_copy_each_would(
    shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    """A run along the last index axis (what one call's stack fills) in one copy per region."""
    lay = layout_of(shape, chunks)
    rng = np.random.default_rng(2)
    last = lay.index_chunks[-1]
    for head in np.ndindex(*lay.index_chunks[:-1]):
        for start, n in ((0, last), (last // 2, last - last // 2), (0, 1)):
            if n == 0:
                continue
            frames = np.stack([random_frame(lay, rng) for _ in range(n)])
            band = np.full(lay.band_shape, SENTINEL, lay.dtype)
            lay.copy_frames(band, (*head, start), frames)
            written = {(*head, start + k): frames[k] for k in range(n)}
            np.testing.assert_array_equal(band, reference_band(lay, written, SENTINEL))


@pytest.mark.parametrize(("shape", "chunks"), CASES)
def test_a_full_band_holds_each_chunk_contiguous_and_zero_padded(
    shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    """``band[g]`` is the chunk at frame-grid position ``g``: the matching region of the band's frames."""
    lay = layout_of(shape, chunks)
    rng = np.random.default_rng(2)
    stack = rng.integers(1, 60000, (*lay.index_chunks, *lay.frame_shape)).astype(lay.dtype)
    band = np.zeros(lay.band_shape, lay.dtype)
    for within in slots(lay):
        lay.copy_frame(band, within, stack[within])
    for g in lay.chunk_grid_coords():
        chunk = band[g]
        assert chunk.shape == lay.chunks
        assert chunk.flags.c_contiguous
        region = stack[
            (Ellipsis, *(slice(i * c, (i + 1) * c) for i, c in zip(g, lay.frame_chunks, strict=True)))
        ]
        expected = np.zeros(lay.chunks, lay.dtype)
        expected[tuple(slice(0, n) for n in region.shape)] = region
        np.testing.assert_array_equal(chunk, expected, err_msg=f"chunk {g}")


@pytest.mark.parametrize(("shape", "chunks"), CASES)
def test_read_frame_returns_what_copy_frame_stored(shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    lay = layout_of(shape, chunks)
    rng = np.random.default_rng(3)
    # Read out of a band filled at random everywhere (padding included): only the slot's samples count.
    band = rng.integers(1, 60000, lay.band_shape).astype(lay.dtype)
    for within in slots(lay):
        out = np.zeros(lay.frame_shape, lay.dtype)
        lay.read_frame(band, within, out)
        frame = np.zeros(lay.frame_shape, lay.dtype)
        for p in np.ndindex(*lay.frame_shape):
            tile = tuple(i // c for i, c in zip(p, lay.frame_chunks, strict=True))
            inner = tuple(i % c for i, c in zip(p, lay.frame_chunks, strict=True))
            frame[p] = band[(*tile, *within, *inner)]
        np.testing.assert_array_equal(out, frame, err_msg=f"slot {within}")
    # ... and back: a frame copied in reads out unchanged.
    frame = random_frame(lay, rng)
    within = slots(lay)[-1]
    lay.copy_frame(band, within, frame)
    out = np.zeros(lay.frame_shape, lay.dtype)
    lay.read_frame(band, within, out)
    np.testing.assert_array_equal(out, frame)


@pytest.mark.parametrize(("shape", "chunks"), CASES)
def test_copy_frame_with_a_scalar_clears_only_that_slot(
    shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    lay = layout_of(shape, chunks)
    rng = np.random.default_rng(4)
    frames = {w: random_frame(lay, rng) for w in slots(lay)}
    band = reference_band(lay, frames, 0)  # a full band, zero padding
    cleared = slots(lay)[-1]
    lay.copy_frame(band, cleared, 0)
    frames[cleared] = np.zeros(lay.frame_shape, lay.dtype)
    np.testing.assert_array_equal(band, reference_band(lay, frames, 0))


@st.composite
def layouts(draw: st.DrawFn) -> ArrayLayout:
    n = draw(st.integers(2, 5))
    n_frame = 1 if n == 2 else 2
    n_index = n - n_frame
    frame_shape = draw(st.lists(st.integers(1, 23), min_size=n_frame, max_size=n_frame))
    frame_chunks = draw(st.lists(st.integers(1, 9), min_size=n_frame, max_size=n_frame))
    append = draw(st.sampled_from([0, 4]))
    index_rest = draw(st.lists(st.integers(1, 4), min_size=n_index - 1, max_size=n_index - 1))
    index_chunks = draw(st.lists(st.integers(1, 3), min_size=n_index, max_size=n_index))
    return layout_of((append, *index_rest, *frame_shape), (*index_chunks, *frame_chunks))


@given(lay=layouts(), seed=st.integers(0, 2**32 - 1))
def test_copy_and_read_round_trip_for_any_geometry(lay: ArrayLayout, seed: int) -> None:
    rng = np.random.default_rng(seed)
    all_slots = slots(lay)
    within = all_slots[int(rng.integers(len(all_slots)))]
    frame = random_frame(lay, rng)
    band = np.full(lay.band_shape, SENTINEL, lay.dtype)
    lay.copy_frame(band, within, frame)
    np.testing.assert_array_equal(band, reference_band(lay, {within: frame}, SENTINEL))
    out = np.zeros(lay.frame_shape, lay.dtype)
    lay.read_frame(band, within, out)
    np.testing.assert_array_equal(out, frame)


def test_a_final_extent_of_zero_leaves_no_slots() -> None:
    lay = layout_of((0, 37, 50), (3, 16, 16))
    assert lay.band_extent((0,), 0) == (0,)
