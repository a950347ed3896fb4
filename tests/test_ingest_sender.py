"""``Sender`` against a server loop on a thread, over real loopback sockets: what the README shows
works as shown, and a series the server refuses is refused to its sender too, with the reason."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import acqzarr as az
from acqzarr.errors import ConfigError, ProtocolError
from acqzarr.ingest import Sender, SeriesRejected
from acqzarr.ingest.protocol import SERVER_FIELDS
from ingest_helpers import SMALL_SERIES, WAIT, Served, assert_store, free_port, small_frame


def readme_settings() -> az.StreamSettings:
    """The README's first StreamSettings (its store, overwrite and s3 are the caller's), small."""
    return az.StreamSettings(
        store="run.zarr",
        version=3,
        overwrite=True,
        arrays=[
            az.ArraySettings(
                key="cam0",
                dtype="uint16",
                dimensions=[
                    az.Dimension(name="t", kind="time", size=0, chunk=2, shard=1),
                    az.Dimension(name="y", kind="space", size=4, chunk=4, shard=1),
                    az.Dimension(name="x", kind="space", size=6, chunk=6, shard=1),
                ],
                compression=az.Blosc(cname="lz4", clevel=1, shuffle="byte"),
            )
        ],
    )


def test_the_readme_sender_example_writes_its_series(tmp_path: Path) -> None:
    """The README's Python example, verbatim in shape: a full StreamSettings (store, overwrite and
    the default s3 section included) is sent as the series' settings and the server takes it."""
    root = tmp_path / "root"
    served = Served(root)
    try:
        settings = readme_settings()
        with (
            Sender(served.endpoint, status_endpoint=served.status_endpoint, timeout=30) as sender,
            sender.series("run-002", settings),
        ):
            for i in range(5):
                buf = sender.acquire((4, 6), "uint16")
                buf[...] = small_frame(i)
                sender.send(buf, key="cam0", frame_id=i, timestamp_ns=1000 * i)
        assert sender.summary is not None and sender.summary["completed"] is True
        assert_store(root, "run-002", range(5))
        assert not (tmp_path / "run.zarr").exists()
    finally:
        served.shutdown()


@pytest.mark.parametrize("field", SERVER_FIELDS)
def test_settings_carrying_a_server_field_are_refused_before_sending(field: str) -> None:
    """A mapping with a field the server would refuse the series for is a ConfigError at
    start_series, before any message leaves (the sender needs no server for it)."""
    settings = {**SMALL_SERIES, field: readme_settings().model_dump(mode="json")[field]}
    with Sender(f"tcp://127.0.0.1:{free_port()}", timeout=1) as sender:
        with pytest.raises(ConfigError, match=f"'{field}' is set by the server"):
            sender.start_series("run", settings)
        with pytest.raises(ConfigError, match="names a directory on the server"):
            sender.start_series("../run", SMALL_SERIES)
        assert sender.sent == 0


def test_a_refused_series_reaches_its_sender_with_the_reason_and_stops_it(tmp_path: Path) -> None:
    """A series_start refused on the server (its store exists) raises SeriesRejected from the
    sender's next send, within about a second, not after the 60 s confirm timeout; the sender
    sends nothing more of it, and the store that was there is left as it was."""
    root = tmp_path / "root"
    (root / "taken").mkdir(parents=True)
    (root / "taken" / "keep.txt").write_text("earlier run")
    served = Served(root)
    try:
        with Sender(served.endpoint, status_endpoint=served.status_endpoint) as sender:  # timeout None: 60 s
            sender.start_series("taken", SMALL_SERIES)
            t0 = time.monotonic()
            with pytest.raises(SeriesRejected) as caught:
                while time.monotonic() - t0 < WAIT:
                    sender.send(small_frame(sender.sent), key="cam0")
                    time.sleep(0.005)
            elapsed = time.monotonic() - t0
            sent = sender.sent
            error = caught.value
            assert isinstance(error, ProtocolError) and error.reason == "series_exists"
            assert "the server rejected series 'taken'" in str(error) and "already exists" in str(error)
            assert elapsed < 2.0, f"the sender heard of the refusal after {elapsed:.2f} s"
            with pytest.raises(SeriesRejected, match="series_exists"):  # and again, sending nothing
                sender.send(small_frame(0), key="cam0")
            with pytest.raises(SeriesRejected, match="series_exists"):
                sender.end_series()
            assert sender.sent == sent
        # Every frame the sender sent reached the server (as a frame of a series never started),
        # and none after the refusal.
        snap = served.wait_status(lambda s: s["rejected"].get("unknown_series", 0) >= sent, "frames in")
        time.sleep(0.3)
        snap = served.status()
        assert snap["rejected"] == {"series_exists": 1, "unknown_series": sent}
        [refused] = snap["rejected_series"]
        assert refused["series_id"] == "taken" and refused["reason"] == "series_exists"
        assert sorted(p.name for p in (root / "taken").iterdir()) == ["keep.txt"]
    finally:
        served.shutdown()


def test_end_series_of_a_refused_series_raises_at_once(tmp_path: Path) -> None:
    """A series refused as 'busy' (another one holds the only slot), ended at once: end_series
    raises SeriesRejected instead of waiting 60 s for a summary that never comes."""
    served = Served(tmp_path / "root", max_open_series=1)
    try:
        served.start("A")
        served.wait_status(lambda s: "A" in s["open_series"], "A open")
        with Sender(served.endpoint, status_endpoint=served.status_endpoint) as sender:
            t0 = time.monotonic()
            sender.start_series("B", SMALL_SERIES)
            with pytest.raises(SeriesRejected, match=r"busy: the server rejected series 'B': 1 series open"):
                sender.end_series()
            assert time.monotonic() - t0 < 5.0
            sender.start_series("C", SMALL_SERIES)  # a refusal does not stick to the next series
            assert sender.sent == 0
    finally:
        served.shutdown()


def test_acqzarr_send_exits_1_with_the_reason_of_a_refusal(tmp_path: Path) -> None:
    """`acqzarr send` with a series id whose store exists: exit 1 with the server's reason, having
    stopped sending long before its 1000 frames."""
    root = tmp_path / "root"
    (root / "run-001").mkdir(parents=True)
    served = Served(root)
    try:
        command = [sys.executable, "-m", "acqzarr", "send", "--driver", "simulated.noise"]
        command += ["--frames", "1000", "--option", "height=64", "--option", "width=48"]
        command += ["--option", "fps=100", "--endpoint", served.endpoint, "--series-id", "run-001"]
        command += ["--status", served.status_endpoint]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "acqzarr: error: series_exists: the server rejected series 'run-001'" in result.stderr
        assert "already exists" in result.stderr and "not finalized" not in result.stderr
        assert "choose another --series-id" in result.stderr
        assert "frames sent before it was heard" in result.stderr
        snap = served.status()
        assert snap["rejected"]["series_exists"] == 1
        assert snap["rejected"].get("unknown_series", 0) < 200  # ~0.1-0.3 s of 100 fps, not 10 s
    finally:
        served.shutdown()
