"""SIGKILL at many random moments: the store always opens, validates and holds every flushed frame
with its per-frame metadata, no pyramid is ragged (every level covers the extent level 0 publishes)
and every level is level 0 reduced, and the session record and the contrast window describe the
frames a reader finds."""

from __future__ import annotations

import inspect
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

from acqzarr.read.validate import validate
from acqzarr.stores import LocalStore
from builders import stream_settings
from test_multiscale import reference_pyramid

from .sizes import scale

pytestmark = pytest.mark.reliability

FRAME = (48, 40)
PLANES = 6  # z planes per timepoint in the "pyramid-z" configuration
CHANNELS = 3  # channels per timepoint in the "pyramid-c" configuration
# Killed in turn: no pyramid; 3 levels halving y and x; 3 levels of (t, z, y, x) halving z too, the
# frames filling z then t, so level 1 pairs planes 6 -> 3 and level 2 pairs 3 (the last with itself) -> 2;
# 3 levels of (t, c, y, x), the frames filling c then t.  The last two index frames by two axes, so
# their metadata columns are 2-D ((t, z) and (t, c)).
CONFIGS = ("plain", "pyramid", "pyramid-z", "pyramid-c")
KINDS = {  # the axes' kinds of each configuration (what its pyramid halves: every space axis)
    "plain": ["time", "space", "space"],
    "pyramid": ["time", "space", "space"],
    "pyramid-z": ["time", "space", "space", "space"],
    "pyramid-c": ["time", "channel", "space", "space"],
}
COLUMNS = {"frame_id": "int64", "laser_mw": "float64", "json": "string"}  # laser_mw is declared


def frame_metadata(i: int) -> dict[str, Any]:
    """What the writer child appends with frame ``i`` (this function's source is part of WRITER):
    a built-in int64 column, a declared float64 column, and a field for the JSON column."""
    return {"frame_id": i, "laser_mw": 0.25 * i + 0.125, "note": {"seq": i, "tag": f"f{i % 7}"}}


WRITER = (
    """
import sys, time, numpy as np, acqzarr as az
from typing import Any
settings = az.StreamSettings.model_validate_json(sys.argv[1])
stop_after = int(sys.argv[2])
yy, xx = np.mgrid[0:48, 0:40]
"""
    + inspect.getsource(frame_metadata)
    + """
stream = az.open_stream(settings)
print("ready", flush=True)
last = -1
for i in range(stop_after):
    time.sleep(0.001)  # ~500-900 fps: kills land while appending, compressing, writing, publishing
    stream.append(((yy * 40 + xx + i * 977) % 4093).astype(np.uint16), metadata=frame_metadata(i))
    flushed = stream.stats().frames_flushed
    if flushed != last:
        print(f"flushed {flushed}", flush=True)
        last = flushed
print("closing", flush=True)
stream.close()
print(f"closed {stream.stats().frames_flushed}", flush=True)
"""
)


def frame(i: int) -> np.ndarray[Any, Any]:
    yy, xx = np.mgrid[0 : FRAME[0], 0 : FRAME[1]]
    return ((yy * 40 + xx + i * 977) % 4093).astype(np.uint16)


def _settings(path: Path, version: int, config: str) -> str:
    import acqzarr as az

    # v3 shards: 2x2 chunks of a frame, and the whole z stack (3 chunks) or every channel in one shard
    names, shape, chunks, shards = {
        "pyramid-z": ("tzyx", (0, PLANES, *FRAME), (1, 2, 16, 16), (1, 3, 2, 2)),
        "pyramid-c": ("tcyx", (0, CHANNELS, *FRAME), (2, 1, 16, 16), (1, CHANNELS, 2, 2)),
    }.get(config, ("tyx", (0, *FRAME), (3, 16, 16), (1, 2, 2)))
    return stream_settings(
        path,
        version,
        shape,
        chunks,
        shards=shards,
        names=names,
        key="cam",
        multiscale=None if config == "plain" else az.Multiscale(levels=3),
        frame_columns={"laser_mw": "float64"},
    ).model_dump_json()


