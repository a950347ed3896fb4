"""``MDAWriter(process=True)``: the stream runs in a writer process fed through shared memory.

Real MDAs on the simulated microscope; what the writer process wrote is read back with zarr-python
and compared with the camera's frames, and its errors, its death and the MDA process's death are
each caused for real (a rejected frame, SIGKILL, ``os._exit``)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import useq
import zarr

import acqzarr as az
from acqzarr.mda import MDAWriter
from mda_helpers import EXPOSURES, SHAPE, SkippingEngine, camera, make_core

pytestmark = pytest.mark.slow  # each test starts a writer process (about a second of imports)


def _index(event: useq.MDAEvent) -> dict[str, int]:
    return {str(getattr(k, "value", k)): int(v) for k, v in event.index.items()}


def _session(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((path / "zarr.json").read_text())["attributes"]["acqzarr_session"]
    return record


def test_the_writer_process_stores_every_frame_at_its_index_with_metadata_and_holes(tmp_path: Path) -> None:
    core = make_core()
    skipped = {"t": 1, "p": 1, "c": 0, "z": 1}
    core.mda.set_engine(SkippingEngine(core, [skipped]))
    sequence = useq.MDASequence(
        axis_order="tpcz",
        time_plan={"interval": 0, "loops": 3},
        stage_positions=[(10.0, 20.0, 5.0), useq.Position(x=300.0, y=400.0, z=6.0, name="right")],
        channels=["DAPI", "FITC"],
        z_plan={"range": 1, "step": 1},
    )
    path = tmp_path / "run.zarr"
    seen: list[tuple[int, int]] = []
    with MDAWriter(path, core=core, process=True) as writer:

        class Peek:  # a second handler, after the writer on the relay thread: a GUI showing progress
            def frameReady(self, img: Any, event: useq.MDAEvent, meta: Any) -> None:
                live = writer.latest()
                assert live is not None
                np.testing.assert_array_equal(live.data, img)
                # asked through the same socket as the frames: every frame sent so far is counted
                seen.append((writer.stats("p0").frames_appended, _index(event)["p"]))

        core.mda.run(sequence, output=[writer, Peek()])
    assert writer.error is None and not writer.canceled
    assert writer.stream is None  # it was in the writer process
    assert writer.images == ["p0", "right"]
    assert writer.settings is not None and writer.settings.store == str(path)
    assert [n for n, _ in seen] == list(np.cumsum([p == 0 for _, p in seen]))

    events = [e for e in sequence if _index(e) != skipped]
    frames = camera(core).frames
    assert len(frames) == len(events) == len(seen) == 23  # (a handler's failed assert is swallowed)
    expected = {name: np.zeros((3, 2, 2, *SHAPE), np.uint16) for name in writer.images}
    for event, frame in zip(events, frames, strict=True):
        i = _index(event)
        expected["p0" if i["p"] == 0 else "right"][i["t"], i["c"], i["z"]] = frame
    root = zarr.open_group(str(path), mode="r")
    for name, want in expected.items():
        np.testing.assert_array_equal(root[f"{name}/0"][...], want)
        assert writer.stats(name).frames_appended == (11 if name == "right" else 12)
        assert writer.stats(name).frames_skipped == (1 if name == "right" else 0)
        assert _session(path / name)["completed"] is True
    for event in events:  # per-frame metadata went across with the frames
        i = _index(event)
        columns = root[f"{'p0' if i['p'] == 0 else 'right'}/acqzarr_frames"]
        at = (i["t"], i["c"], i["z"])
        assert columns["exposure_ms"][at] == EXPOSURES[event.channel.config]  # type: ignore[union-attr]
        assert columns["stage_x_um"][at] == pytest.approx(event.x_pos)
    assert math.isnan(root["right/acqzarr_frames/exposure_ms"][1, 0, 1])  # the hole


def test_a_frame_the_writer_process_rejects_cancels_the_run_and_surfaces_here(tmp_path: Path) -> None:
    core = make_core()
    cam = camera(core)
    times = [0, 1, 2, 3, 3, *range(4, 60)]  # t=3 comes twice: the stream rejects it
    events = [useq.MDAEvent(index={"t": t}, min_start_time=0.02 * i) for i, t in enumerate(times)]
    path = tmp_path / "rejected.zarr"
    writer = MDAWriter(path, core=core, process=True)
    try:
        core.mda.run(events, output=writer)
        assert isinstance(writer.error, az.FrameError) and writer.canceled  # the child's own error
        assert len(cam.frames) < len(events)
        with pytest.raises(az.WriterError, match=r"index \{t: 3\} was already"):
            writer.raise_if_failed()
    finally:
        writer.close()
    stored = zarr.open_array(str(path / "0"), mode="r")
    assert stored.shape[0] == 4
    np.testing.assert_array_equal(stored[:4], np.stack(cam.frames[:4]))
    session = _session(path)
    assert session["completed"] is False and session["mda_outcome"] == "failed"


def test_a_killed_writer_process_cancels_the_run_with_its_exit_code(tmp_path: Path) -> None:
    core = make_core()
    sequence = useq.MDASequence(time_plan={"interval": 0.01, "loops": 300}, channels=["DAPI"])
    writer = MDAWriter(tmp_path / "killed.zarr", core=core, process=True)
    pid = writer.writer_pid
    assert pid is not None

    def kill_at_ten(*_: Any) -> None:
        if len(camera(core).frames) == 10:
            os.kill(pid, signal.SIGKILL)

    core.mda.events.frameReady.connect(kill_at_ten)
    try:
        core.mda.run(sequence, output=writer)
    finally:
        writer.close()
    assert isinstance(writer.error, az.WriterError)
    assert f"exited with code {-signal.SIGKILL}" in str(writer.error)
    assert writer.canceled and len(camera(core).frames) < 300


def test_when_the_mda_process_dies_the_writer_process_keeps_what_it_received(tmp_path: Path) -> None:
    """The MDA's process exits mid-run without a word: the writer process reads end-of-file and
    closes the store as failed, every frame it received stored and readable."""
    path = tmp_path / "orphan.zarr"
    script = textwrap.dedent(
        f"""
        import os, sys, useq
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from acqzarr.mda import MDAWriter
        from mda_helpers import camera, make_core
        core = make_core()
        writer = MDAWriter({str(path)!r}, core=core, process=True)
        print(writer.writer_pid, flush=True)
        def die(*_):
            if len(camera(core).frames) == 25:
                os._exit(3)
        core.mda.events.frameReady.connect(die)
        core.mda.run(useq.MDASequence(time_plan={{"interval": 0.01, "loops": 100}}), output=writer)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    child = int(done.stdout.split()[0])
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        time.sleep(0.05)  # the writer process finishing the store on its own
    session = _session(path)
    assert session["completed"] is False and session["mda_outcome"] == "failed"
    assert "the MDA's process ended" in session["error"]
    stored = zarr.open_array(str(path / "0"), mode="r")
    n = stored.shape[0]
    assert 1 <= n <= 25
    high = min(4000, int(np.iinfo(np.uint16).max) + 1)
    for k in range(n):  # the simulated camera's frame k+1, regenerated
        want = np.random.default_rng(k + 1).integers(1, high, SHAPE, dtype=np.uint16)
        np.testing.assert_array_equal(stored[k], want)


