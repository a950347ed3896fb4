"""acqzarr without the Linux-only extras: no fcntl, O_DIRECT, MAP_POPULATE (nor O_CLOEXEC, pwrite
or mmap flags, which Windows lacks too), and no zarr-python.

A child process hides them before importing acqzarr, then records stores and
replays a Zarr array; this process reads everything back with zarr-python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

ROOT = Path(__file__).resolve().parents[1]

HIDE = textwrap.dedent(
    """
    import mmap, os, sys
    sys.modules["fcntl"] = None   # import fcntl raises ImportError, as on Windows
    sys.modules["zarr"] = None    # the plain install has no zarr-python
    for name in ("O_DIRECT", "O_CLOEXEC", "pwrite"):
        if hasattr(os, name):
            delattr(os, name)
    for name in ("MAP_POPULATE", "MAP_ANONYMOUS", "MAP_PRIVATE"):
        if hasattr(mmap, name):
            delattr(mmap, name)
    """
)

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import acqzarr as az
    from acqzarr.stores import LocalStore
    from acqzarr_drivers.replay import Replay, ReplayOptions

    out = sys.argv[1]
    frames = np.arange(12 * 48 * 40, dtype="uint16").reshape(12, 48, 40) * 7
    for version in (2, 3):
        shard = 2 if version == 3 else 1
        settings = az.StreamSettings(
            store=f"{out}/v{version}.zarr",
            version=version,
            arrays=[az.ArraySettings(
                key="cam",
                dtype="uint16",
                dimensions=[
                    az.Dimension(name="t", kind="time", size=0, chunk=4, shard=shard),
                    az.Dimension(name="y", kind="space", size=48, chunk=16, shard=shard),
                    az.Dimension(name="x", kind="space", size=40, chunk=16, shard=shard),
                ],
                multiscale={"levels": 2},
            )],
        )
        store = LocalStore(settings.store)
        assert not store.direct_io, "O_DIRECT is hidden"
        with az.open_stream(settings) as stream:
            for i, frame in enumerate(frames):
                stream.append(frame, "cam", metadata={"exposure_ms": float(i)})
        # Replay the array just written, read without zarr-python, and record it again.
        replay = Replay(ReplayOptions(path=f"{out}/v{version}.zarr/cam/0"))
        got = np.empty((48, 40), "uint16")
        replayed = []
        while replay.read_into(got) is not None:
            replayed.append(got.copy())
        assert np.array_equal(np.stack(replayed), frames), "replayed frames differ"
    print(json.dumps({"fcntl": "fcntl" in sys.modules and sys.modules["fcntl"] is not None}))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="hides POSIX extras on a POSIX system")
def test_import_and_write_without_the_linux_extras(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "drivers")])}
    result = subprocess.run(
        [sys.executable, "-c", HIDE + CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"fcntl": False}
    frames = np.arange(12 * 48 * 40, dtype="uint16").reshape(12, 48, 40) * 7
    for version in (2, 3):
        group = zarr.open_group(str(tmp_path / f"v{version}.zarr" / "cam"), mode="r")
        np.testing.assert_array_equal(group["0"][:], frames)
        half = frames.reshape(12, 24, 2, 20, 2).mean(axis=(2, 4))
        np.testing.assert_array_equal(group["1"][:], np.round(half).astype("uint16"))
        exposure = zarr.open_array(
            str(tmp_path / f"v{version}.zarr" / "cam" / "acqzarr_frames" / "exposure_ms")
        )
        np.testing.assert_array_equal(exposure[:], np.arange(12, dtype=float))
