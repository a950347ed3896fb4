"""Running `acqzarr serve` in a child process for the ingest tests, and waiting on its status socket;
an in-process server whose messages a test hands over one by one; the server's loop on a thread,
fed over a real socket (``Served``), with a stream's close held where a test decides."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr
import zmq

import acqzarr as az
from acqzarr.ingest import IngestServer, ServeConfig, StatusUnavailable, query
from builders import UNSHARDED, array_document

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """An `acqzarr serve` child: its endpoints, its root, and helpers that read its status socket."""

    def __init__(self, proc: subprocess.Popen[str], root: Path, tcp: str, ipc: str, status: str) -> None:
        self.proc = proc
        self.root = root
        self.tcp = tcp
        self.ipc = ipc
        self.status_endpoint = status

    def status(self) -> dict[str, Any]:
        return query(self.status_endpoint, timeout=10)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            snap = self.status()
            if predicate(snap):
                return snap
            if time.monotonic() > deadline:
                raise AssertionError(f"server status never matched; last: {snap}")
            time.sleep(0.02)

    def wait_series(self, series_id: str, timeout: float = 30) -> dict[str, Any]:
        """The summary of ``series_id`` once the server has finalized it."""
        snap = self.wait_for(lambda s: any(r["series_id"] == series_id for r in s["recent_series"]), timeout)
        return next(r for r in snap["recent_series"] if r["series_id"] == series_id)


@contextmanager
def running_server(base: Path, config: str | Path | None = None, **settings: Any) -> Iterator[ServerProcess]:
    """Start `acqzarr serve` bound to a free loopback port and a short ipc path; SIGTERM it at the end
    and check it exited 0."""
    ipc_dir = Path(tempfile.mkdtemp(prefix="az-", dir="/tmp"))  # ipc paths are limited to ~100 bytes
    tcp = f"tcp://127.0.0.1:{free_port()}"
    ipc = f"ipc://{ipc_dir}/data.sock"
    status = f"tcp://127.0.0.1:{free_port()}"
    root = base / "root"
    overrides = {"root": str(root), "endpoints": [tcp, ipc], "status_endpoint": status, **settings}
    if config is None:
        config = base / "serve.yaml"
        Path(config).write_text(yaml.safe_dump(overrides))
        sets: list[str] = []
    else:
        sets = [
            f"--set={k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in overrides.items()
        ]
    log = open(base / "serve.log", "w")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "acqzarr", "serve", str(config), *sets],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=base,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = ServerProcess(proc, root, tcp, ipc, status)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                query(status, timeout=0.5)
                break
            except StatusUnavailable:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"server did not start:\n{(base / 'serve.log').read_text()}"
                    ) from None
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # in case a test left it stopped
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            shutil.rmtree(ipc_dir, ignore_errors=True)
        assert code == 0, (base / "serve.log").read_text()


@contextmanager
def loopback_server(base: Path) -> Iterator[ServerProcess]:
    """The lossless (PULL) server of configs/serve-loopback.yaml, as the test modules share it."""
    with running_server(
        base, REPO / "configs" / "serve-loopback.yaml", idle_timeout=2.0, status_interval=0.5, rcvhwm=2
    ) as srv:
        yield srv


def raw_socket(endpoint: str) -> tuple[zmq.Context[Any], zmq.Socket[bytes]]:
    """A PUSH socket connected to ``endpoint``, for sending hand-made (also malformed) messages."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.linger = 5000
    sock.connect(endpoint)
    return ctx, sock


def header(**fields: Any) -> bytes:
    """A message header: protocol version 1 and ``fields``, as JSON."""
    return json.dumps({"version": 1, **fields}).encode()


SMALL_SERIES: dict[str, Any] = {"arrays": [array_document(3, (0, 4, 6), (2, 4, 6), shards=UNSHARDED)]}
SMALL_FRAME_HEADER: dict[str, Any] = {
    "htype": "frame",
    "key": "cam0",
    "shape": [4, 6],
    "dtype": "uint16",
    "timestamp_ns": 12,
}


def small_frame(i: int) -> np.ndarray[Any, Any]:
    """Frame ``i`` of a SMALL_SERIES series: a (4, 6) uint16 ramp plus ``i``, so frames differ."""
    return np.arange(24, dtype=np.uint16).reshape(4, 6) + i


