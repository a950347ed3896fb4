"""How a stream ends when the caller does not close it cleanly: an exception or Ctrl-C inside the
``with`` block, a stream nobody closed (garbage-collected, or still open at interpreter exit).

Each leaves a whole store (every accepted frame readable, read back with zarr-python) whose session
record says ``completed: false`` and why; only a clean close says ``completed: true``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import acqzarr as az
from builders import stream_settings

SHAPE = (0, 32, 32)
CHUNKS = (4, 16, 16)


def frames(n: int) -> np.ndarray[Any, Any]:
    return np.arange(n * 32 * 32, dtype="uint16").reshape(n, 32, 32)


def session(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = zarr.open_group(str(path / "cam0"), mode="r").attrs["acqzarr_session"]
    return record


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("error", [RuntimeError("the camera stopped"), KeyboardInterrupt()])
def test_an_exception_inside_the_block_keeps_the_frames_and_marks_the_record_incomplete(
    tmp_path: Path, version: int, error: BaseException
) -> None:
    path = tmp_path / "s.zarr"
    data = frames(6)  # one full band of 4, and 2 frames of the next (closed at the extent)
    with pytest.raises(type(error)), az.open_stream(stream_settings(path, version, SHAPE, CHUNKS)) as stream:
        stream.append(data)
        raise error
    record = session(path)
    assert record["completed"] is False
    assert record["failure"] == {"type": type(error).__name__, "message": str(error)}
    assert record["frames_on_disk"] == 6
    stored = zarr.open_array(str(path / "cam0" / "0"), mode="r")
    np.testing.assert_array_equal(stored[:], data)


def test_a_clean_close_says_completed_and_no_failure(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(stream_settings(path, 3, SHAPE, CHUNKS)) as stream:
        stream.append(frames(4))
    record = session(path)
    assert record["completed"] is True
    assert "failure" not in record


def test_a_stream_nobody_closed_is_closed_when_collected(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    stream = az.open_stream(stream_settings(path, 3, SHAPE, CHUNKS))
    stream.append(frames(5))
    del stream
    gc.collect()
    record = session(path)
    assert record["completed"] is False
    assert record["failure"]["type"] == "NotClosed"
    assert record["stop"] is not None
    stored = zarr.open_array(str(path / "cam0" / "0"), mode="r")
    np.testing.assert_array_equal(stored[:], frames(5))


def test_a_stream_still_open_at_interpreter_exit_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    script = f"""
import numpy as np, acqzarr as az
from builders import stream_settings
stream = az.open_stream(stream_settings({str(path)!r}, 2, {SHAPE}, {CHUNKS}))
stream.append(np.arange(3 * 32 * 32, dtype="uint16").reshape(3, 32, 32))
keep = stream  # referenced until the interpreter exits
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
    record = json.loads((path / "cam0" / ".zattrs").read_text())["acqzarr_session"]
    assert record["completed"] is False
    assert record["failure"]["type"] == "NotClosed"
    stored = zarr.open_array(str(path / "cam0" / "0"), mode="r")
    np.testing.assert_array_equal(stored[:], frames(3))


def test_a_closed_stream_that_is_collected_writes_nothing_more(tmp_path: Path) -> None:
    """close() detaches the finalizer: a closed stream that is collected writes nothing more."""
    path = tmp_path / "s.zarr"
    stream = az.open_stream(stream_settings(path, 3, SHAPE, CHUNKS))
    stream.append(frames(4))
    stream.close()
    before = (path / "cam0" / "zarr.json").read_bytes()
    del stream
    gc.collect()
    assert (path / "cam0" / "zarr.json").read_bytes() == before
    assert session(path)["completed"] is True
