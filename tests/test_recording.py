"""The recording life cycle shared by `acqzarr record` and `acqzarr serve` (recording.py): counts
and ends as the session record in the store says them, read back with zarr-python, and failures at
the end that still close the stream, leave an honest record and reach the caller."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import acqzarr as az
from acqzarr.recording.lifecycle import Counts, End, Recording
from builders import frames_for, stream_settings


def _settings(path: Path, version: int, chunk_t: int) -> az.StreamSettings:
    return stream_settings(path, version, shape=(0, 8, 6), chunks=(chunk_t, 8, 6), shards=(1, 1, 1))


def _record_on_disk(path: Path) -> dict[str, Any]:
    record = zarr.open_group(str(path / "cam0"), mode="r").attrs["acqzarr_session"]
    assert isinstance(record, dict)
    return record


class ChunksFail(az.LocalStore):
    """A disk that refuses the image's chunk and shard objects (its metadata still goes through)."""

    def _refuse(self, key: str) -> None:
        if key.startswith("cam0/0/") and not key.endswith((".json", ".zarray", ".zattrs")):
            raise az.StoreError(f"{key}: disk full (injected)")

    def put(self, key: str, parts: Sequence[Any]) -> None:
        self._refuse(key)
        super().put(key, parts)

    def put_padded(self, key: str, buffer: Any, nbytes: int) -> None:
        self._refuse(key)
        super().put_padded(key, buffer, nbytes)

    def open_staged(self, key: str) -> Any:
        self._refuse(key)
        return super().open_staged(key)


def test_counts_and_the_end_are_what_the_session_record_says(tmp_path: Path, version: int) -> None:
    """Accepted and skipped frames come from the stream, drops from what the source reported; drops
    reach the store with the next publish, and the end with the close."""
    path = tmp_path / "s.zarr"
    recording = Recording(_settings(path, version, chunk_t=2), source={"kind": "test", "rig": 1})
    frames = frames_for((8, 6), 5, "uint16")
    lost = [0, 2, 0, 1, 0]
    for i in range(4):
        recording.append(frames[i], "cam0", {"frame_id": 10 + i, "dropped_before": lost[i]}, lost=lost[i])
    recording.stream.flush()  # two complete bands: published with the drops so far
    live = _record_on_disk(path)
    assert (live["frames_on_disk"], live["frames_dropped"]) == (4, 3)
    assert live["completed"] is False and live["stop"] is None
    assert live["source"] == {"kind": "test", "rig": 1}

    recording.describe("cam0", {"kind": "test", "rig": 2})  # written at once
    assert _record_on_disk(path)["source"] == {"kind": "test", "rig": 2}
    recording.stream.skip(1, "cam0")
    recording.append(frames[4], "cam0", {"frame_id": 15, "dropped_before": 0})
    assert recording.counts("cam0") == Counts(accepted=5, skipped=1, dropped=3)

    recording.finish({"cam0": End(completed=True, fields={"note": "done"})})
    record = _record_on_disk(path)
    assert record["completed"] is True and record["stop"] is not None and record["note"] == "done"
    assert (record["frames_accepted"], record["frames_skipped"], record["frames_dropped"]) == (5, 1, 3)
    assert record["frames_on_disk"] == 5  # in an image of six slots: the skipped one is a hole
    data = np.asarray(zarr.open_array(str(path / "cam0" / "0"), mode="r")[:])
    np.testing.assert_array_equal(data, np.concatenate([frames[:4], np.zeros_like(frames[:1]), frames[4:]]))
    ids = np.asarray(zarr.open_array(str(path / "cam0" / "acqzarr_frames" / "frame_id"), mode="r")[:])
    np.testing.assert_array_equal(ids[[0, 1, 2, 3, 5]], [10, 11, 12, 13, 15])
    assert recording.stream.closed


def test_an_interrupted_recording_is_closed_with_every_frame_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    recording = Recording(_settings(path, 3, chunk_t=2), source={"kind": "test"})
    frames = frames_for((8, 6), 3, "uint16")
    for frame in frames:
        recording.append(frame, "cam0", {"dropped_before": 0})
    recording.finish({"cam0": End(completed=False, fields={"interrupted": "SIGINT"})})
    record = _record_on_disk(path)
    assert record["completed"] is False and record["interrupted"] == "SIGINT"
    assert record["stop"] is not None and record["frames_on_disk"] == 3  # the partial band too
    np.testing.assert_array_equal(zarr.open_array(str(path / "cam0" / "0"), mode="r")[:], frames)


def test_a_close_that_fails_reaches_the_caller_and_the_store_still_says_how_it_ended(tmp_path: Path) -> None:
    """The end is written before the close: when the close then cannot store the frames, the
    record on disk has the end, is not complete and has no stop."""
    path = tmp_path / "s.zarr"
    settings = _settings(path, 3, chunk_t=4)
    recording = Recording(settings, ChunksFail(str(path)), source={"kind": "test"})
    for frame in frames_for((8, 6), 3, "uint16"):  # one open band: nothing is stored before the close
        recording.append(frame, "cam0", {})
    end = End(completed=True, fields={"source": {"kind": "test", "end": "series_end"}})
    with pytest.raises(az.AcqzarrError, match="disk full"):
        recording.finish({"cam0": end})
    assert recording.stream.closed
    record = _record_on_disk(path)
    assert record["source"] == {"kind": "test", "end": "series_end"}
    assert record["completed"] is False and record["stop"] is None and record["frames_on_disk"] == 0


def test_the_failure_that_ended_the_recording_is_raised_after_the_close_with_its_failure_noted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.zarr"
    recording = Recording(_settings(path, 2, chunk_t=4), ChunksFail(str(path)), source={"kind": "test"})
    recording.append(frames_for((8, 6), 1, "uint16")[0], "cam0", {})
    camera = RuntimeError("camera unplugged")
    with pytest.raises(RuntimeError) as info:
        recording.finish({"cam0": End(completed=False)}, camera)
    assert info.value is camera
    assert any("disk full" in note for note in getattr(camera, "__notes__", []))
    assert recording.stream.closed and _record_on_disk(path)["completed"] is False


def test_an_end_that_cannot_be_written_still_closes_and_is_never_complete(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    recording = Recording(_settings(path, 3, chunk_t=2), source={"kind": "test"})
    recording.append(frames_for((8, 6), 1, "uint16")[0], "cam0", {})
    with pytest.raises(az.ConfigError, match="session fields"):
        recording.finish({"cam0": End(completed=True, fields={"rate": math.nan})})
    record = _record_on_disk(path)
    assert recording.stream.closed and record["stop"] is not None
    assert record["completed"] is False and "rate" not in record and record["frames_on_disk"] == 1