class InProcess:
    """An IngestServer whose ``handle`` the test calls directly: deterministic, no sender process.

    A series is open when the ``send`` of its series_start returns (``IngestServer.wait_opened``),
    unless it waits for a finalizing series' slot.

    Series end on finalize threads; ``series`` waits for them (``IngestServer.wait_finalized``).
    """

    def __init__(self, root: Path, **config: Any) -> None:
        self.server = IngestServer(ServeConfig(root=str(root), endpoints=["tcp://127.0.0.1:*"], **config))

    def send(self, sid: str, n: int, header: dict[str, Any], payload: bytes = b"") -> None:
        doc = {"version": 1, "series_id": sid, "msg_number": n, **header}
        self.server.handle([zmq.Frame(json.dumps(doc).encode()), zmq.Frame(payload)])
        self.server.wait_opened()  # a series_start opens its store on an open thread

    def start(self, sid: str) -> None:
        self.send(sid, 0, {"htype": "series_start", "settings": SMALL_SERIES})

    def frames(self, sid: str, first: int, count: int) -> None:
        """Frames ``first`` to ``first + count - 1`` (their msg_number and frame_id), small_frame(i)."""
        for i in range(first, first + count):
            self.send(sid, i, {**SMALL_FRAME_HEADER, "frame_id": i}, small_frame(i).tobytes())

    def end(self, sid: str, n: int) -> None:
        self.send(sid, n, {"htype": "series_end"})

    def series(self, sid: str, frames: int) -> None:
        """A whole series, finalized when this returns."""
        self.start(sid)
        self.frames(sid, 1, frames)
        self.end(sid, frames + 1)
        self.server.wait_finalized()


WAIT = 60.0  # seconds: a deadline for things that must happen, never a measurement


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


class HeldClose:
    """Makes one stream's ``close`` wait until ``release`` is set; ``entered`` says it is waiting."""

    def __init__(self, stream: az.Stream) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._close = stream.close
        stream.close = self._held  # type: ignore[method-assign]

    def _held(self) -> None:
        self.entered.set()
        self.release.wait(WAIT)
        self._close()


def recent(server: IngestServer) -> dict[str, dict[str, Any]]:
    return {r["series_id"]: r for r in server.snapshot()["recent_series"]}


def assert_store(root: Path, sid: str, frames: range) -> None:
    """The store of ``sid`` holds exactly ``small_frame(i)`` for ``i`` in ``frames``, with their
    frame ids, and a completed, stopped session record."""
    group = zarr.open_group(str(root / sid), mode="r")
    data = np.asarray(group["cam0/0"][...])  # type: ignore[index]
    assert data.tobytes() == np.stack([small_frame(i) for i in frames]).tobytes()
    ids = np.asarray(group["cam0/acqzarr_frames/frame_id"][...])  # type: ignore[index]
    assert ids.tolist() == list(frames)
    record = json.loads((root / sid / "cam0" / "zarr.json").read_text())["attributes"]["acqzarr_session"]
    assert record["completed"] is True and record["stop"] is not None
    assert record["frames_on_disk"] == len(frames) and record["source"]["end"] == "series_end"


def hold_closes(monkeypatch: Any, *series_ids: str) -> list[HeldClose]:
    """Every series named (every series, with none named) gets a HeldClose once started, in the
    list returned; the caller releases them (also when the test fails)."""
    from acqzarr.ingest.series import Series

    holds: list[HeldClose] = []
    real_init = Series.__init__

    def init(series: Series, *args: Any, **kw: Any) -> None:
        real_init(series, *args, **kw)
        if not series_ids or series.id in series_ids:
            holds.append(HeldClose(series.recording.stream))

    monkeypatch.setattr(Series, "__init__", init)
    return holds


class Served:
    """``IngestServer.run`` on a thread (as ``acqzarr serve`` runs it), fed over a real socket and
    watched through its status socket."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.endpoint = endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.status_endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.server = IngestServer(
            ServeConfig(root=str(root), endpoints=[endpoint], status_endpoint=self.status_endpoint, **config)
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.run, args=(self.stop,))
        self.thread.start()
        self.ctx, self.sock = raw_socket(endpoint)

    def send(self, sid: str, n: int, fields: dict[str, Any], payload: bytes = b"") -> None:
        self.sock.send_multipart([header(series_id=sid, msg_number=n, **fields), payload])

    def start(self, sid: str) -> None:
        self.send(sid, 0, {"htype": "series_start", "settings": SMALL_SERIES})

    def frames(self, sid: str, first: int, count: int) -> None:
        for i in range(first, first + count):
            fields = {**SMALL_FRAME_HEADER, "frame_id": i}
            self.send(sid, i, fields, small_frame(i).tobytes())

    def series(self, sid: str, frames: int) -> None:
        """A whole series sent: its start, frames 1 to ``frames``, its end (not waited for)."""
        self.start(sid)
        self.frames(sid, 1, frames)
        self.send(sid, frames + 1, {"htype": "series_end"})

    def status(self) -> dict[str, Any]:
        return query(self.status_endpoint, timeout=WAIT)

    def wait_status(self, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        wait_until(lambda: condition(self.status()), what)
        return self.status()

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        self.sock.close()
        self.ctx.term()
        self.server.close()
