"""A series sent to `acqzarr serve` that asks to resume its store (protocol 1.1, series_start's
``resume``): the server continues the store at its published extent, refuses one written with other
settings with every mismatch reaching the sender, starts one that does not exist, and still refuses
an existing store to a series that did not ask.  Real servers on loopback, stores read back with
zarr-python and tensorstore."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from acqzarr.errors import ProtocolError
from acqzarr.ingest import Sender, SeriesRejected
from acqzarr.ingest.protocol import SeriesStart, encode_header, minor_needed, parse_header
from acqzarr.ingest.status import rejection
from ingest_helpers import (
    SMALL_FRAME_HEADER,
    SMALL_SERIES,
    WAIT,
    InProcess,
    Served,
    assert_store,
    free_port,
    hold_closes,
    running_server,
    small_frame,
    wait_until,
)
from readback import read_tensorstore, read_zarr


def record(root: Path, sid: str) -> dict[str, Any]:
    doc = json.loads((root / sid / "cam0" / "zarr.json").read_text())
    result: dict[str, Any] = doc["attributes"]["acqzarr_session"]
    return result


def frames_in(root: Path, sid: str) -> np.ndarray[Any, Any]:
    """Level 0 of the series' array, as zarr-python and tensorstore both read it (they agree)."""
    path = root / sid / "cam0" / "0"
    data = read_zarr(path)
    np.testing.assert_array_equal(read_tensorstore(path, 3), data)
    return data


