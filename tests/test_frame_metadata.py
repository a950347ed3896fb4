"""Per-frame metadata from the Python API (``append(..., metadata=)``), the session record from
the first moment, and the live contrast window, read back with zarr-python and tensorstore."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import acqzarr as az
from builders import UNSHARDED, dims, frames_for, stream_settings
from readback import read_tensorstore

MISSING_INT = -(2**63)


def _settings(
    path: Path,
    version: int,
    shape: tuple[int, ...] = (0, 2, 3, 8, 6),
    chunks: tuple[int, ...] = (1, 1, 3, 8, 6),
    **array: Any,
) -> az.StreamSettings:
    """(t, c, z, y, x) = (unbounded, 2, 3, 8, 6), one chunk per (t, c) holding the whole z stack."""
    return stream_settings(path, version, shape, chunks, shards=UNSHARDED, key="cam", **array)


def _columns(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    group = zarr.open_group(str(path / "cam" / "acqzarr_frames"), mode="r")
    return {name: np.asarray(group[name][...]) for name in group.array_keys()}  # type: ignore[index]


def _attrs(path: Path) -> dict[str, Any]:
    return dict(zarr.open_group(str(path / "cam"), mode="r").attrs)


def _meta(t: int, c: int, z: int) -> dict[str, Any]:
    return {
        "elapsed_ms": 100.0 * t + 10 * c + z,
        "stage_z_um": 0.5 * z,
        "frame_id": 1000 + 6 * t + 3 * c + z,
        "laser_mw": 2.0 + c,
        "channel": ["DAPI", "GFP"][c],
        "piezo": {"target": z, "settled": True},
    }


def test_metadata_by_acquisition_order_and_by_index_lands_at_each_frames_index(
    tmp_path: Path, version: int
) -> None:
    """Frames arrive t, z, c (channels switch per plane), some by index out of order, one skipped:
    every field lands at the frame's (t, c, z), typed fields in typed columns, the rest as JSON."""
    path = tmp_path / "s.zarr"
    columns = {"laser_mw": "float64"}
    settings = _settings(path, version, acquisition_order=["t", "z", "c"], frame_columns=columns)
    frames = frames_for((8, 6), 12, "uint16").reshape(2, 2, 3, 8, 6)  # (t, c, z)
    with az.open_stream(settings) as stream:
        for z in range(3):  # t = 0 in acquisition order, (0, 1, 1) skipped
            for c in range(2):
                if (c, z) == (1, 1):
                    stream.skip()
                else:
                    stream.append(frames[0, c, z], metadata=_meta(0, c, z))
        for c, z in [(1, 2), (0, 0), (1, 0), (0, 2), (0, 1), (1, 1)]:  # t = 1 by index, any order
            stream.append(frames[1, c, z], index={"t": 1, "c": c, "z": z}, metadata=_meta(1, c, z))
    image = np.asarray(zarr.open_array(str(path / "cam" / "0"), mode="r")[...])
    cols = _columns(path)
    assert set(cols) == {"elapsed_ms", "stage_z_um", "frame_id", "laser_mw", "json"}
    for name, dtype in [("elapsed_ms", "float64"), ("frame_id", "int64"), ("laser_mw", "float64")]:
        assert cols[name].dtype == np.dtype(dtype) and cols[name].shape == image.shape[:3]
    for t, c, z in np.ndindex(2, 2, 3):
        if (t, c, z) == (0, 1, 1):
            assert not image[t, c, z].any()
            assert math.isnan(cols["elapsed_ms"][t, c, z]) and cols["frame_id"][t, c, z] == MISSING_INT
            assert cols["json"][t, c, z] == ""
            continue
        want = _meta(t, c, z)
        np.testing.assert_array_equal(image[t, c, z], frames[t, c, z])
        assert (
            cols["elapsed_ms"][t, c, z] == want["elapsed_ms"]
            and cols["frame_id"][t, c, z] == want["frame_id"]
        )
        assert cols["laser_mw"][t, c, z] == want["laser_mw"]
        assert json.loads(cols["json"][t, c, z]) == {"channel": want["channel"], "piezo": want["piezo"]}
    # The numeric columns are plain Zarr arrays: tensorstore reads them too.
    np.testing.assert_array_equal(
        read_tensorstore(path / "cam/acqzarr_frames/frame_id", version), cols["frame_id"]
    )
    group = zarr.open_group(str(path / "cam" / "acqzarr_frames"), mode="r")
    assert group.attrs["acqzarr_frames"] == {
        "version": 2,
        "columns": {
            "elapsed_ms": "float64",
            "stage_z_um": "float64",
            "frame_id": "int64",
            "laser_mw": "float64",
            "json": "string",
        },
    }
    session = _attrs(path)["acqzarr_session"]
    assert (session["frames_on_disk"], session["frames_accepted"], session["frames_skipped"]) == (11, 11, 1)


