"""Stores of several images: stage positions (bioformats2raw series), HCS plates, and the
pyramid metadata that names a callable a reader can run."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v04.bioformats2raw import BioFormats2Raw as Bf2Raw04
from ome_zarr_models.v04.hcs import HCS as HCS04
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v04.well import Well as Well04
from ome_zarr_models.v05.bioformats2raw import BioFormats2Raw as Bf2Raw05
from ome_zarr_models.v05.hcs import HCS as HCS05
from ome_zarr_models.v05.image import Image as Image05
from ome_zarr_models.v05.well import Well as Well05

import acqzarr as az
from acqzarr.engine.memory import plan_memory
from builders import UNSHARDED, array_document, dims, frames_for, stream_settings

POSITIONS = [
    az.Position(name="p0", x=100.0, y=-20.5, z=3.0),
    az.Position(name="p1"),
    az.Position(name="p2", x=7),
]
PLATE = az.Plate(
    name="screen",
    rows=["A", "B"],
    columns=["1", "2", "3"],
    wells=["A/1", "B/3"],
    fields=2,
    acquisitions=[az.Acquisition(id=4, name="run")],
)


def _attrs(path: Path, version: int) -> dict[str, Any]:
    """A group's NGFF attributes, unwrapped from "ome" for 0.5."""
    attrs = dict(zarr.open_group(str(path), mode="r", zarr_format=version).attrs)
    return dict(attrs["ome"]) if version == 3 else attrs


def _array(key: str, version: int, shape: tuple[int, ...] = (0, 2, 24, 20)) -> az.ArraySettings:
    shards = [1] * (len(shape) - 2) + [2, 2] if version == 3 else None
    chunks = (2, 1, 8, 8)[-len(shape) :] if len(shape) == 4 else (2, 8, 8)
    d = dims(shape, chunks, shards)
    d = [
        dim.model_copy(update={"unit": "micrometer", "scale": 0.5}) if dim.kind == "space" else dim
        for dim in d
    ]
    return az.ArraySettings(key=key, dtype="uint16", dimensions=d)


def _positions_settings(path: Path, version: int) -> az.StreamSettings:
    return az.StreamSettings(
        store=str(path),
        version=version,
        arrays=[_array("cam0", version), _array("cam1", version, (0, 24, 20))],
        positions=POSITIONS,
    )


