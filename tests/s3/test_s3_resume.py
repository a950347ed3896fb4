"""Resuming a store in a bucket: the same rules as a directory (what lies past the extent is listed
and removed; a partial row and a shard deeper than one band are read back from objects)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import acqzarr as az
from acqzarr.stores import open_store
from builders import frames_for, stream_settings
from readback import read_zarr

from .readback import all_objects, assert_reads_back_s3
from .seaweed import Seaweed

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("version", [2, 3])
def test_a_bucket_closed_mid_row_resumes_to_what_one_run_writes(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings, tmp_path: Path, version: int
) -> None:
    data = frames_for((37, 50), 17, "uint16")
    shards = (2, 2, 2) if version == 3 else None  # a shard two bands deep along t

    def settings(store: str, **fields: object) -> az.StreamSettings:
        shape, chunks = (0, 37, 50), (3, 16, 16)
        return stream_settings(store, version, shape, chunks, shards=shards, s3=s3_settings, **fields)

    with az.open_stream(settings(s3_url)) as first:
        first.append(data[:7])  # ends inside band row 2 (t 6-8), and inside the first v3 shard's second row
    # What a killed writer could have left past the extent: gone after the resume (listed, not walked).
    bucket = open_store(s3_url, s3=s3_settings)
    bucket.put("cam0/0/c/5/0/0" if version == 3 else "cam0/0/9.0.0", [b"stale"])
    bucket.put("cam0/acqzarr_frames/never_published/" + ("c/0" if version == 3 else "0"), [b"stale"])
    with az.open_stream(settings(s3_url, existing="resume")) as second:
        second.append(data[7:])
    reference = tmp_path / "one.zarr"
    with az.open_stream(settings(str(reference))) as one:
        one.append(data)
    np.testing.assert_array_equal(read_zarr(reference / "cam0" / "0"), data)
    assert_reads_back_s3(aws_env, s3_url, "cam0/0", version, data)
    objects = all_objects(aws_env, s3_url)
    local = {str(p.relative_to(reference)) for p in reference.rglob("*") if p.is_file()}
    assert set(objects) == local  # the same objects, nothing left past an extent


def test_a_bucket_refuses_an_incompatible_resume_unchanged(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings
) -> None:
    with az.open_stream(stream_settings(s3_url, 3, s3=s3_settings)) as stream:
        stream.append(frames_for((37, 50), 4, "uint16"))
    before = all_objects(aws_env, s3_url)
    with pytest.raises(az.ConfigError, match=r"arrays\[0\]\.dtype"):
        az.open_stream(stream_settings(s3_url, 3, s3=s3_settings, dtype="uint8", existing="resume"))
    assert all_objects(aws_env, s3_url) == before
