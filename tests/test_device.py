"""ZarrStorage: the state machine and its errors, over the real engine."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import acqzarr as az
from acqzarr.engine.device import State, ZarrStorage
from builders import frames_for, stream_settings
from readback import assert_reads_back


def test_lifecycle_and_restart_into_a_new_store(tmp_path: Path) -> None:
    dev = ZarrStorage()
    assert dev.state is State.UNCONFIGURED
    dev.set(stream_settings(tmp_path / "a.zarr", 3))
    assert dev.state is State.ARMED
    dev.start()
    assert dev.state is State.RUNNING
    a = frames_for((37, 50), 5, "uint16", seed=1)
    dev.append(a)
    assert dev.stats().frames_appended == 5
    dev.stop()
    assert dev.state is State.ARMED
    assert_reads_back(tmp_path / "a.zarr" / "cam0" / "0", 3, a)

    # Restart into a new path, from a plain mapping as a framework would pass it.
    data = dev.get().model_dump()
    data["store"] = str(tmp_path / "b.zarr")
    dev.set(data)
    dev.start()
    b = frames_for((37, 50), 4, "uint16", seed=2)
    dev.append(b, key="cam0")
    dev.stop()
    assert_reads_back(tmp_path / "b.zarr" / "cam0" / "0", 3, b)
    assert_reads_back(tmp_path / "a.zarr" / "cam0" / "0", 3, a)


def test_calls_in_the_wrong_state_raise_state_error(tmp_path: Path) -> None:
    dev = ZarrStorage()
    for call, action in [
        (dev.start, "start"),
        (dev.stop, "stop"),
        (dev.get, "get settings"),
        (lambda: dev.append(np.zeros((2, 2), np.uint16)), "append"),
        (lambda: dev.reserve_image_shape((2, 2), "uint16"), "reserve an image shape"),
    ]:
        with pytest.raises(az.StateError, match=f"cannot {action} while unconfigured"):
            call()
    dev.set(stream_settings(tmp_path / "s.zarr", 2))
    with pytest.raises(az.StateError, match="cannot append while armed; the device must be running"):
        dev.append(np.zeros((37, 50), np.uint16))
    dev.start()
    with pytest.raises(az.StateError, match="cannot set settings while running"):
        dev.set(stream_settings(tmp_path / "t.zarr", 2))
    with pytest.raises(az.StateError, match="cannot start while running"):
        dev.start()
    dev.stop()


def test_invalid_settings_leave_the_device_as_it_was(tmp_path: Path) -> None:
    dev = ZarrStorage()
    with pytest.raises(az.ConfigError, match="version"):
        dev.set({"store": "x", "version": 9, "arrays": []})
    assert dev.state is State.UNCONFIGURED


def test_start_failure_keeps_the_device_armed(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    earlier = ZarrStorage()
    earlier.set(stream_settings(path, 3))
    earlier.start()
    earlier.stop()
    dev = ZarrStorage()
    dev.set(stream_settings(path, 3))
    with pytest.raises(az.StoreError, match="already exists"):
        dev.start()  # a store of an earlier run, no overwrite
    assert dev.state is State.ARMED


def test_starting_again_never_overwrites_the_devices_own_recording(tmp_path: Path) -> None:
    # Issue 23 #3: start -> stop -> start without a new set() replaced a 12-frame store with an empty
    # one, because the settings said overwrite: true (meant for stores of earlier runs).
    path = tmp_path / "run.zarr"
    dev = ZarrStorage()
    dev.set(stream_settings(path, 3, overwrite=True))
    dev.start()
    frames = frames_for((37, 50), 12, "uint16", seed=3)
    dev.append(frames)
    dev.stop()
    with pytest.raises(
        az.StateError,
        match=rf"cannot start: {path} holds the recording this device wrote.*"
        r"set\(\) settings with a new store path",
    ):
        dev.start()
    assert dev.state is State.ARMED
    # set() with the same path (also spelled differently) is refused the same way and changes nothing.
    for same in (path, tmp_path / "." / "run.zarr"):
        with pytest.raises(az.StateError, match=r"cannot set settings: .*run\.zarr holds the recording"):
            dev.set(stream_settings(same, 3, overwrite=True))
    with pytest.raises(az.StateError, match="cannot start"):
        dev.start()
    assert_reads_back(path / "cam0" / "0", 3, frames)
    assert zarr.open_array(path / "cam0" / "0", mode="r").shape[0] == 12

    # A new path records; the first recording stays as it was.
    dev.set(stream_settings(tmp_path / "next.zarr", 3, overwrite=True))
    dev.start()
    dev.append(frames[:2])
    dev.stop()
    assert_reads_back(path / "cam0" / "0", 3, frames)


def test_a_removed_recording_frees_its_path_and_a_new_device_may_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "run.zarr"
    dev = ZarrStorage()
    dev.set(stream_settings(path, 3, overwrite=True))
    dev.start()
    dev.append(frames_for((37, 50), 3, "uint16", seed=4))
    dev.stop()
    shutil.rmtree(path)  # the user removed it: nothing of the device's is lost by writing there again
    dev.start()
    again = frames_for((37, 50), 2, "uint16", seed=5)
    dev.append(again)
    dev.stop()
    assert_reads_back(path / "cam0" / "0", 3, again)
    # A store of an earlier run (another device) is what overwrite: true replaces.
    other = ZarrStorage()
    other.set(stream_settings(path, 3, overwrite=True))
    other.start()
    last = frames_for((37, 50), 1, "uint16", seed=6)
    other.append(last)
    other.stop()
    assert_reads_back(path / "cam0" / "0", 3, last)


def test_reserve_image_shape_adopts_the_camera_frame(tmp_path: Path) -> None:
    dev = ZarrStorage()
    dev.set(stream_settings(tmp_path / "s.zarr", 3))
    dev.reserve_image_shape((20, 30), np.uint8)
    arr = dev.get().arrays[0]
    assert arr.dtype == "uint8"
    assert [d.size for d in arr.dimensions] == [0, 20, 30]
    with pytest.raises(az.ConfigError, match="a frame has 1 or 2 axes"):
        dev.reserve_image_shape((2, 20, 30), np.uint8)
    with pytest.raises(az.ConfigError, match="dtype"):
        dev.reserve_image_shape((20, 30), np.float16)
    dev.start()
    frames = frames_for((20, 30), 3, "uint8")
    dev.append(frames)
    dev.stop()
    assert_reads_back(tmp_path / "s.zarr" / "cam0" / "0", 3, frames)


def test_capabilities() -> None:
    meta = ZarrStorage().get_meta()
    assert meta.versions == (2, 3)
    assert meta.sharding is True
    assert meta.max_dims == 5
    assert "uint16" in meta.dtypes and "float64" in meta.dtypes
    assert "zstd" in meta.codecs


def test_the_device_places_frames_by_index_skips_and_reports_memory(tmp_path: Path) -> None:
    dev = ZarrStorage()
    dev.set(stream_settings(tmp_path / "d.zarr", 3, shape=(0, 2, 37, 50), chunks=(1, 1, 16, 16)))
    with pytest.raises(az.StateError, match="cannot skip while armed"):
        dev.skip()
    dev.start()
    data = frames_for((37, 50), 6, "uint16").reshape(3, 2, 37, 50)
    dev.append(data[0, 0])
    dev.append(data[0, 1], index={"c": 1})  # t follows on from the cursor: 0
    dev.skip(2)  # all of t=1
    dev.append(data[2])  # (c, y, x): both channels of t=2
    assert dev.memory().peak > 0 and dev.memory().cap >= dev.memory().required
    assert dev.stats().frames_skipped == 2
    dev.stop()
    data[1] = 0
    assert_reads_back(tmp_path / "d.zarr" / "cam0" / "0", 3, data)
