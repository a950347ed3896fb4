"""The acqzarr command as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import zarr
from ome_zarr_models.v05.image import Image

import acqzarr as az
from acqzarr import cli
from acqzarr.recording import command as session
from acqzarr.recording.synthetic import camera_frames

CONFIGS = Path(__file__).parent.parent / "configs"


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
    assert "already exists; pass --overwrite to replace it" in again.stderr  # the flag, not Python's keyword


def test_the_version_has_one_source() -> None:
    """pyproject reads the version from acqzarr/_version.py: the installed metadata agrees."""
    from importlib.metadata import version

    assert version("acqzarr") == az.__version__


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("work started before the store was checked")


def test_demo_refuses_an_existing_store_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The refusal used to come after the frame pool was made (5.3 s), in the Python API's words."""
    (tmp_path / "demo.zarr").mkdir()
    (tmp_path / "demo.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    monkeypatch.setattr(cli, "camera_frames", _no_work)
    assert cli.main(["demo", "--output", str(tmp_path / "demo.zarr")]) == 1
    assert capsys.readouterr().err.strip().endswith("already exists; pass --overwrite to replace it")


def test_record_refuses_an_existing_store_before_building_its_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "simulated-noise.zarr").mkdir()
    (tmp_path / "simulated-noise.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    monkeypatch.setattr(session, "_make_camera", _no_work)
    args = ["record", str(CONFIGS / "simulated-noise.yaml"), "--set", "overwrite=false"]
    assert cli.main(args) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("already exists; pass --set overwrite=true to replace it, or --resume to continue it")
    )


def test_an_environment_override_error_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACQZARR_SOURCE__FRAMES", "abc")
    assert cli.main(["record", str(CONFIGS / "simulated-noise.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("acqzarr: error: environment variable ACQZARR_SOURCE__FRAMES: invalid settings\n")
    assert "  source.frames: Input should be a valid integer" in err
    assert "simulated-noise.yaml" not in err  # the file never said abc


def test_a_set_override_error_names_the_set_and_the_file_keeps_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load((CONFIGS / "simulated-noise.yaml").read_text())
    config["arrays"][0]["dtype"] = "uint17"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["record", str(path), "--dry-run", "--set", "store=3", "--set", "version=7"]) == 2
    head, *lines = capsys.readouterr().err.strip().split("\n")
    assert head == f"acqzarr: error: {path}: invalid settings"
    assert any(line.startswith("  arrays.0.dtype:") and "(from" not in line for line in lines)
    assert any(line.startswith("  version:") and line.endswith("(from --set version=7)") for line in lines)


def test_a_typo_inside_source_is_reported_as_the_typo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load((CONFIGS / "simulated-noise.yaml").read_text())
    config["source"]["frame"] = config["source"].pop("frames")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["record", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.split("\n") == [
        f"acqzarr: error: {path}: invalid settings",
        "  source.frame: unknown key; did you mean 'frames'?",
        "",
    ]
    config["source"] = [{**config["source"], "key": "cam0"}]
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["record", str(path), "--dry-run"]) == 2
    assert "  source.0.frame: unknown key; did you mean 'frames'?" in capsys.readouterr().err


def test_record_on_a_python_api_config_says_how_to_use_it(capsys: pytest.CaptureFixture[str]) -> None:
    path = CONFIGS / "camera-2048-v3.yaml"
    assert cli.main(["record", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no source: section" in err and "StreamSettings config for the Python API" in err
    assert f"acqzarr.StreamSettings.from_file('{path}')" in err and "source: {driver:" in err


def test_streamsettings_from_file_on_a_record_config_points_to_the_record_loader() -> None:
    path = CONFIGS / "simulated-noise.yaml"
    with pytest.raises(
        az.ConfigError, match=r"a recording session .*acqzarr\.recording\.command\.load_session"
    ):
        az.StreamSettings.from_file(path)


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"acqzarr {az.__version__}\n"
