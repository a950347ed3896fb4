"""Every bad input and fault gives a typed error, and nothing already accepted is lost."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import acqzarr as az
import acqzarr.stores.local as local_store
from acqzarr.engine.memory import plan_memory
from builders import frames_for, stream_settings
from readback import assert_reads_back

FRAME = (37, 50)


@pytest.fixture
def written(tmp_path: Path, version: int) -> tuple[az.Stream, np.ndarray[Any, Any], Path]:
    """An open stream that already accepted 5 frames."""
    path = tmp_path / "s.zarr"
    stream = az.open_stream(stream_settings(path, version))
    data = frames_for(FRAME, 5, "uint16")
    stream.append(data)
    return stream, data, path / "cam0" / "0"


def _close_and_check(stream: az.Stream, data: np.ndarray[Any, Any], path: Path, version: int) -> None:
    stream.close()
    assert_reads_back(path, version, data)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (
            np.zeros((37, 51), np.uint16),
            r"expected a frame of shape \(37, 50\) or an array ending in it "
            r"\(\(n, 37, 50\), \(c, z, 37, 50\), \.\.\.\), got shape \(37, 51\)",
        ),
        (np.zeros((2, 3, 37, 51), np.uint16), r"got shape \(2, 3, 37, 51\)"),
        (np.zeros((50,), np.uint16), r"got shape \(50,\)"),
        (np.zeros((37, 50), np.uint8), "expected dtype uint16, got uint8"),
        (np.zeros((37, 50), np.float32), "expected dtype uint16, got float32"),
        (np.zeros((37, 50), ">u2"), "expected dtype uint16, got >u2"),
        ([[1, 2], [3, 4]], "expected dtype uint16, got int64"),
    ],
)
def test_bad_frames_raise_frame_error_and_keep_earlier_frames(
    written: tuple[az.Stream, np.ndarray[Any, Any], Path], version: int, bad: Any, match: str
) -> None:
    stream, data, path = written
    with pytest.raises(az.FrameError, match=match):
        stream.append(bad)
    _close_and_check(stream, data, path, version)


def test_unknown_and_missing_keys(
    written: tuple[az.Stream, np.ndarray[Any, Any], Path], version: int
) -> None:
    stream, data, path = written
    with pytest.raises(az.FrameError, match=r"unknown array key 'cam9'; expected one of \['cam0'\]"):
        stream.append(data[0], key="cam9")
    _close_and_check(stream, data, path, version)


def test_several_arrays_require_a_key(tmp_path: Path) -> None:
    settings = stream_settings(tmp_path / "s.zarr", 3)
    two = settings.model_copy(
        update={"arrays": [settings.arrays[0], settings.arrays[0].model_copy(update={"key": "cam1"})]}
    )
    with az.open_stream(two) as stream, pytest.raises(az.FrameError, match="pass key= one of"):
        stream.append(np.zeros(FRAME, np.uint16))


def test_frames_past_a_bounded_append_axis_are_rejected(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    data = frames_for(FRAME, 6, "uint16")
    with az.open_stream(stream_settings(path, version, shape=(6, *FRAME), chunks=(4, 16, 16))) as stream:
        stream.append(data[:4])
        with pytest.raises(az.FrameError, match="holds 6 frames; 4 already appended, 3 more do not fit"):
            stream.append(data[:3])  # a stack that only partly fits is rejected whole
        stream.append(data[4:])
        with pytest.raises(az.FrameError, match="holds 6 frames; 6 already appended, 1 more"):
            stream.append(data[0])
    assert_reads_back(path / "cam0" / "0", version, data)


def test_append_after_close_is_a_state_error(
    written: tuple[az.Stream, np.ndarray[Any, Any], Path], version: int
) -> None:
    stream, data, path = written
    stream.close()
    stream.close()  # idempotent
    with pytest.raises(az.StateError, match="closed stream"):
        stream.append(data[0])
    assert_reads_back(path, version, data)


def test_existing_store_without_overwrite_is_untouched(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    data = frames_for(FRAME, 4, "uint16")
    with az.open_stream(stream_settings(path, version)) as stream:
        stream.append(data)
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(az.StoreError, match="already exists; pass overwrite=True"):
        az.open_stream(stream_settings(path, version))
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    # With overwrite the old store is replaced.
    with az.open_stream(stream_settings(path, version, overwrite=True)) as stream:
        stream.append(data[:1])
    assert_reads_back(path / "cam0" / "0", version, data[:1])


def test_overwrite_refuses_to_delete_a_directory_that_is_not_zarr(tmp_path: Path) -> None:
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("irreplaceable")
    with pytest.raises(az.StoreError, match="is not a Zarr store; refusing to delete"):
        az.open_stream(stream_settings(precious, 3, overwrite=True))
    assert (precious / "chapter1.tex").read_text() == "irreplaceable"


def test_disk_full_reaches_the_caller_and_keeps_flushed_frames(
    tmp_path: Path, version: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC after a byte budget: the error names the file, flushed frames stay readable."""
    real_write = local_store._write_all
    budget = {"left": 60_000}

    def write_until_full(fd: int, parts: Any) -> None:
        n = sum(memoryview(p).nbytes for p in parts)
        if n > budget["left"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        budget["left"] -= n
        real_write(fd, parts)

    monkeypatch.setattr(local_store, "_write_all", write_until_full)
    path = tmp_path / "s.zarr"
    data = frames_for(FRAME, 60, "uint16")
    stream = az.open_stream(stream_settings(path, version, compression=None))
    accepted = 0
    with pytest.raises(az.WriterError, match=r"s\.zarr/cam0/0/.*write failed: No space left on device"):
        for frame in data:
            stream.append(frame)
            accepted += 1
            time.sleep(0.002)  # let the I/O thread run into the full disk mid-stream
    with pytest.raises(az.WriterError, match="No space left on device"):
        stream.close()
    flushed = stream.stats().frames_flushed
    assert 0 < flushed < accepted
    assert_reads_back(path / "cam0" / "0", version, data[:flushed])
    assert not [p for p in path.rglob("*") if p.name.endswith(".tmp")]


class SlowStore(az.LocalStore):
    """Every data object takes a while, as on a saturated disk."""

    delay = 0.15

    def put(self, key: str, parts: Any) -> None:
        if "json" not in key and not key.rsplit("/", 1)[-1].startswith(".z"):
            time.sleep(self.delay)
        super().put(key, parts)


@pytest.mark.slow
def test_backpressure_blocks_then_times_out_without_losing_frames(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    one_band = plan_memory(stream_settings(path, version)).required
    settings = stream_settings(path, version, max_inflight_bytes=one_band, append_timeout=0.05)
    data = frames_for(FRAME, 12, "uint16")
    accepted = []
    with az.open_stream(settings, store=SlowStore(path)) as stream:
        with pytest.raises(az.BackpressureTimeout, match="the frame was not accepted"):
            for i, frame in enumerate(data):
                stream.append(frame)
                accepted.append(i)
        # The pipeline drains; the frame that timed out can be appended again.
        stream.flush()
        for frame in data[len(accepted) :]:
            stream.append(frame)
            stream.flush()
    assert len(accepted) == 3  # the cap holds one band (3 frames); the next must wait
    assert_reads_back(path / "cam0" / "0", version, data)


def test_in_flight_bytes_stay_under_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    settings = stream_settings(
        path,
        3,
        shape=(0, 64, 64),
        chunks=(4, 32, 32),
        compression=None,
        max_inflight_bytes=3 * 4 * 64 * 64 * 2,
    )
    SlowStore.delay = 0.02
    data = frames_for((64, 64), 40, "uint16")
    with az.open_stream(settings, store=SlowStore(path)) as stream:
        stream.append(data)
        peak = stream.memory().peak
    assert peak <= settings.max_inflight_bytes
    assert_reads_back(path / "cam0" / "0", 3, data)


def test_exception_in_with_block_still_flushes_accepted_frames(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    data = frames_for(FRAME, 7, "uint16")
    with pytest.raises(KeyboardInterrupt), az.open_stream(stream_settings(path, version)) as stream:
        stream.append(data)
        raise KeyboardInterrupt
    assert_reads_back(path / "cam0" / "0", version, data)


def test_stop_racing_appends_loses_no_accepted_frame(tmp_path: Path, version: int) -> None:
    path = tmp_path / "s.zarr"
    data = frames_for(FRAME, 200, "uint16")
    stream = az.open_stream(stream_settings(path, version))
    count = {"n": 0}

    def produce() -> None:
        for frame in data:
            try:
                stream.append(frame)
            except az.StateError:
                return
            count["n"] += 1

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.01)
    stream.close()
    t.join()
    n = count["n"]
    got = np.asarray(zarr.open_array(str(path / "cam0" / "0"), mode="r")[:])
    assert got.shape[0] == n
    np.testing.assert_array_equal(got, data[:n])


@pytest.mark.parametrize("where", ["task", "codec"])
def test_a_failed_compression_task_returns_every_buffer_of_its_band(
    tmp_path: Path, version: int, where: str
) -> None:
    """One chunk of a band fails to compress (its task, or the codec inside it after the task took
    its output buffer): the stream reports it (WriterError), and the outputs of the band's other
    chunks, encoded before or after it, and the failed one's go back to the in-flight budget (nothing
    stays reserved for a band that will never be written)."""
    from acqzarr.codecs.blosc import BloscCodec
    from acqzarr.errors import WriterError
    from acqzarr.writers.encode import Encoder

    owner: Any = Encoder if where == "task" else BloscCodec
    name = "encode" if where == "task" else "encode_into"
    original = getattr(owner, name)
    calls = {"n": 0}

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second of the first band's four objects
            raise ValueError("codec exploded")
        return original(*args, **kwargs)

    path = tmp_path / "s.zarr"
    settings = stream_settings(path, version, shape=(0, 64, 64), chunks=(4, 32, 32), shards=(1, 1, 1))
    stream = az.open_stream(settings)
    try:
        setattr(owner, name, failing)
        stream.append(frames_for((64, 64), 4, "uint16"))  # one band: four chunks, four objects
        deadline = time.monotonic() + 10
        with pytest.raises(WriterError, match="codec exploded"):
            while time.monotonic() < deadline:
                stream.append(frames_for((64, 64), 1, "uint16"))
                time.sleep(0.01)
    finally:
        setattr(owner, name, original)
        with pytest.raises(WriterError):
            stream.close()
    assert calls["n"] >= 4  # the other objects of the band were encoded too
    assert stream.memory().used == 0
