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
from acqzarr.recording.camera import ROI, Camera
from builders import stream_settings

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


def test_without_fps_a_slow_reader_loses_nothing() -> None:
    """No fps, no clock: the default simulator waits for its reader (``acqzarr send`` with the
    default options reported 735 frames dropped by the camera for 20 sent)."""
    cam = drivers.create("simulated.noise")  # the defaults acqzarr send uses: no fps, ring 16
    out = np.empty(cam.shape, cam.dtype)
    ids = []
    cam.start()
    try:
        for _ in range(20):
            info = cam.read_into(out)
            assert info is not None and info.dropped_before == 0
            ids.append(info.frame_id)
            time.sleep(0.005)  # a sink far slower than the simulator
    finally:
        cam.stop()
    assert ids == list(range(20)) and cam.dropped == 0
    np.testing.assert_array_equal(out, cam._pool[19 % len(cam._pool)])


def test_a_driver_feeds_a_stream(tmp_path: Path) -> None:
    cam = drivers.create("simulated.radial_sine", {"height": 40, "width": 36, "frames": 10, "ring": 32})
    settings = stream_settings(tmp_path / "s.zarr", 3, (0, 40, 36), (4, 16, 16), key="cam")
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


@pytest.mark.parametrize("name", ["simulated.noise", "simulated.radial_sine", "simulated.empty"])
def test_an_roi_delivers_that_region_of_the_full_sensor(name: str) -> None:
    sensor = {"height": 40, "width": 56, "frames": 3, "ring": 8, "seed": 5}
    full, _, _ = _read_all(drivers.create(name, sensor))
    cam = drivers.create(name, {**sensor, "roi": {"x": 8, "y": 12, "width": 24, "height": 16}})
    assert cam.shape == (16, 24)
    assert cam.roi == ROI(x=8, y=12, width=24, height=16)
    cropped, _, _ = _read_all(cam)
    for a, b in zip(full, cropped, strict=True):
        np.testing.assert_array_equal(a[12:28, 8:32], b)


def test_roi_and_exposure_are_validated_against_the_sensor_and_frame_rate() -> None:
    with pytest.raises(ValidationError, match=r"roi \(30, 0, 40x10\) does not fit the 64x64 sensor"):
        drivers.create(
            "simulated.noise", {"height": 64, "width": 64, "roi": {"x": 30, "width": 40, "height": 10}}
        )
    with pytest.raises(ValidationError, match=r"exposure_ms 30.0 is longer than the frame period at fps 50"):
        drivers.create("simulated.noise", {"fps": 50, "exposure_ms": 30})
    assert drivers.create("simulated.noise", {"fps": 50}).exposure_ms == 20.0
    assert drivers.create("simulated.noise", {}).exposure_ms is None
    assert drivers.create("simulated.noise", {"height": 8, "width": 6}).roi == ROI(0, 0, 6, 8)


def test_exposure_bounds_a_free_running_camera() -> None:
    cam = drivers.create(
        "simulated.empty", {"height": 8, "width": 8, "frames": 6, "ring": 8, "exposure_ms": 25}
    )
    assert cam.exposure_ms == 25.0
    out = np.empty(cam.shape, cam.dtype)
    cam.start()
    try:
        stamps = []
        while (info := cam.read_into(out)) is not None:
            stamps.append(info.timestamp_ns)
    finally:
        cam.stop()
    # Frames cannot come faster than one exposure apart (a lower bound only: the machine may be slower).
    assert len(stamps) == 6 and (stamps[-1] - stamps[0]) >= 5 * 25e6 * 0.99


def test_replaying_zarr_needs_no_zarr_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.arange(2 * 4 * 4, dtype="uint8").reshape(2, 4, 4)
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(2, 4, 4), chunks=(1, 4, 4), dtype="uint8")[:] = data
    monkeypatch.setitem(__import__("sys").modules, "zarr", None)  # as after a plain install
    camera = drivers.create("replay", {"path": str(tmp_path / "a.zarr")})
    out = np.empty((4, 4), "uint8")
    camera.start()
    for frame in data:
        assert camera.read_into(out) is not None
        np.testing.assert_array_equal(out, frame)
    assert camera.read_into(out) is None
