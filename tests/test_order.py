"""Frames in any order: acquisition orders, index-addressed appends, skips, and their errors.

The oracle is a reference assembled by index in numpy; the store is read back
with zarr-python and tensorstore.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import acqzarr as az
from acqzarr.engine.memory import MIN_DEFAULT_CAP, plan_memory
from acqzarr.engine.order import FrameOrder
from acqzarr.writers.layout import ArrayLayout
from builders import UNSHARDED, array_settings, stream_settings
from readback import assert_reads_back
from test_multiscale import reference_pyramid

T, C, Z, Y, X = 3, 2, 7, 20, 18
KINDS = ["time", "channel", "space", "space", "space"]


def tczyx(
    path: Path, version: int, order: str, *, bounded_t: bool = False, levels: int = 1, **kwargs: Any
) -> az.StreamSettings:
    """A (t, c, z, y, x) array; v3 shards span two bands along z (and 2x2 chunks in y/x)."""
    return stream_settings(
        path,
        version,
        (T if bounded_t else 0, C, Z, Y, X),
        (1, 1, 2, 8, 8),
        shards=(1, 1, 2, 2, 2),
        key="",
        acquisition_order=list(order),
        multiscale=az.Multiscale(levels=levels, method="mean") if levels > 1 else None,
        **kwargs,
    )


def acquisition(order: str) -> list[tuple[int, int, int]]:
    """Every (t, c, z) in the order ``order`` acquires them (slowest axis first)."""
    size = {"t": T, "c": C, "z": Z}
    out = []
    for values in itertools.product(*(range(size[a]) for a in order)):
        pos = dict(zip(order, values, strict=True))
        out.append((pos["t"], pos["c"], pos["z"]))
    return out


@pytest.fixture(scope="module")
def data() -> np.ndarray[Any, Any]:
    return np.random.default_rng(7).integers(1, 4000, (T, C, Z, Y, X), dtype=np.uint16)


@pytest.mark.parametrize("order", ["tcz", "tzc", "ctz"])
@pytest.mark.parametrize("how", ["order", "index"])
def test_acquisition_orders_round_trip_with_random_skips(
    tmp_path: Path, version: int, order: str, how: str, data: np.ndarray[Any, Any]
) -> None:
    """Frames in acquisition order (plain appends and skips) or by index (shuffled within each
    timepoint, missing ones left as holes) land where their index says; holes read as 0."""
    rng = np.random.default_rng(sum(map(ord, order + how)) + version)
    seq = acquisition(order)
    holes = {seq[i] for i in rng.choice(len(seq), 5, replace=False)}
    expected = data.copy()
    for t, c, z in holes:
        expected[t, c, z] = 0
    path = tmp_path / "s.zarr"
    # By index, a whole timepoint may arrive shuffled: give the window room for all its bands.
    extra = {"max_inflight_bytes": 64 << 20} if how == "index" else {}
    settings = tczyx(path, version, order, bounded_t=order[0] != "t", levels=2, **extra)
    with az.open_stream(settings) as stream:
        if how == "order":
            for pos in seq:
                if pos in holes:
                    stream.skip()
                else:
                    stream.append(data[pos])
        else:
            by_t: dict[int, list[tuple[int, int, int]]] = {}
            for pos in seq:
                by_t.setdefault(pos[0] if order[0] == "t" else 0, []).append(pos)
            for group in by_t.values():
                for i in rng.permutation(len(group)):
                    t, c, z = group[i]
                    if (t, c, z) not in holes:
                        stream.append(data[t, c, z], index={"t": t, "c": c, "z": z})
    stats = stream.stats()
    assert stats.frames_appended == len(seq) - len(holes)
    assert stats.frames_skipped == len(holes)
    assert stats.frames_flushed == stats.frames_appended
    assert_reads_back(path / "0", version, expected)
    level1 = reference_pyramid(expected, KINDS, 2, "mean")[1]
    assert_reads_back(path / "1", version, level1)


def test_omitted_index_axes_follow_on_from_the_last_frame(tmp_path: Path, data: np.ndarray[Any, Any]) -> None:
    path = tmp_path / "s.zarr"
    expected = np.zeros_like(data)
    with az.open_stream(tczyx(path, 3, "tcz")) as stream:
        stream.append(data[0, 0, :3])  # t0 c0 z0-2, in order
        stream.append(data[0, 1, 0], index={"c": 1, "z": 0})  # t follows on from the cursor (t0 c0 z3)
        stream.append(data[0, 1, 1:])  # then z1.. of c1, by order: the cursor moves on to t1 c0 z0
        stream.append(data[0, 0, 3], index={"t": 0, "c": 0, "z": 3})
        stream.append(data[0, 0, 4:])  # z4-6 of t0 c0; the cursor is then at t0 c1 z0
        stream.append(data[1, 1, 5], index={"t": 1, "z": 5})  # c follows on: 1
    expected[0] = data[0]
    expected[1, 1, 5] = data[1, 1, 5]
    assert stream.stats().frames_skipped == C * Z - 1  # t=1 is the last timepoint: its holes close
    assert_reads_back(path / "0", 3, expected[:2])


def test_a_volume_or_any_stack_appends_as_the_frames_it_holds(
    tmp_path: Path, version: int, data: np.ndarray[Any, Any]
) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(tczyx(path, version, "tcz")) as stream:
        stream.append(data[0])  # (c, z, y, x)
        stream.append(data[1, 0])  # (z, y, x)
        stream.append(data[1, 1, :3])
        stream.append(data[1, 1, 3:], index={"t": 1, "c": 1, "z": 3})
        stream.append(data[2:])  # (1, c, z, y, x)
    assert_reads_back(path / "0", version, data)


def test_volumes_follow_the_acquisition_order(tmp_path: Path, data: np.ndarray[Any, Any]) -> None:
    """With acquisition order t, z, c a timepoint arrives as a (z, c, y, x) volume."""
    path = tmp_path / "s.zarr"
    with az.open_stream(tczyx(path, 3, "tzc")) as stream:
        for t in range(T):
            stream.append(np.ascontiguousarray(data[t].transpose(1, 0, 2, 3)))
    assert_reads_back(path / "0", 3, data)


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_bad_indexes_raise_frame_error_and_change_nothing(
    tmp_path: Path, version: int, data: np.ndarray[Any, Any]
) -> None:
    path = tmp_path / "s.zarr"
    settings = tczyx(path, version, "tcz", bounded_t=True)
    stream = az.open_stream(settings)
    stream.append(data[0])  # timepoint 0: every band complete and stored
    stream.append(data[1, 0, :3])  # t1 c0: band z0-1 stored, band z2-3 open (z2 filled)
    stream.flush()
    before, stats = _files(path), stream.stats()
    bad: list[tuple[Any, dict[str, Any], str]] = [
        (data[1, 0, 0], {"t": 1, "c": 0, "z": 0}, r"falls in band \{t: 1, c: 0, z: 0-1\}, which is already"),
        (data[1, 0, 2], {"t": 1, "c": 0, "z": 2}, r"index \{t: 1, c: 0, z: 2\} was already filled"),
        (data[0, 1, 6], {"t": 0, "c": 1, "z": 6}, "already complete and stored"),
        (data[1, 0, 0], {"t": T, "c": 0, "z": 0}, r"outside the array \(t: 3, c: 2, z: 7\): t=3"),
        (data[1, 0, 0], {"c": C}, "c=2"),
        (data[1, 0, 0], {"z": -1}, "z=-1"),
        (data[1, 0, 0], {"z": 1.5}, r"z=1.5 is not an integer"),
        (data[1, 0, 0], {"q": 0}, r"index axes \['q'\]: not an axis of this array"),
        (data[1, 0, 0], {"y": 0}, "frame axes are not indexed"),
        (data[1, 0, 3:6], {"t": 1, "c": 0, "z": 2}, "was already filled"),  # a stack starting on one
        (data[2, 1], {"t": 2, "c": 1, "z": 1}, r"holds 42 frames; 7 frames from index \{t: 2, c: 1, z: 1\}"),
    ]
    for frame, index, match in bad:
        with pytest.raises(az.FrameError, match=match):
            stream.append(frame, index=index)
        stream.flush()
        assert _files(path) == before, index
        assert stream.stats() == stats
    stream.append(data[1, 0, 3:])  # the cursor did not move: z3.. of t1 c0 still follow
    stream.append(data[1, 1:])
    stream.append(data[2])
    stream.close()
    assert_reads_back(path / "0", version, data)


def test_a_full_window_raises_instead_of_deadlocking(tmp_path: Path, data: np.ndarray[Any, Any]) -> None:
    """With the cap at what storage order needs (one band), opening a second band while the first
    still waits for frames can never succeed: FrameError at once, and nothing changes."""
    path = tmp_path / "s.zarr"
    settings = tczyx(path, 2, "tcz")
    settings = settings.model_copy(update={"max_inflight_bytes": plan_memory(settings).required})
    with az.open_stream(settings) as stream:
        stream.append(data[0, 0, 0])
        stream.flush()
        with pytest.raises(az.FrameError, match=r"needs band \{t: 0, c: 1, z: 0-1\} opened, but 1 open"):
            stream.append(data[0, 1, 0], index={"c": 1, "z": 0})
        stream.append(data[0, 0, 1:])
        stream.append(data[0, 1], index={"c": 1, "z": 0})
    assert_reads_back(path / "0", 2, data[:1])


def test_skips_are_holes_counted_and_checked(
    tmp_path: Path, version: int, data: np.ndarray[Any, Any]
) -> None:
    path = tmp_path / "s.zarr"
    expected = data.copy()
    with az.open_stream(tczyx(path, version, "tcz", bounded_t=True)) as stream:
        stream.skip(0)
        stream.skip(Z)  # all of t0 c0: a band never opened costs no memory
        stream.append(data[0, 1])
        stream.skip(2)
        stream.append(data[1, 0, 2:])
        with pytest.raises(az.FrameError, match="skip takes a count of frames >= 0"):
            stream.skip(-1)
        stream.append(data[1, 1:])
        with pytest.raises(az.FrameError, match="holds 42 frames; 28 already appended, 15 more do not fit"):
            stream.skip(15)
        stream.skip(14)
        with pytest.raises(az.FrameError, match="holds 42 frames; 42 already appended"):
            stream.skip()
    expected[0, 0] = 0
    expected[1, 0, :2] = 0
    expected[2] = 0
    assert stream.stats().frames_skipped == Z + 2 + C * Z
    assert_reads_back(path / "0", version, expected)


def test_a_cap_below_the_open_bands_fails_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    settings = tczyx(path, 3, "tzc")
    need = plan_memory(settings).required
    short = settings.model_copy(update={"max_inflight_bytes": need - 1})
    with pytest.raises(az.ConfigError, match=rf"less than the acquisition orders need: {need} bytes"):
        az.open_stream(short)
    assert not path.exists()


def test_memory_reports_the_cap_and_what_is_reserved(tmp_path: Path, data: np.ndarray[Any, Any]) -> None:
    settings = tczyx(tmp_path / "s.zarr", 3, "tcz")
    plan = plan_memory(settings)
    with az.open_stream(settings) as stream:
        idle = stream.memory()
        stream.append(data[0, 0, 0])
        filling = stream.memory()
    assert idle.cap == plan.default_cap == max(2 * idle.required, MIN_DEFAULT_CAP)
    assert idle.used == 0
    assert filling.used > 0 and filling.peak >= filling.used
    assert stream.memory().used == 0 and stream.memory().peak <= idle.cap


def _layout(order: str, sizes: tuple[int, ...], chunks: tuple[int, ...]) -> FrameOrder:
    names = "tczyx" if len(sizes) == 5 else "tzyx"
    arr = array_settings(3, sizes, chunks, shards=UNSHARDED, names=names, key="")
    return FrameOrder(ArrayLayout(arr, sharded=False), list(order), "a")


@pytest.mark.parametrize(
    ("order", "sizes", "chunks", "bands"),
    [
        ("tcz", (0, 3, 1000, 64, 64), (1, 1, 64, 32, 32), 1),  # storage order: one band at a time
        ("tzc", (0, 3, 1000, 64, 64), (1, 1, 64, 32, 32), 3),  # one per channel
        ("ctz", (5, 3, 1000, 64, 64), (1, 1, 64, 32, 32), 1),
        ("czt", (5, 3, 1000, 64, 64), (1, 1, 64, 32, 32), 5),  # every t waits for its 64 planes
        ("tzc", (0, 3, 1000, 64, 64), (1, 3, 64, 32, 32), 1),  # the channels share a band
        ("tcz", (0, 3, 1000, 64, 64), (1, 1, 1, 32, 32), 1),
        ("tz", (0, 1000, 64, 64), (2, 64, 32, 32), 16),  # two timepoints per band: every z band waits
    ],
)
def test_open_bands_of_an_order(
    order: str, sizes: tuple[int, ...], chunks: tuple[int, ...], bands: int
) -> None:
    assert _layout(order, sizes, chunks).open_bands() == bands


def test_default_memory_does_not_depend_on_the_number_of_planes(tmp_path: Path) -> None:
    def cap(planes: int) -> int:
        settings = stream_settings(
            tmp_path / "x",
            3,
            (0, planes, 2048, 2048),
            (1, 64, 256, 256),
            shards=(1, 4, 4, 4),
            names="tzyx",
            key="",
        )
        return plan_memory(settings).default_cap

    assert cap(256) == cap(1000) == cap(100_000)
    assert cap(1000) < 3 << 30  # ~2 bands of 512 MiB with their worst-case encoding (was 32 GiB)


def test_positions_round_trip_through_the_sequence(tmp_path: Path) -> None:
    order = _layout("zct", (4, 3, 5, 8, 8), (1, 1, 2, 8, 8))
    seen = [order.position(s) for s in range(4 * 3 * 5)]
    assert len(set(seen)) == len(seen)
    assert all(order.sequence(p) == s for s, p in enumerate(seen))
    assert seen[:4] == [(0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0)]  # t is fastest


def test_shards_spanning_bands_on_a_store_without_appends(tmp_path: Path, data: np.ndarray[Any, Any]) -> None:
    """A store with no staged files (memory, S3) keeps a deep shard's pieces until it is whole; the
    objects it ends up with read back like a local store's."""
    store = az.MemoryStore()
    with az.open_stream(tczyx(tmp_path / "unused", 3, "tzc"), store=store) as stream:
        for t in range(T):
            stream.append(np.ascontiguousarray(data[t].transpose(1, 0, 2, 3)))
    out = tmp_path / "copy.zarr"
    for key in store.list():
        (out / key).parent.mkdir(parents=True, exist_ok=True)
        (out / key).write_bytes(store.get(key))
    assert any("/c/" in k for k in store.list())
    assert_reads_back(out / "0", 3, data)