def test_a_stack_takes_one_mapping_per_frame_and_none_for_no_metadata(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    settings = _settings(path, version)
    volume = frames_for((8, 6), 6, "uint16").reshape(2, 3, 8, 6)
    meta = [{"exposure_ms": 5.0 + i, "numpy": np.float32(i), "vec": np.arange(2)} for i in range(6)]
    meta[4] = None  # type: ignore[call-overload]
    with az.open_stream(settings) as stream:
        stream.append(volume, metadata=meta)  # (c, z, y, x) at t = 0
    cols = _columns(path)
    exposure = cols["exposure_ms"].reshape(-1)
    np.testing.assert_array_equal(exposure[[0, 1, 2, 3, 5]], [5.0, 6.0, 7.0, 8.0, 10.0])
    assert math.isnan(exposure[4]) and cols["json"].reshape(-1)[4] == ""
    assert json.loads(cols["json"][0, 1, 2]) == {"numpy": 5.0, "vec": [0, 1]}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"exposure_ms": "fast"}, "takes a number"),
        ({"frame_id": 1.5}, "takes an integer"),
        ({"frame_id": 2**63}, "outside int64"),
        ({"exposure_ms": True}, "takes a number"),
        ({"note": object()}, "must be JSON"),
        ({"note": float("nan")}, "must be JSON"),
        ({1: "x"}, "field names must be strings"),
        ([{}, {}], "1 frames but 2 metadata entries"),
        ("exposure", "must be a mapping"),
    ],
)
def test_bad_metadata_is_a_frame_error_and_nothing_of_the_call_is_accepted(
    tmp_path: Path, metadata: Any, message: str
) -> None:
    path = tmp_path / "s.zarr"
    frame = frames_for((8, 6), 1, "uint16")[0]
    with az.open_stream(_settings(path, 3)) as stream:
        stream.append(frame, metadata={"frame_id": 7})
        with pytest.raises(az.FrameError, match=message):
            stream.append(frame, metadata=metadata)
        assert stream.stats().frames_appended == 1
        stream.append(frame, metadata={"frame_id": 8})  # the slot is still free
    assert _columns(path)["frame_id"][0, 0, :2].tolist() == [7, 8]


