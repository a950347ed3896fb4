"""A real S3 server (SeaweedFS) for the session, and one of its own for a test that stops it.

The client side gets the server's keys through the standard AWS environment
variables, exactly as a user would provide them; nothing else is configured.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import acqzarr as az

from .seaweed import Seaweed, SeaweedError

_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def start_seaweed(directory: Path) -> Seaweed:
    """A started server; a second try on fresh ports if another process took one of ours meanwhile."""
    errors = []
    for attempt in range(2):
        server = Seaweed(directory / f"try{attempt}")
        try:
            server.start()
        except SeaweedError as exc:
            errors.append(str(exc))
            continue
        return server
    pytest.fail("could not start the S3 test server:\n" + "\n\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop(signal.SIGKILL)  # throwaway data: no need to wait for a graceful shutdown


@pytest.fixture
def own_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Seaweed]:
    """A server this test may stop and restart (the session's server stays up for the others)."""
    server = start_seaweed(tmp_path / "own-seaweed")
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    yield server
    server.stop(signal.SIGKILL)  # its data is throwaway: no need to wait for a graceful stop


@pytest.fixture
def aws_env(s3_server: Seaweed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Seaweed:
    """The server's keys in the AWS variables, and nothing from the developer's own AWS setup."""
    for name in _AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def s3_settings(aws_env: Seaweed) -> az.S3Settings:
    return az.S3Settings(endpoint=aws_env.endpoint, allow_http=True)


@pytest.fixture
def s3_url(aws_env: Seaweed, request: pytest.FixtureRequest) -> str:
    """A prefix of its own for every test: tests share one server and one bucket."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")
    return f"s3://{aws_env.bucket}/{name}-{uuid.uuid4().hex[:8]}"
