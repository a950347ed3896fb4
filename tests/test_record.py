"""`acqzarr record`: config in, validated OME-Zarr with per-frame metadata and a session record out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import acqzarr_drivers as drivers
import numpy as np
import pytest
import yaml
import zarr
from ome_zarr_models.v05.image import Image as Image05

from builders import array_document

CONFIG: dict[str, Any] = {
    "store": "out.zarr",
    "version": 3,
    "arrays": [array_document(3, (0, 64, 48), (8, 32, 16), multiscale={"levels": 2})],
    "source": {"driver": "simulated.noise", "frames": 20, "options": {"height": 64, "width": 48, "ring": 64}},
}


def _write(tmp_path: Path, **changes: Any) -> Path:
    data = json.loads(json.dumps(CONFIG))
    data["store"] = str(tmp_path / "out.zarr")
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acqzarr", "record", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_record_writes_frames_metadata_and_session(tmp_path: Path) -> None:
    result = _run(str(_write(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "recorded 20 frames from simulated.noise" in result.stdout
    store = tmp_path / "out.zarr"
    Image05.from_zarr(zarr.open_group(str(store / "cam0"), mode="r", zarr_format=3))
    cam = drivers.create("simulated.noise", {"height": 64, "width": 48, "frames": 20})
    pool = cam._pool  # the simulator's deterministic frames
    data = np.asarray(zarr.open_array(str(store / "cam0" / "0"), mode="r")[:])
    frames = zarr.open_group(str(store / "cam0" / "acqzarr_frames"), mode="r")
    ids = np.asarray(frames["frame_id"][:])  # type: ignore[index]
    dropped = np.asarray(frames["dropped_before"][:])  # type: ignore[index]
    # Whatever the camera loses is counted in the gaps of frame_id, never silent.
    np.testing.assert_array_equal(data, pool[ids % len(pool)])
    np.testing.assert_array_equal(np.diff(ids) - 1, dropped[1:])
    assert ids[0] == dropped[0]
    assert (np.diff(frames["timestamp_ns"][:]) >= 0).all()  # type: ignore[index]
    attrs = json.loads((store / "cam0" / "zarr.json").read_text())["attributes"]
    session = attrs["acqzarr_session"]
    assert session["source"]["driver"] == "simulated.noise" and session["frames_on_disk"] == 20
    assert session["frames_dropped"] >= int(dropped.sum()) and session["completed"] is True
    assert session["completed"] is True and session["interrupted"] is None
    assert session["software"].startswith("acqzarr ")


@pytest.mark.slow
def test_set_env_frames_and_output_overrides(tmp_path: Path) -> None:
    config = _write(tmp_path)
    out = tmp_path / "elsewhere.zarr"
    result = _run(
        str(config),
        "--set",
        "arrays.0.dtype=uint8",
        "--set",
        "source.options.dtype=uint8",
        "--output",
        str(out),
        env={"ACQZARR_SOURCE__FRAMES": "7"},
    )
    assert result.returncode == 0, result.stderr
    array = zarr.open_array(str(out / "cam0" / "0"), mode="r")
    assert array.shape == (7, 64, 48) and array.dtype == np.uint8
    result = _run(str(config), "--frames", "3", "--output", str(tmp_path / "three.zarr"))
    assert zarr.open_array(str(tmp_path / "three.zarr" / "cam0" / "0"), mode="r").shape[0] == 3


def test_dry_run_prints_the_resolved_config_and_creates_nothing(tmp_path: Path) -> None:
    result = _run(str(_write(tmp_path)), "--dry-run", "--set", "source.options.fps=25")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["config"]["source"]["options"]["fps"] == 25
    assert report["estimate"]["data_rate_bytes_per_s"] == 25 * 64 * 48 * 2
    import acqzarr as az

    settings = az.StreamSettings.model_validate({k: v for k, v in report["config"].items() if k != "source"})
    with az.open_stream(settings, store=az.MemoryStore()) as stream:  # the cap a real stream uses
        assert report["estimate"]["memory_reserved_bytes"] == stream.memory().cap
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "source": {
                    "driver": "simulated.noise",
                    "options": {"colour": "red", "height": 64, "width": 48},
                }
            },
            "source.options.colour: Extra inputs are not permitted",
        ),
        ({"source": {"driver": "nope"}}, "source.driver: unknown driver 'nope'"),
        (
            {"source": {"driver": "simulated.noise", "options": {"height": 32, "width": 48}}},
            "the driver delivers (32, 48) uint16 frames but array 'cam0' takes (64, 48) uint16",
        ),
        ({"version": 7}, "version: Input should be 2 or 3"),
    ],
)
def test_invalid_configs_exit_2_before_touching_disk(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    result = _run(str(_write(tmp_path, **change)))
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out.zarr").exists()


def test_bad_set_syntax_is_a_config_error(tmp_path: Path) -> None:
    result = _run(str(_write(tmp_path)), "--set", "novalue")
    assert result.returncode == 2
    assert "expected key.path=value" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_finalizes_the_store_with_every_accepted_frame_and_exits_130(
    tmp_path: Path, signum: signal.Signals
) -> None:
    config = _write(
        tmp_path,
        source={"driver": "simulated.noise", "options": {"height": 64, "width": 48, "fps": 200, "ring": 64}},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "acqzarr", "record", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"interrupted by {signum.name}" in out
    store = tmp_path / "out.zarr"
    n = zarr.open_array(str(store / "cam0" / "0"), mode="r").shape[0]
    frames = zarr.open_group(str(store / "cam0" / "acqzarr_frames"), mode="r")
    assert n > 0 and frames["frame_id"].shape == (n,)  # type: ignore[union-attr]
    session = json.loads((store / "cam0" / "zarr.json").read_text())["attributes"]["acqzarr_session"]
    assert session["interrupted"] == signum.name and session["frames_on_disk"] == n
    assert session["completed"] is False
    assert f"recorded {n} frames" in out  # every frame accepted is in the store


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["npy", "tiff", "zarr"])
def test_replay_rerecords_a_file_exactly(tmp_path: Path, kind: str) -> None:
    import tifffile

    data = np.random.default_rng(5).integers(0, 4096, (11, 64, 48), dtype=np.uint16)
    if kind == "npy":
        src = tmp_path / "in.npy"
        np.save(src, data)
    elif kind == "tiff":
        src = tmp_path / "in.tif"
        tifffile.imwrite(src, data)
    else:
        src = tmp_path / "in.zarr"
        zarr.create_array(str(src), shape=data.shape, chunks=(4, 64, 48), dtype=data.dtype)[:] = data
    config = _write(tmp_path, source={"driver": "replay", "options": {"path": str(src)}})
    result = _run(str(config))
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "out.zarr" / "cam0" / "0"), mode="r")[:], data
    )


def test_replay_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    config = _write(tmp_path, source={"driver": "replay", "options": {"path": str(tmp_path / "nope.npy")}})
    result = _run(str(config))
    assert result.returncode == 2
    assert "source.options.path: no such file or directory" in result.stderr
