"""``acqzarr.info`` and ``acqzarr.validate``: what the ``info`` and ``validate`` commands report, for a
program (a notebook checking a recording, a pipeline refusing a broken store)."""

from __future__ import annotations

import errno
import os
from typing import Any

from ..errors import StoreError
from ..settings import S3Settings
from ..stores import Store, open_store
from .info import describe
from .validate import Problem
from .validate import validate as _validate

__all__ = ["Problem", "info", "validate"]


def _existing(store: str | os.PathLike[str] | Store, s3: S3Settings | None) -> Store:
    if isinstance(store, Store):
        return store
    opened = open_store(os.fspath(store), direct_io=False, s3=s3)
    if opened.is_empty():
        raise StoreError(errno.ENOENT, f"no Zarr store at {opened.describe()}")
    return opened


def info(store: str | os.PathLike[str] | Store, *, s3: S3Settings | None = None) -> dict[str, Any]:
    """The arrays, images, codecs, sizes and session records of a store (``acqzarr info --json``);
    StoreError if there is no store there."""
    return describe(_existing(store, s3))


def validate(
    store: str | os.PathLike[str] | Store, *, deep: bool = False, s3: S3Settings | None = None
) -> list[Problem]:
    """Every problem ``acqzarr validate`` finds (Zarr structure, shard indexes, OME-NGFF, the
    per-frame columns); ``deep`` decodes every chunk.  An empty list: the store is valid."""
    return _validate(_existing(store, s3), deep=deep)
