"""Real pymmcore-plus MDAs (UniMMCore with pure-Python devices) recorded through acqzarr.mda and
read back with zarr-python and ome-zarr-py, validated with ome-zarr-models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v04.bioformats2raw import BioFormats2Raw as Bf2Raw04
from ome_zarr_models.v04.hcs import HCS as HCS04
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.bioformats2raw import BioFormats2Raw as Bf2Raw05
from ome_zarr_models.v05.hcs import HCS as HCS05
from ome_zarr_models.v05.image import Image as Image05

import acqzarr as az
import acqzarr.mda
from acqzarr.mda import MDAWriter, settings_from_sequence
from mda_helpers import EXPOSURES, SHAPE, SkippingEngine, camera, make_core

SKIPPED = {"t": 1, "p": 0, "g": 1, "c": 0, "z": 2}


def _sequence(axis_order: str) -> useq.MDASequence:
    return useq.MDASequence(
        axis_order=axis_order,
        time_plan={"interval": 0, "loops": 2},
        stage_positions=[(10.0, 20.0, 5.0), useq.Position(x=300.0, y=400.0, z=6.0, name="right")],
        grid_plan={"rows": 1, "columns": 2},
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
    )


def _index(event: useq.MDAEvent) -> dict[str, int]:
    return {str(getattr(k, "value", k)): int(v) for k, v in event.index.items()}


def _attrs(group: zarr.Group, version: int) -> dict[str, Any]:
    attrs = dict(group.attrs)
    return dict(attrs["ome"]) if version == 3 else attrs


def _image_of(index: dict[str, int]) -> str:
    return f"{'p0' if index['p'] == 0 else 'right'}_g{index['g']}"


@pytest.mark.slow
@pytest.mark.parametrize("axis_order", ["tpgcz", "tpgzc", "gtpcz"])
def test_every_event_lands_at_its_index_with_metadata_labels_and_holes(
    tmp_path: Path, version: int, axis_order: str
) -> None:
    core = make_core()
    core.mda.set_engine(SkippingEngine(core, [SKIPPED]))
    sequence = _sequence(axis_order)
    path = tmp_path / "run.zarr"
    writer = MDAWriter(path, core=core, version=version)
    core.mda.run(sequence, output=writer)
    writer.raise_if_failed()
    assert writer.error is None and not writer.canceled

    events = [e for e in sequence if _index(e) != SKIPPED]
    frames = camera(core).frames
    assert len(frames) == len(events) == 47
    assert writer.images == ["p0_g0", "p0_g1", "right_g0", "right_g1"]

    expected = {name: np.zeros((2, 2, 3, *SHAPE), np.uint16) for name in writer.images}
    for event, frame in zip(events, frames, strict=True):
        i = _index(event)
        expected[_image_of(i)][i["t"], i["c"], i["z"]] = frame

    root = zarr.open_group(str(path), mode="r", zarr_format=version)
    (Bf2Raw05 if version == 3 else Bf2Raw04).from_zarr(root)  # the collection of positions validates
    for name, want in expected.items():
        group = root[name]
        assert isinstance(group, zarr.Group)
        np.testing.assert_array_equal(group["0"][...], want)  # every frame, and the hole is 0
        (Image05 if version == 3 else Image04).from_zarr(group)
        (node, *_) = list(Reader(parse_url(str(path / name)))())
        np.testing.assert_array_equal(np.asarray(node.data[0]), want)
        assert writer.stats(name).frames_skipped == (1 if name == "p0_g1" else 0)

        ngff = _attrs(group, version)
        (ms,) = ngff["multiscales"]
        assert [a["name"] for a in ms["axes"]] == ["t", "c", "z", "y", "x"]
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 1.0, 0.5, 0.5]
        assert [c["label"] for c in ngff["omero"]["channels"]] == ["DAPI", "FITC"]
        assert [c["color"] for c in ngff["omero"]["channels"]] == ["0000FF", "00FF00"]
        mda_attrs = dict(group.attrs)[acqzarr.mda.ATTRIBUTE]
        assert useq.MDASequence.model_validate(mda_attrs["sequence"]).axis_order == tuple(axis_order)
        assert mda_attrs["summary"]["image_infos"][0]["plane_shape"] == list(SHAPE)
        session = dict(group.attrs)["acqzarr_session"]
        assert session["completed"] is True and session["source"]["kind"] == "mda"

    # per-frame metadata, indexed like the frames
    for event in events:
        i = _index(event)
        columns = root[f"{_image_of(i)}/acqzarr_frames"]
        at = (i["t"], i["c"], i["z"])
        assert columns["exposure_ms"][at] == EXPOSURES[event.channel.config]  # type: ignore[union-attr]
        assert columns["stage_z_um"][at] == pytest.approx(event.z_pos)
        assert columns["stage_x_um"][at] == pytest.approx(event.x_pos)
        assert math.isfinite(columns["elapsed_ms"][at])
    hole = root["p0_g1/acqzarr_frames"]
    assert math.isnan(hole["exposure_ms"][1, 0, 2])

    # stage positions (with the grid tile and the stack's first plane) are the images' translations
    ms = _attrs(root["right_g1"], version)["multiscales"][0]  # type: ignore[arg-type]
    first = next(e for e in events if _image_of(_index(e)) == "right_g1" and _index(e)["z"] == 0)
    assert ms["coordinateTransformations"][1]["translation"][2:] == pytest.approx(
        [first.z_pos, first.y_pos, first.x_pos]
    )


def test_settings_from_sequence_store_in_ngff_order_whatever_the_axis_order(tmp_path: Path) -> None:
    info = {"plane_shape": (2048, 64), "dtype": "uint16", "pixel_size_um": 0.65}
    settings = settings_from_sequence(_sequence("tpgzc"), info, tmp_path / "s.zarr", version=3)
    (array,) = settings.arrays
    assert [d.name for d in array.dimensions] == ["t", "c", "z", "y", "x"]
    assert [d.size for d in array.dimensions] == [2, 2, 3, 2048, 64]
    assert array.acquisition_order == ("t", "z", "c")
    assert [(d.chunk, d.shard) for d in array.dimensions[-2:]] == [(512, 4), (64, 1)]
    assert array.dimensions[2].scale == 1.0 and array.dimensions[2].unit == "micrometer"
    assert array.dimensions[-1].scale == 0.65
    assert array.channels is not None and [c.label for c in array.channels] == ["DAPI", "FITC"]
    assert settings.positions is not None and [p.name for p in settings.positions] == [
        "p0_g0",
        "p0_g1",
        "right_g0",
        "right_g1",
    ]
    # no channels, no z, a single position: a (t, y, x) image at the root
    plain = useq.MDASequence(time_plan={"interval": 0.5, "loops": 4})
    simple = settings_from_sequence(plain, info, tmp_path / "p.zarr", version=2)
    assert [d.name for d in simple.arrays[0].dimensions] == ["t", "y", "x"]
    assert simple.arrays[0].dimensions[0].unit == "second" and simple.arrays[0].dimensions[0].scale == 0.5
    assert simple.positions is None and simple.plate is None


@pytest.mark.parametrize(
    ("plan", "shape", "t_chunk_shard"),
    [
        ({}, (512, 512), (8, 1)),  # fast, no z, 2 images x 2 channels x 8 x 512 KiB = 8 MiB
        ({"z_plan": {"range": 2, "step": 1}}, (512, 512), (1, 3)),  # z stacks: a plane per chunk
        ({"time_plan": {"interval": 2, "loops": 20}}, (512, 512), (1, 1)),  # slow: a plane per object
        ({}, (2048, 2048), (1, 8)),  # 2 x 2 x 8 planes of 8 MiB: past 64 MiB open at once
        ({"time_plan": {"interval": 0, "loops": 3}}, (512, 512), (3, 1)),  # fewer timepoints than 8
    ],
)
def test_a_fast_series_without_z_gets_8_timepoints_a_chunk_when_they_fit(
    tmp_path: Path, plan: dict[str, Any], shape: tuple[int, int], t_chunk_shard: tuple[int, int]
) -> None:
    sequence = useq.MDASequence(
        **{
            "time_plan": {"interval": 0, "loops": 100},
            "channels": ["DAPI", "FITC"],
            "stage_positions": [(0.0, 0.0, 0.0), (10.0, 0.0, 0.0)],
            "axis_order": "tpcz",
            **plan,
        }
    )
    info = {"plane_shape": shape, "dtype": "uint16"}
    t = settings_from_sequence(sequence, info, tmp_path / "s.zarr").arrays[0].dimensions[0]
    assert (t.name, t.chunk, t.shard) == ("t", *t_chunk_shard)
    own = settings_from_sequence(sequence, info, tmp_path / "o.zarr", chunks={"t": 2}, shards={"t": 4})
    assert (own.arrays[0].dimensions[0].chunk, own.arrays[0].dimensions[0].shard) == (2, 4)


@pytest.mark.parametrize(
    ("plan", "z_chunk_shard"),
    [
        ({}, (3, 1)),  # a stack after t: one chunk (and object) per stack
        ({"axis_order": "tpzc"}, (3, 1)),  # channels inside z: a chunk per channel, open together
        ({"z_plan": {"range": 19, "step": 1}, "time_plan": {"interval": 5, "loops": 3}}, (8, 1)),  # slow too
        ({"axis_order": "ptzc", "time_plan": {"interval": 0, "loops": 3}}, (3, 1)),
        ({"axis_order": "pzct"}, (1, 3)),  # z before t: a chunk would stay open for every timepoint
    ],
)
def test_a_stack_taken_within_a_timepoint_gets_up_to_8_planes_a_chunk(
    tmp_path: Path, plan: dict[str, Any], z_chunk_shard: tuple[int, int]
) -> None:
    sequence = useq.MDASequence(
        **{
            "time_plan": {"interval": 0, "loops": 30},
            "channels": ["DAPI", "FITC"],
            "stage_positions": [(0.0, 0.0, 0.0), (10.0, 0.0, 0.0)],
            "z_plan": {"range": 2, "step": 1},
            "axis_order": "tpcz",
            **plan,
        }
    )
    settings = settings_from_sequence(
        sequence, {"plane_shape": (512, 512), "dtype": "uint16"}, tmp_path / "s.zarr"
    )
    z = next(d for d in settings.arrays[0].dimensions if d.name == "z")
    assert (z.chunk, z.shard) == z_chunk_shard
    big = settings_from_sequence(
        sequence, {"plane_shape": (2048, 2048), "dtype": "uint16"}, tmp_path / "b.zarr"
    )
    assert next(d for d in big.arrays[0].dimensions if d.name == "z").chunk == 1  # 2 x 2 x 3 x 8 MiB


@pytest.mark.parametrize("version", [2, 3])
def test_an_mda_in_8_timepoint_chunks_reads_back_frame_by_frame(tmp_path: Path, version: int) -> None:
    """Timepoints that end mid-chunk, an event never sent (a hole in a chunk) and per-frame
    metadata, read back with zarr-python and tensorstore against the camera's frames."""
    from readback import read_tensorstore

    core = make_core()
    sequence = useq.MDASequence(
        time_plan={"interval": 0, "loops": 11},
        channels=["DAPI", "FITC"],
        stage_positions=[(0.0, 0.0, 0.0), (10.0, 0.0, 0.0)],
        axis_order="tpc",
    )
    skipped = {"t": 9, "p": 1, "c": 0}
    path = tmp_path / "deep.zarr"
    writer = MDAWriter(path, core=core, version=version)
    core.mda.set_engine(SkippingEngine(core, [skipped]))
    core.mda.run(sequence, output=writer)
    writer.raise_if_failed()
    cam = camera(core)
    events = [e for e in sequence if _index(e) != skipped]
    assert len(cam.frames) == len(events) == 43
    root = zarr.open_group(str(path), mode="r")
    for name in ("p0", "p1"):
        assert root[f"{name}/0"].chunks[:2] == (8, 1) and root[f"{name}/0"].shape[:2] == (11, 2)
    stored = {name: read_tensorstore(path / name / "0", version) for name in ("p0", "p1")}
    for event, image in zip(events, cam.frames, strict=True):
        i = _index(event)
        name = f"p{i['p']}"
        np.testing.assert_array_equal(root[f"{name}/0"][i["t"], i["c"]], image)
        np.testing.assert_array_equal(stored[name][i["t"], i["c"]], image)
        assert (
            root[f"{name}/acqzarr_frames/exposure_ms"][i["t"], i["c"]]
            == EXPOSURES["DAPI" if i["c"] == 0 else "FITC"]
        )
    assert not root["p1/0"][9, 0].any()  # the hole reads as fill value
    assert math.isnan(root["p1/acqzarr_frames/exposure_ms"][9, 0])
    assert writer.stats("p1").frames_skipped == 1