def _calibrate(path: Path, version: int, config: str, frames: int = 300) -> float:
    """Seconds per frame of the writer child, from "ready" to "closed", so kills can be aimed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, _settings(path, version, config), str(frames)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    start = time.monotonic()
    proc.stdout.read()
    proc.wait()
    proc.stdout.close()
    return (time.monotonic() - start) / frames


def _check_store(path: Path, version: int, reported: int, config: str, appended: int, phase: str) -> int:
    """Open with three independent readers; every reported frame (and only whole layers) must be there,
    with its metadata, every pyramid level must be level 0 reduced (holes included), and the image
    group must describe them (``_check_image_group``).

    ``appended`` is how many frames the writer was to append: the planes of a final partial timepoint
    past it read as fill.  ``phase`` is how far the writer got ("appending", "closing", "closed").
    Returns the frames verified.
    """
    group = zarr.open_group(str(path / "cam"), mode="r", zarr_format=version)
    (Image04 if version == 2 else Image05).from_zarr(group)
    level0 = np.asarray(zarr.open_array(str(path / "cam" / "0"), mode="r")[:])
    n = level0.shape[0]
    slots = level0.size // (FRAME[0] * FRAME[1])  # frames level 0 has room for
    assert slots >= reported, f"{reported} frames were reported flushed but only {slots} are readable"
    expected = np.zeros((slots, *FRAME), np.uint16)
    for i in range(min(slots, appended)):
        expected[i] = frame(i)
    expected = expected.reshape(level0.shape)
    np.testing.assert_array_equal(level0, expected)
    spec = {
        "driver": "zarr3" if version == 3 else "zarr",
        "kvstore": {"driver": "file", "path": str(path / "cam" / "0")},
    }
    np.testing.assert_array_equal(ts.open(spec, read=True).result().read().result(), expected)
    levels = 1 if config == "plain" else 3
    reference = reference_pyramid(level0, KINDS[config], levels, "mean")
    for level in range(1, levels):
        arr = np.asarray(zarr.open_array(str(path / "cam" / str(level)), mode="r")[:])
        assert arr.shape[0] <= n  # a level never claims frames level 0 does not have
        if arr.shape == reference[level].shape:  # a ragged one is validate's to report, below
            np.testing.assert_array_equal(arr, reference[level], err_msg=f"level {level}")
    _check_frame_columns(path, level0.shape[:-2], appended)
    _check_image_group(dict(group.attrs), version, slots, appended, reported, phase)
    # ... nor lacks any: every level's shape is the extent level 0 implies (no ragged pyramid), and
    # every column is indexed like the frames.
    errors = [str(p) for p in validate(LocalStore(path)) if p.severity == "error"]
    assert not errors, "acqzarr validate after the kill:\n" + "\n".join(errors)
    assert not [p for p in path.rglob("*.tmp") if not p.name.startswith(".")], "a temp file is visible"
    return min(slots, appended)


def _check_frame_columns(path: Path, index_shape: tuple[int, ...], appended: int) -> None:
    """Once a frame is published every column is there, shaped like the image's index axes, with the
    metadata the writer appended for each published frame and "missing" in the holes after it."""
    slots = math.prod(index_shape)
    docs = path / "cam" / "acqzarr_frames"
    if not ((docs / "zarr.json").exists() or (docs / ".zgroup").exists()):  # chunks are stored first
        assert slots == 0, f"{slots} frames published without their metadata columns"
        return
    frames = zarr.open_group(str(path / "cam" / "acqzarr_frames"), mode="r")
    assert frames.attrs["acqzarr_frames"]["columns"] == COLUMNS
    got = {name: np.asarray(frames[name][...]) for name in sorted(frames.array_keys())}  # type: ignore[index]
    assert set(got) == set(COLUMNS)
    for name, column in got.items():
        assert column.shape == index_shape, f"column {name}: {column.shape}, frames indexed {index_shape}"
    n = min(slots, appended)
    flat = {name: column.reshape(-1) for name, column in got.items()}  # acquisition order: C order here
    np.testing.assert_array_equal(flat["frame_id"][:n], np.arange(n))
    np.testing.assert_array_equal(flat["laser_mw"][:n], [frame_metadata(i)["laser_mw"] for i in range(n)])
    notes = [json.loads(str(text)) for text in flat["json"][:n]]
    assert notes == [{"note": frame_metadata(i)["note"]} for i in range(n)]
    # Holes closed at close (the rest of a final partial timepoint) read as missing.
    assert (flat["frame_id"][n:] == -(2**63)).all() and np.isnan(flat["laser_mw"][n:]).all()
    assert [str(text) for text in flat["json"][n:]] == [""] * (slots - n)


def _check_image_group(
    attrs: dict[str, Any], version: int, slots: int, appended: int, reported: int, phase: str
) -> None:
    """The session record counts exactly the frames in the published image and says whether the writer
    closed; the OME-NGFF omero block has a display window per channel, live from the first frame."""
    record = attrs["acqzarr_session"]
    on_disk = min(slots, appended)
    assert record["frames_on_disk"] == on_disk, (record, slots, appended)
    assert reported <= on_disk <= record["frames_accepted"] <= appended
    if phase == "closed":
        assert record["completed"] is True and record["stop"] is not None
    elif phase == "appending":
        assert record["completed"] is False and record["stop"] is None
    else:  # killed inside close: before or after its final record
        assert record["completed"] is (record["stop"] is not None)
    omero = (attrs["ome"] if version == 3 else attrs)["omero"]
    channels = omero["channels"]
    assert len(channels) in (1, CHANNELS)
    for channel in channels:
        window = channel["window"]
        assert window["min"] == 0 and window["max"] == 65535
        if on_disk:  # the frames' values lie in [0, 4093): the window is what was seen, not the range
            assert 0 <= window["start"] <= window["end"] < 4093, window


KILLS = scale("KILL_POINTS", 12)  # per Zarr version


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.timeout(max(300, 30 + 6 * KILLS))  # 2-3 s a kill on 2 busy cores; report.py runs 128
def test_random_kill_points(tmp_path: Path, version: int, record_figures: dict[str, Any]) -> None:
    rng = random.Random(1234 + version)
    kills = KILLS
    phases: dict[str, int] = {"appending": 0, "closing": 0, "closed": 0}
    configs: Counter[str] = Counter()
    frames_checked = 0
    per_frame = {c: _calibrate(tmp_path / f"calibration-{c}.zarr", version, c) for c in CONFIGS[1:]}
    per_frame["plain"] = per_frame["pyramid"]  # aimed as before: across the pyramid's longer life
    for k in range(kills):
        path = tmp_path / f"s{k}.zarr"
        config = CONFIGS[k % len(CONFIGS)]
        stop_after = rng.choice([rng.randint(1, 100), rng.randint(100, 1500)])
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, _settings(path, version, config), str(stop_after)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip()]  # "ready": the store exists, frames start now
        # Anywhere from the first frame to a little after close.
        time.sleep(rng.uniform(0.0, 1.15) * stop_after * per_frame[config])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        lines += proc.stdout.read().splitlines()
        proc.stdout.close()
        reported = max(
            [int(ln.split()[1]) for ln in lines if ln.startswith(("flushed", "closed"))], default=0
        )
        phase = (
            "closed"
            if any(ln.startswith("closed") for ln in lines)
            else ("closing" if "closing" in lines else "appending")
        )
        phases[phase] += 1
        configs[config] += 1
        if not path.exists() or not any(path.iterdir()):
            continue  # killed before the store was created: nothing to check
        frames_checked += _check_store(path, version, reported, config, stop_after, phase)
    record_figures.update(
        version=version,
        kill_points=kills,
        phases=phases,
        configs=dict(configs),
        frames_verified=frames_checked,
    )


# Aimed at the publish itself: the writer kills itself in the middle of writing an image's level
# shapes (after the n-th document of a new generation, or right before or after the one rename that
# makes a generation current), where a kill left levels of different extents before.
AIMED = """
import os, signal
import acqzarr.engine.publish
import acqzarr.stores.local_groups as lg