def test_positions_write_every_array_once_per_position(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    settings = _positions_settings(path, version)
    expected: dict[str, np.ndarray[Any, Any]] = {}
    with az.open_stream(settings) as stream:
        assert stream.keys == ["p0/cam0", "p0/cam1", "p1/cam0", "p1/cam1", "p2/cam0", "p2/cam1"]
        for p in range(3):
            cam0 = frames_for((24, 20), 4, "uint16", seed=p)
            cam1 = frames_for((24, 20), 3, "uint16", seed=10 + p)
            # An MDA event's index goes straight in: "p" picks the position, the rest the frame.
            for i, frame in enumerate(cam0):
                stream.append(frame, key="cam0", index={"p": p, "t": i // 2, "c": i % 2})
            stream.append(cam1[:2], key="cam1", index={"p": p})
            stream.append(cam1[2], key=f"p{p}/cam1")  # or the image's full path
            expected[f"p{p}/cam0"] = cam0.reshape(2, 2, 24, 20)
            expected[f"p{p}/cam1"] = cam1

    # Collection metadata: the root says several images, the OME group lists them.
    root, series = _attrs(path, version), _attrs(path / "OME", version)
    assert root["bioformats2raw.layout"] == 3
    assert series["series"] == list(expected)
    if version == 3:
        assert root["version"] == series["version"] == "0.5"
        Bf2Raw05.from_zarr(zarr.open_group(str(path), mode="r", zarr_format=3))
    else:
        Bf2Raw04.from_zarr(zarr.open_group(str(path), mode="r", zarr_format=2))

    for key, data in expected.items():
        group = zarr.open_group(str(path / key), mode="r", zarr_format=version)
        (Image04 if version == 2 else Image05).from_zarr(group)
        np.testing.assert_array_equal(np.asarray(group["0"][...]), data)
        (node,) = list(Reader(parse_url(str(path / key)))())
        np.testing.assert_array_equal(np.asarray(node.data[0]), data)

    # The stage position is a multiscale-level translation after a unit scale, on x/y/z only.
    ms = _attrs(path / "p0/cam0", version)["multiscales"][0]
    assert ms["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 1.0, 1.0, 1.0]},
        {"type": "translation", "translation": [0.0, 0.0, -20.5, 100.0]},  # t, c, y, x (no z axis)
    ]
    p2 = _attrs(path / "p2/cam1", version)["multiscales"][0]
    assert p2["coordinateTransformations"][1]["translation"] == [0.0, 0.0, 7.0]
    assert "coordinateTransformations" not in _attrs(path / "p1/cam0", version)["multiscales"][0]


def test_a_single_array_at_the_root_of_each_position(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    settings = az.StreamSettings(
        store=str(path), version=3, arrays=[_array("", 3, (0, 24, 20))], positions=POSITIONS[:2]
    )
    with az.open_stream(settings) as stream:
        assert stream.keys == ["p0", "p1"]
        stream.append(frames_for((24, 20), 2, "uint16"), index={"p": 1})
        with pytest.raises(az.FrameError, match=r"index 'p': expected a position 0 to 1, got 2"):
            stream.append(frames_for((24, 20), 1, "uint16"), index={"p": 2})
        with pytest.raises(az.FrameError, match="several arrays; pass key="):
            stream.append(frames_for((24, 20), 1, "uint16"))
        assert stream.stats("p1").frames_appended == 2
    assert _attrs(path / "OME", 3)["series"] == ["p0", "p1"]


def test_a_key_with_a_position_index_must_be_an_array_key(tmp_path: Path) -> None:
    with az.open_stream(_positions_settings(tmp_path / "s.zarr", 3)) as stream:
        with pytest.raises(az.FrameError, match=r"unknown array key 'p0/cam0' with index 'p'"):
            stream.append(frames_for((24, 20), 1, "uint16"), key="p0/cam0", index={"p": 1})
        with pytest.raises(az.FrameError, match="several arrays; pass key="):
            stream.append(frames_for((24, 20), 1, "uint16"), index={"p": 1})


def test_memory_is_planned_for_every_image(tmp_path: Path) -> None:
    settings = _positions_settings(tmp_path / "s.zarr", 3)
    single = settings.model_copy(update={"positions": None})
    plan, plan1 = plan_memory(settings), plan_memory(single)
    assert plan.required == 3 * plan1.required
    assert sorted(plan.per_array) == ["p0/cam0", "p0/cam1", "p1/cam0", "p1/cam1", "p2/cam0", "p2/cam1"]


def _plate_settings(path: Path, version: int) -> az.StreamSettings:
    return az.StreamSettings(store=str(path), version=version, arrays=[_array("", version)], plate=PLATE)


def test_a_plate_lays_positions_out_as_wells_and_fields(tmp_path: Path, version: int) -> None:
    path = tmp_path / "plate.zarr"
    images = {}
    with az.open_stream(_plate_settings(path, version)) as stream:
        assert stream.keys == ["A/1/0", "A/1/1", "B/3/0", "B/3/1"]
        for p, key in enumerate(stream.keys):  # p = well * fields + field
            images[key] = frames_for((24, 20), 4, "uint16", seed=p)
            stream.append(images[key], index={"p": p})

    plate = _attrs(path, version)["plate"]
    assert plate == {
        "rows": [{"name": "A"}, {"name": "B"}],
        "columns": [{"name": "1"}, {"name": "2"}, {"name": "3"}],
        "wells": [
            {"path": "A/1", "rowIndex": 0, "columnIndex": 0},
            {"path": "B/3", "rowIndex": 1, "columnIndex": 2},
        ],
        "field_count": 2,
        "name": "screen",
        "acquisitions": [{"id": 4, "name": "run", "maximumfieldcount": 2}],
        "version": "0.4" if version == 2 else "0.5",
    }
    well = _attrs(path / "B/3", version)["well"]
    assert well["images"] == [{"path": "0", "acquisition": 4}, {"path": "1", "acquisition": 4}]
    assert "bioformats2raw.layout" not in _attrs(path, version)  # a plate is its own collection

    root = zarr.open_group(str(path), mode="r", zarr_format=version)
    hcs = (HCS04 if version == 2 else HCS05).from_zarr(root)
    assert [w.path for w in hcs.ome_attributes.plate.wells] == ["A/1", "B/3"]
    for well_path in ("A/1", "B/3"):
        (Well04 if version == 2 else Well05).from_zarr(root[well_path])  # type: ignore[arg-type]
    for key, data in images.items():
        np.testing.assert_array_equal(np.asarray(root[f"{key}/0"][...]), data.reshape(2, 2, 24, 20))

    # ome-zarr-py (what napari-ome-zarr builds on) sees a plate and stitches its wells.
    nodes = list(Reader(parse_url(str(path)))())
    assert "plate" in nodes[0].metadata["metadata"]
    top = np.asarray(nodes[0].data[0])
    assert top.shape == (2, 2, 2 * 24, 3 * 20)  # rows x columns of first fields
    np.testing.assert_array_equal(top[..., 24:, 40:], images["B/3/0"].reshape(2, 2, 24, 20))
    assert not top[..., :24, 20:].any()  # an empty well


def test_pyramid_metadata_names_a_callable_that_rebuilds_each_level(tmp_path: Path, version: int) -> None:
    """Import the callable the multiscale metadata names and run it on level k: it gives level k+1."""
    for method in ("mean", "decimate", "max"):
        path = tmp_path / f"{method}.zarr"
        arr = _array("img", version, (0, 2, 24, 20)).model_copy(
            update={"multiscale": az.Multiscale(levels=3, method=method)}
        )
        with az.open_stream(az.StreamSettings(store=str(path), version=version, arrays=[arr])) as stream:
            stream.append(frames_for((24, 20), 7, "uint16"))
        ms = _attrs(path / "img", version)["multiscales"][0]
        meta = ms["metadata"]
        module, _, name = meta["method"].rpartition(".")
        func = getattr(importlib.import_module(module), name)
        args = [ast.literal_eval(a) for a in meta["args"]]
        kwargs = {k: ast.literal_eval(v) for k, v in meta["kwargs"].items()}
        group = zarr.open_group(str(path / "img"), mode="r", zarr_format=version)
        levels = [np.asarray(group[d["path"]][...]) for d in ms["datasets"]]
        for k in range(len(levels) - 1):
            np.testing.assert_array_equal(func(levels[k], *args, **kwargs), levels[k + 1])


def test_acquire_zarr_style_check_of_type_and_metadata(tmp_path: Path) -> None:
    """A port of acquire-zarr's python/tests/test_stream.py::test_2d_multiscale_stream check: eval the
    metadata's method, args and kwargs and compare with level 1 (also for a single level: the
    metadata is there, and describes how the next level would be made)."""
    import acqzarr  # noqa: F401  (eval of the dotted name needs it)

    for levels in (2, 1):
        path = tmp_path / f"l{levels}.zarr"
        settings = stream_settings(
            path,
            2,
            (50, 48, 64),
            (50, 24, 32),
            key="",
            dtype="int32",
            multiscale=az.Multiscale(levels=levels, method="mean"),
        )
        data = np.random.default_rng(0).integers(-(2**16), 2**16 - 1, (50, 48, 64), dtype=np.int32)
        with az.open_stream(settings) as stream:
            stream.append(data)
        group = zarr.open(str(path), mode="r")
        ms = group.attrs["multiscales"][0]
        assert ms["type"] == "mean"
        metadata = ms["metadata"]
        saved_method = metadata["method"]
        args = list(map(eval, metadata.get("args", [])))
        kwargs = {k: eval(v) for k, v in metadata.get("kwargs", {}).items()}
        full_res = group["0"]
        np.testing.assert_array_equal(data, full_res)
        expected = eval(saved_method)(full_res[...], *args, **kwargs).astype(data.dtype)
        if levels == 2:
            assert group["1"].shape == (50, 24, 32)
            np.testing.assert_array_equal(group["1"], expected)
        else:
            assert expected.shape == (50, 24, 32)


# -- napari-ome-zarr ----------------------------------------------------------------------------
# napari's plugins are kept out of this suite (pyproject's addopts: they fail filterwarnings=error
# at start-up), so its reader runs in a child interpreter with warnings off: this one, or the one
# ACQZARR_NAPARI_PYTHON names.
NAPARI_PYTHON = os.environ.get("ACQZARR_NAPARI_PYTHON", sys.executable)

_NAPARI_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np
    warnings.simplefilter("ignore")
    from napari_ome_zarr import napari_get_reader
    out = {}
    for path in sys.argv[1:]:
        reader = napari_get_reader(path)
        layers = reader(path) if reader is not None else []
        out[path] = [
            {"shape": list(np.asarray(data[0] if isinstance(data, list) else data).shape),
             "sum": int(np.asarray(data[0] if isinstance(data, list) else data).sum()),
             "name": meta.get("name"), "kind": kind}
            for data, meta, kind in (layer if len(layer) == 3 else (*layer, "image") for layer in layers)
        ]
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_napari_ome_zarr_reads_plates_and_positions(tmp_path: Path, version: int) -> None:
    plate_path, pos_path = tmp_path / "plate.zarr", tmp_path / "pos.zarr"
    with az.open_stream(_plate_settings(plate_path, version)) as stream:
        for p in range(4):
            stream.append(np.full((4, 24, 20), p + 1, np.uint16), index={"p": p})
    with az.open_stream(_positions_settings(pos_path, version)) as stream:
        for p in range(3):
            stream.append(np.full((2, 24, 20), p + 1, np.uint16), key="cam0", index={"p": p})
            stream.append(np.full((1, 24, 20), 9, np.uint16), key="cam1", index={"p": p})
    image = pos_path / "p2" / "cam0"
    assert NAPARI_PYTHON is not None
    run = subprocess.run(
        [NAPARI_PYTHON, "-c", _NAPARI_SCRIPT, str(plate_path), str(image)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    layers = json.loads(run.stdout.strip().splitlines()[-1])
    (plate,) = layers[str(plate_path)]
    # The plate: first fields of both wells on a 2 x 3 grid (channels split into layers or kept).
    assert plate["shape"][-2:] == [2 * 24, 3 * 20]
    assert plate["sum"] == (1 + 3) * 4 * 24 * 20
    (pos,) = layers[str(image)]
    assert pos["shape"][-2:] == [24, 20]
    assert pos["sum"] == 3 * 2 * 24 * 20


def _single_camera(path: Path, version: int, key: str) -> np.ndarray[Any, Any]:
    """A one-camera store with the camera at ``key``; returns the frames written."""
    frames = frames_for((24, 20), 5, "uint16", seed=3)
    settings = az.StreamSettings(store=str(path), version=version, arrays=[_array(key, version, (0, 24, 20))])
    with az.open_stream(settings) as stream:
        stream.append(frames)
    return frames


def test_the_root_of_a_keyed_single_camera_store_lists_its_image(tmp_path: Path, version: int) -> None:
    # The path a user types first is the store: its root says where the one image is
    # (bioformats2raw layout, the OME group's series and METADATA.ome.xml), as with several images.
    path = tmp_path / "one.zarr"
    frames = _single_camera(path, version, "cam0")
    root = _attrs(path, version)
    assert root["bioformats2raw.layout"] == 3
    assert _attrs(path / "OME", version)["series"] == ["cam0"]
    (Bf2Raw04 if version == 2 else Bf2Raw05).from_zarr(
        zarr.open_group(str(path), mode="r", zarr_format=version)  # type: ignore[arg-type]
    )
    xml = (path / "OME" / "METADATA.ome.xml").read_text()
    assert '<Image ID="Image:cam0" Name="cam0"/>' in xml
    # ome-zarr-py's Reader does not follow bioformats2raw (0.18 has no spec for it); the series
    # entry it would follow is an image it opens.
    (node,) = list(Reader(parse_url(str(path / "cam0")))())
    np.testing.assert_array_equal(np.asarray(node.data[0]), frames)
    result = subprocess.run(
        [sys.executable, "-m", "acqzarr", "validate", str(path), "--deep"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_napari_opens_the_root_of_a_keyed_single_camera_store(tmp_path: Path, version: int) -> None:
    # What `napari one.zarr` runs: napari-ome-zarr follows the root to the image and shows it.
    path = tmp_path / "one.zarr"
    frames = _single_camera(path, version, "cam0")
    layers = _napari_layers(path)
    assert [layer["shape"][-2:] for layer in layers[str(path)]] == [[24, 20]]
    assert layers[str(path)][0]["sum"] == int(frames.sum())


def test_a_root_image_store_stays_an_image(tmp_path: Path, version: int) -> None:
    path = tmp_path / "root.zarr"
    frames = _single_camera(path, version, "")
    assert "multiscales" in _attrs(path, version)
    assert "bioformats2raw.layout" not in _attrs(path, version)
    assert not (path / "OME").exists()
    (node,) = list(Reader(parse_url(str(path)))())
    np.testing.assert_array_equal(np.asarray(node.data[0]), frames)


def _napari_layers(*paths: Path) -> dict[str, list[dict[str, Any]]]:
    """What napari-ome-zarr's reader returns for each path, run in a child interpreter (below)."""
    assert NAPARI_PYTHON is not None
    run = subprocess.run(
        [NAPARI_PYTHON, "-c", _NAPARI_SCRIPT, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


# -- settings -----------------------------------------------------------------------------------
def _data(**extra: Any) -> dict[str, Any]:
    array = array_document(3, (0, 8, 8), (1, 8, 8), shards=UNSHARDED, key="", dtype="uint8")
    return {"store": "x.zarr", "arrays": [array], **extra}


_PLATE = {"rows": ["A", "B"], "columns": ["1", "2"], "wells": ["A/1"]}


@pytest.mark.parametrize(
    ("data", "where", "reason"),
    [
        (_data(positions=[{"name": "a"}, {"name": "a"}]), "(root)", r"position names must be unique"),
        (_data(positions=[{"name": "a/b"}]), "positions.0.name", "one path segment"),
        (_data(positions=[{"name": "OME"}]), "positions.0.name", "not 'OME'"),
        (_data(positions=[{"name": "a", "x": float("nan")}]), "positions.0.x", "must be finite"),
        (_data(positions=[]), "positions", "at least 1"),
        (_data(positions=[{"name": "a"}], plate=_PLATE), "(root)", "positions and plate are exclusive"),
        (_data(plate={**_PLATE, "wells": ["C/1"]}), "plate", r"well 'C/1' must be 'row/column'"),
        (_data(plate={**_PLATE, "wells": ["A1"]}), "plate", r"well 'A1' must be 'row/column'"),
        (_data(plate={**_PLATE, "wells": ["A/1", "A/1"]}), "plate", "wells must be unique"),
        (_data(plate={**_PLATE, "rows": ["A", "A"]}), "plate.rows", "names must be unique"),
        (_data(plate={**_PLATE, "rows": ["A-1"]}), "plate.rows", "letters and digits only"),
        (_data(plate={**_PLATE, "fields": 0}), "plate.fields", "greater than or equal to 1"),
        (
            _data(plate={**_PLATE, "acquisitions": [{"id": 0}, {"id": 1}]}),
            "plate.acquisitions",
            "at most 1 item",
        ),
    ],
)
def test_bad_positions_and_plates_are_config_errors(data: dict[str, Any], where: str, reason: str) -> None:
    with pytest.raises(az.ConfigError, match=rf"\n  {re.escape(where)}: .*{reason}"):
        az.StreamSettings.from_mapping(data)


def test_a_plate_takes_one_array_at_its_fields_root() -> None:
    data = _data(plate=_PLATE)
    two = {**data, "arrays": [{**data["arrays"][0], "key": "a"}, {**data["arrays"][0], "key": "b"}]}
    with pytest.raises(az.ConfigError, match=r"a plate takes exactly one array, with key ''.*\['a', 'b'\]"):
        az.StreamSettings.from_mapping(two)
    keyed = {**data, "arrays": [{**data["arrays"][0], "key": "cam"}]}
    with pytest.raises(az.ConfigError, match="a plate takes exactly one array"):
        az.StreamSettings.from_mapping(keyed)


def test_an_axis_named_p_clashes_with_the_position_index() -> None:
    data = _data(positions=[{"name": "a"}])
    data["arrays"][0]["dimensions"][0]["name"] = "p"
    with pytest.raises(az.ConfigError, match="axis named 'p'"):
        az.StreamSettings.from_mapping(data)


def test_several_images_reserve_the_ome_group() -> None:
    data = _data()
    data["arrays"] = [{**data["arrays"][0], "key": "OME"}, {**data["arrays"][0], "key": "cam"}]
    with pytest.raises(az.ConfigError, match="keeps their list in group 'OME'"):
        az.StreamSettings.from_mapping(data)


def test_images_expand_arrays_per_position_and_keep_the_stage() -> None:
    settings = az.StreamSettings.from_mapping(
        _data(positions=[{"name": "s1", "x": 1.5}, {"name": "s2"}], version=3)
    )
    images = settings.images
    assert [i.key for i in images] == ["s1", "s2"]
    assert images[0].position == az.Position(name="s1", x=1.5)
    assert settings.arrays[0].position is None
    assert sys.modules["acqzarr"].StreamSettings.model_validate(settings.model_dump()) == settings


# -- info and validate ----------------------------------------------------------------------------
def _written(path: Path, settings: az.StreamSettings) -> Path:
    with az.open_stream(settings) as stream:
        for p in range(len(settings.position_paths or [])):
            for arr in settings.arrays:
                frame_shape = tuple(d.size for d in arr.dimensions[-2:])
                stream.append(
                    frames_for(frame_shape, 2, "uint16", seed=p), key=arr.key or None, index={"p": p}
                )
    return path


def test_info_shows_channels_positions_and_the_plate(tmp_path: Path, version: int) -> None:
    from acqzarr.read.info import describe, render

    settings = _positions_settings(tmp_path / "pos.zarr", version)
    arrays = [
        settings.arrays[0].model_copy(
            update={"channels": [az.Channel(label="DAPI"), az.Channel(label="GFP")]}
        )
    ]
    settings = settings.model_copy(update={"arrays": [*arrays, settings.arrays[1]]})
    info = describe(az.LocalStore(_written(tmp_path / "pos.zarr", settings)))
    images = {im["path"]: im for im in info["images"]}
    assert images["p0/cam0"]["channels"] == ["DAPI", "GFP"]
    assert images["p0/cam0"]["translation"] == [0.0, 0.0, -20.5, 100.0]
    assert images["p1/cam0"]["translation"] is None
    assert info["series"] == ["p0/cam0", "p0/cam1", "p1/cam0", "p1/cam1", "p2/cam0", "p2/cam1"]
    text = render(info)
    assert "series (OME group): 6 images" in text
    assert "channels: DAPI, GFP" in text and "stage position: y=-20.5, x=100" in text

    plate = describe(
        az.LocalStore(_written(tmp_path / "plate.zarr", _plate_settings(tmp_path / "plate.zarr", version)))
    )
    assert plate["plate"] == {
        "name": "screen",
        "rows": ["A", "B"],
        "columns": ["1", "2", "3"],
        "wells": [{"path": "A/1", "fields": ["0", "1"]}, {"path": "B/3", "fields": ["0", "1"]}],
    }
    assert "plate screen: 2 rows x 3 columns, 2 wells: A/1 (2 fields), B/3 (2 fields)" in render(plate)


def _remove_group(path: Path, version: int, group: str) -> None:
    for name in ("zarr.json", ".zgroup", ".zattrs"):
        (path / group / name).unlink(missing_ok=True)


def _edit_attrs(path: Path, version: int, group: str, edit: Any) -> None:
    doc_path = path / group / ("zarr.json" if version == 3 else ".zattrs")
    doc = json.loads(doc_path.read_text())
    edit(doc["attributes"]["ome"] if version == 3 else doc)
    doc_path.write_text(json.dumps(doc))


def test_validate_accepts_plates_and_positions_and_catches_dangling_paths(
    tmp_path: Path, version: int
) -> None:
    from acqzarr.read.validate import validate

    def errors(path: Path) -> list[str]:
        return [p.message for p in validate(az.LocalStore(path)) if p.severity == "error"]

    plate = _written(tmp_path / "plate.zarr", _plate_settings(tmp_path / "plate.zarr", version))
    pos = _written(tmp_path / "pos.zarr", _positions_settings(tmp_path / "pos.zarr", version))
    assert errors(plate) == [] and errors(pos) == []

    # A well the plate lists is gone; a field a well lists is not an image; a series entry is wrong.
    _remove_group(plate, version, "A/1")
    _edit_attrs(plate, version, "B/3", lambda a: a["well"]["images"].append({"path": "7"}))
    _edit_attrs(pos, version, "OME", lambda a: a["series"].append("p9/cam0"))
    assert errors(plate) == [
        "plate.wells[0].path 'A/1' is not a well group in this store",
        "well.images[2].path '7' is not an image in this store",
    ]
    assert errors(pos) == ["series[6] 'p9/cam0' is not an image in this store"]
