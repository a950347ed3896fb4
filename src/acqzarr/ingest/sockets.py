"""The server's sockets: the data socket (PULL or SUB, with CURVE if configured) and the status socket.

Bound from the config at construction (a ConfigError names the endpoint that
cannot bind); the loop polls both, reads the data socket without blocking,
and may leave it unread (``reading``), which is how the server applies
backpressure while messages held for waiting series reach their bound.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ..errors import ConfigError
from .config import ServeConfig

__all__ = ["Sockets"]


class Sockets:
    """The data socket and, with ``status_endpoint``, the status socket of ``config``, bound."""

    def __init__(self, config: ServeConfig) -> None:
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        self._data: zmq.Socket[bytes] | None = None
        self._status: zmq.Socket[bytes] | None = None
        self._poller = zmq.Poller()
        self.reading = True
        try:
            if config.endpoints:  # none: a server of detector inputs only
                self._data = self._bind_data(config)
            if config.status_endpoint is not None:
                self._status = self._ctx.socket(zmq.REP)
                self._status.linger = 0
                _bind(self._status, config.status_endpoint, "status_endpoint")
        except BaseException:
            self.close()
            raise
        if self._data is not None:
            self._poller.register(self._data, zmq.POLLIN)
        if self._status is not None:
            self._poller.register(self._status, zmq.POLLIN)

    def _bind_data(self, cfg: ServeConfig) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.PULL if cfg.socket == "pull" else zmq.SUB)
        self._data = sock
        sock.linger = 0
        sock.rcvhwm = cfg.rcvhwm
        sock.maxmsgsize = cfg.max_message_bytes
        if cfg.socket == "sub":
            sock.subscribe(b"")
        if cfg.curve is not None:
            self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("acqzarr.ingest.auth"))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=cfg.curve.authorized_keys_dir)
            public, secret = zmq.auth.load_certificate(cfg.curve.secret_key_file)
            if secret is None:
                raise ConfigError(f"curve.secret_key_file {cfg.curve.secret_key_file!r} holds no secret key")
            sock.curve_secretkey = secret
            sock.curve_publickey = public
            sock.curve_server = True
        for i, endpoint in enumerate(cfg.endpoints):
            _bind(sock, endpoint, f"endpoints.{i}")
        return sock

    def read(self, reading: bool) -> None:
        """Read the data socket from the next ``poll`` on, or leave it unread."""
        if reading == self.reading or self._data is None:
            return
        self.reading = reading
        if reading:
            self._poller.register(self._data, zmq.POLLIN)
        else:
            self._poller.unregister(self._data)

    def poll(self, timeout: float) -> tuple[bool, bool]:
        """Wait up to ``timeout`` s; whether the data socket (when read) and the status socket
        have something."""
        return self.ready(self.wait(timeout))

    def wait(self, timeout: float) -> dict[Any, int]:
        """Wait up to ``timeout`` s for any socket registered with ``poller``; the events."""
        return dict(self._poller.poll(int(timeout * 1000)))

    def ready(self, events: dict[Any, int]) -> tuple[bool, bool]:
        """Whether the data socket and the status socket are among ``events`` (of a poll that
        included ``poller``)."""
        return (
            self._data is not None and self._data in events,
            self._status is not None and self._status in events,
        )

    @property
    def poller(self) -> zmq.Poller:
        """The poller of the data and status sockets, for a loop that polls more sockets with them."""
        return self._poller

    @property
    def context(self) -> zmq.Context[Any]:
        return self._ctx

    def receive(self) -> list[zmq.Frame] | None:
        """The next message on the data socket, as received (zero-copy frames); None if none is
        queued."""
        if self._data is None:
            return None
        try:
            return self._data.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None

    def answer(self, reply: bytes) -> None:
        """Answer the request waiting on the status socket (whatever it asked) with ``reply``."""
        if self._status is not None:
            self._status.recv_multipart()
            self._status.send(reply)

    def close(self) -> None:
        for sock in (self._data, self._status):
            if sock is not None:
                sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self._ctx.term()


def _bind(sock: zmq.Socket[bytes], endpoint: str, where: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(f"{where}: cannot bind {endpoint}: {exc}") from None
