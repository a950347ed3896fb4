"""reduce_block and downsample: one pyramid step, against a reference computed another way.

The reference pads odd axes by repeating the last sample (``np.pad(mode="edge")``), reshapes every
halved axis ``n`` into ``(n / 2, 2)`` and reduces over the pair axes; integer means are exact Python
integer arithmetic, ``floor(sum / n + 1/2) == (2 * sum + n) // (2 * n)``.  The code under test works on
strided views with widened (or split) integer sums instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from acqzarr.engine.reducers import downsample, reduce_block

INTS = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]
FLOATS = ["float32", "float64"]
METHODS = ["mean", "min", "max", "decimate"]


def reference(x: np.ndarray[Any, Any], axes: tuple[int, ...], method: str) -> np.ndarray[Any, Any]:
    x = np.pad(x, [(0, x.shape[a] % 2 if a in axes else 0) for a in range(x.ndim)], mode="edge")
    shape: list[int] = []
    pairs: list[int] = []
    for a, n in enumerate(x.shape):
        if a in axes:
            shape += [n // 2, 2]
            pairs.append(len(shape) - 1)
        else:
            shape.append(n)
    blocks = x.reshape(shape)
    if method == "decimate":
        return blocks[tuple(0 if i in pairs else slice(None) for i in range(blocks.ndim))]
    if method == "min":
        return blocks.min(axis=tuple(pairs))
    if method == "max":
        return blocks.max(axis=tuple(pairs))
    n = 2 ** len(axes)
    if x.dtype.kind == "f":
        return blocks.astype(np.longdouble).sum(axis=tuple(pairs)) / n  # compared with a tolerance
    total = blocks.astype(object).sum(axis=tuple(pairs))
    return ((2 * total + n) // (2 * n)).astype(x.dtype)


def assert_float_mean(actual: np.ndarray[Any, Any], x: np.ndarray[Any, Any], axes: tuple[int, ...]) -> None:
    """Within the cast back to the dtype plus what the float64 summation order may lose."""
    exact = reference(x, axes, "mean")
    biggest = reference(np.abs(x.astype(np.longdouble)), axes, "max")
    expected = exact.astype(x.dtype)
    info = np.finfo(x.dtype)
    # One ulp of the result (eps relative, or the smallest subnormal near 0; np.spacing overflows
    # at the largest float) plus the float64 summation slack.
    ulp = np.abs(expected).astype(np.longdouble) * info.eps + info.smallest_subnormal
    slack = ulp + 8 * np.finfo(np.float64).eps * biggest
    assert actual.dtype == x.dtype
    assert actual.shape == exact.shape
    assert (np.abs(actual.astype(np.longdouble) - exact) <= slack).all()


@st.composite
def blocks(draw: st.DrawFn, dtypes: list[str]) -> tuple[np.ndarray[Any, Any], tuple[int, ...]]:
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7))
    if dtype.kind == "f":
        elements = st.floats(width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    else:
        info = np.iinfo(dtype)
        # Mostly the extremes, where overflow and rounding go wrong, and anything in between.
        elements = st.one_of(
            st.integers(int(info.max) - 8, int(info.max)),
            st.integers(int(info.min), int(info.min) + 8),
            st.integers(int(info.min), int(info.max)),
        )
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    axes = draw(
        st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=min(3, len(shape)), unique=True)
    )
    return x, tuple(sorted(axes))


# -- hand-worked examples ---------------------------------------------------


def test_mean_rounds_half_up_and_odd_sizes_replicate_the_edge() -> None:
    x = np.array([0, 1, 2, 4, 7], np.uint8)
    # pairs (0, 1) -> 0.5 -> 1, (2, 4) -> 3, (7, 7) -> 7
    np.testing.assert_array_equal(reduce_block(x, (0,), "mean"), np.array([1, 3, 7], np.uint8))


def test_negative_means_round_half_up_toward_positive_infinity() -> None:
    x = np.array([-3, -2, -5, -4, 1, 2, -1, 0], np.int16)
    # -2.5 -> -2, -4.5 -> -4, 1.5 -> 2, -0.5 -> 0
    np.testing.assert_array_equal(reduce_block(x, (0,), "mean"), np.array([-2, -4, 2, 0], np.int16))


def test_a_2d_block_of_a_3x3_array() -> None:
    x = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.uint16)
    # blocks: [[1,2],[4,5]] [[3,3],[6,6]] / [[7,8],[7,8]] [[9,9],[9,9]]
    cases = {
        "mean": [[3, 5], [8, 9]],  # 3.0, 4.5 -> 5, 7.5 -> 8, 9
        "min": [[1, 3], [7, 9]],
        "max": [[5, 6], [8, 9]],
        "decimate": [[1, 3], [7, 9]],
    }
    for method, expected in cases.items():
        out = reduce_block(x, (0, 1), method)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, np.array(expected, np.uint16), err_msg=method)


def test_three_axes_average_eight_samples() -> None:
    x = np.arange(8, dtype=np.int32).reshape(2, 2, 2)  # 0..7: 3.5 -> 4
    np.testing.assert_array_equal(reduce_block(x, (0, 1, 2), "mean"), np.array([[[4]]], np.int32))
    x = np.array([[[0, 0], [0, 0]], [[0, 0], [0, 3]]], np.uint8)  # 3 / 8 -> 0
    np.testing.assert_array_equal(reduce_block(x, (0, 1, 2), "mean"), np.array([[[0]]], np.uint8))
    x[1, 1, 1] = 4  # 4 / 8 = 0.5 -> 1
    np.testing.assert_array_equal(reduce_block(x, (0, 1, 2), "mean"), np.array([[[1]]], np.uint8))


@pytest.mark.parametrize("dtype", INTS)
@pytest.mark.parametrize("n_axes", [1, 2, 3])
def test_integer_means_at_the_extremes_do_not_overflow(dtype: str, n_axes: int) -> None:
    info = np.iinfo(dtype)
    hi, lo = int(info.max), int(info.min)
    shape = (2,) * n_axes
    axes = tuple(range(n_axes))
    n = 2**n_axes
    for fill, expected in [(hi, hi), (lo, lo)]:
        out = reduce_block(np.full(shape, fill, dtype), axes, "mean")
        assert out.dtype == np.dtype(dtype)
        assert int(out.reshape(-1)[0]) == expected
    # max and max - 1, half each: the mean is max - 1/2, which rounds up to max.
    x = np.full(n, hi, dtype)
    x[: n // 2] = hi - 1
    assert int(reduce_block(x.reshape(shape), axes, "mean").reshape(-1)[0]) == hi
    # One sample below max: max - 1/n rounds to max (n >= 2).
    x = np.full(n, hi, dtype)
    x[0] = hi - 1
    assert int(reduce_block(x.reshape(shape), axes, "mean").reshape(-1)[0]) == hi
    # The extremes together: (min + max) / 2 = -1/2 (signed, rounds to 0) or max / 2 (unsigned).
    x = np.full(n, hi, dtype)
    x[: n // 2] = lo
    expected = (2 * (n // 2) * (lo + hi) + n) // (2 * n)
    assert int(reduce_block(x.reshape(shape), axes, "mean").reshape(-1)[0]) == expected


def test_float32_means_accumulate_in_float64() -> None:
    big = np.finfo(np.float32).max
    out = reduce_block(np.full((2, 2), big, np.float32), (0, 1), "mean")  # a float32 sum overflows
    assert out.dtype == np.float32
    assert out[0, 0] == big
    # A float32 sum loses the 1s beside 2**24 (each 2**24 + 1 rounds back to 2**24); float64 keeps
    # them: (2**24 + 3) / 4 = 4194304.75, a tie between float32 neighbours that rounds to even.
    x = np.array([[2.0**24, 1.0], [1.0, 1.0]], np.float32)
    assert reduce_block(x, (0, 1), "mean")[0, 0] == np.float32(4194305.0)


def test_float64_means_of_the_largest_values_stay_finite() -> None:
    big = np.finfo(np.float64).max
    out = reduce_block(np.full((2, 2), big, np.float64), (0, 1), "mean")
    assert out[0, 0] == big


def test_no_axes_leaves_the_block_as_it_is() -> None:
    x = np.arange(12, dtype=np.uint16).reshape(3, 4)
    for method in METHODS:
        np.testing.assert_array_equal(reduce_block(x, (), method), x)


def test_axes_not_named_are_not_reduced() -> None:
    x = np.arange(3 * 5 * 7, dtype=np.uint16).reshape(3, 5, 7)
    for method in METHODS:
        out = reduce_block(x, (1,), method)
        assert out.shape == (3, 3, 7)
        np.testing.assert_array_equal(out, reference(x, (1,), method), err_msg=method)


def test_decimate_keeps_the_even_samples() -> None:
    x = np.arange(5 * 6, dtype=np.int32).reshape(5, 6)
    out = reduce_block(x, (0, 1), "decimate")
    np.testing.assert_array_equal(out, [[0, 2, 4], [12, 14, 16], [24, 26, 28]])
    assert out.flags.c_contiguous


# -- properties ----------------------------------------------------------------


@given(case=blocks(INTS), method=st.sampled_from(METHODS))
def test_integer_reductions_match_the_reference(
    case: tuple[np.ndarray[Any, Any], tuple[int, ...]], method: str
) -> None:
    x, axes = case
    out = reduce_block(x, axes, method)
    expected = reference(x, axes, method)
    assert out.dtype == x.dtype
    assert out.shape == tuple(-(-n // 2) if a in axes else n for a, n in enumerate(x.shape))
    np.testing.assert_array_equal(out, expected)


@given(case=blocks(FLOATS), method=st.sampled_from(METHODS))
def test_float_reductions_match_the_reference(
    case: tuple[np.ndarray[Any, Any], tuple[int, ...]], method: str
) -> None:
    x, axes = case
    out = reduce_block(x, axes, method)
    if method == "mean":
        assert_float_mean(out, x, axes)
    else:
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(out, reference(x, axes, method))


@given(case=blocks(["uint16", "int64", "float32"]), method=st.sampled_from(METHODS))
def test_downsample_halves_a_whole_level_like_reduce_block(
    case: tuple[np.ndarray[Any, Any], tuple[int, ...]], method: str
) -> None:
    x, axes = case
    # Called as a reader of the multiscale metadata would: keyword arguments, axes as a list of ints.
    out = downsample(x, method=method, axes=[np.int64(a) for a in axes])
    assert out.dtype == x.dtype
    if x.dtype.kind == "f" and method == "mean":
        assert_float_mean(out, x, axes)
    else:
        np.testing.assert_array_equal(out, reference(x, axes, method))


def test_downsample_takes_any_array_like() -> None:
    out = downsample([[1, 2, 3], [4, 5, 6], [7, 8, 9]], "mean", (0, 1))
    np.testing.assert_array_equal(out, [[3, 5], [8, 9]])


@pytest.mark.parametrize("dtype", ["uint16", "int32", "int64", "float32"])
@pytest.mark.parametrize(("shape", "axes"), [((301, 9), (0, 1)), ((2, 263, 5), (0, 1, 2)), ((3, 200), (1,))])
def test_blocks_longer_than_one_strip_match_the_reference(
    dtype: str, shape: tuple[int, ...], axes: tuple[int, ...]
) -> None:
    """Long axes are halved strip by strip (64 output rows a pass): the strips, the last short one
    and an odd length that replicates its edge join up exactly."""
    rng = np.random.default_rng(7)
    x = (rng.normal(0, 1e4, shape) if dtype == "float32" else rng.integers(-9000, 9000, shape)).astype(dtype)
    if dtype.startswith("u"):
        x = np.abs(x)
    for method in METHODS:
        out = reduce_block(x, axes, method)
        if method == "mean" and dtype == "float32":
            assert_float_mean(out, x, axes)
        else:
            np.testing.assert_array_equal(out, reference(x, axes, method), err_msg=method)
