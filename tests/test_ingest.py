"""`acqzarr serve` in a child process, fed over real loopback sockets (tcp and ipc) from this process.

The stores it writes are read back with zarr-python and tensorstore: what lands must be exactly
what was sent, and everything lost or rejected on the way must be counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import acqzarr_drivers as drivers
import numpy as np
import pytest
import yaml
import zarr
import zmq
import zmq.auth

import acqzarr as az
from acqzarr.ingest import CurveClient, Sender
from acqzarr.recording.synthetic import camera_frames
from builders import UNSHARDED, array_document, frames_for
from ingest_helpers import ServerProcess, header, loopback_server, raw_socket, running_server
from readback import assert_reads_back


def two_camera_settings(version: int) -> dict[str, Any]:
    """cam0: (t, y, x) uint16; cam1: (t, c, y, x) uint8, whose frames fill c then t."""
    return {
        "version": version,
        "arrays": [
            array_document(version, (0, 40, 48), (4, 16, 16)),
            array_document(
                version,
                (0, 2, 24, 20),
                (3, 1, 8, 8),
                shards=(1, 1, 2, 2),
                key="cam1",
                dtype="uint8",
                compression=None,
            ),
        ],
    }


def frames_meta(store: Path, key: str) -> dict[str, np.ndarray[Any, Any]]:
    group = zarr.open_group(str(store / key / "acqzarr_frames"), mode="r")
    return {name: np.asarray(group[name][:]) for name in group.array_keys()}  # type: ignore[index]


def session(store: Path, key: str, version: int) -> dict[str, Any]:
    doc = store / key / ("zarr.json" if version == 3 else ".zattrs")
    attrs = json.loads(doc.read_text())
    record: dict[str, Any] = (attrs["attributes"] if version == 3 else attrs)["acqzarr_session"]
    return record


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One lossless (PULL) server for the module, started from configs/serve-loopback.yaml."""
    with loopback_server(tmp_path_factory.mktemp("serve")) as srv:
        yield srv


