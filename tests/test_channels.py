"""Channel names, colours and display windows: settings -> omero block -> what readers show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

import acqzarr as az
from acqzarr.metadata.ngff import omero
from builders import UNSHARDED, array_document, dims, frames_for, stream_settings

CHANNELS = [
    az.Channel(label="DAPI", color="0000ff", window=(100.0, 2000.0)),
    az.Channel(label="GFP", color="00FF00"),
    az.Channel(label="brightfield"),
]


def _settings(path: Path, version: int, channels: list[az.Channel] | None) -> az.StreamSettings:
    return stream_settings(
        path, version, (0, 3, 32, 32), (2, 1, 16, 16), shards=(1, 1, 2, 2), key="cam", channels=channels
    )


def _omero(path: Path, version: int) -> dict[str, Any]:
    attrs = dict(zarr.open_group(str(path), mode="r", zarr_format=version).attrs)
    return dict(attrs["omero"] if version == 2 else attrs["ome"]["omero"])


def test_channels_are_named_coloured_and_keep_their_given_window(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    data = frames_for((32, 32), 12, "uint16")
    with az.open_stream(_settings(path, version, CHANNELS)) as stream:
        stream.append(data)
    channels = _omero(path / "cam", version)["channels"]
    assert [c["label"] for c in channels] == ["DAPI", "GFP", "brightfield"]
    # Given colours (normalised to upper case); the third takes the default of its index.
    assert [c["color"] for c in channels] == ["0000FF", "00FF00", "00FFFF"]
    # A given window is kept although the data spans far more; the others show what was seen.
    assert (channels[0]["window"]["start"], channels[0]["window"]["end"]) == (100.0, 2000.0)
    by_channel = data.reshape(4, 3, 32, 32)
    for c in (1, 2):
        window = channels[c]["window"]
        assert by_channel[:, c].min() <= window["start"] <= window["end"] <= by_channel[:, c].max()
        assert window["end"] > 2000.0
    assert all((c["window"]["min"], c["window"]["max"]) == (0, 65535) for c in channels)

    # The independent readers: ome-zarr-models validates the image, ome-zarr-py reads what napari shows.
    group = zarr.open_group(str(path / "cam"), mode="r", zarr_format=version)
    (Image04 if version == 2 else Image05).from_zarr(group)
    (node,) = list(Reader(parse_url(str(path / "cam")))())
    assert node.metadata["channel_names"] == ["DAPI", "GFP", "brightfield"]
    assert node.metadata["contrast_limits"][0] == [100.0, 2000.0]
    assert node.metadata["colormap"][0] == [[0, 0, 0], [0.0, 0.0, 1.0]]
    np.testing.assert_array_equal(np.asarray(node.data[0]), by_channel)


def test_without_channels_the_labels_and_colours_stay_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(_settings(path, 3, None)) as stream:
        stream.append(frames_for((32, 32), 3, "uint16"))
    channels = _omero(path / "cam", 3)["channels"]
    assert [c["label"] for c in channels] == ["cam c0", "cam c1", "cam c2"]
    assert [c["color"] for c in channels] == ["00FF00", "FF00FF", "00FFFF"]


def test_an_array_without_a_channel_axis_takes_one_channel() -> None:
    arr = az.ArraySettings(
        key="mono",
        dtype="uint8",
        dimensions=dims((0, 16, 16), (1, 16, 16)),
        channels=[az.Channel(label="phase", color="FF8800", window=(3, 200))],
    )
    (channel,) = omero(arr, {0: (0.0, 255.0)})["channels"]
    assert (channel["label"], channel["color"]) == ("phase", "FF8800")
    assert (channel["window"]["start"], channel["window"]["end"]) == (3, 200)


def test_a_float_channel_window_range_covers_the_given_and_the_observed() -> None:
    arr = az.ArraySettings(
        key="f",
        dtype="float32",
        dimensions=dims((0, 2, 16, 16), (1, 1, 16, 16)),
        channels=[az.Channel(label="a", window=(-1.0, 1.0)), az.Channel(label="b")],
    )
    a, b = omero(arr, {0: (-5.0, 0.5), 1: (2.0, 3.0)})["channels"]
    assert a["window"] == {"min": -5.0, "max": 1.0, "start": -1.0, "end": 1.0}
    assert b["window"] == {"min": 2.0, "max": 3.0, "start": 2.0, "end": 3.0}


@pytest.mark.parametrize(
    ("channels", "reason"),
    [
        ([{"label": "a"}, {"label": "b"}], "channel axis 'c' of size 3, so it takes 3 channels; got 2"),
        ([{"label": "a", "color": "red"}] * 3, r"channels\.0\.color: color must be 6 hex digits"),
        ([{"label": "a", "color": "0000FFF"}] * 3, r"channels\.0\.color: color must be 6 hex digits"),
        ([{"label": "a", "window": [10, 1]}] * 3, r"channels\.0\.window: window start must not exceed"),
        ([{"label": ""}] * 3, r"channels\.0\.label: String should have at least 1 character"),
        ([{"label": "a", "gain": 2}] * 3, r"channels\.0\.gain: Extra inputs are not permitted"),
    ],
)
def test_bad_channels_are_config_errors_naming_the_key(channels: list[dict[str, Any]], reason: str) -> None:
    array = array_document(3, (0, 3, 16, 16), (1, 1, 16, 16), shards=UNSHARDED, key="cam")
    data = {"store": "x.zarr", "arrays": [{**array, "channels": channels}]}
    with pytest.raises(az.ConfigError, match=reason):
        az.StreamSettings.from_mapping(data)


def test_no_channel_axis_takes_exactly_one_channel() -> None:
    with pytest.raises(az.ConfigError, match="has no channel axis, so it takes 1 channels; got 2"):
        az.ArraySettings(
            dtype="uint8",
            dimensions=dims((0, 16, 16), (1, 16, 16)),
            channels=[az.Channel(label="a"), az.Channel(label="b")],
        )
