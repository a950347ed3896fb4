"""A TCP proxy in front of the S3 server that fails the first few connections on purpose.

Each of the first ``faults`` connections gets one injected failure instead
of reaching the server: ``"503"`` answers S3's throttling reply (503
SlowDown), ``"reset"`` resets the connection once the request has started
arriving (a flaky network mid-upload), ``"stall"`` never answers (a hung
server: the client's request timeout has to fire).  Later connections are piped
through untouched, so request signatures (which cover the Host header the
client sent) still verify at the server.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Any

__all__ = ["FaultProxy"]

_SLOW_DOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy:
    def __init__(self, upstream_port: int, mode: str, faults: int) -> None:
        self.upstream_port = upstream_port
        self.mode = mode
        self.faults = faults
        self.injected = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)  # closing a socket does not wake a thread blocked in accept()
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                inject = self.injected < self.faults
                self.injected += inject
                self._sockets.append(conn)
            target = self._fail if inject else self._pipe
            t = threading.Thread(target=target, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _fail(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            if self.mode == "503":
                conn.sendall(
                    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                    + f"Content-Length: {len(_SLOW_DOWN)}\r\n\r\n".encode()
                    + _SLOW_DOWN
                )
            elif self.mode == "stall":  # never answer: the client's request timeout must fire
                self._stop.wait()
            else:  # "reset": the head and maybe part of the body arrived; drop the connection with a RST
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def _pipe(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            conn.close()
            return
        with self._lock:
            self._sockets.append(upstream)
        back = threading.Thread(target=_copy, args=(upstream, conn), daemon=True)
        back.start()
        _copy(conn, upstream)
        back.join()
        upstream.close()
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._accepting.join()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)
        with self._lock:
            for s in self._sockets:
                s.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _copy(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := src.recv(1 << 20):
            dst.sendall(chunk)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