def test_a_time_plan_without_end_is_an_unbounded_time_axis(tmp_path: Path) -> None:
    from acqzarr.mda._sequence import _timepoints

    class Endless:  # useq v2's interval plan with duration=None
        duration = None

    assert _timepoints(Endless()) == 0
    assert _timepoints(None) == 1
    assert _timepoints(useq.TIntervalLoops(interval=1, loops=5)) == 5


def test_a_well_plate_plan_is_written_as_an_ome_ngff_plate(tmp_path: Path, version: int) -> None:
    core = make_core()
    plan = useq.WellPlatePlan(
        plate=96,
        a1_center_xy=(0, 0),
        selected_wells=([0, 1], [2, 3]),
        well_points_plan=useq.GridRowsColumns(rows=1, columns=2),
    )
    sequence = useq.MDASequence(stage_positions=plan, channels=["DAPI"])
    path = tmp_path / "plate.zarr"
    writer = acqzarr.mda.record(core, sequence, path, version=version)
    assert writer.images == ["A/3/0", "A/3/1", "B/4/0", "B/4/1"]
    root = zarr.open_group(str(path), mode="r", zarr_format=version)
    (HCS05 if version == 3 else HCS04).from_zarr(root)
    for event, frame in zip(sequence, camera(core).frames, strict=True):
        p = _index(event)["p"]
        np.testing.assert_array_equal(root[writer.images[p]]["0"][0, 0], frame)


