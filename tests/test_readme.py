"""The README's Python examples run as written (with a simulated camera), and do what they say."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

README = Path(__file__).parent.parent / "README.md"


def _block(after_heading: str) -> str:
    """The first ```python block under the heading ``after_heading``."""
    text = README.read_text()
    section = text.split(f"## {after_heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, after_heading
    return match.group(1)


def test_the_quick_start_records_and_the_read_back_example_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    section = README.read_text().split("## Recording from Python\n", 1)[1].split("\n## ", 1)[0]
    record, read_back = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    camera = np.random.default_rng(1).integers(0, 4096, (3, 2048, 2048), dtype=np.uint16)
    exec(compile(record, "README.md", "exec"), {"camera": camera})
    exec(compile(read_back, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"(3, 2048, 2048) {camera[-1].mean()}"
    np.testing.assert_array_equal(zarr.open_array("run.zarr/cam0/0", mode="r")[...], camera)


def test_the_per_frame_metadata_example_runs_and_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    frames: list[np.ndarray] = []

    def snap() -> np.ndarray:
        frames.append(rng.integers(0, 4096, (512, 512), dtype=np.uint16))
        return frames[-1]

    scope: dict[str, object] = {"snap": snap}
    exec(compile(_block("Per-frame metadata and the session record"), "README.md", "exec"), scope)
    assert os.path.isdir(tmp_path / "run.zarr")
    # frames went t, p, c: position B's channel c at time t is frame 4 t + 2 + c
    image = np.asarray(zarr.open_array("run.zarr/B/cam/0", mode="r")[...])
    expected = np.stack([[frames[4 * t + 2 + c] for c in range(2)] for t in range(10)])
    np.testing.assert_array_equal(image, expected)
    group = zarr.open_group("run.zarr/B/cam/acqzarr_frames", mode="r")
    assert (np.asarray(group["stage_x_um"][...]) == 800.0).all()
    assert np.asarray(group["exposure_ms"][...]).tolist() == [[20.0, 50.0]] * 10
    assert json.loads(str(group["json"][3, 1])) == {"objective": "20x", "focus": {"offset_um": 1.2}}
    session = zarr.open_group("run.zarr/B/cam", mode="r").attrs["acqzarr_session"]
    assert session["completed"] is True and session["frames_on_disk"] == 20
