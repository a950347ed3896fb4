"""A store in an S3 bucket (AWS, MinIO, Ceph, SeaweedFS), through obstore.

obstore is the Python binding of the Rust ``object_store`` crate (the one
zarr-python's ObjectStore uses): it releases the GIL for the whole request,
signs and retries in Rust, and uploads straight from our buffers.

Atomicity is S3's own: a PUT, or the completion of a multipart upload, makes
the whole object visible at once, so metadata documents are replaced exactly
as the local store's rename replaces them -- one at a time.  S3 has no
multi-object transaction and no links to switch several objects at once, so
``put_group`` is the base class's put-in-order: a kill between two documents
of a group leaves them mixed (a pyramid's levels with different shapes).

Objects of ``multipart_threshold`` bytes or more (large shards) go up as
multipart uploads whose parts are sent in parallel and retried one by one.

Transient failures (connection errors, timeouts, 5xx including throttling)
are retried inside object_store with exponential backoff and jitter, bounded
by ``max_retries`` and ``retry_timeout``.  What still fails raises
StoreError naming the object's URL and the cause; on the writer's I/O thread
that becomes the WriterError the next ``append`` or ``close`` raises.

Credentials are never settings: object_store reads the standard AWS
environment variables (and web identity / container / instance credentials);
a shared-credentials profile is read here when no keys are in the
environment.  The secret never appears in a description, a repr or an error.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import obstore
from obstore.store import S3Store as _ObS3Store

from ..errors import StoreError
from ..settings.locations import split_s3
from .base import Buffer, Store

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config, S3Credential

    from ..settings import S3Settings

__all__ = ["S3Store", "parse_s3_url"]

_DELETE_BATCH = 1000  # the S3 DeleteObjects limit


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    try:
        return split_s3(url)
    except ValueError as exc:
        raise StoreError(str(exc)) from None


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``; keys map to ``prefix/key``."""

    def __init__(self, url: str, settings: S3Settings | None = None) -> None:
        from ..settings import S3Settings

        self.settings = settings or S3Settings()
        self.bucket, self.prefix = parse_s3_url(url)
        provider = _ProfileCredentials.find()
        self._profile = provider
        self._hint = "" if provider is not None or _credentials_in_environment() else _NO_CREDENTIALS
        self._store = _ObS3Store(
            self.bucket,
            prefix=self.prefix,
            config=_s3_config(self.settings),
            client_options=_client_options(self.settings),
            retry_config=_retry_config(self.settings),
            credential_provider=provider,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.describe()!r})"

    def describe(self, key: str = "") -> str:
        base = f"s3://{self.bucket}/{self.prefix}"
        return f"{base}/{key}" if key else base

    # -- writing -------------------------------------------------------------
    def put(self, key: str, parts: Sequence[Buffer]) -> None:
        views = [memoryview(p).cast("B") for p in parts]
        total = sum(v.nbytes for v in views)
        if len(views) == 1:
            self._upload(key, views[0], total)
        elif total < self.settings.multipart_threshold:
            self._upload(key, b"".join(views), total)  # one small copy beats a multipart upload
        else:
            self._upload(key, [v for v in views if v.nbytes], total)

    def put_padded(self, key: str, buffer: np.ndarray[Any, Any], nbytes: int) -> None:
        self._upload(key, buffer.data.cast("B")[:nbytes], nbytes)  # a view: no copy

    def put_padded_many(self, items: Sequence[tuple[str, np.ndarray[Any, Any], int]]) -> None:
        """Upload a layer's objects ``concurrent_uploads`` at a time.

        Each request waits on the network, not the CPU (obstore releases the
        GIL), so a few in flight hide the per-request latency.  The pool lives
        for one call: every upload has finished, one way or the other, before
        this returns or raises, because the caller reuses the buffers.
        """
        workers = min(self.settings.concurrent_uploads, len(items))
        if workers <= 1:
            super().put_padded_many(items)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="acqzarr-s3") as pool:
            futures = [pool.submit(self.put_padded, *item) for item in items]
        for future in futures:
            future.result()  # the first failure, in submission order

    def _upload(self, key: str, data: Buffer | list[memoryview], nbytes: int) -> None:
        s = self.settings
        path = self.check_key(key)
        try:
            obstore.put(
                self._store,
                path,
                data,
                use_multipart=nbytes >= s.multipart_threshold,
                chunk_size=s.part_size,
                max_concurrency=s.max_concurrency,
            )
        except Exception as exc:
            raise self._error(key, "upload", exc) from None

    # -- reading and housekeeping -------------------------------------------
    def get(self, key: str) -> bytes:
        path = self.check_key(key)
        try:
            return bytes(obstore.get(self._store, path).bytes())
        except FileNotFoundError:
            raise KeyError(key) from None
        except Exception as exc:
            raise self._error(key, "read", exc) from None

    def size(self, key: str) -> int:
        path = self.check_key(key)
        try:
            return int(obstore.head(self._store, path)["size"])  # a HEAD: the object is not read
        except FileNotFoundError:
            raise KeyError(key) from None
        except Exception as exc:
            raise self._error(key, "head", exc) from None

    def exists(self, key: str) -> bool:
        path = self.check_key(key)
        try:
            obstore.head(self._store, path)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._error(key, "head", exc) from None
        return True

    def delete(self, key: str) -> None:
        path = self.check_key(key)
        try:
            obstore.delete(self._store, path)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._error(key, "delete", exc) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        # Listing is by whole path segments in object_store; filter the last one by string.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else None
        try:
            for batch in obstore.list(self._store, prefix=directory):
                for meta in batch:
                    if meta["path"].startswith(prefix):
                        yield meta["path"]
        except Exception as exc:
            raise self._error(prefix, "list", exc) from None

    def children(self, directory: str) -> set[str]:
        """One delimited listing: the objects and common prefixes right below ``directory``."""
        try:
            result = obstore.list_with_delimiter(self._store, prefix=directory or None)
        except Exception as exc:
            raise self._error(directory, "list", exc) from None
        paths = [*result["common_prefixes"], *(meta["path"] for meta in result["objects"])]
        start = len(directory) + 1 if directory else 0
        return {path[start:].rstrip("/") for path in paths}

    def delete_tree(self, key: str) -> None:
        keys = [key, *self.list(f"{key}/")]
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = keys[i : i + _DELETE_BATCH]
            try:
                obstore.delete(self._store, batch)
            except FileNotFoundError:
                pass
            except Exception as exc:
                raise self._error(batch[0], "delete", exc) from None

    def is_empty(self) -> bool:
        try:
            for batch in obstore.list(self._store, chunk_size=1):
                if batch:
                    return False
        except Exception as exc:
            raise self._error("", "list", exc) from None
        return True

    def clear(self) -> None:
        keys = list(self.list())
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = keys[i : i + _DELETE_BATCH]
            try:
                obstore.delete(self._store, batch)
            except Exception as exc:
                raise self._error(batch[0], "delete", exc) from None

    def _error(self, key: str, action: str, exc: BaseException) -> StoreError:
        """A one-line StoreError with the object's URL and the cause, scrubbed of any secret."""
        cause = str(exc).split("\n\nDebug source", 1)[0].strip().replace("\n", " ")
        known = _secrets_in_environment() | (self._profile.secrets() if self._profile else set())
        for secret in known:  # looked up now, never kept on the store
            cause = cause.replace(secret, "***")
        return StoreError(f"{self.describe(key)}: {action} failed: {type(exc).__name__}: {cause}{self._hint}")