def test_live_view_holds_the_newest_frame_per_image_and_channel(tmp_path: Path) -> None:
    core = make_core()
    sequence = useq.MDASequence(channels=["DAPI", "FITC"], time_plan={"interval": 0.05, "loops": 3})
    seen: list[int] = []
    writer = MDAWriter(tmp_path / "live.zarr", core=core)

    def peek(*_: Any) -> None:  # a GUI timer: the latest frame while the run goes on
        frame = writer.latest()
        if frame is not None:
            seen.append(frame.count)

    core.mda.events.frameReady.connect(peek)
    core.mda.run(sequence, output=writer)
    frames = camera(core).frames
    latest = writer.latest(channel=0)
    assert latest is not None and latest.index == {"t": 2, "c": 0}
    np.testing.assert_array_equal(latest.data, frames[-2])
    assert set(writer.live.channels("")) == {0, 1}
    assert seen  # something to show while acquiring


class _FailingStore(az.LocalStore):
    """A disk that fails every chunk write after the first ``ok`` ones."""

    def __init__(self, root: str, ok: int) -> None:
        super().__init__(root)
        self.ok = ok

    def _count(self, key: str) -> None:
        if ("/c" in key or key.split("/")[-1][:1].isdigit()) and "acqzarr_frames" not in key:
            self.ok -= 1
            if self.ok < 0:
                raise az.StoreError(f"{key}: disk full (injected)")

    def put(self, key: str, parts: Sequence[Any]) -> None:
        self._count(key)
        super().put(key, parts)

    def put_padded(self, key: str, buffer: Any, nbytes: int) -> None:
        self._count(key)
        super().put_padded(key, buffer, nbytes)

    def open_staged(self, key: str) -> Any:  # a shard written across bands
        self._count(key)
        return super().open_staged(key)


