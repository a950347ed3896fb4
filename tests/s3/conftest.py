"""A real S3 server (SeaweedFS) for the session, and readers that go through S3 only.

The client side gets the server's keys through the standard AWS environment
variables, exactly as a user would provide them; nothing else is configured.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pytest
import tensorstore as ts
import zarr
from obstore.store import S3Store
from zarr.storage import ObjectStore

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


def raw_store(server: Seaweed, url: str) -> S3Store:
    """An obstore client independent of acqzarr, on the prefix of ``url``."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return S3Store(
        bucket,
        prefix=prefix,
        endpoint=server.endpoint,
        region="us-east-1",
        client_options={"allow_http": True},
    )


def all_objects(server: Seaweed, url: str) -> dict[str, bytes]:
    store = raw_store(server, url)
    return {
        meta["path"]: bytes(obstore.get(store, meta["path"]).bytes())
        for batch in obstore.list(store)
        for meta in batch
    }


def read_zarr_s3(server: Seaweed, url: str, path: str) -> np.ndarray[Any, Any]:
    """zarr-python 3 through its ObjectStore (obstore underneath, no s3fs)."""
    store = ObjectStore(raw_store(server, url), read_only=True)
    return np.asarray(zarr.open_array(store, path=path, mode="r")[...])


def tensorstore_spec(server: Seaweed, url: str, path: str, version: int) -> dict[str, Any]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return {
        "driver": "zarr3" if version == 3 else "zarr",
        "kvstore": {
            "driver": "s3",
            "bucket": bucket,
            "path": f"{prefix}/{path}/",
            "endpoint": server.endpoint,
            "aws_region": "us-east-1",
            "aws_credentials": {"type": "environment"},
        },
        "recheck_cached_metadata": True,
        "recheck_cached_data": True,
    }


def read_tensorstore_s3(server: Seaweed, url: str, path: str, version: int) -> np.ndarray[Any, Any]:
    """tensorstore's own S3 kvstore driver (its own HTTP client and request signing)."""
    spec = tensorstore_spec(server, url, path, version)
    return np.asarray(ts.open(spec, read=True).result().read().result())


def assert_reads_back_s3(
    server: Seaweed, url: str, path: str, version: int, expected: np.ndarray[Any, Any]
) -> None:
    """zarr-python and tensorstore, each over S3, return exactly ``expected``."""
    for got in (read_zarr_s3(server, url, path), read_tensorstore_s3(server, url, path, version)):
        assert got.shape == expected.shape
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
