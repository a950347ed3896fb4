"""The acqzarr command as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import zarr
from ome_zarr_models.v05.image import Image

import acqzarr as az
from acqzarr.recording.synthetic import camera_frames


def test_demo_records_a_valid_ome_zarr(tmp_path: Path) -> None:
    out = tmp_path / "demo.zarr"
    result = subprocess.run(
        [sys.executable, "-m", "acqzarr", "demo", "--output", str(out), "--frames", "40", "--size", "300"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote 40 frames of 300x300 uint16" in result.stdout
    Image.from_zarr(zarr.open_group(str(out / "cam0"), mode="r", zarr_format=3))
    array = zarr.open_array(str(out / "cam0" / "0"), mode="r")
    assert array.shape == (40, 300, 300)
    pool = camera_frames(16, (300, 300))
    assert (array[17] == pool[1]).all()


def test_demo_refuses_an_existing_store(tmp_path: Path) -> None:
    out = tmp_path / "demo.zarr"
    args = [sys.executable, "-m", "acqzarr", "demo", "--output", str(out), "--frames", "2", "--size", "64"]
    subprocess.run(args, check=True, capture_output=True)
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 1
    assert "already exists; pass overwrite=True" in again.stderr


def test_the_version_has_one_source() -> None:
    """pyproject reads the version from acqzarr/_version.py: the installed metadata agrees."""
    from importlib.metadata import version

    assert version("acqzarr") == az.__version__
