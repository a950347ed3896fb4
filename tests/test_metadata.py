"""Metadata against the specs: OME-NGFF via ome-zarr-models, Zarr documents field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

import acqzarr as az
from builders import array_settings, dims, frames_for


def _settings(path: Path, version: int) -> az.StreamSettings:
    shards = [1, 1, 2, 2] if version == 3 else None
    d = dims((0, 2, 40, 30), (4, 1, 16, 16), shards)
    d = [
        d[0].model_copy(update={"unit": "second", "scale": 0.5}),
        d[1],
        d[2].model_copy(update={"unit": "micrometer", "scale": 0.65}),
        d[3].model_copy(update={"unit": "micrometer", "scale": 0.65}),
    ]
    return az.StreamSettings(
        store=str(path),
        version=version,
        arrays=[
            az.ArraySettings(key="cam0", dtype="uint16", dimensions=d),
            array_settings(version, (0, 20, 20), (2, 8, 8), key="cam1", dtype="uint8"),
        ],
    )


def test_ngff_validates_and_describes_axes(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(_settings(path, version)) as stream:
        stream.append(frames_for((40, 30), 6, "uint16"), key="cam0")
        stream.append(frames_for((20, 20), 3, "uint8"), key="cam1")
    group = zarr.open_group(str(path / "cam0"), mode="r", zarr_format=version)
    if version == 2:
        image = Image04.from_zarr(group)
        ms = image.attributes.multiscales[0]
        assert ms.version == "0.4"
    else:
        image05 = Image05.from_zarr(group)
        ms = image05.attributes.ome.multiscales[0]
        assert image05.attributes.ome.version == "0.5"
    assert [(a.name, a.type, a.unit) for a in ms.axes] == [
        ("t", "time", "second"),
        ("c", "channel", None),
        ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ]
    assert ms.datasets[0].path == "0"
    assert list(ms.datasets[0].coordinateTransformations[0].scale) == [0.5, 1.0, 0.65, 0.65]
    # The second image group validates too.
    cam1 = zarr.open_group(str(path / "cam1"), mode="r", zarr_format=version)
    (Image04 if version == 2 else Image05).from_zarr(cam1)


def test_zarr_v3_array_document(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(_settings(path, 3)) as stream:
        stream.append(frames_for((40, 30), 5, "uint16"), key="cam0")
    doc = json.loads((path / "cam0" / "0" / "zarr.json").read_text())
    assert doc["zarr_format"] == 3
    assert doc["node_type"] == "array"
    assert doc["shape"] == [3, 2, 40, 30]  # 5 frames over c=2 -> 3 time points, the last half-filled
    assert doc["data_type"] == "uint16"
    assert doc["dimension_names"] == ["t", "c", "y", "x"]
    assert doc["chunk_grid"] == {"name": "regular", "configuration": {"chunk_shape": [4, 1, 32, 32]}}
    assert doc["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
    (sharding,) = doc["codecs"]
    assert sharding["name"] == "sharding_indexed"
    cfg = sharding["configuration"]
    assert cfg["chunk_shape"] == [4, 1, 16, 16]
    assert cfg["index_location"] == "end"
    assert cfg["index_codecs"] == [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "crc32c"},
    ]
    assert cfg["codecs"] == [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {
            "name": "blosc",
            "configuration": {
                "cname": "lz4",
                "clevel": 1,
                "shuffle": "shuffle",
                "typesize": 2,
                "blocksize": 0,
            },
        },
    ]
    # Two cameras are two images: the root says so (bioformats2raw layout), the OME group lists them.
    root = json.loads((path / "zarr.json").read_text())
    assert root == {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"ome": {"version": "0.5", "bioformats2raw.layout": 3}},
    }
    series = json.loads((path / "OME" / "zarr.json").read_text())
    assert series["attributes"] == {"ome": {"version": "0.5", "series": ["cam0", "cam1"]}}


@pytest.mark.parametrize("separator", [".", "/"])
def test_zarr_v2_array_document_and_chunk_keys(tmp_path: Path, separator: str) -> None:
    path = tmp_path / "s.zarr"
    settings = _settings(path, 2).model_copy(update={"dimension_separator": separator})
    with az.open_stream(settings) as stream:
        stream.append(frames_for((40, 30), 8, "uint16"), key="cam0")
    doc = json.loads((path / "cam0" / "0" / ".zarray").read_text())
    assert doc == {
        "zarr_format": 2,
        "shape": [4, 2, 40, 30],
        "chunks": [4, 1, 16, 16],
        "dtype": "<u2",
        "compressor": {"id": "blosc", "cname": "lz4", "clevel": 1, "shuffle": 1, "blocksize": 0},
        "fill_value": 0,
        "order": "C",
        "filters": None,
        "dimension_separator": separator,
    }
    assert (path / "cam0" / "0" / separator.join(["0", "1", "2", "1"])).is_file()
    assert json.loads((path / ".zgroup").read_text()) == {"zarr_format": 2}
    assert zarr.open_array(str(path / "cam0" / "0"), mode="r").shape == (4, 2, 40, 30)


def test_no_temporary_files_are_left_behind(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(_settings(path, version)) as stream:
        stream.append(frames_for((40, 30), 9, "uint16"), key="cam0")
    leftovers = [p for p in path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
