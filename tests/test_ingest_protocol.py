"""The ingest protocol and server config without sockets: header parsing, payload checks, config
validation, and the generated reference in docs/protocol.md."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
import pytest
import yaml
import zarr
import zmq
import zmq.auth

import acqzarr as az
from acqzarr.ingest import ServeConfig, load_serve_config
from acqzarr.ingest.config import endpoint_is_local
from acqzarr.ingest.doc import BEGIN, END, render
from acqzarr.ingest.protocol import (
    REASONS,
    Frame,
    SeriesEnd,
    SeriesStart,
    decode_payload,
    encode_header,
    encode_payload,
    parse_header,
)
from ingest_helpers import SMALL_SERIES, InProcess, small_frame

REPO = Path(__file__).resolve().parents[1]
FRAME: dict[str, Any] = {
    "htype": "frame",
    "version": 1,
    "series_id": "run-1",
    "msg_number": 3,
    "key": "cam0",
    "frame_id": 7,
    "shape": [4, 6],
    "dtype": "uint16",
    "timestamp_ns": 12,
}


def test_headers_round_trip() -> None:
    start = SeriesStart(htype="series_start", version=1, series_id="a", msg_number=0, preset="p")
    frame = Frame.model_validate_json(json.dumps(FRAME))
    end = SeriesEnd(htype="series_end", version=1, series_id="a", msg_number=9, user_data={"x": [1]})
    for header in (start, frame, end):
        assert parse_header(encode_header(header), 65536) == header


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff{", "json"),
        (b"[1]", "json"),
        (b"", "json"),
        (json.dumps({**FRAME, "version": 2}).encode(), "version"),
        (json.dumps({**FRAME, "extra": 1}).encode(), "header"),
        (json.dumps({**FRAME, "htype": "frames"}).encode(), "header"),
        (json.dumps({k: v for k, v in FRAME.items() if k != "dtype"}).encode(), "header"),
        (json.dumps({**FRAME, "shape": [4, 0]}).encode(), "header"),
        (json.dumps({**FRAME, "version": True}).encode(), "header"),
        (json.dumps({**FRAME, "msg_number": "3"}).encode(), "header"),
        (json.dumps({**FRAME, "frame_id": 7.0}).encode(), "header"),
        (json.dumps({**FRAME, "timestamp_ns": True}).encode(), "header"),
        (b'{"htype": "frame", "timestamp_ns": NaN}', "header"),
        (json.dumps({**FRAME, "dtype": "complex64"}).encode(), "header"),
        (json.dumps({**FRAME, "series_id": "../up"}).encode(), "bad_path"),
        (json.dumps({**FRAME, "key": "cam0/../../up"}).encode(), "bad_path"),
        (
            json.dumps({"htype": "series_start", "version": 1, "series_id": "a", "msg_number": 0}).encode(),
            "header",
        ),
        (json.dumps({**FRAME, "user_data": "x" * 70000}).encode(), "header_size"),
    ],
)
def test_bad_headers_name_their_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(az.ProtocolError) as info:
        parse_header(raw, 65536)
    assert info.value.reason == reason and reason in REASONS


def test_payloads_are_checked_against_the_header() -> None:
    frame = Frame.model_validate_json(json.dumps(FRAME))
    data = np.arange(24, dtype=np.uint16).reshape(4, 6)
    np.testing.assert_array_equal(decode_payload(frame, memoryview(data.tobytes()), None), data)
    with pytest.raises(az.ProtocolError, match="payload_size"):
        decode_payload(frame, memoryview(data.tobytes()[:-2]), None)
    packed = Frame.model_validate_json(json.dumps({**FRAME, "encoding": "blosc2"}))
    chunk = encode_payload(data, "blosc2")
    out = np.empty((4, 6), np.uint16)
    assert decode_payload(packed, memoryview(chunk), out) is not None
    np.testing.assert_array_equal(out, data)
    for bad in (chunk[:-1], encode_payload(data[:, :3].copy(), "blosc2"), bytes(32), b"x"):
        with pytest.raises(az.ProtocolError) as info:
            decode_payload(packed, memoryview(bad), out)
        assert info.value.reason in ("payload_size", "decode")
    big = (np.arange(9600) % 50).astype(np.uint16).reshape(96, 100)
    corrupt = bytearray(blosc2.compress(big, typesize=2, codec=blosc2.Codec.LZ4))
    corrupt[32:40] = b"\xff" * 8  # sizes intact, compressed stream broken
    header = Frame.model_validate_json(json.dumps({**FRAME, "shape": [96, 100], "encoding": "blosc2"}))
    with pytest.raises(az.ProtocolError) as info:
        decode_payload(header, memoryview(bytes(corrupt)), None)
    assert info.value.reason == "decode"


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.9.0.1:5555", True),
        ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True),
        ("ipc:///tmp/x.sock", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.168.1.2:5555", False),
        ("tcp://eth0:5555", False),
    ],
)
def test_loopback_detection(endpoint: str, local: bool) -> None:
    assert endpoint_is_local(endpoint) is local


def _config(tmp_path: Path, **data: Any) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"root": str(tmp_path / "root"), **data}))
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"endpoints": ["tcp://0.0.0.0:5555"]},
            "(root): endpoints ['tcp://0.0.0.0:5555'] are not loopback",
        ),
        ({"status_endpoint": "tcp://*:5556"}, "status_endpoint 'tcp://*:5556' is not loopback"),
        (
            {"endpoints": ["udp://127.0.0.1:1"]},
            "endpoints: expected tcp://HOST:PORT or ipc://PATH",
        ),
        ({"socket": "req"}, "socket: Input should be 'pull' or 'sub'"),
        ({"rcvhwm": 0}, "rcvhwm: Input should be greater than or equal to 1"),
        ({"colour": 1}, "colour: Extra inputs are not permitted"),
        ({"presets": {"p": {"arrays": []}}}, "presets.p: invalid settings"),
        ({"presets": {"p": {"store": "x", "arrays": []}}}, "store: set by the server"),
        ({"presets": {"p": {"s3": {}, "arrays": []}}}, "s3: set by the server"),
        (
            {"root": "gs://bucket/x"},
            "root: 'gs://bucket/x': use a directory or s3://bucket/prefix",
        ),
        ({"root": "s3://bucket"}, "expected s3://bucket/prefix"),
        (
            {"curve": {"secret_key_file": "nope", "authorized_keys_dir": "."}},
            "secret_key_file 'nope': no such file",
        ),
    ],
)
def test_invalid_server_configs_name_the_key(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(az.ConfigError) as info:
        load_serve_config(_config(tmp_path, **data))
    assert message in str(info.value)


def test_remote_binding_needs_allow_remote_or_curve(tmp_path: Path) -> None:
    remote = ["tcp://0.0.0.0:5555"]
    assert load_serve_config(_config(tmp_path, endpoints=remote, allow_remote=True)).allow_remote
    zmq.auth.create_certificates(str(tmp_path), "server")
    curve = {"secret_key_file": str(tmp_path / "server.key_secret"), "authorized_keys_dir": str(tmp_path)}
    assert load_serve_config(_config(tmp_path, endpoints=remote, curve=curve)).curve is not None


def test_shipped_config_and_set_overrides(tmp_path: Path) -> None:
    config = load_serve_config(REPO / "configs" / "serve-loopback.yaml", ["idle_timeout=3", "root=elsewhere"])
    assert config.idle_timeout == 3 and config.root == "elsewhere" and "camera-2048" in config.presets
    assert all(endpoint_is_local(e) for e in config.endpoints)
    assert ServeConfig(root="r").endpoints == ["tcp://127.0.0.1:5555"]


def test_serve_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acqzarr", "serve", str(_config(tmp_path, endpoints=["tcp://0.0.0.0:1"]))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "are not loopback" in result.stderr and not (tmp_path / "root").exists()


def test_sender_rejects_unknown_patterns() -> None:
    with pytest.raises(az.ConfigError, match="socket must be"):
        az.ingest.Sender("tcp://127.0.0.1:1", socket="req")  # type: ignore[arg-type]


def test_protocol_doc_is_generated_from_the_models() -> None:
    text = (REPO / "docs" / "protocol.md").read_text()
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert generated.strip() == render().strip(), "regenerate: see docs/protocol.md's GENERATED markers"


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[InProcess]:
    ingest = InProcess(tmp_path / "root")
    try:
        yield ingest
    finally:
        ingest.server.close()


def test_a_failing_writer_finalizes_only_its_series(
    in_process: InProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer error ends that series as write_error, counts the frame, and the server takes the
    next series."""
    server = in_process.server
    real_append = az.Stream.append
    calls = {"n": 0}

    def failing_append(self: az.Stream, frames: Any, key: str | None = None, **kw: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise az.WriterError("disk full (injected)")
        real_append(self, frames, key, **kw)

    monkeypatch.setattr(az.Stream, "append", failing_append)
    in_process.series("broken", 5)
    monkeypatch.setattr(az.Stream, "append", real_append)
    in_process.series("fine", 3)
    recent = {r["series_id"]: r for r in server.counters.recent}
    assert recent["broken"]["end"] == "write_error" and recent["broken"]["completed"] is False
    assert recent["broken"]["frames_total"] == 2
    # the failing frame counts as "append"; the two after it and the end find the series finalized
    assert dict(server.counters.rejected) == {"append": 1, "series_ended": 3}
    assert recent["fine"]["completed"] is True and recent["fine"]["frames_total"] == 3
    data = np.asarray(zarr.open_array(str(tmp_path / "root" / "broken" / "cam0" / "0"), mode="r")[:])
    np.testing.assert_array_equal(data, np.stack([small_frame(1), small_frame(2)]))


def test_per_frame_metadata_is_published_live_up_to_the_flushed_frames(
    in_process: InProcess, tmp_path: Path
) -> None:
    """Each status tick publishes the frame log for the frames on disk, never ahead of the image."""
    in_process.start("live")
    in_process.frames("live", 1, 5)  # layers of 2 frames: 4 flushed, 1 in a partial layer
    stream = in_process.server.series["live"].recording.stream
    deadline = time.monotonic() + 30
    while stream.stats("cam0").frames_flushed < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    in_process.server._tick()
    store = tmp_path / "root" / "live" / "cam0"
    ids = np.asarray(zarr.open_array(str(store / "acqzarr_frames" / "frame_id"), mode="r")[:])
    np.testing.assert_array_equal(ids, [1, 2, 3, 4])
    assert zarr.open_array(str(store / "0"), mode="r").shape[0] == 4
    in_process.send("live", 6, {"htype": "series_end"})
    in_process.server.wait_finalized()
    ids = np.asarray(zarr.open_array(str(store / "acqzarr_frames" / "frame_id"), mode="r")[:])
    np.testing.assert_array_equal(ids, [1, 2, 3, 4, 5])
    gaps = np.asarray(zarr.open_array(str(store / "acqzarr_frames" / "gap_before"), mode="r")[:])
    assert not gaps.any()


def test_a_series_with_positions_takes_each_frame_by_its_image_path(in_process: InProcess) -> None:
    """With stage positions, a frame's key is the image path ("p1/cam0"); each image gets its frames
    and their per-frame metadata, and the root lists the images for readers."""
    settings = {**SMALL_SERIES, "positions": [{"name": "p0", "x": 1.0}, {"name": "p1", "x": 2.0}]}
    in_process.send("pos", 0, {"htype": "series_start", "settings": settings})
    for i in range(6):
        key = f"p{i % 2}/cam0"
        frame = small_frame(i).tobytes()
        in_process.send(
            "pos", 1 + i, {**FRAME, "series_id": "pos", "msg_number": 1 + i, "frame_id": i, "key": key}, frame
        )
    in_process.send("pos", 7, {"htype": "series_end"})
    in_process.server.wait_finalized()
    (summary,) = [r for r in in_process.server.counters.recent if r["series_id"] == "pos"]
    assert summary["completed"] is True and summary["frames_total"] == 6
    store = Path(summary["store"])
    root = zarr.open_group(str(store), mode="r")
    assert root.attrs["ome"]["bioformats2raw.layout"] == 3
    for p in (0, 1):
        data = np.asarray(root[f"p{p}/cam0/0"][...])  # type: ignore[index]
        np.testing.assert_array_equal(data, [small_frame(i) for i in range(p, 6, 2)])
        ids = np.asarray(root[f"p{p}/cam0/acqzarr_frames/frame_id"][...])  # type: ignore[index]
        assert ids.tolist() == list(range(p, 6, 2))
