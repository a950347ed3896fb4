"""Simulated cameras: registry, protocol, determinism, counted drops, and feeding a stream."""

from __future__ import annotations

import time
from pathlib import Path

import acqzarr_drivers as drivers
import numpy as np
import pytest
import zarr
from pydantic import ValidationError

import acqzarr as az
from acqzarr.camera import Camera

NAMES = ["simulated.empty", "simulated.random", "simulated.radial_sine", "simulated.noise"]


def _read_all(cam: Camera) -> tuple[list[np.ndarray], list[int], int]:
    out = np.empty(cam.shape, cam.dtype)
    frames, ids, dropped = [], [], 0
    cam.start()
    try:
        while (info := cam.read_into(out)) is not None:
            frames.append(out.copy())
            ids.append(info.frame_id)
            dropped += info.dropped_before
    finally:
        cam.stop()
    return frames, ids, dropped


def test_registry_lists_and_rejects_by_name() -> None:
    assert set(NAMES) <= set(drivers.available())
    with pytest.raises(KeyError, match=r"unknown driver .simulated\.nope.; available: .*simulated\.noise"):
        drivers.create("simulated.nope")
    with pytest.raises(ValidationError, match="colour"):
        drivers.create("simulated.noise", {"colour": "red"})
    with pytest.raises(ValidationError, match="fps"):
        drivers.create("simulated.noise", {"fps": -1})


@pytest.mark.parametrize("name", NAMES)
def test_each_simulator_is_a_camera_that_ends(name: str) -> None:
    cam = drivers.create(name, {"height": 24, "width": 30, "frames": 12, "ring": 64})
    assert isinstance(cam, Camera)
    frames, ids, dropped = _read_all(cam)
    assert ids == list(range(12))
    assert dropped == 0 and cam.dropped == 0
    assert all(f.shape == (24, 30) and f.dtype == np.uint16 for f in frames)


@pytest.mark.parametrize("name", ["simulated.noise", "simulated.random", "simulated.radial_sine"])
def test_patterns_are_deterministic_and_change_over_time(name: str) -> None:
    opts = {"height": 16, "width": 16, "frames": 4, "ring": 8, "seed": 3}
    a, _, _ = _read_all(drivers.create(name, opts))
    b, _, _ = _read_all(drivers.create(name, opts))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], a[1])


def test_noise_is_camera_like() -> None:
    (frame,), _, _ = _read_all(drivers.create("simulated.noise", {"height": 256, "width": 256, "frames": 1}))
    assert frame.min() > 0 and frame.max() < 4096  # ~12 bits used
    assert frame.std() > 10


def test_a_slow_reader_gets_counted_drops_not_silent_ones() -> None:
    cam = drivers.create("simulated.empty", {"height": 8, "width": 8, "frames": 200, "ring": 4, "fps": 2000})
    out = np.empty(cam.shape, cam.dtype)
    read, reported, last_id = 0, 0, -1
    cam.start()
    try:
        while (info := cam.read_into(out)) is not None:
            assert info.frame_id > last_id
            assert info.frame_id - last_id - 1 == info.dropped_before  # the gap is exactly what was reported
            last_id = info.frame_id
            read += 1
            reported += info.dropped_before
            time.sleep(0.002)  # slower than 2000 fps
    finally:
        cam.stop()
    assert reported > 0
    assert read + reported == 200 == read + cam.dropped


def test_a_driver_feeds_a_stream(tmp_path: Path) -> None:
    cam = drivers.create("simulated.radial_sine", {"height": 40, "width": 36, "frames": 10, "ring": 32})
    settings = az.StreamSettings(
        store=str(tmp_path / "s.zarr"),
        arrays=[
            az.ArraySettings(
                key="cam",
                dtype="uint16",
                dimensions=[
                    az.Dimension(name="t", kind="time", size=0, chunk=4),
                    az.Dimension(name="y", kind="space", size=40, chunk=16, shard=2),
                    az.Dimension(name="x", kind="space", size=36, chunk=16, shard=2),
                ],
            )
        ],
    )
    buf = np.empty(cam.shape, cam.dtype)
    seen = []
    cam.start()
    with az.open_stream(settings) as stream:
        while cam.read_into(buf) is not None:
            stream.append(buf)
            seen.append(buf.copy())
    cam.stop()
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "s.zarr" / "cam" / "0"), mode="r")[:], np.stack(seen)
    )


def test_third_party_drivers_register_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    fake = EntryPoint(
        name="vendor.cam", value="acqzarr_drivers.simulated:RadialSineSimulator", group=drivers.GROUP
    )
    monkeypatch.setattr(drivers, "entry_points", lambda group: [fake] if group == drivers.GROUP else [])
    assert "vendor.cam" in drivers.available()
    cam = drivers.create("vendor.cam", {"height": 8, "width": 8, "frames": 2})
    frames, ids, _ = _read_all(cam)
    assert ids == [0, 1]
    assert frames[0].shape == (8, 8)
