"""Bad input fuzzing: every malformed frame or setting gives its typed error and changes nothing."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import acqzarr as az
from builders import stream_settings

from .sizes import RESULTS, scale

pytestmark = pytest.mark.reliability

FRAME = (12, 10)
DTYPES = ["uint8", "uint16", "int16", "float32", "float64", "int64", ">u2", "bool", "complex64"]
COUNTS: dict[str, int] = {
    "frames_accepted": 0,
    "frames_rejected": 0,
    "settings_valid": 0,
    "settings_rejected": 0,
}


@st.composite
def candidate_frames(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    dtype = draw(st.sampled_from(DTYPES))
    right_shape = draw(st.booleans())
    if right_shape:
        shape: tuple[int, ...] = draw(st.sampled_from([FRAME, (draw(st.integers(1, 4)), *FRAME)]))
    else:
        shape = tuple(draw(st.lists(st.integers(0, 14), min_size=0, max_size=4)))
    base = np.arange(int(np.prod(shape)) * 4, dtype=np.int64).astype(dtype)
    layout = draw(st.sampled_from(["contiguous", "strided", "fortran", "readonly"]))
    if layout == "strided":
        arr = base[::2][: int(np.prod(shape))].reshape(shape) if shape else base[:1].reshape(())
    else:
        arr = base[: int(np.prod(shape))].reshape(shape)
        if layout == "fortran":
            arr = np.asfortranarray(arr)
        elif layout == "readonly":
            arr = arr.copy()
            arr.flags.writeable = False
    return arr


@settings(max_examples=scale("FUZZ_FRAMES", 120), deadline=None)
@given(st.lists(candidate_frames(), min_size=1, max_size=6))
def test_frames_are_accepted_exactly_when_shape_and_dtype_fit(frames: list[np.ndarray[Any, Any]]) -> None:
    settings_ = stream_settings("fuzz", 3, (0, *FRAME), (2, 8, 8), key="c")
    store = az.MemoryStore()
    accepted: list[np.ndarray[Any, Any]] = []
    with az.open_stream(settings_, store=store) as stream:
        for f in frames:
            fits = f.dtype == np.dtype("uint16") and (
                f.shape == FRAME or (f.ndim == 3 and f.shape[1:] == FRAME)
            )
            before = stream.stats().frames_appended
            if fits:
                stream.append(f)
                accepted.extend(f.reshape(-1, *FRAME))
                COUNTS["frames_accepted"] += 1
            else:
                with pytest.raises(az.FrameError):
                    stream.append(f)
                assert stream.stats().frames_appended == before
                COUNTS["frames_rejected"] += 1
    # What was accepted is exactly what the store holds.
    import zarr

    group = zarr.open_group(zarr.storage.MemoryStore({k: _buf(store.get(k)) for k in store.list()}), mode="r")
    got = np.asarray(group["c/0"][:])  # type: ignore[index]
    expected = np.stack(accepted) if accepted else np.zeros((0, *FRAME), np.uint16)
    np.testing.assert_array_equal(got, expected)


def _buf(data: bytes) -> Any:
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().buffer.from_bytes(data)


VALID: dict[str, Any] = {
    "store": "x.zarr",
    "version": 3,
    "overwrite": False,
    "arrays": [
        {
            "key": "cam",
            "dtype": "uint16",
            "compression": {"cname": "lz4", "clevel": 1, "shuffle": "byte"},
            "multiscale": {"levels": 2, "method": "mean"},
            "dimensions": [
                {"name": "t", "kind": "time", "size": 0, "chunk": 4},
                {"name": "y", "kind": "space", "size": 64, "chunk": 32, "shard": 2},
                {"name": "x", "kind": "space", "size": 64, "chunk": 32, "shard": 2},
            ],
        }
    ],
}
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**10),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=scale("FUZZ_SETTINGS", 300), deadline=None)
@given(st.data())
def test_mutated_settings_validate_or_name_the_key(data: st.DataObject) -> None:
    doc = copy.deepcopy(VALID)
    paths = _paths(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent: Any = doc
        try:
            for p in path[:-1]:
                parent = parent[p]
            action = data.draw(st.sampled_from(["set", "delete", "extra"]))
            if action == "set":
                parent[path[-1]] = data.draw(JUNK)
            elif action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[data.draw(st.text(min_size=1, max_size=4))] = 1
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    try:
        az.StreamSettings.from_mapping(doc)
        COUNTS["settings_valid"] += 1
    except az.ConfigError as exc:
        COUNTS["settings_rejected"] += 1
        lines = str(exc).splitlines()
        assert lines[0] == "settings: invalid settings"
        assert all(": " in ln for ln in lines[1:]) and len(lines) > 1


def test_write_fuzz_counts() -> None:
    """Runs after the fuzz tests (file order): records how many cases they tried."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    import json

    (RESULTS / "fuzz.json").write_text(json.dumps(COUNTS, indent=2))
    assert sum(COUNTS.values()) > 0
