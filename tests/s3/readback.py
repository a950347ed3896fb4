"""Reading a bucket without acqzarr: its raw objects (obstore), and the independent readers over S3."""

from __future__ import annotations

from typing import Any

import numpy as np
import obstore
import tensorstore as ts
import zarr
from obstore.store import S3Store
from zarr.storage import ObjectStore

from .seaweed import Seaweed


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