@pytest.mark.parametrize(
    ("transport", "encoding", "version"),
    [("tcp", "raw", 3), ("tcp", "blosc2", 2), ("ipc", "raw", 2), ("ipc", "blosc2", 3)],
)
def test_what_lands_is_exactly_what_was_sent(
    server: ServerProcess, transport: str, encoding: str, version: int
) -> None:
    sid = f"rt-{transport}-{encoding}"
    cam0 = camera_frames(21, (40, 48), "uint16", seed=1)  # compressible, like a camera
    cam1 = frames_for((24, 20), 14, "uint8", seed=2)
    before = server.status()
    endpoint = server.tcp if transport == "tcp" else server.ipc
    with (
        Sender(endpoint, encoding=encoding, timeout=30, status_endpoint=server.status_endpoint) as sender,  # type: ignore[arg-type]
        sender.series(sid, two_camera_settings(version), user_data={"sample": "x"}),
    ):
        for i in range(21):  # the cameras interleave; cam1 sends every third time
            sender.send(cam0[i], key="cam0", frame_id=100 + i, timestamp_ns=1000 * i, user_data={"i": i})
            if i % 3 == 0:
                sender.send(cam1[i // 3], key="cam1")
                sender.send(cam1[7 + i // 3], key="cam1")
    summary = sender.summary  # end_series waited for the server to finalize the series
    assert summary is not None and summary == server.wait_series(sid)
    assert summary["completed"] is True and summary["end"] == "series_end"
    assert summary["frames_total"] == 35 and summary["gaps"] == 0 and summary["rejected"] == {}
    store = server.root / sid
    assert_reads_back(store / "cam0" / "0", version, cam0)
    order = [j for i in range(0, 21, 3) for j in (i // 3, 7 + i // 3)]
    assert_reads_back(store / "cam1" / "0", version, cam1[order].reshape(7, 2, 24, 20))
    meta = frames_meta(store, "cam0")
    np.testing.assert_array_equal(meta["frame_id"], np.arange(100, 121))
    np.testing.assert_array_equal(meta["timestamp_ns"], 1000 * np.arange(21))
    assert (meta["gap_before"] == 0).all() and (np.diff(meta["receive_ns"]) >= 0).all()
    np.testing.assert_array_equal(frames_meta(store, "cam1")["frame_id"], np.arange(14).reshape(7, 2))
    record = session(store, "cam0", version)
    assert record["frames_on_disk"] == 21 and record["completed"] is True and record["stop"] is not None
    assert record["source"]["kind"] == "serve" and record["source"]["series_id"] == sid
    assert record["source"]["user_data"]["series_start"] == {"sample": "x"}
    assert [json.loads(text)["user_data"] for text in meta["json"]] == [{"i": i} for i in range(21)]
    assert "json" not in frames_meta(store, "cam1")  # no user_data sent: no JSON column
    after = server.status()
    raw = cam0.nbytes + cam1.nbytes
    assert after["bytes_raw"] - before["bytes_raw"] == raw
    wire = after["bytes_received"] - before["bytes_received"]
    assert wire == raw if encoding == "raw" else wire < raw


@pytest.mark.slow
def test_push_backpressure_loses_nothing_with_a_stalled_writer(server: ServerProcess) -> None:
    """SIGSTOP the server mid-series: the sender blocks within a few frames, then everything lands."""
    data = frames_for((512, 512), 48, "uint16", seed=3)
    settings = {"arrays": [array_document(3, (0, 512, 512), (8, 256, 256))]}
    with Sender(server.tcp, hwm=2, buffers=2, timeout=60) as sender:
        sender.start_series("backpressure", settings)
        for i in range(4):
            sender.send(data[i], key="cam0")
        server.wait_for(lambda s: s["open_series"].get("backpressure", {}).get("frames") == 4)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            thread = threading.Thread(target=lambda: [sender.send(f, key="cam0") for f in data[4:]])
            thread.start()
            time.sleep(1.0)
            stalled = sender.sent
            time.sleep(0.5)
            assert sender.sent == stalled < len(data), "the sender should block while the writer stalls"
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        thread.join(60)
        sender.end_series()
    summary = server.wait_series("backpressure")
    assert summary["completed"] is True and summary["frames_total"] == len(data) and summary["gaps"] == 0
    assert_reads_back(server.root / "backpressure" / "cam0" / "0", 3, data)


@pytest.mark.slow
def test_a_vanished_sender_is_finalized_after_the_idle_timeout(server: ServerProcess) -> None:
    data = frames_for((40, 48), 5, "uint16", seed=4)
    with Sender(server.tcp, timeout=30) as sender:
        sender.start_series("vanished", two_camera_settings(3))
        for frame in data:
            sender.send(frame, key="cam0")
    t0 = time.monotonic()
    summary = server.wait_series("vanished")
    assert time.monotonic() - t0 < 10
    assert summary["end"] == "idle_timeout" and summary["completed"] is False
    assert_reads_back(server.root / "vanished" / "cam0" / "0", 3, data)
    assert session(server.root / "vanished", "cam0", 3)["completed"] is False


@pytest.mark.parametrize(
    "series_id",
    ["..", "../evil", "a/../../evil", "/tmp/evil", "a/b", "a\\b", "", ".hidden", "x" * 129, "a\x00b", "é"],
)
def test_path_traversal_in_series_id_is_rejected(server: ServerProcess, series_id: str) -> None:
    before = server.status()["rejected"].get("bad_path", 0)
    listing = sorted(p.name for p in server.root.parent.iterdir())
    ctx, sock = raw_socket(server.tcp)
    try:
        start = {
            "htype": "series_start",
            "series_id": series_id,
            "msg_number": 0,
            "settings": two_camera_settings(3),
        }
        sock.send_multipart([header(**start), b""])
    finally:
        sock.close()
        ctx.term()
    server.wait_for(lambda s: s["rejected"].get("bad_path", 0) == before + 1)
    assert sorted(p.name for p in server.root.parent.iterdir()) == listing
    assert not Path("/tmp/evil").exists()


def test_path_traversal_in_keys_is_rejected(server: ServerProcess) -> None:
    before = server.status()["rejected"]
    evil = two_camera_settings(3)
    evil["arrays"][0]["key"] = "../evil"
    ctx, sock = raw_socket(server.tcp)
    try:
        start = {"htype": "series_start", "series_id": "keys", "msg_number": 0}
        sock.send_multipart([header(**start, settings=evil), b""])  # the settings' key: never opened
        sock.send_multipart([header(**start, settings=two_camera_settings(3)), b""])
        frame = {
            "htype": "frame",
            "series_id": "keys",
            "frame_id": 0,
            "shape": [40, 48],
            "dtype": "uint16",
            "timestamp_ns": 0,
        }
        for n, key in enumerate(["../../evil", "/abs", "cam0/../../x", "cam0\\x"], start=1):
            sock.send_multipart([header(**frame, msg_number=n, key=key), bytes(40 * 48 * 2)])
        sock.send_multipart([header(htype="series_end", series_id="keys", msg_number=5), b""])
    finally:
        sock.close()
        ctx.term()
    summary = server.wait_series("keys")
    snap = server.wait_for(lambda s: s["rejected"].get("bad_path", 0) - before.get("bad_path", 0) == 4)
    assert snap["rejected"].get("settings", 0) - before.get("settings", 0) == 1
    assert summary["frames_total"] == 0 and summary["gaps"] == 4  # the rejected frames never got a number
    # Two images: the OME group lists them (bioformats2raw layout).
    assert sorted(p.name for p in (server.root / "keys").iterdir()) == ["OME", "cam0", "cam1", "zarr.json"]
    assert not (server.root / "evil").exists() and not (server.root.parent / "evil").exists()


@pytest.mark.slow
def test_send_and_status_commands(server: ServerProcess, tmp_path: Path) -> None:
    settings = tmp_path / "series.yaml"
    settings.write_text(
        yaml.safe_dump({"version": 2, "arrays": [array_document(2, (0, 64, 48), (8, 32, 16))]})
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "acqzarr",
            "send",
            "--driver",
            "simulated.noise",
            "--frames",
            "12",
            "--option",
            "height=64",
            "--option",
            "width=48",
            "--option",
            "fps=300",
            "--option",
            "ring=64",
            "--endpoint",
            server.ipc,
            "--encoding",
            "blosc2",
            "--series-id",
            "cli",
            "--settings",
            str(settings),
            "--status",
            server.status_endpoint,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "sent 12 frames of series 'cli'" in result.stdout
    assert "server: complete (series_end), 12 frames, 0 gaps" in result.stdout
    summary = server.wait_series("cli")
    assert summary["completed"] is True and summary["frames_total"] == 12
    store = server.root / "cli"
    ids = frames_meta(store, "cam0")["frame_id"]
    pool = drivers.create("simulated.noise", {"height": 64, "width": 48})._pool
    assert_reads_back(store / "cam0" / "0", 2, pool[ids % len(pool)])
    status = subprocess.run(
        [sys.executable, "-m", "acqzarr", "status", server.status_endpoint, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    snap = json.loads(status.stdout)
    assert snap["frames"] >= 12 and any(r["series_id"] == "cli" for r in snap["recent_series"])
    human = subprocess.run(
        [sys.executable, "-m", "acqzarr", "status", server.status_endpoint],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "cli: complete (series_end), 12 frames" in human.stdout


@pytest.mark.slow
def test_pub_sub_gaps_are_counted_exactly(tmp_path: Path) -> None:
    """A stalled SUB server makes a PUB sender drop; every drop is a counted gap, every sent frame lands."""
    data = frames_for((256, 256), 60, "uint16", seed=6)
    settings = {"arrays": [array_document(3, (0, 256, 256), (8, 128, 128))]}
    with (
        running_server(tmp_path, socket="sub", rcvhwm=1, idle_timeout=30) as server,
        Sender(server.tcp, socket="pub", hwm=1, timeout=30) as sender,
    ):
        sender.start_series("lossy", settings)
        for frame in data[:5]:
            time.sleep(0.05)
            sender.send(frame, key="cam0")
        server.wait_for(lambda s: s["open_series"].get("lossy", {}).get("frames") == sender.sent)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            for frame in data[5:45]:  # the queues fill and the rest are dropped
                sender.send(frame, key="cam0")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        time.sleep(0.3)
        for frame in data[45:]:
            sender.send(frame, key="cam0")
            time.sleep(0.02)
        sender.end_series()
        summary = server.wait_series("lossy")
        snap = server.status()
    assert sender.dropped > 0 and sender.sent + sender.dropped == len(data)
    assert summary["gaps"] == sender.dropped == snap["gaps"]
    assert summary["frames_total"] == sender.sent and summary["completed"] is False
    store = server.root / "lossy"
    meta = frames_meta(store, "cam0")
    assert int(meta["gap_before"].sum()) == sender.dropped
    # frame ids are the sender's own counter, so the ids that landed say exactly which frames did
    np.testing.assert_array_equal(np.diff(meta["frame_id"]) - 1, meta["gap_before"][1:])
    assert_reads_back(store / "cam0" / "0", 3, data[meta["frame_id"]])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_finalizes_open_series_and_exits_0(tmp_path: Path, signum: signal.Signals) -> None:
    data = frames_for((40, 48), 6, "uint16", seed=7)
    with running_server(tmp_path, idle_timeout=60) as server, Sender(server.tcp, timeout=30) as sender:
        sender.start_series("interrupted", two_camera_settings(2))
        for frame in data:
            sender.send(frame, key="cam0")
        server.wait_for(lambda s: s["open_series"].get("interrupted", {}).get("frames") == 6)
        server.proc.send_signal(signum)
        assert server.proc.wait(timeout=60) == 0
    store = server.root / "interrupted"
    assert_reads_back(store / "cam0" / "0", 2, data)
    record = session(store, "cam0", 2)
    assert record["source"]["end"] == "shutdown" and record["completed"] is False
    assert record["frames_on_disk"] == 6 and record["stop"] is not None
    assert f"stopped by {signum.name}" in (tmp_path / "serve.log").read_text()


@pytest.mark.slow
def test_curve_lets_only_authorized_senders_in(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    allowed = tmp_path / "authorized"
    keys.mkdir()
    allowed.mkdir()
    for name in ("server", "client", "intruder"):
        zmq.auth.create_certificates(str(keys), name)
    (allowed / "client.key").write_text((keys / "client.key").read_text())
    curve = {"secret_key_file": str(keys / "server.key_secret"), "authorized_keys_dir": str(allowed)}
    data = frames_for((40, 48), 4, "uint16", seed=8)
    with running_server(tmp_path, curve=curve) as server:
        good = CurveClient(str(keys / "client.key_secret"), str(keys / "server.key"))
        with (
            Sender(server.tcp, curve=good, timeout=30) as sender,
            sender.series("trusted", two_camera_settings(3)),
        ):
            for frame in data:
                sender.send(frame, key="cam0")
        assert server.wait_series("trusted")["completed"] is True
        assert_reads_back(server.root / "trusted" / "cam0" / "0", 3, data)
        bad = CurveClient(str(keys / "intruder.key_secret"), str(keys / "server.key"))
        for curve_client in (bad, None):
            with (
                Sender(server.tcp, curve=curve_client, timeout=1.0, linger=0) as sender,
                pytest.raises(az.BackpressureTimeout),
            ):
                sender.start_series("intruder", two_camera_settings(3))
        snap = server.status()
    assert snap["series_started"] == 1 and snap["rejected_total"] == 0
    assert not (server.root / "intruder").exists()


# -- fuzzing: malformed messages interleaved with good frames ----------------------------------------


def test_a_series_asking_for_more_memory_than_allowed_is_rejected(server: ServerProcess) -> None:
    """A sender's settings choose layer sizes; max_series_memory (8 GiB here) bounds what it may reserve."""
    before = server.status()["rejected"].get("settings", 0)
    huge = {"arrays": [array_document(3, (0, 20000, 20000), (32, 1000, 1000), shards=UNSHARDED)]}
    ctx, sock = raw_socket(server.tcp)
    try:
        start = {"htype": "series_start", "series_id": "greedy", "msg_number": 0, "settings": huge}
        sock.send_multipart([header(**start), b""])
    finally:
        sock.close()
        ctx.term()
    server.wait_for(lambda s: s["rejected"].get("settings", 0) == before + 1)
    assert not (server.root / "greedy").exists() and server.proc.poll() is None