def hashes(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def send_frames(sender: Sender, frames: range) -> None:
    for i in frames:
        buf = sender.acquire((4, 6), "uint16")
        buf[...] = small_frame(i)
        sender.send(buf, key="cam0", frame_id=i, timestamp_ns=1000 * i)


def test_a_series_resumed_after_a_clean_end_continues_its_store(tmp_path: Path) -> None:
    """Run 1 sends frames 0-6 and ends; run 2, the same series_id with resume, sends 7-11: one store
    holding all twelve in order (an odd split: run 2 starts inside a chunk of 2), its frame ids
    both runs', and a session record with two serve segments, both completed."""
    root = tmp_path / "root"
    served = Served(root)
    try:
        with Sender(served.endpoint, status_endpoint=served.status_endpoint, timeout=30) as sender:
            with sender.series("run", SMALL_SERIES, user_data={"run": 1}):
                send_frames(sender, range(7))
            first = sender.summary
            with sender.series("run", SMALL_SERIES, user_data={"run": 2}, resume=True):
                send_frames(sender, range(7, 12))
            second = sender.summary
        assert first is not None and first["completed"] and first["resumed"] is False
        assert second is not None and second["completed"] and second["resumed"] is True
        assert second["frames_total"] == 5
        expected = np.stack([small_frame(i) for i in range(12)])
        assert frames_in(root, "run").tobytes() == expected.tobytes()
        group = zarr.open_group(str(root / "run"), mode="r")
        assert np.asarray(group["cam0/acqzarr_frames/frame_id"][...]).tolist() == list(range(12))  # type: ignore[index]
        rec = record(root, "run")
        assert [s["ended"] for s in rec["segments"]] == ["completed", "completed"]
        assert [s["frames_accepted"] for s in rec["segments"]] == [7, 5]
        assert rec["completed"] is True and rec["frames_on_disk"] == 12 and rec["frames_accepted"] == 12
        source = rec["source"]  # the last segment's writer: the resumed series
        assert source["kind"] == "serve" and source["series_id"] == "run" and source["resume"] is True
        assert source["end"] == "series_end" and source["user_data"]["series_start"] == {"run": 2}
        assert served.status()["rejected"] == {}
    finally:
        served.shutdown()


@pytest.mark.slow  # server or sender processes
def test_a_series_resumed_after_the_server_was_killed_keeps_what_it_published(tmp_path: Path) -> None:
    """`acqzarr serve` SIGKILLed mid-series (no series_end, no close): a new server resumes the
    store at the extent the killed one published, and the frames sent after the kill follow
    those; the killed segment stays in the record, as killed."""
    settings = {**SMALL_SERIES, "max_unflushed_seconds": 0.2}  # published soon after they arrive
    base = tmp_path / "one"
    base.mkdir()
    with running_server(base, idle_timeout=60.0) as srv:
        root = srv.root
        with Sender(srv.tcp, status_endpoint=srv.status_endpoint, timeout=30) as sender:
            sender.start_series("run", settings)
            send_frames(sender, range(9))

            def published() -> int:
                try:
                    return int(zarr.open_array(str(root / "run" / "cam0" / "0"), mode="r").shape[0])
                except Exception:
                    return 0

            wait_until(lambda: published() == 9, "the 9 frames published")
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(WAIT)
            srv.proc.returncode = 0  # killed on purpose: running_server's exit check is not about it
    assert record(root, "run")["completed"] is False
    base2 = tmp_path / "two"
    base2.mkdir()
    with (
        running_server(base2, root=str(root)) as srv2,
        Sender(srv2.tcp, status_endpoint=srv2.status_endpoint, timeout=30) as sender,
    ):
        with sender.series("run", settings, resume=True):
            send_frames(sender, range(9, 14))
        assert sender.summary is not None and sender.summary["resumed"] is True
    expected = np.stack([small_frame(i) for i in range(14)])
    assert frames_in(root, "run").tobytes() == expected.tobytes()
    rec = record(root, "run")
    assert [s["ended"] for s in rec["segments"]] == ["killed", "completed"]
    assert rec["completed"] is True and rec["frames_on_disk"] == 14


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"dtype": "uint8"}, "dtype"),
        ({"compression": {"cname": "zstd", "clevel": 3, "shuffle": "bit"}}, "compression"),
    ],
)
def test_a_resume_with_other_settings_is_refused_with_the_mismatch_and_the_store_untouched(
    tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    """A resume asking for other array settings than the store was written with: the sender's
    SeriesRejected (reason 'resume') names the mismatch, within a couple of seconds; not a byte of
    the store changed and the next series of the server goes on."""
    root = tmp_path / "root"
    served = Served(root)
    try:
        with Sender(served.endpoint, status_endpoint=served.status_endpoint, timeout=30) as sender:
            with sender.series("run", SMALL_SERIES):
                send_frames(sender, range(4))
            before = hashes(root / "run")
            other = {"arrays": [{**SMALL_SERIES["arrays"][0], **change}]}
            sender.start_series("run", other, resume=True)
            t0 = time.monotonic()
            with pytest.raises(SeriesRejected) as caught:
                while time.monotonic() - t0 < WAIT:
                    time.sleep(0.01)
                    sender.send(np.zeros((4, 6), np.dtype(other["arrays"][0]["dtype"])), key="cam0")
            assert time.monotonic() - t0 < 3.0
            error = caught.value
            assert isinstance(error, ProtocolError) and error.reason == "resume"
            text = str(error)
            assert "the server rejected series 'run'" in text and "cannot resume" in text
            assert named in text and "the store is unchanged" in text
            with sender.series("other", SMALL_SERIES):  # the server goes on
                send_frames(sender, range(2))
        assert hashes(root / "run") == before
        assert frames_in(root, "run").tobytes() == np.stack([small_frame(i) for i in range(4)]).tobytes()
        [refused] = served.status()["rejected_series"]
        assert refused["reason"] == "resume" and named in refused["message"]
    finally:
        served.shutdown()


def test_a_resume_of_a_store_that_does_not_exist_starts_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    served = Served(root)
    try:
        with Sender(served.endpoint, status_endpoint=served.status_endpoint, timeout=30) as sender:
            with sender.series("fresh", SMALL_SERIES, resume=True):
                send_frames(sender, range(3))
            assert sender.summary is not None
            assert sender.summary["completed"] is True and sender.summary["resumed"] is False
        assert frames_in(root, "fresh").tobytes() == np.stack([small_frame(i) for i in range(3)]).tobytes()
        rec = record(root, "fresh")
        assert len(rec["segments"]) == 1 and rec["source"]["resume"] is True
    finally:
        served.shutdown()


def test_without_resume_an_existing_store_is_still_refused_and_says_how_to_continue(tmp_path: Path) -> None:
    root = tmp_path / "root"
    served = Served(root)
    try:
        with Sender(served.endpoint, status_endpoint=served.status_endpoint, timeout=30) as sender:
            with sender.series("run", SMALL_SERIES):
                send_frames(sender, range(2))
            before = hashes(root / "run")
            sender.start_series("run", SMALL_SERIES)
            with pytest.raises(SeriesRejected, match="series_exists") as caught:
                sender.end_series()
            assert "a series_start with resume continues it" in str(caught.value)
        assert hashes(root / "run") == before
    finally:
        served.shutdown()


def test_a_resume_is_refused_while_the_series_is_open_and_where_a_detector_writes(tmp_path: Path) -> None:
    """The server's own rules hold: a resume of a series still open is 'series_open' (one writer
    per store); the directory a detector input's stores go in is never resumed by a sender
    ('resume'), whatever is there; the path is the root's, as for every series."""
    root = tmp_path / "root"
    detector = {"name": "eiger", "protocol": "dectris-stream2", "connect": f"tcp://127.0.0.1:{free_port()}"}
    srv = InProcess(root, detectors=[detector], max_open_series=2)
    try:
        srv.start("A")
        srv.send("A", 0, {"htype": "series_start", "settings": SMALL_SERIES, "resume": True})
        (root / "eiger").mkdir()
        srv.send("eiger", 0, {"htype": "series_start", "settings": SMALL_SERIES, "resume": True})
        refused = {r["series_id"]: r for r in srv.server.snapshot()["rejected_series"]}
        assert refused["A"]["reason"] == "series_open"
        assert refused["eiger"]["reason"] == "resume" and "detector 'eiger'" in refused["eiger"]["message"]
        assert list((root / "eiger").iterdir()) == []
        srv.frames("A", 1, 2)
        srv.end("A", 3)
        srv.server.wait_finalized()
    finally:
        srv.server.close()
    # A detector whose stores are named directly under the root could be writing any of them.
    flat = InProcess(tmp_path / "flat", detectors=[{**detector, "store": "{series}.zarr"}])
    try:
        flat.send("x.zarr", 0, {"htype": "series_start", "settings": SMALL_SERIES, "resume": True})
        [refused_flat] = flat.server.snapshot()["rejected_series"]
        assert refused_flat["reason"] == "resume" and "'{series}.zarr'" in refused_flat["message"]
        flat.series("y.zarr", 1)  # without resume a series starts as ever
        assert flat.server.snapshot()["series_finished"] == 1
    finally:
        flat.server.close()


def test_resume_is_protocol_1_1_and_a_1_0_server_refuses_it_clearly(tmp_path: Path) -> None:
    """How the minor version is expressed: ``version`` stays 1, ``resume`` is an optional field left
    out while false (so a 1.1 sender's ordinary series_start is what a 1.0 server knows), and a
    1.0 server, which forbids unknown fields, refuses a series_start carrying it: nothing is
    started.  The sender hears that as a 'version' refusal (the server's status has no
    ``protocol_minor``), not as silence."""
    plain = SeriesStart(htype="series_start", version=1, series_id="s", msg_number=0, settings={})
    asked = plain.model_copy(update={"resume": True})
    assert b"resume" not in encode_header(plain) and minor_needed(plain) == 0
    assert json.loads(encode_header(asked))["resume"] is True and minor_needed(asked) == 1
    assert parse_header(encode_header(asked), 65536) == asked
    old = json.loads(encode_header(asked))
    with pytest.raises(ProtocolError, match="resume"):  # a 1.1 server still checks its type strictly
        parse_header(json.dumps({**old, "resume": 1}).encode(), 65536)
    snap_1_0 = {"protocol_version": 1, "rejected_series": []}
    refusal = rejection(snap_1_0, "s", 5, needs_minor=1)
    assert refusal is not None and refusal.reason == "version"
    assert "protocol 1.0" in str(refusal) and "needs 1.1" in str(refusal) and "`resume`" in str(refusal)
    assert rejection(snap_1_0, "s", 5) is None
    assert rejection({**snap_1_0, "protocol_minor": 1}, "s", 5, needs_minor=1) is None


def test_a_sender_asking_a_1_0_server_to_resume_hears_it_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1.0 server (its header schema without ``resume``, its status without ``protocol_minor``):
    the series_start is rejected as 'header', nothing is stored, and the sender's next call raises
    SeriesRejected('version') within a couple of seconds."""
    import acqzarr.ingest.server as server_module
    from acqzarr.ingest.status import Counters

    real_parse, real_snapshot = server_module.parse_header, Counters.snapshot

    def parse_1_0(raw: bytes, max_bytes: int) -> Any:
        if "resume" in json.loads(raw):
            raise ProtocolError("header", "series_start.resume: Extra inputs are not permitted")
        return real_parse(raw, max_bytes)

    def snapshot_1_0(self: Counters) -> dict[str, Any]:
        snap = real_snapshot(self)
        del snap["protocol_minor"]
        return snap

    monkeypatch.setattr(server_module, "parse_header", parse_1_0)
    monkeypatch.setattr(Counters, "snapshot", snapshot_1_0)
    root = tmp_path / "root"
    served = Served(root)
    try:
        with Sender(served.endpoint, status_endpoint=served.status_endpoint, timeout=30) as sender:
            sender.start_series("run", SMALL_SERIES, resume=True)
            t0 = time.monotonic()
            with pytest.raises(SeriesRejected, match=r"version: .*protocol 1\.0") as caught:
                while time.monotonic() - t0 < WAIT:
                    time.sleep(0.01)
                    sender.send(small_frame(0), key="cam0")
            assert time.monotonic() - t0 < 3.0 and caught.value.reason == "version"
        snap = served.status()
        assert snap["rejected"]["header"] == 1 and snap["series_started"] == 0
        assert not (root / "run").exists()
    finally:
        served.shutdown()


@pytest.mark.slow  # server or sender processes
def test_acqzarr_send_resume_continues_the_series(tmp_path: Path) -> None:
    """`acqzarr send --resume` twice with the same --series-id: one store, both runs' frames."""
    root = tmp_path / "root"
    served = Served(root)
    try:
        command = [sys.executable, "-m", "acqzarr", "send", "--driver", "simulated.noise"]
        command += ["--frames", "5", "--option", "height=16", "--option", "width=8"]
        command += ["--endpoint", served.endpoint, "--series-id", "cli", "--status", served.status_endpoint]
        for run in range(2):
            result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            assert ("(resumed)" in result.stdout) == (run == 1), result.stdout
        data = read_zarr(root / "cli" / "cam0" / "0")
        assert data.shape == (10, 16, 8)
        np.testing.assert_array_equal(read_tensorstore(root / "cli" / "cam0" / "0", 3), data)
        assert [s["frames_accepted"] for s in record(root, "cli")["segments"]] == [5, 5]
    finally:
        served.shutdown()


def test_a_resume_of_a_series_still_finalizing_waits_for_its_close_then_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resume arrives while the series' previous close is still running (held here): it is not
    refused and never opens the store beside that close; it waits, and continues the store once
    the close is done."""
    holds = hold_closes(monkeypatch, "A")
    root = tmp_path / "root"
    served = Served(root, max_open_series=2)  # a slot is free: only A's own close holds the resume
    try:
        served.series("A", 3)  # frames 1-3
        wait_until(lambda: bool(holds) and holds[0].entered.is_set(), "A's close entered")
        served.send("A", 0, {"htype": "series_start", "settings": SMALL_SERIES, "resume": True})
        for n, i in enumerate(range(4, 6), start=1):
            served.send("A", n, {**SMALL_FRAME_HEADER, "frame_id": i}, small_frame(i).tobytes())
        served.send("A", 3, {"htype": "series_end"})
        snap = served.wait_status(lambda s: s["waiting_series"] == ["A"], "the resume waiting")
        assert list(snap["finalizing_series"]) == ["A"] and snap["rejected"] == {}
        holds[0].release.set()
        wait_until(lambda: len(holds) == 2, "the resumed series open")
        holds[1].release.set()
        snap = served.wait_status(lambda s: s["series_finished"] == 2, "both finalized")
    finally:
        for held in holds:
            held.release.set()
        served.shutdown()
    assert snap["rejected"] == {} and [r["resumed"] for r in snap["recent_series"]] == [False, True]
    assert_store(root, "A", range(1, 6))
    assert [s["ended"] for s in record(root, "A")["segments"]] == ["completed", "completed"]
