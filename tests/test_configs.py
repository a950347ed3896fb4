"""Every config in configs/ runs through `acqzarr record` (small --frames) and reads back exactly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import acqzarr_drivers as drivers
import numpy as np
import pytest
import yaml
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

CONFIGS = Path(__file__).parent.parent / "configs"
SESSIONS = sorted(p.name for p in CONFIGS.glob("*.yaml") if "source" in yaml.safe_load(p.read_text()))
NEEDS = {"replay-rechunk.yaml": ["chunked-v2.yaml"]}  # configs that read another's output
FRAMES = 6


def _record(config: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acqzarr", "record", str(CONFIGS / config), "--frames", str(FRAMES)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("ACQZARR_")},
        timeout=180,
    )


def _expected_frames(source: dict[str, Any], ids: np.ndarray[Any, Any], cwd: Path) -> np.ndarray[Any, Any]:
    """What the source delivered for these frame ids, recomputed independently of the recording."""
    if source["driver"] == "replay":
        data = zarr.open_array(str(cwd / source["options"]["path"]), mode="r")
        return np.asarray(data[:])[ids]
    cam = drivers.create(source["driver"], source["options"])
    out = np.empty((len(ids), *cam.shape), cam.dtype)
    for i, frame_id in enumerate(ids):
        cam.pattern(int(frame_id), out[i])
    return out


def test_the_list_of_session_configs_is_known() -> None:
    assert SESSIONS == [
        "chunked-v2.yaml",
        "replay-rechunk.yaml",
        "simulated-noise.yaml",
        "timelapse-unbounded.yaml",
        "two-cameras.yaml",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", SESSIONS)
def test_shipped_config_records_and_reads_back(tmp_path: Path, name: str) -> None:
    for needed in NEEDS.get(name, []):
        assert _record(needed, tmp_path).returncode == 0
    result = _record(name, tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((CONFIGS / name).read_text())
    sources = config["source"] if isinstance(config["source"], list) else [config["source"]]
    store = tmp_path / config["store"]
    assert f"into {config['store']}" in result.stdout
    for array in config["arrays"]:
        source = next(s for s in sources if s.get("key", array["key"]) == array["key"])
        group = zarr.open_group(str(store / array["key"]), mode="r", zarr_format=config["version"])
        (Image05 if config["version"] == 3 else Image04).from_zarr(group)
        data = np.asarray(zarr.open_array(str(store / array["key"] / "0"), mode="r")[:])
        frame_shape = data.shape[-2:]
        assert math.prod(data.shape[:-2]) == FRAMES
        meta = zarr.open_group(str(store / array["key"] / "acqzarr_frames"), mode="r")
        ids = np.asarray(meta["frame_id"][:])  # type: ignore[index]
        assert ids.shape == data.shape[:-2]  # indexed like the frames
        ids = ids.reshape(-1)  # these configs acquire in storage order
        dropped = np.asarray(meta["dropped_before"][:]).reshape(-1)  # type: ignore[index]
        np.testing.assert_array_equal(np.diff(ids) - 1, dropped[1:])  # every gap is a counted drop
        frames = data.reshape(FRAMES, *frame_shape)  # frames fill the inner dims in C order
        np.testing.assert_array_equal(frames, _expected_frames(source, ids, tmp_path))
        attrs = json.loads(
            (store / array["key"] / (".zattrs" if config["version"] == 2 else "zarr.json")).read_text()
        )
        session = attrs.get("attributes", attrs)["acqzarr_session"]
        assert session["frames_on_disk"] == FRAMES and session["source"]["driver"] == source["driver"]
        assert session["completed"] is True


CLOCKED = [
    # 30 frames of a slow camera take seconds (15 at the time lapse's 2 fps): not in the quick loop
    pytest.param(name, i, marks=[pytest.mark.slow] if src["options"]["fps"] < 20 else [])
    for name in SESSIONS
    for i, src in enumerate(
        (lambda s: s if isinstance(s, list) else [s])(yaml.safe_load((CONFIGS / name).read_text())["source"])
    )
    if src["driver"].startswith("simulated.") and src.get("options", {}).get("fps")
]


@pytest.mark.parametrize(("name", "index"), CLOCKED)
def test_each_simulated_camera_keeps_the_frame_rate_its_config_asks_for(name: str, index: int) -> None:
    """The camera alone, read by a loop that only copies: its frames come at the configured rate
    (configs/chunked-v2.yaml asked for 100 fps and its radial sine came at 33.5)."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    source = config["source"] if isinstance(config["source"], dict) else config["source"][index]
    cam = drivers.create(source["driver"], source["options"])
    out = np.empty(cam.shape, cam.dtype)
    stamps = []
    cam.start()
    try:
        for _ in range(30):
            info = cam.read_into(out)
            assert info is not None
            stamps.append(info.timestamp_ns)
    finally:
        cam.stop()
    assert cam.dropped == 0
    fps = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
    assert fps >= 0.9 * source["options"]["fps"], f"{name}: {fps:.1f} fps"


SECONDS = {"second": 1.0, "millisecond": 1e-3, "microsecond": 1e-6, "minute": 60.0}


@pytest.mark.parametrize("name", SESSIONS)
def test_the_time_scale_is_the_cameras_frame_period(name: str) -> None:
    """A time axis' scale is what a time step takes at the source's fps (simulated-noise.yaml said
    10 ms per frame at 50 fps)."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    sources = config["source"] if isinstance(config["source"], list) else [config["source"]]
    checked = 0
    for array in config["arrays"]:
        source = next(s for s in sources if s.get("key", array["key"]) == array["key"])
        fps = source.get("options", {}).get("fps")
        index_axes = array["dimensions"][:-2]
        time = [d for d in index_axes if d["kind"] == "time" and "scale" in d]
        if not fps or not time:
            continue
        frames_per_step = math.prod(d["size"] for d in index_axes if d["kind"] != "time")
        step = time[0]["scale"] * SECONDS[time[0]["unit"]]
        assert step == pytest.approx(frames_per_step / fps), f"{name}: {array['key']}"
        checked += 1
    if name != "replay-rechunk.yaml":  # replay without fps: as fast as the writer takes frames
        assert checked, name