def _s3_config(s: S3Settings) -> S3Config:
    config: S3Config = {"virtual_hosted_style_request": not s.path_style}
    if s.endpoint is not None:
        config["endpoint"] = s.endpoint
    region = s.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    config["region"] = region or "us-east-1"
    return config


def _client_options(s: S3Settings) -> ClientConfig:
    return {
        "allow_http": s.allow_http,
        "connect_timeout": timedelta(seconds=s.connect_timeout),
        "timeout": timedelta(seconds=s.request_timeout),
    }


def _retry_config(s: S3Settings) -> RetryConfig:
    return {
        "max_retries": s.max_retries,
        "retry_timeout": timedelta(seconds=s.retry_timeout),
        "backoff": {
            "init_backoff": timedelta(seconds=s.initial_backoff),
            "max_backoff": timedelta(seconds=s.max_backoff),
            "base": 2,
        },
    }


_NO_CREDENTIALS = (
    " (no AWS credentials in the environment or a profile, so instance metadata was tried: set "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials)"
)


def _credentials_in_environment() -> bool:
    """Keys, or a web-identity / container source object_store picks up from the environment."""
    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    )
    return any(os.environ.get(n) for n in names)


def _secrets_in_environment() -> set[str]:
    return {v for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if (v := os.environ.get(k))}


class _ProfileCredentials:
    """Keys from the AWS shared credentials file, for when the environment has none.

    object_store reads environment variables and instance/container
    credentials but not ``~/.aws/credentials``; this fills that gap for
    ``AWS_PROFILE`` (or ``default``), re-reading the file on each call so the
    keys are never held in a long-lived object.
    """

    def __init__(self, path: Path, profile: str) -> None:
        self.path = path
        self.profile = profile

    def __repr__(self) -> str:
        return f"_ProfileCredentials({str(self.path)!r}, profile={self.profile!r})"

    @classmethod
    def find(cls) -> _ProfileCredentials | None:
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            return None
        path = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")).expanduser()
        profile = os.environ.get("AWS_PROFILE", "default")
        provider = cls(path, profile)
        return provider if provider._section() is not None else None

    def _section(self) -> configparser.SectionProxy | None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(self.path)
        except (OSError, configparser.Error):
            return None
        if not parser.has_option(self.profile, "aws_access_key_id"):
            return None
        return parser[self.profile]

    def secrets(self) -> set[str]:
        section = self._section()
        if section is None:
            return set()
        return {v for k in ("aws_secret_access_key", "aws_session_token") if (v := section.get(k))}

    def __call__(self) -> S3Credential:
        section = self._section()
        if section is None or "aws_secret_access_key" not in section:
            raise StoreError(f"{self.path}: profile {self.profile!r} has no aws_secret_access_key")
        return {
            "access_key_id": section["aws_access_key_id"],
            "secret_access_key": section["aws_secret_access_key"],
            "token": section.get("aws_session_token"),
            "expires_at": None,
        }
