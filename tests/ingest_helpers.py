"""Running `acqzarr serve` in a child process for the ingest tests, and waiting on its status socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
import zmq

from acqzarr.ingest import StatusUnavailable, query

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