def test_a_store_failure_cancels_the_run_and_surfaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from acqzarr.mda import _writer

    real = _writer.open_stream

    def failing(settings: az.StreamSettings, **kwargs: Any) -> az.Stream:
        return real(settings, _FailingStore(settings.store, ok=1), **kwargs)

    monkeypatch.setattr(_writer, "open_stream", failing)
    core = make_core()
    sequence = useq.MDASequence(time_plan={"interval": 0.02, "loops": 200}, channels=["DAPI"])
    path = tmp_path / "fail.zarr"
    with pytest.raises(az.WriterError, match="disk full") as info:
        acqzarr.mda.record(core, sequence, path, threads=1)
    assert isinstance(info.value.__cause__, az.WriterError)  # the stream's, naming the store's error
    assert len(camera(core).frames) < 200  # the run was cancelled
    group = zarr.open_group(str(path), mode="r")
    session = dict(group.attrs)["acqzarr_session"]
    assert session["completed"] is False and session["mda_outcome"] == "failed"
    assert "disk full" in session["error"]


def test_a_rejected_frame_cancels_the_run_and_the_store_keeps_what_was_written(tmp_path: Path) -> None:
    core = make_core()
    cam = camera(core)
    # events instead of a sequence: a (t, y, x) series; t=3 comes twice and the stream rejects it
    times = [0, 1, 2, 3, 3, *range(4, 40)]
    events = [useq.MDAEvent(index={"t": t}, min_start_time=0.02 * i) for i, t in enumerate(times)]
    path = tmp_path / "rejected.zarr"
    writer = MDAWriter(path, core=core)
    core.mda.run(events, output=writer)  # returns normally: pymmcore-plus's design
    assert isinstance(writer.error, az.FrameError) and writer.canceled
    assert len(cam.frames) < len(events)  # cancelled
    with pytest.raises(az.WriterError, match=r"index \{t: 3\} was already"):
        writer.raise_if_failed()
    with pytest.raises(az.WriterError), writer:
        pass
    stored = zarr.open_array(str(path / "0"), mode="r")
    assert stored.shape[0] == 4
    np.testing.assert_array_equal(stored[:4], np.stack(cam.frames[:4]))
    assert dict(zarr.open_group(str(path), mode="r").attrs)["acqzarr_session"]["completed"] is False


