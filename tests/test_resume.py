"""Resuming a store (``existing: resume``): the result is the store one uninterrupted run would have
written, a store written otherwise is refused untouched, and resuming reads only documents and the
one partial row."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import acqzarr as az
from acqzarr import cli
from acqzarr.engine.device import ZarrStorage
from acqzarr.errors import ConfigError
from acqzarr.read.validate import validate
from acqzarr.stores import LocalStore
from builders import pyramid_settings, stream_settings
from child_writer import start_writer
from readback import read_tensorstore, read_zarr

REPO = Path(__file__).resolve().parent.parent
SHAPE = (0, 2, 3, 20, 24)  # t, c, z, y, x: 6 frames a timepoint
CHUNKS = (3, 1, 2, 16, 16)  # bands of 3 timepoints, 4 bands a row (2 channels x 2 z chunks)
SHARDS = (2, 1, 2, 2, 2)  # v3: a shard 2 bands deep along t (and along z)
PER_T = 6
ORDERS = (None, ("t", "z", "c"))  # storage order, and one that switches the channel inside each z


def frame(seq: int) -> np.ndarray[Any, Any]:
    """Frame ``seq`` of an acquisition: distinct, deterministic, compressible, never 0, and darker
    as the acquisition goes on (so the brightest frames are the first run's)."""
    yy, xx = np.mgrid[0:20, 0:24]
    return ((59000 - seq * 37 - yy * 3 - xx) % 60000 + 1).astype(np.uint16)


def meta(seq: int) -> dict[str, Any]:
    return {"frame_id": seq, "note": f"n{seq}"}


def settings_for(path: Path, version: int, order: Sequence[str] | None, **fields: Any) -> az.StreamSettings:
    return stream_settings(
        path,
        version,
        SHAPE,
        CHUNKS,
        shards=SHARDS if version == 3 else None,
        acquisition_order=order,
        frame_columns={"laser_mw": "float64"},
        **fields,
    )


def position(seq: int, order: Sequence[str] | None) -> tuple[int, int, int]:
    """(t, c, z) of frame ``seq`` of the acquisition."""
    t, rest = divmod(seq, PER_T)
    if order is None:
        c, z = divmod(rest, 3)
    else:
        z, c = divmod(rest, 2)
    return t, c, z


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def windows(path: Path) -> list[dict[str, float]]:
    """The omero window of every channel of image cam0."""
    for name in ("cam0/zarr.json", "cam0/.zattrs"):
        p = path / name
        if p.exists():
            doc = json.loads(p.read_text())
            attrs = doc.get("attributes", doc)
            block = attrs.get("ome", attrs)
            return [c["window"] for c in block["omero"]["channels"]]
    raise AssertionError("no image group")


def assert_valid(path: Path) -> None:
    errors = [p for p in validate(LocalStore(path)) if p.severity == "error"]
    assert not errors, errors


def session(path: Path) -> dict[str, Any]:
    for name in ("cam0/zarr.json", "cam0/.zattrs"):
        p = path / name
        if p.exists():
            doc = json.loads(p.read_text())
            record: dict[str, Any] = doc.get("attributes", doc)["acqzarr_session"]
            return record
    raise AssertionError("no session record")


# -- a clean close mid-row, resumed ------------------------------------------------------------------
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("order", ORDERS, ids=["tcz", "tzc"])
@pytest.mark.parametrize("split", [20, 18, 8])  # mid-row and mid-timepoint; a row boundary; first row
@pytest.mark.parametrize("levels", [1, 3], ids=["flat", "pyramid"])  # z and y/x halve, not t
def test_a_clean_close_resumed_equals_one_uninterrupted_run(
    tmp_path: Path, version: int, order: Sequence[str] | None, split: int, levels: int
) -> None:
    total = 40
    skipped = {3, split + 7}  # a skip in each run
    resumed, reference = tmp_path / "resumed.zarr", tmp_path / "reference.zarr"
    pyramid = {"multiscale": {"levels": levels, "method": "mean"}} if levels > 1 else {}

    def make(path: Path, **fields: Any) -> az.StreamSettings:
        return settings_for(path, version, order, **pyramid, **fields)

    def feed(stream: az.Stream, seqs: range) -> None:
        for seq in seqs:
            if seq in skipped:
                stream.skip()
            else:
                stream.append(frame(seq), metadata={**meta(seq), "laser_mw": seq / 4})

    with az.open_stream(make(resumed)) as first:
        feed(first, range(split))
    extent = -(-split // PER_T)
    with az.open_stream(make(resumed, existing="resume")) as second:
        assert second.stats().frames_appended == 0
        # The second run starts at the first slot of the first timepoint the store does not show.
        feed(second, range(extent * PER_T, extent * PER_T + total - split))
        appended = second.stats().frames_appended
    with az.open_stream(make(reference)) as one:
        feed(one, range(split))
        if extent * PER_T > split:
            one.skip(extent * PER_T - split)  # what the first run's close left as holes
        feed(one, range(extent * PER_T, extent * PER_T + total - split))
    second_run = range(extent * PER_T, extent * PER_T + total - split)
    assert appended == len([s for s in second_run if s not in skipped])

    for level in range(levels):
        expected = read_zarr(reference / "cam0" / str(level))
        for got in (
            read_zarr(resumed / "cam0" / str(level)),
            read_tensorstore(resumed / "cam0" / str(level), version),
        ):
            assert got.shape == expected.shape
            np.testing.assert_array_equal(got, expected, err_msg=f"level {level}")
    for column in ("frame_id", "laser_mw", "json"):
        got_c = read_zarr(resumed / "cam0" / "acqzarr_frames" / column)
        want_c = read_zarr(reference / "cam0" / "acqzarr_frames" / column)
        np.testing.assert_array_equal(got_c, want_c)
    assert_valid(resumed)
    record, ref = session(resumed), session(reference)
    assert [s["ended"] for s in record["segments"]] == ["completed", "completed"]
    assert record["completed"] is True
    assert record["start"] == record["segments"][0]["start"]
    for field in ("frames_on_disk", "frames_accepted", "frames_skipped"):
        assert record[field] == ref[field], field
    assert record["frames_accepted"] == sum(s["frames_accepted"] for s in record["segments"])
    # The contrast window covers the frames of both runs (the first run's is carried on): the same
    # highest value; the lowest may be lower, the first run's close having seen its holes.
    for got_w, want_w in zip(windows(resumed), windows(reference), strict=True):
        assert got_w["end"] == want_w["end"]
        assert got_w["start"] <= want_w["start"]


def test_resuming_a_store_that_does_not_exist_starts_it(tmp_path: Path) -> None:
    path = tmp_path / "new.zarr"
    with az.open_stream(settings_for(path, 3, None, existing="resume")) as stream:
        stream.append(frame(0))
    assert read_zarr(path / "cam0" / "0").shape == (1, 2, 3, 20, 24)
    assert len(session(path)["segments"]) == 1


def test_a_resumed_store_refuses_a_frame_on_a_slot_it_already_holds(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(settings_for(path, 2, None)) as stream:
        for seq in range(8):  # t=0 and two frames of t=1
            stream.append(frame(seq))
    with az.open_stream(settings_for(path, 2, None, existing="resume")) as stream:
        with pytest.raises(az.FrameError, match="written before the stream resumed"):
            stream.append(frame(99), index={"t": 1, "c": 0, "z": 0})
        with pytest.raises(az.FrameError, match="written before the stream resumed"):
            stream.append(frame(99), index={"t": 1, "c": 1, "z": 2})  # a hole the close left stays one
        stream.append(frame(12))  # the cursor: t=2
        stream.append(frame(23), index={"t": 3, "c": 1, "z": 2})  # any open slot, by index
    data = read_zarr(path / "cam0" / "0")
    np.testing.assert_array_equal(data[1, 0, 0], frame(6))
    np.testing.assert_array_equal(data[1, 0, 1], frame(7))
    np.testing.assert_array_equal(data[2, 0, 0], frame(12))
    np.testing.assert_array_equal(data[3, 1, 2], frame(23))
    assert not data[1, 1, 2].any() and not data[2, 0, 1].any()


# -- settings -------------------------------------------------------------------------------------
def test_overwrite_and_resume_contradict_and_overwrite_keeps_working(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="overwrite: true and existing: resume contradict"):
        settings_for(tmp_path / "s.zarr", 3, None, overwrite=True, existing="resume")
    assert settings_for(tmp_path / "s.zarr", 3, None, overwrite=True).on_existing == "overwrite"
    assert settings_for(tmp_path / "s.zarr", 3, None, existing="overwrite").on_existing == "overwrite"
    assert settings_for(tmp_path / "s.zarr", 3, None).on_existing == "error"
    path = tmp_path / "s.zarr"
    for _ in range(2):  # overwrite=True replaces, as before
        with az.open_stream(settings_for(path, 3, None, overwrite=True)) as stream:
            stream.append(frame(0))
    assert len(session(path)["segments"]) == 1


# -- incompatible stores ------------------------------------------------------------------------------
def _changed(path: Path, version: int, change: str) -> az.StreamSettings:
    base = settings_for(path, version, None, existing="resume")
    data = json.loads(base.model_dump_json())
    array = data["arrays"][0]
    if change == "dtype":
        array["dtype"] = "uint8"
    elif change == "chunks":
        array["dimensions"][3]["chunk"] = 8
    elif change == "shards":
        array["dimensions"][3]["shard"] = 1
    elif change == "compression":
        array["compression"] = None
    elif change == "acquisition_order":
        array["acquisition_order"] = ["t", "z", "c"]
    elif change == "frame_columns":
        array["frame_columns"] = {"laser_mw": "int64"}
    elif change == "frame_size":
        array["dimensions"][4]["size"] = 32
    elif change == "append_size":
        array["dimensions"][0]["size"] = 1
    elif change == "version":
        data["version"] = 5 - version
        if data["version"] == 2:
            for d in array["dimensions"]:
                d["shard"] = 1
    elif change == "dimension_separator":
        data["dimension_separator"] = "/"
    elif change == "positions":
        data["positions"] = [{"name": "p0"}]
    elif change == "arrays":
        data["arrays"].append({**array, "key": "cam1"})
    return az.StreamSettings.model_validate(data)


MISMATCHES = {
    "dtype": 'arrays[0].dtype: stored "uint16", asked "uint8"',
    "chunks": "arrays[0].dimensions[3].chunk: stored 16, asked 8",
    "shards": "arrays[0].dimensions[3].shard: stored 2, asked 1",
    "compression": "arrays[0].compression: stored {",
    "acquisition_order": 'arrays[0].acquisition_order: stored ["t", "c", "z"], asked ["t", "z", "c"]',
    "frame_columns": 'arrays[0].frame_columns: stored {"laser_mw": "float64"}',
    "frame_size": "arrays[0].dimensions[4].size: stored 24, asked 32",
    "append_size": "arrays[0].dimensions[0].size: the store holds 2 steps, asked 1",
    "version": "version: stored 3, asked 2",
    "dimension_separator": 'dimension_separator: stored ".", asked "/"',
    "positions": "positions: stored null, asked [{",
    "arrays": "arrays[1]: array 'cam1' is not in the store",
}


@pytest.mark.parametrize("change", sorted(MISMATCHES))
def test_an_incompatible_store_is_refused_naming_the_mismatch_and_left_untouched(
    tmp_path: Path, change: str
) -> None:
    version = 2 if change == "dimension_separator" else 3
    if change == "shards" and version == 2:
        pytest.skip("v2 has no shards")
    path = tmp_path / "s.zarr"
    with az.open_stream(settings_for(path, version, None)) as stream:
        for seq in range(8):
            stream.append(frame(seq), metadata=meta(seq))
    before = hashes(path)
    asked = _changed(path, version, change)
    with pytest.raises(ConfigError) as caught:
        az.open_stream(asked)
    message = str(caught.value)
    assert "cannot resume" in message
    assert MISMATCHES[change] in message, message
    assert hashes(path) == before


def test_every_mismatch_is_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with az.open_stream(settings_for(path, 3, None)) as stream:
        stream.append(frame(0))
    data = json.loads(settings_for(path, 3, None, existing="resume").model_dump_json())
    data["arrays"][0]["dtype"] = "uint8"
    data["arrays"][0]["dimensions"][2]["chunk"] = 1
    data["arrays"][0]["compression"] = None
    with pytest.raises(ConfigError, match=r"\(3 mismatches") as caught:
        az.open_stream(az.StreamSettings.model_validate(data))
    for text in ("arrays[0].dtype", "arrays[0].dimensions[2].chunk", "arrays[0].compression"):
        assert text in str(caught.value)


def test_a_foreign_store_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.zarr"
    foreign.mkdir()
    (foreign / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    with pytest.raises(ConfigError, match="not a store acqzarr wrote"):
        az.open_stream(settings_for(foreign, 3, None, existing="resume"))
    assert [p.name for p in foreign.iterdir()] == ["zarr.json"]


def _resumed_and_one_run(
    settings: Callable[..., az.StreamSettings],
    tmp_path: Path,
    runs: Sequence[range],
    skips: set[int],
    image: Callable[[int], np.ndarray[Any, Any]],
) -> tuple[Path, Path]:
    """The frames of ``runs`` (``skips`` skipped) written into one store, each run resumed from the
    last one's clean close, and the same frames in one run that leaves the same holes (the rest of
    each run's last step): (resumed, one run)."""

    def feed(stream: az.Stream, seqs: range) -> None:
        for q in seqs:
            if q in skips:
                stream.skip()
            else:
                stream.append(image(q), metadata={"frame_id": q})

    resumed, reference = tmp_path / "resumed.zarr", tmp_path / "one.zarr"
    for seqs in runs:
        with az.open_stream(settings(resumed, existing="resume")) as stream:
            feed(stream, seqs)
    with az.open_stream(settings(reference)) as one:
        for seqs in runs:
            one.skip(seqs[0] - one.stats().frames_appended - one.stats().frames_skipped)
            feed(one, seqs)
    return resumed, reference


def _assert_same_image(got: Path, want: Path, version: int, levels: int = 1) -> None:
    """Every level of image cam0 (read with zarr-python and tensorstore) and its frame_id column
    equal the other store's."""
    for level in range(levels):
        expected = read_zarr(want / "cam0" / str(level))
        for data in (
            read_zarr(got / "cam0" / str(level)),
            read_tensorstore(got / "cam0" / str(level), version),
        ):
            assert data.shape == expected.shape, f"level {level}"
            np.testing.assert_array_equal(data, expected, err_msg=f"level {level}")
    np.testing.assert_array_equal(
        read_zarr(got / "cam0" / "acqzarr_frames" / "frame_id"),
        read_zarr(want / "cam0" / "acqzarr_frames" / "frame_id"),
    )


# -- a pyramid that halves the append axis (z appended) ---------------------------------------------
Z_CASES = {
    # name: (version, axis names, shape, chunks, shards, levels, where each run ends); OME-NGFF
    # orders the axes time, channel, space, so an image appended along z has no other index axis
    "v2-zyx-3-levels": (2, "zyx", (0, 20, 24), (2, 16, 16), None, 3, [5, 11, 12, 19]),
    "v3-zyx-3-levels": (3, "zyx", (0, 20, 24), (2, 16, 16), (2, 1, 2), 3, [5, 11, 12, 19]),
    "v3-zyx-odd-chunks": (3, "zyx", (0, 20, 24), (3, 8, 16), (2, 2, 1), 3, [1, 7, 14]),
    "v2-zyx-2-levels": (2, "zyx", (0, 20, 24), (1, 16, 16), None, 2, [7, 9, 17]),
    "v3-zyx-bounded": (3, "zyx", (13, 20, 24), (4, 16, 16), (1, 2, 2), 3, [9, 10, 13]),
}


@pytest.mark.parametrize("case", sorted(Z_CASES))
def test_a_pyramid_halving_the_append_axis_resumed_equals_one_run(tmp_path: Path, case: str) -> None:
    """Each run closes cleanly, with an odd or even count of planes: a plane of a lower level that
    its close made of one plane (its partner still to come) is made again of two by the next run,
    and every level equals one run that left the same holes."""
    version, names, shape, chunks, shards, levels, ends = Z_CASES[case]

    def settings(path: Path, **fields: Any) -> az.StreamSettings:
        return stream_settings(
            path,
            version,
            shape,
            chunks,
            shards=shards,
            names=names,
            multiscale={"levels": levels, "method": "mean"},
            **fields,
        )

    runs = [range(start, end) for start, end in zip([0, *ends[:-1]], ends, strict=True)]  # a frame a z
    resumed, reference = _resumed_and_one_run(settings, tmp_path, runs, {3}, frame)
    _assert_same_image(resumed, reference, version, levels)
    assert_valid(resumed)
    assert [s["ended"] for s in session(resumed)["segments"]] == ["completed"] * len(runs)


# -- reading little -----------------------------------------------------------------------------------
class CountingStore(az.MemoryStore):
    """A memory store that remembers every key read."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    def get(self, key: str) -> bytes:
        self.read.append(key)
        return super().get(key)


@pytest.mark.parametrize("version", [2, 3])
def test_resume_reads_the_documents_and_one_row_only(tmp_path: Path, version: int) -> None:
    store = CountingStore()
    settings = settings_for(tmp_path / "unused.zarr", version, None)
    steps = 61  # 20 full rows of 3 timepoints, then one timepoint: the partial row is row 20
    with az.open_stream(settings, store=store) as stream:
        for seq in range(steps * PER_T):
            stream.append(frame(seq), metadata=meta(seq))
    store.read.clear()
    with az.open_stream(settings.model_copy(update={"existing": "resume"}), store=store) as stream:
        reads = list(store.read)
        stream.append(frame(steps * PER_T))
    objects = [k for k in reads if k.startswith("cam0/0/") and not k.endswith(("zarr.json", ".zarray"))]
    assert objects  # the partial row was read back
    prefix = "cam0/0/c/" if version == 3 else "cam0/0/"
    sep = "/" if version == 3 else "."
    rows = {int(k[len(prefix) :].split(sep)[0]) for k in objects}
    assert rows == ({20 // 2} if version == 3 else {20})  # v3: the shard 2 rows deep holding row 20
    chunk_objects = 2 * 2 * 2 if version == 2 else 2 * 2  # v2: 4 bands x 2x2 chunks; v3: 4 shards
    assert len(objects) <= 2 * chunk_objects  # v3 reads the shard to adopt and to read back
    documents = ("zarr.json", ".zarray", ".zattrs", ".zgroup")
    others = [k for k in reads if k not in objects and not k.endswith(documents)]
    # Besides documents: the chunk the extent ends inside of each metadata column, nothing else.
    # (frame_id: 4096 // 6 timepoints a chunk, so chunk 0; json: 256 // 6 = 42, so chunk 1.)
    chunk = "c/{}/0/0" if version == 3 else "{}.0.0"
    assert sorted(others) == [
        f"cam0/acqzarr_frames/frame_id/{chunk.format(0)}",
        f"cam0/acqzarr_frames/json/{chunk.format(1)}",
    ]


# -- the device ------------------------------------------------------------------------------------
def test_the_device_resumes_its_own_recording_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "dev.zarr"
    dev = ZarrStorage()
    dev.set(settings_for(path, 3, None))
    dev.start()
    for seq in range(7):
        dev.append(frame(seq))
    dev.stop()
    dev.set(settings_for(path, 3, None, existing="resume"))
    dev.start()
    for seq in range(12, 18):
        dev.append(frame(seq))
    dev.stop()
    data = read_zarr(path / "cam0" / "0")
    assert data.shape[0] == 3
    np.testing.assert_array_equal(data[1, 0, 0], frame(6))
    np.testing.assert_array_equal(data[2, 1, 2], frame(17))
    assert [s["ended"] for s in session(path)["segments"]] == ["completed", "completed"]


# -- killed, then resumed -------------------------------------------------------------------------------
CHILD = """
import sys, numpy as np, acqzarr as az
sys.path.insert(0, {tests!r})
from test_resume import frame, meta, SKIP
settings = az.StreamSettings.model_validate_json(sys.argv[1])
with az.open_stream(settings) as stream:
    for seq in range(int(sys.argv[2]), 100000):
        if seq == SKIP:
            stream.skip()
        else:
            stream.append(frame(seq), metadata=meta(seq))
        if seq % 5 == 4:
            stream.flush()
            print(stream.stats().frames_flushed, flush=True)
"""
SKIP = 9  # the one slot every writer here skips: a hole wherever it falls inside what was kept


def _kill_after_flushes(settings: az.StreamSettings, start: int, flushes: int) -> int:
    """Run the child writer from frame ``start`` of the acquisition, SIGKILL it at a random moment
    after ``flushes`` flushes; return the last frames_flushed it reported."""
    code = CHILD.format(tests=str(REPO / "tests"))
    child = start_writer(code, settings, start)
    assert child.stdout is not None
    reported = 0
    try:
        for _ in range(flushes):
            line = child.stdout.readline()
            assert line, "the writer ended early"
            reported = int(line)
        time.sleep(random.uniform(0, 0.05))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    return reported


def _assert_holds(
    data: np.ndarray[Any, Any], order: Sequence[str] | None, upto: int, holes: set[int]
) -> None:
    """Frames 0 to ``upto`` - 1 of the acquisition are each where they belong, ``holes`` empty."""
    for seq in range(upto):
        t, c, z = position(seq, order)
        expected = np.zeros((20, 24), np.uint16) if seq in holes else frame(seq)
        np.testing.assert_array_equal(data[t, c, z], expected, err_msg=f"frame {seq}")


@pytest.mark.slow  # writer processes killed
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("order", ORDERS, ids=["tcz", "tzc"])
@pytest.mark.parametrize("start", ["killed", "killed-twice", "closed-mid-row"])
def test_a_killed_run_resumed_holds_every_flushed_frame_then_the_new_ones(
    tmp_path: Path, version: int, order: Sequence[str] | None, start: str
) -> None:
    """Each writer that is killed has reported frames_flushed; resumed, the store holds every one
    of those frames and goes on at its published extent, so the store is what one uninterrupted
    run would have written (every writer here writes frame ``seq`` at the same slot)."""
    random.seed(f"{version}{order}{start}")
    path = tmp_path / "killed.zarr"
    ends = []  # how each segment ended
    holes = {SKIP}
    if start == "closed-mid-row":
        with az.open_stream(settings_for(path, version, order)) as first:
            for seq in range(20):  # 3 timepoints and 2 frames: ends inside band row 1 (t 3-5)
                if seq == SKIP:
                    first.skip()
                else:
                    first.append(frame(seq), metadata=meta(seq))
        ends.append("completed")
        holes |= set(range(20, 24))  # the rest of t=3, closed as holes
    kills = 2 if start == "killed-twice" else 1
    for _ in range(kills):
        extent = read_zarr(path / "cam0" / "0").shape[0] if path.exists() else 0
        existing = "resume" if path.exists() else "error"
        flushed = _kill_after_flushes(
            settings_for(path, version, order, existing=existing), extent * PER_T, random.randint(3, 12)
        )
        ends.append("killed")
        before = read_zarr(path / "cam0" / "0")
        # Every frame this writer reported flushed is in the store (it counted its own only).
        assert before.shape[0] * PER_T >= extent * PER_T + flushed
        _assert_holds(before, order, before.shape[0] * PER_T, holes)
    extent = before.shape[0]
    new = range(extent * PER_T, extent * PER_T + 23)
    with az.open_stream(settings_for(path, version, order, existing="resume")) as stream:
        for seq in new:
            stream.append(frame(seq), metadata=meta(seq))
    ends.append("completed")
    final = new[-1] // PER_T + 1
    for got in (read_zarr(path / "cam0" / "0"), read_tensorstore(path / "cam0" / "0", version)):
        assert got.shape == (final, 2, 3, 20, 24)
        _assert_holds(got, order, new[-1] + 1, holes)
    ids = read_zarr(path / "cam0" / "acqzarr_frames" / "frame_id")
    assert ids.shape == (final, 2, 3)
    for seq in range(new[-1] + 1):
        assert ids[position(seq, order)] == (-(2**63) if seq in holes else seq), seq
    assert_valid(path)
    assert not (path / ".acqzarr-staging").exists()
    record = session(path)
    assert [s["ended"] for s in record["segments"]] == ends
    assert record["frames_on_disk"] == new[-1] + 1 - len(holes)
    assert record["completed"] is True


@pytest.mark.slow  # writer processes killed
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("deadline", [None, 0.01], ids=["flushes", "deadline"])
def test_a_killed_pyramid_halving_the_append_axis_resumed_equals_one_run(
    tmp_path: Path, version: int, deadline: float | None
) -> None:
    """z appended with a 3-level pyramid: writers killed after they flushed, then resumed, leave every
    level as one run of the same frames writes it.  A kill leaves an extent whose planes pair up
    whole on every level (complete rows, or with a durability deadline a checkpoint's extent, a
    multiple of 4), so what each level goes on from, and what is removed past it, is per level (a
    quarter of level 0's on level 2), with the row it ends inside read back on every level."""
    random.seed(f"z{version}{deadline}")

    def settings(path: Path, **fields: Any) -> az.StreamSettings:
        return pyramid_settings(path, version, max_unflushed_seconds=deadline, **fields)

    path, reference = tmp_path / "killed.zarr", tmp_path / "one.zarr"
    extents = []
    for existing in ("error", "resume"):
        start = read_zarr(path / "cam0" / "0").shape[0] if path.exists() else 0
        _kill_after_flushes(settings(path, existing=existing), start, random.randint(2, 6))
        extents.append(read_zarr(path / "cam0" / "0").shape[0])
    final = extents[-1] + 23
    with az.open_stream(settings(reference)) as one:
        for seq in range(final):
            if seq == SKIP:
                one.skip()
            else:
                one.append(frame(seq), metadata=meta(seq))
    with az.open_stream(settings(path, existing="resume")) as stream:
        for seq in range(extents[-1], final):
            stream.append(frame(seq), metadata=meta(seq))
            if seq == extents[-1] + 12:
                stream.flush()  # what a live reader sees: every level shows only planes it stored
                for level in range(3):
                    shown = read_zarr(path / "cam0" / str(level))
                    expected = read_zarr(reference / "cam0" / str(level))[: shown.shape[0]]
                    np.testing.assert_array_equal(shown, expected, err_msg=f"level {level} mid-run")
    _assert_same_image(path, reference, version, levels=3)
    assert_valid(path)
    assert [s["ended"] for s in session(path)["segments"]] == ["killed", "killed", "completed"]


# -- acqzarr record --resume ---------------------------------------------------------------------------
@pytest.mark.slow  # a recording process killed
def test_record_resume_after_a_sigkill_continues_the_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "rec.yaml"
    store = tmp_path / "rec.zarr"
    config.write_text(
        json.dumps(
            {
                "store": str(store),
                "version": 3,
                "overwrite": True,  # as the shipped configs say: --resume wins over it
                "arrays": [
                    {
                        "key": "cam0",
                        "dtype": "uint16",
                        "dimensions": [
                            {"name": "t", "kind": "time", "size": 0, "chunk": 4},
                            {"name": "y", "kind": "space", "size": 64, "chunk": 32, "shard": 2},
                            {"name": "x", "kind": "space", "size": 64, "chunk": 32, "shard": 2},
                        ],
                    }
                ],
                "source": {
                    "driver": "simulated.noise",
                    "frames": 100000,
                    "options": {"height": 64, "width": 64, "fps": 200},
                },
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "drivers")])}
    child = subprocess.Popen([sys.executable, "-m", "acqzarr", "record", str(config)], env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            doc = store / "cam0" / "0" / "zarr.json"
            if doc.exists() and json.loads(doc.read_text())["shape"][0] >= 12:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the recording published nothing")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    extent = json.loads((store / "cam0" / "0" / "zarr.json").read_text())["shape"][0]
    assert cli.main(["record", str(config), "--resume", "--frames", "10"]) == 0
    data = read_zarr(store / "cam0" / "0")
    assert data.shape[0] == extent + 10
    assert data[extent:].any()
    assert_valid(store)
    capsys.readouterr()
    assert cli.main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "segment 1:" in out and "segment 2:" in out
    assert "killed" in out and "completed" in out


# -- MDAWriter(resume=True) ----------------------------------------------------------------------------
def test_an_mda_resumed_goes_on_after_the_timepoints_the_store_holds(tmp_path: Path) -> None:
    useq = pytest.importorskip("useq")
    from acqzarr.mda import MDAWriter
    from mda_helpers import camera, make_core

    core = make_core()
    sequence = useq.MDASequence(
        time_plan={"interval": 0, "loops": 3},
        channels=["DAPI", "FITC"],
        axis_order="tc",
    )
    path = tmp_path / "mda.zarr"
    first = MDAWriter(path, core=core)
    core.mda.run(sequence, output=first)
    first.raise_if_failed()
    again = MDAWriter(path, core=core, resume=True)
    core.mda.run(sequence, output=again)
    again.raise_if_failed()
    assert again.stats().resumed_at == 3
    frames = camera(core).frames
    assert len(frames) == 12
    data = read_zarr(path / "0")
    assert data.shape[:2] == (6, 2)
    for i, image in enumerate(frames):
        np.testing.assert_array_equal(data[i // 2, i % 2], image)
    record = json.loads((path / "zarr.json").read_text())["attributes"]["acqzarr_session"]
    assert [s["ended"] for s in record["segments"]] == ["completed", "completed"]


@pytest.mark.parametrize("process", [False, True])
def test_an_mda_resumed_keeps_the_chunking_the_store_was_written_with(tmp_path: Path, process: bool) -> None:
    """A store written with one timepoint per chunk (acqzarr's default before a fast series without
    z got 8) is continued with it by a writer left at its defaults, instead of being refused as
    another dataset; a chunking the caller asks for is still checked against the store."""
    useq = pytest.importorskip("useq")
    import zarr

    from acqzarr.mda import MDAWriter
    from mda_helpers import camera, make_core

    core = make_core()
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 10}, axis_order="t")
    path = tmp_path / "old.zarr"
    first = MDAWriter(path, core=core, chunks={"t": 1}, shards={"t": 8})
    core.mda.run(sequence, output=first)
    first.raise_if_failed()
    with MDAWriter(path, core=core, resume=True, process=process) as again:
        core.mda.run(sequence, output=again)
    assert again.stats().resumed_at == 10
    stored = zarr.open_array(str(path / "0"), mode="r")
    assert stored.shape[0] == 20 and stored.chunks[0] == 1
    np.testing.assert_array_equal(stored[:], np.stack(camera(core).frames))
    with (
        pytest.raises(az.WriterError, match=r"chunk: stored 1, asked 8"),
        MDAWriter(path, core=core, resume=True, chunks={"t": 8}, shards={"t": 1}) as refused,
    ):
        core.mda.run(sequence, output=refused)
    assert zarr.open_array(str(path / "0"), mode="r").shape[0] == 20  # refused untouched


def test_an_mda_of_z_stacks_resumed_keeps_one_plane_per_chunk(tmp_path: Path) -> None:
    """z stacks written one plane per chunk with shards of the stack (the default before a stack
    got one chunk) are continued that way by a writer left at its defaults."""
    useq = pytest.importorskip("useq")
    import zarr

    from acqzarr.mda import MDAWriter
    from mda_helpers import camera, make_core

    core = make_core()
    sequence = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2}, z_plan={"range": 2, "step": 1}, axis_order="tz"
    )
    path = tmp_path / "stacks.zarr"
    first = MDAWriter(path, core=core, chunks={"z": 1}, shards={"z": 3, "t": 3})
    core.mda.run(sequence, output=first)
    first.raise_if_failed()
    with MDAWriter(path, core=core, resume=True) as again:
        core.mda.run(sequence, output=again)
    stored = zarr.open_array(str(path / "0"), mode="r")
    assert stored.shape[:2] == (4, 3) and stored.chunks[:2] == (1, 1)
    frames = camera(core).frames
    np.testing.assert_array_equal(stored[:].reshape(12, *stored.shape[2:]), np.stack(frames))


@pytest.mark.parametrize("version", [2, 3])
def test_what_lies_past_the_extent_is_removed_before_anything_is_written(
    tmp_path: Path, version: int
) -> None:
    """A killed writer's leavings (objects past the published extent, a column no publish showed,
    staged files) are gone once the store is resumed; what lies below the extent stays."""
    path = tmp_path / "s.zarr"
    with az.open_stream(settings_for(path, version, None)) as stream:
        for seq in range(6 * 6):  # 6 timepoints: two full band rows (and one full v3 shard)
            stream.append(frame(seq), metadata=meta(seq))
    documents = ("zarr.json", ".zarray", ".zattrs", ".zgroup")

    def chunks_below() -> dict[str, str]:
        found = hashes(path).items()
        return {k: v for k, v in found if k.startswith("cam0/0/") and not k.endswith(documents)}

    kept = chunks_below()
    array = path / "cam0" / "0"
    if version == 3:
        (array / "c" / "7").mkdir(parents=True)
        (array / "c" / "7" / "0").write_bytes(b"stale shard")
        leftovers = [array / "c" / "7"]
    else:
        (array / "9.0.0.0.0").write_bytes(b"stale chunk")
        leftovers = [array / "9.0.0.0.0"]
    stray_column = path / "cam0" / "acqzarr_frames" / "never_published"
    stray_column.mkdir()
    (stray_column / ("c" if version == 3 else "0.0.0")).write_bytes(b"x")
    staging = path / ".acqzarr-staging"
    staging.mkdir(exist_ok=True)
    (staging / ".0.123.0.tmp").write_bytes(b"a shard being built")
    with az.open_stream(settings_for(path, version, None, existing="resume")) as stream:
        for item in [*leftovers, stray_column, staging / ".0.123.0.tmp"]:
            assert not item.exists(), item
        assert chunks_below() == kept  # every object below the extent as it was
        stream.append(frame(36))
    assert_valid(path)
    data = read_zarr(array)
    assert data.shape[0] == 7
    np.testing.assert_array_equal(data[6, 0, 0], frame(36))


@pytest.mark.parametrize("version", [2, 3])
def test_what_lies_past_each_level_of_a_pyramid_halving_the_append_axis_is_removed(
    tmp_path: Path, version: int
) -> None:
    """z appended: level k shows a 2**k-th of level 0's planes, so what a killed writer left past
    each level's own extent goes, and what lies below it stays."""
    path = tmp_path / "z.zarr"
    settings = pyramid_settings(path, version, shards=(1, 1, 2))
    with az.open_stream(settings) as stream:
        for seq in range(16):  # level 2 shows 4 planes: objects 0 and 1 along z
            stream.append(frame(seq))
    level2 = path / "cam0" / "2"
    if version == 3:
        below, past = level2 / "c" / "1" / "0" / "0", level2 / "c" / "2" / "0" / "0"
        past.parent.mkdir(parents=True)
    else:
        below, past = level2 / "1.0.0", level2 / "2.0.0"
    assert below.exists()
    kept = below.read_bytes()
    past.write_bytes(below.read_bytes())  # planes 4-5 of level 2: past its extent, below level 0's
    with az.open_stream(settings.model_copy(update={"existing": "resume"})) as stream:
        assert not past.exists()
        assert below.read_bytes() == kept
        for seq in range(16, 24):
            stream.append(frame(seq))
    assert_valid(path)
    assert read_zarr(level2).shape == (6, 5, 6)


def test_each_position_resumes_at_its_own_extent(tmp_path: Path) -> None:
    path = tmp_path / "positions.zarr"
    positions = [{"name": "p0"}, {"name": "p1"}]
    with az.open_stream(settings_for(path, 3, None, positions=positions)) as stream:
        for seq in range(8):
            stream.append(frame(seq), key="p0/cam0")
        for seq in range(20):
            stream.append(frame(100 + seq), key="p1/cam0")
    resumed = settings_for(path, 3, None, positions=positions, existing="resume")
    with az.open_stream(resumed) as stream:
        assert stream.stats("p0/cam0").resumed_at == 2 and stream.stats("p1/cam0").resumed_at == 4
        stream.append(frame(12), key="p0/cam0")
        stream.append(frame(124), key="p1/cam0")
    p0, p1 = read_zarr(path / "p0" / "cam0" / "0"), read_zarr(path / "p1" / "cam0" / "0")
    assert p0.shape[0] == 3 and p1.shape[0] == 5
    np.testing.assert_array_equal(p0[1, 0, 0], frame(6))
    np.testing.assert_array_equal(p0[2, 0, 0], frame(12))
    np.testing.assert_array_equal(p1[3, 0, 1], frame(119))
    np.testing.assert_array_equal(p1[4, 0, 0], frame(124))
    assert_valid(path)


def test_a_bounded_append_axis_may_grow_and_a_full_one_takes_no_more(tmp_path: Path) -> None:
    path = tmp_path / "bounded.zarr"
    bounded = (4, *SHAPE[1:])

    def settings(size: int, **fields: Any) -> az.StreamSettings:
        return stream_settings(path, 3, (size, *SHAPE[1:]), CHUNKS, shards=SHARDS, **fields)

    with az.open_stream(settings(bounded[0])) as stream:
        for seq in range(4 * PER_T):
            stream.append(frame(seq))
    full = settings(4, existing="resume")
    with az.open_stream(full) as stream, pytest.raises(az.FrameError, match="holds 24 frames"):
        stream.append(frame(24))
    with az.open_stream(settings(7, existing="resume")) as stream:
        for seq in range(4 * PER_T, 7 * PER_T):
            stream.append(frame(seq))
    data = read_zarr(path / "cam0" / "0")
    assert data.shape == (7, *SHAPE[1:])
    for seq in range(7 * PER_T):
        np.testing.assert_array_equal(data[position(seq, None)], frame(seq))
    assert_valid(path)


# -- random layouts, several clean segments -----------------------------------------------------------
@pytest.mark.parametrize("case", range(16))
def test_random_layouts_resumed_segment_by_segment_equal_one_run(tmp_path: Path, case: int) -> None:
    """Random Zarr version, index axes (t; t, c; t, c, z), sizes (unbounded or bounded t), chunks,
    shards (several bands deep along any index axis), acquisition order and skips; the frames split
    into 2-4 runs, each resumed from the last one's clean close.  The store and its column equal one
    run that left the same holes (the rest of each run's last timepoint)."""
    rng = random.Random(case)
    version = rng.choice([2, 3])
    n_index = rng.choice([1, 2, 3])
    names = {1: "tyx", 2: "tcyx", 3: "tczyx"}[n_index]
    frame_shape = (17, 21)
    sizes = [rng.choice([0, 0, 9]), *(rng.randint(1, 3) for _ in range(n_index - 1)), *frame_shape]
    chunks = [rng.randint(1, 4), *(rng.randint(1, s) for s in sizes[1:n_index]), 8, 16]
    shards = None
    if version == 3:
        shards = [rng.randint(1, 3), *(rng.randint(1, 2) for _ in range(n_index - 1)), 2, 1]
    order = None
    if n_index > 1 and rng.random() < 0.5:
        rest = list(names[1:n_index])
        rng.shuffle(rest)
        order = ["t", *rest]
    per_t = int(np.prod(sizes[1:n_index]))
    capacity = sizes[0] * per_t if sizes[0] else 10**9
    total = min(capacity, rng.randint(8, 60))
    skips = set(rng.sample(range(total), 2))
    cuts = sorted(rng.sample(range(1, total), rng.randint(1, 3)))
    runs, seq = [], 0
    for end in [*cuts, total]:
        if seq < end:
            runs.append(range(seq, end))
        seq = max(seq, -(-end // per_t) * per_t)  # the next run starts at the next timepoint

    def image(seq: int) -> np.ndarray[Any, Any]:
        yy, xx = np.mgrid[0 : frame_shape[0], 0 : frame_shape[1]]
        return ((59000 - seq * 37 - yy * 3 - xx) % 60000 + 1).astype(np.uint16)

    def settings(path: Path, **fields: Any) -> az.StreamSettings:
        return stream_settings(
            path, version, sizes, chunks, shards=shards, names=names, acquisition_order=order, **fields
        )

    resumed, reference = _resumed_and_one_run(settings, tmp_path, runs, skips, image)
    _assert_same_image(resumed, reference, version)
    assert_valid(resumed)
    assert [s["ended"] for s in session(resumed)["segments"]] == ["completed"] * len(runs)
