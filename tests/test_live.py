"""Live readers and crashes: a second process sees a consistent prefix; SIGKILL loses nothing flushed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import zarr

import acqzarr as az
from builders import stream_settings
from readback import read_tensorstore

FRAME = (40, 48)


def frame(i: int) -> np.ndarray:
    """Frame i is recognisable: every sample encodes its frame number and position."""
    yy, xx = np.mgrid[0 : FRAME[0], 0 : FRAME[1]]
    return ((i * 7 + yy * 3 + xx) % 65521).astype(np.uint16)


FRAME_SRC = textwrap.dedent(
    """
    import numpy as np
    FRAME = (40, 48)
    def frame(i):
        yy, xx = np.mgrid[0:FRAME[0], 0:FRAME[1]]
        return ((i * 7 + yy * 3 + xx) % 65521).astype(np.uint16)
    """
)


def settings(path: Path, version: int) -> az.StreamSettings:
    return stream_settings(path, version, (0, *FRAME), (4, 16, 16))


READER = FRAME_SRC + textwrap.dedent(
    """
    import sys, time, json, zarr
    path, seconds = sys.argv[1], float(sys.argv[2])
    shapes, reads, bad = set(), 0, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            a = zarr.open_array(path, mode="r")
        except Exception as exc:  # the array document is always present and whole
            bad.append(f"open: {exc!r}")
            break
        data = a[:]
        n = data.shape[0]
        for i in range(n):
            if not np.array_equal(data[i], frame(i)):
                bad.append(f"frame {i} of {n} differs")
                break
        shapes.add(n)
        reads += 1
        time.sleep(0.01)
    print(json.dumps({"reads": reads, "shapes": sorted(shapes), "bad": bad}))
    """
)


@pytest.mark.slow
def test_reader_in_another_process_sees_consistent_prefixes(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(settings(path, version)) as stream:
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(path / "cam0" / "0"), "4"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(120):
            stream.append(frame(i))
            time.sleep(0.025)
        out, _ = reader.communicate(timeout=60)
    report = json.loads(out)
    assert report["bad"] == []
    assert report["reads"] > 10
    assert len([s for s in report["shapes"] if s > 0]) >= 3  # it really watched the array grow
    assert all(s % 4 == 0 for s in report["shapes"])  # only whole flushed layers are ever visible


WRITER = FRAME_SRC + textwrap.dedent(
    """
    import sys, acqzarr as az
    settings = az.StreamSettings.model_validate_json(sys.argv[1])
    stream = az.open_stream(settings)
    last = -1
    i = 0
    while True:
        stream.append(frame(i))
        i += 1
        flushed = stream.stats().frames_flushed
        if flushed != last:
            print(f"flushed {flushed}", flush=True)
            last = flushed
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 3, 7])
def test_sigkill_keeps_every_flushed_frame(tmp_path: Path, version: int, kill_after: int) -> None:
    path = tmp_path / "s.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, settings(path, version).model_dump_json()],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    reported = 0
    changes = 0
    deadline = time.monotonic() + 60
    while changes < kill_after and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("flushed ") and int(line.split()[1]) > 0:
            reported = int(line.split()[1])
            changes += 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert reported > 0
    array = zarr.open_array(str(path / "cam0" / "0"), mode="r")
    data = np.asarray(array[:])
    assert data.shape[0] >= reported  # everything reported flushed is there (maybe more)
    assert data.shape[0] % 4 == 0
    expected = np.stack([frame(i) for i in range(data.shape[0])])
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_array_equal(read_tensorstore(path / "cam0" / "0", version), expected)
    group = zarr.open_group(str(path / "cam0"), mode="r", zarr_format=version)
    if version == 2:
        from ome_zarr_models.v04.image import Image
    else:
        from ome_zarr_models.v05.image import Image  # type: ignore[assignment]
    Image.from_zarr(group)
    assert ts  # tensorstore imported for the reader above