def test_the_readme_snippet_runs_verbatim_on_the_simulated_microscope(tmp_path: Path) -> None:
    """The README's MDA section runs as written after the [mda] install: no Micro-Manager adapters,
    no undefined ``core`` or ``sequence`` (it had both)."""
    import re
    import subprocess
    import sys

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Recording pymmcore-plus MDAs (`acqzarr.mda`)\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    result = subprocess.run(
        [sys.executable, "-c", match.group(1)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    image = zarr.open_group(str(tmp_path / "mda.zarr"), mode="r")
    assert image["0"].shape == (5, 2, 5, 512, 512)  # t, c, z of the snippet's sequence, 512x512 frames
    session = dict(image.attrs)["acqzarr_session"]
    assert session["completed"] is True and session["mda_outcome"] == "completed"


def test_simulated_core_is_the_documented_microscope() -> None:
    core = acqzarr.mda.simulated_core((16, 8), dtype="uint8", pixel_size_um=0.3, keep_frames=True)
    assert core.getPixelSizeUm() == 0.3
    assert set(core.getAvailableConfigs("Channel")) == {"DAPI", "FITC"}
    core.snapImage()
    frame = core.getImage()
    assert frame.shape == (16, 8) and frame.dtype == np.uint8
    np.testing.assert_array_equal(core.camera.frames[0], frame)