def test_a_resumed_run_in_the_writer_process_goes_on_after_the_stored_timepoints(tmp_path: Path) -> None:
    core = make_core()
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 3}, channels=["DAPI", "FITC"])
    path = tmp_path / "resumed.zarr"
    with MDAWriter(path, core=core, process=True) as first:
        core.mda.run(sequence, output=first)
    with MDAWriter(path, core=core, process=True, resume=True) as again:
        core.mda.run(sequence, output=again)
    assert again.stats().resumed_at == 3
    live = again.latest(channel=1)
    assert live is not None and live.index == {"t": 5, "c": 1}  # placed after the stored timepoints
    frames = camera(core).frames
    data = zarr.open_array(str(path / "0"), mode="r")[...]
    assert data.shape[:2] == (6, 2)
    for i, image in enumerate(frames):
        np.testing.assert_array_equal(data[i // 2, i % 2], image)
    assert [s["ended"] for s in _session(path)["segments"]] == ["completed", "completed"]


def test_frames_by_hand_wrap_the_ring_and_a_frame_of_another_shape_is_refused(tmp_path: Path) -> None:
    """A handler driven by hand (no runner): 100 frames through 32 slots, each read back; then a frame
    of another shape, which takes a new ring and which the stream in the writer process refuses."""
    sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 101})
    events = list(sequence)
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 4096, (100, *SHAPE), dtype=np.uint16)
    path = tmp_path / "byhand.zarr"
    writer = MDAWriter(path, process=True)
    try:
        writer.sequenceStarted(sequence, {"image_infos": [{"plane_shape": SHAPE, "dtype": "uint16"}]})
        for event, frame in zip(events, frames, strict=False):
            writer.frameReady(frame.copy(), event, {"runner_time_ms": 1.0})
        assert writer.stats().frames_appended == 100
        writer.frameReady(np.zeros((10, 10), np.uint16), events[100], None)
        deadline = time.monotonic() + 30
        while writer.error is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the child's error arrives on the receiving thread
        assert isinstance(writer.error, az.FrameError) and "(10, 10)" in str(writer.error)
        writer.sequenceFinished(sequence)
        with pytest.raises(az.WriterError):
            writer.raise_if_failed()
    finally:
        writer.close()
    assert writer.stats().frames_appended == 100
    np.testing.assert_array_equal(zarr.open_array(str(path / "0"), mode="r")[:100], frames)