# Every stored band publishes (no coalescing), so a run has enough publishes for any ACQZARR_KILL_AT.
acqzarr.engine.publish.PUBLISH_INTERVAL = 0.0
acqzarr.engine.publish.PUBLISH_SHARE = 1.0

where, at = os.environ["ACQZARR_KILL_WHERE"], int(os.environ["ACQZARR_KILL_AT"])
seen = [0]
write_new, link = lg.LinkedGroups._write_new, lg.LinkedGroups._link

def count():
    seen[0] += 1
    return seen[0] == at

def aimed_write(self, path, blob):
    write_new(self, path, blob)
    if where == "document" and count():
        os.kill(os.getpid(), signal.SIGKILL)

def aimed_link(self, path, target):
    swap = path.name == "current"
    if swap and where == "before-swap" and count():
        os.kill(os.getpid(), signal.SIGKILL)
    link(self, path, target)
    if swap and where == "after-swap" and count():
        os.kill(os.getpid(), signal.SIGKILL)

lg.LinkedGroups._write_new, lg.LinkedGroups._link = aimed_write, aimed_link
"""


@pytest.mark.parametrize("version", [2, 3])
def test_kills_inside_pyramid_publishing_leave_no_ragged_pyramid(
    tmp_path: Path, version: int, record_figures: dict[str, Any]
) -> None:
    rng = random.Random(99 + version)
    kills = inside_open = 0
    for k, (config, where) in enumerate(
        itertools.product(CONFIGS[1:], ("document", "before-swap", "after-swap"))
    ):
        path = tmp_path / f"a{k}.zarr"
        frames = 240  # publishes enough (every 6 frames in the z and c pyramids) for any ACQZARR_KILL_AT
        env = {**os.environ, "ACQZARR_KILL_WHERE": where, "ACQZARR_KILL_AT": str(rng.randint(3, 30))}
        proc = subprocess.run(
            [sys.executable, "-c", AIMED + WRITER, _settings(path, version, config), str(frames)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == -signal.SIGKILL, (where, proc.stdout[-500:], proc.stderr[-2000:])
        lines = proc.stdout.splitlines()
        assert "closed" not in " ".join(lines), "the kill was aimed inside the run"
        kills += 1
        if "ready" not in lines:  # killed inside open_stream's one put_group: all of it or nothing
            problems = [str(p) for p in validate(LocalStore(path))]
            assert problems == [
                "error: (root): no Zarr metadata (zarr.json, .zgroup or .zarray) in this store"
            ]
            inside_open += 1
            continue
        reported = max([int(ln.split()[1]) for ln in lines if ln.startswith("flushed")], default=0)
        _check_store(path, version, reported, config, frames, "appending")
    record_figures.update(version=version, aimed_kills=kills, inside_open=inside_open)