def test_a_rejected_index_leaves_the_metadata_already_there(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    frame = frames_for((8, 6), 1, "uint16")[0]
    with az.open_stream(_settings(path, 3)) as stream:
        stream.append(frame, index={"t": 0, "c": 1, "z": 2}, metadata={"frame_id": 1})
        with pytest.raises(az.FrameError, match="already filled"):
            stream.append(frame, index={"t": 0, "c": 1, "z": 2}, metadata={"frame_id": 2})
    assert _columns(path)["frame_id"][0, 1, 2] == 1


def test_every_publish_shows_the_columns_as_long_as_the_image(tmp_path: Path, version: int) -> None:
    """Live: after each flush every column covers exactly the image's published time points, a
    column that appears late reads as missing before its first value, and the session record's
    counters and the contrast window describe what is on disk."""
    path = tmp_path / "s.zarr"
    settings = _settings(path, version)
    with az.open_stream(settings) as stream:
        session = _attrs(path)["acqzarr_session"]  # written at open, before any frame
        assert session["completed"] is False and session["stop"] is None and session["frames_on_disk"] == 0
        assert session["source"] == {"kind": "python"} and session["settings"]["store"] == str(path)
        for t in range(5):
            meta = [{"frame_id": 6 * t + k} | ({"stage_x_um": 1.5 * t} if t >= 2 else {}) for k in range(6)]
            stream.append(np.full((2, 3, 8, 6), 100 + t, np.uint16), metadata=meta)
            stream.flush()
            n = zarr.open_array(str(path / "cam" / "0"), mode="r").shape[0]
            assert n == t + 1
            cols = _columns(path)
            assert {k: v.shape[0] for k, v in cols.items()} == {k: n for k in cols}
            assert cols["frame_id"].reshape(-1).tolist() == list(range(6 * n))
            attrs = _attrs(path)
            session = attrs["acqzarr_session"]
            assert session["frames_on_disk"] == 6 * n and session["completed"] is False
            omero = attrs["ome"]["omero"] if version == 3 else attrs["omero"]
            assert [ch["window"]["end"] for ch in omero["channels"]] == [100 + t, 100 + t]
        stream.update_session({"frames_dropped": 3, "operator": "ada"}, write=False)
    x = _columns(path)["stage_x_um"]
    assert np.isnan(x[:2]).all() and (x[2:, 0, 0] == [3.0, 4.5, 6.0]).all()
    session = _attrs(path)["acqzarr_session"]
    assert session["completed"] is True and session["stop"] is not None
    assert (session["frames_on_disk"], session["frames_dropped"], session["operator"]) == (30, 3, "ada")


def test_a_caller_can_mark_the_session_incomplete_and_cannot_forge_the_counters(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(_settings(path, 2)) as stream:
        with pytest.raises(az.ConfigError, match="kept by the stream"):
            stream.update_session({"frames_on_disk": 10})
        with pytest.raises(az.ConfigError, match="session fields"):
            stream.update_session({"x": float("nan")})
        with pytest.raises(az.ConfigError, match="written by acqzarr"):
            stream.write_metadata({"acqzarr_session": {}})
        stream.update_session({"completed": False, "reason": "user stopped"})
    session = _attrs(path)["acqzarr_session"]
    assert session["completed"] is False and session["reason"] == "user stopped" and session["stop"]


def test_frame_columns_settings_are_checked() -> None:
    with pytest.raises(az.ConfigError, match="not 'json'"):
        az.ArraySettings(
            dtype="uint8", dimensions=dims((0, 4, 4), (1, 4, 4)), frame_columns={"json": "int64"}
        )
    with pytest.raises(az.ConfigError, match="frame_columns"):
        az.ArraySettings(dtype="uint8", dimensions=dims((0, 4, 4), (1, 4, 4)), frame_columns={"a": "str"})
    with pytest.raises(az.ConfigError, match="frame column name"):
        az.ArraySettings(dtype="uint8", dimensions=dims((0, 4, 4), (1, 4, 4)), frame_columns={"a/b": "int64"})


def test_frames_a_call_could_not_take_leave_no_metadata_behind(tmp_path: Path) -> None:
    """A stack refused part-way (its first frame would open a band the cap cannot hold) keeps no
    metadata for the frames not taken: their slots read as missing, and they can be written later."""
    path = tmp_path / "s.zarr"
    settings = _settings(path, 3, (0, 2, 8, 6), (2, 1, 8, 6))
    with az.open_stream(settings) as stream:
        required = stream.memory().required  # the two bands (t 0-1, c 0 and c 1) the order keeps open
    settings = settings.model_copy(update={"max_inflight_bytes": required, "overwrite": True})
    frame = frames_for((8, 6), 1, "uint16")[0]
    with az.open_stream(settings) as stream:
        stream.append(np.stack([frame, frame]), metadata=[{"frame_id": 0}, {"frame_id": 1}])  # t0 c0, c1
        with pytest.raises(az.FrameError, match="fill the in-flight cap"):
            stream.append(
                np.stack([frame, frame]),
                index={"t": 2, "c": 0},
                metadata=[{"frame_id": 90}, {"frame_id": 91}],
            )
        stream.append(np.stack([frame, frame]), metadata=[{"frame_id": 2}, {"frame_id": 3}])  # t1: bands done
        stream.append(frame, index={"t": 2, "c": 0}, metadata={"frame_id": 4})
    ids = _columns(path)["frame_id"]
    assert ids.tolist() == [[0, 1], [2, 3], [4, MISSING_INT]]