def test_the_writer_process_stores_what_was_sent_even_when_the_parent_is_gone_before_its_acks(
    tmp_path: Path,
) -> None:
    """The child's loop (run here on a thread): the parent sends 40 frames and closes its end without
    reading a reply, so the child's acks and replies meet a closed socket. It still stores all 40,
    then closes the run as failed at end-of-file."""
    import pickle
    import socket
    import threading
    from multiprocessing import shared_memory
    from multiprocessing.connection import Connection

    from acqzarr.mda._child import _Child

    ours, theirs = socket.socketpair()
    parent, child = Connection(ours.detach()), Connection(theirs.detach())
    memory = shared_memory.SharedMemory(create=True, size=40 * SHAPE[0] * SHAPE[1] * 2)
    try:
        ring = np.ndarray((40, *SHAPE), np.uint16, buffer=memory.buf)
        frames = np.random.default_rng(3).integers(0, 4096, (40, *SHAPE), dtype=np.uint16)
        ring[:] = frames
        path = tmp_path / "gone.zarr"
        sequence = useq.MDASequence(time_plan={"interval": 0, "loops": 50})
        info = {"image_infos": [{"plane_shape": SHAPE, "dtype": "uint16"}]}
        messages: list[tuple[Any, ...]] = [
            ("call", "init", (str(path), {})),
            ("call", "start", (sequence, info)),
            ("ring", 1, memory.name, 40, SHAPE, "<u2"),
            *(("frame", t, {"t": t}, {"runner_time_ms": float(t)}) for t in range(40)),
        ]
        for message in messages:
            parent.send_bytes(pickle.dumps(message))
        parent.close()  # gone before any reply or ack
        loop = threading.Thread(target=_Child(child).run)
        loop.start()
        loop.join(60)
        assert not loop.is_alive()
        del ring
    finally:
        memory.close()
        memory.unlink()
    stored = zarr.open_array(str(path / "0"), mode="r")
    np.testing.assert_array_equal(stored[:40], frames)
    session = _session(path)
    assert session["completed"] is False and "the MDA's process ended" in session["error"]


def test_a_message_the_parent_cannot_read_is_an_error_and_ends_the_writer_process(tmp_path: Path) -> None:
    """The receiving thread never ends silently (a relay waiting for a slot would wait forever):
    a message it cannot unpickle is the writer's error, the child is stopped, and what follows
    raises instead of waiting."""
    import pickle

    writer = MDAWriter(tmp_path / "unreadable.zarr", process=True)
    try:
        child = writer._child
        assert child is not None

        def garbled() -> Any:
            raise pickle.UnpicklingError("garbled")

        # Once the receiving thread waits in the real recv, the message after this call's reply is
        # garbled (patched before it got there, the reply itself would be).
        deadline = time.monotonic() + 30
        while not _waits_in_recv(child._receiver) and time.monotonic() < deadline:
            time.sleep(0.001)
        child._conn.recv = garbled  # type: ignore[method-assign]
        with pytest.raises(az.WriterError, match="no stream yet"):
            child.call("stats", None)
        deadline = time.monotonic() + 30
        while writer.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert isinstance(writer.error, az.WriterError) and "garbled" in str(writer.error)
        with pytest.raises(az.WriterError, match="exited with code"):
            child.call("stats", None)
    finally:
        writer.close()


def _waits_in_recv(thread: threading.Thread) -> bool:
    """``thread`` is inside a ``Connection`` read (its stack, as the interpreter shows it now)."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name in ("_recv", "_recv_bytes"):
            return True
        frame = frame.f_back
    return False
