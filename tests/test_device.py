"""ZarrStorage: the state machine and its errors, over the real engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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
    dev = ZarrStorage()
    dev.set(stream_settings(path, 3))
    dev.start()
    dev.stop()
    with pytest.raises(az.StoreError, match="already exists"):
        dev.start()  # same path, no overwrite
    assert dev.state is State.ARMED


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
