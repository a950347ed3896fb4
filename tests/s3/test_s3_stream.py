"""Streams into a real S3 server: same bytes as on disk, independent readers, outages, the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pytest
import yaml
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05
from zarr.storage import ObjectStore

import acqzarr as az
from builders import frames_for, stream_settings

from .readback import all_objects, assert_reads_back_s3, raw_store, read_zarr_s3
from .seaweed import Seaweed

# A SeaweedFS server for the session and real uploads: left out of the quick loop.
pytestmark = pytest.mark.slow

FRAME = (37, 50)


def _settings(store: str, version: int, s3: az.S3Settings, **kwargs: Any) -> az.StreamSettings:
    return stream_settings(
        store,
        version,
        (0, *FRAME),
        (3, 16, 16),
        s3=s3,
        multiscale=az.Multiscale(levels=3, method="mean"),
        **kwargs,
    )


def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _same_session(files: dict[str, bytes], store: str) -> dict[str, bytes]:
    """``files`` with the session record's own fields of one run (when it and its segments ran,
    which store) checked and blanked, so two runs' image groups compare byte for byte."""
    key = next(k for k in ("cam0/zarr.json", "cam0/.zattrs") if k in files)
    doc = json.loads(files[key])
    record = (doc["attributes"] if key.endswith("zarr.json") else doc)["acqzarr_session"]
    assert record["settings"]["store"] == store and record["start"] <= record["stop"]
    record["start"] = record["stop"] = record["settings"]["store"] = "(this run)"
    for segment in record["segments"]:
        assert segment["start"] <= segment["stop"]
        segment["start"] = segment["stop"] = "(this run)"
    return {**files, key: json.dumps(doc, indent=2).encode()}


def test_round_trip_matches_the_filesystem_byte_for_byte(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings, tmp_path: Path, version: int
) -> None:
    data = frames_for(FRAME, 10, "uint16")
    for store in (s3_url, str(tmp_path / "local.zarr")):
        with az.open_stream(_settings(store, version, s3_settings)) as stream:
            for frame in data:
                stream.append(frame)
        assert stream.stats().frames_flushed == 10

    objects = _same_session(all_objects(aws_env, s3_url), s3_url)
    local = _same_session(_local_files(tmp_path / "local.zarr"), str(tmp_path / "local.zarr"))
    assert objects == local  # same keys, same metadata, same chunks
    assert_reads_back_s3(aws_env, s3_url, "cam0/0", version, data)
    group = zarr.open_group(ObjectStore(raw_store(aws_env, s3_url), read_only=True), path="cam0", mode="r")
    image = (Image04 if version == 2 else Image05).from_zarr(group)
    assert [d.path for d in image.ome_attributes.multiscales[0].datasets] == ["0", "1", "2"]
    assert read_zarr_s3(aws_env, s3_url, "cam0/2").shape == (10, 10, 13)


def test_large_shards_go_up_as_multipart_uploads(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings
) -> None:
    """8 MiB one-layer shards (put_padded) and 16 MiB two-layer shards (put of parts), 5 MiB parts."""
    s3 = s3_settings.model_copy(update={"multipart_threshold": 5 << 20, "part_size": 5 << 20})
    data = frames_for((1024, 1024), 16, "uint16")
    for t_shard, name in [(1, "one"), (2, "two")]:
        settings = stream_settings(
            f"{s3_url}/{name}",
            3,
            (0, 1024, 1024),
            (4, 512, 512),
            shards=(t_shard, 2, 2),
            s3=s3,
            compression=None,
        )
        with az.open_stream(settings) as stream:
            stream.append(data)
        store = raw_store(aws_env, f"{s3_url}/{name}")
        shard = obstore.head(store, "cam0/0/c/0/0/0")
        assert shard["size"] > (8 << 20) * t_shard
        assert "-" in (shard["e_tag"] or ""), "expected a multipart ETag (md5-<parts>)"
        assert_reads_back_s3(aws_env, f"{s3_url}/{name}", "cam0/0", 3, data)


def test_the_durability_deadline_shows_a_deep_shard_while_it_fills(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings
) -> None:
    """Shards 4 bands deep along t: frames too few to complete one are shown within the deadline
    (the shard put whole with its index: S3 has no staging file to copy), then written again."""
    data = frames_for(FRAME, 7, "uint16")
    settings = _settings(s3_url, 3, s3_settings, shards=(4, 2, 2), max_unflushed_seconds=0.3)
    with az.open_stream(settings) as stream:
        for n in (2, 5):
            stream.append(data[stream.stats().frames_appended : n])
            until = time.monotonic() + 10
            while stream.stats().frames_flushed < n:
                assert time.monotonic() < until, "frames not shown within 10 s"
                time.sleep(0.02)
            assert_reads_back_s3(aws_env, s3_url, "cam0/0", 3, data[:n])
            assert read_zarr_s3(aws_env, s3_url, "cam0/2").shape[0] == n
        stream.append(data[5:])
    assert stream.stats().checkpoints >= 2
    assert_reads_back_s3(aws_env, s3_url, "cam0/0", 3, data)


def test_existing_prefixes_are_refused_or_replaced_like_directories(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings
) -> None:
    data = frames_for(FRAME, 4, "uint16")
    with az.open_stream(_settings(s3_url, 3, s3_settings)) as stream:
        stream.append(data)
    before = all_objects(aws_env, s3_url)
    with pytest.raises(az.StoreError, match=rf"^{s3_url}: already exists; pass overwrite=True"):
        az.open_stream(_settings(s3_url, 3, s3_settings))
    assert all_objects(aws_env, s3_url) == before

    with az.open_stream(_settings(s3_url, 2, s3_settings, overwrite=True)) as stream:
        stream.append(data[:2])
    objects = all_objects(aws_env, s3_url)
    assert "zarr.json" not in objects and "cam0/0/.zarray" in objects  # nothing of the old store left
    assert_reads_back_s3(aws_env, s3_url, "cam0/0", 2, data[:2])

    other = f"{s3_url}-notes"
    az.S3Store(other, s3_settings).put("notes.txt", [b"not zarr"])
    with pytest.raises(az.StoreError, match="exists and is not a Zarr store; refusing to delete it"):
        az.open_stream(_settings(other, 3, s3_settings, overwrite=True))
    assert all_objects(aws_env, other) == {"notes.txt": b"not zarr"}


# -- outages ---------------------------------------------------------------------
def _outage_settings(server: Seaweed, store: str, **s3: Any) -> az.StreamSettings:
    s3_settings = az.S3Settings(
        endpoint=server.endpoint, allow_http=True, initial_backoff=0.05, max_backoff=0.5, **s3
    )
    return stream_settings(
        store,
        3,
        (0, 64, 64),
        (4, 32, 32),
        compression=None,
        s3=s3_settings,
        max_inflight_bytes=3 * (4 * 64 * 64 * 2) * 2,  # about 3 layers with their encoded output
        append_timeout=1.0,
    )


def _wait_flushed(stream: az.Stream, frames: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while stream.stats().frames_flushed < frames:
        assert time.monotonic() < deadline, f"only {stream.stats().frames_flushed} of {frames} flushed"
        time.sleep(0.02)


def test_uploads_stalled_by_an_outage_block_append_then_resume_losing_nothing(
    own_server: Seaweed,
) -> None:
    """Server down: uploads retry, memory stays under the cap (append times out instead of buffering
    more); server back within the retry window: the same stream finishes with every frame."""
    url = f"s3://{own_server.bucket}/stall"
    settings = _outage_settings(own_server, url, max_retries=1000, retry_timeout=60)
    data = frames_for((64, 64), 48, "uint16")
    accepted = 0
    with az.open_stream(settings) as stream:
        stream.append(data[:8])
        _wait_flushed(stream, 8)
        own_server.stop()
        with pytest.raises(az.BackpressureTimeout, match="the frame was not accepted"):
            for frame in data[8:]:
                stream.append(frame)
                accepted += 1
        memory = stream.memory()
        assert memory.peak <= memory.cap
        assert accepted < 20  # a few layers, not everything the camera produced
        own_server.start()
        stream.append(data[8 + accepted :])
    assert stream.stats().frames_flushed == 48
    assert_reads_back_s3(own_server, url, "cam0/0", 3, data)


def test_server_stopped_mid_stream_fails_naming_the_key_and_keeps_what_was_acknowledged(
    own_server: Seaweed,
) -> None:
    url = f"s3://{own_server.bucket}/outage"
    settings = _outage_settings(own_server, url, max_retries=3, retry_timeout=1.0)
    data = frames_for((64, 64), 200, "uint16")
    stream = az.open_stream(settings)
    stream.append(data[:8])
    _wait_flushed(stream, 8)
    own_server.stop()
    with pytest.raises(az.WriterError) as failed:
        for frame in data[8:]:
            stream.append(frame)
    acknowledged = stream.stats().frames_flushed
    message = str(failed.value)
    assert f"{url}/cam0/0/c/" in message and "upload failed" in message, message
    # The cause as the HTTP client saw it: refused connections, or the server's answer while it stopped.
    assert re.search(r"after \d+ retries.*(error sending request|non-2xx status code)", message), message
    assert isinstance(failed.value.__cause__, az.StoreError)
    with pytest.raises(az.WriterError, match="upload failed"):
        stream.close()  # close reports the same failure

    own_server.start()
    kept = read_zarr_s3(own_server, url, "cam0/0")
    assert acknowledged >= 8 and kept.shape[0] == acknowledged
    np.testing.assert_array_equal(kept, data[:acknowledged])

    retry = f"{url}-retry"
    with az.open_stream(_outage_settings(own_server, retry, max_retries=3, retry_timeout=1.0)) as again:
        again.append(data[:12])
    assert_reads_back_s3(own_server, retry, "cam0/0", 3, data[:12])


# -- the command line --------------------------------------------------------------
def test_record_to_s3_keeps_the_credentials_out_of_everything(
    aws_env: Seaweed, s3_url: str, tmp_path: Path
) -> None:
    config = {
        "store": "unused.zarr",
        "arrays": [
            {
                "key": "cam0",
                "dtype": "uint16",
                "dimensions": [
                    {"name": "t", "kind": "time", "size": 0, "chunk": 8},
                    {"name": "y", "kind": "space", "size": 64, "chunk": 32, "shard": 2},
                    {"name": "x", "kind": "space", "size": 48, "chunk": 16, "shard": 2},
                ],
            }
        ],
        "source": {"driver": "simulated.noise", "frames": 20, "options": {"height": 64, "width": 48}},
    }
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "acqzarr",
            "record",
            str(path),
            "--output",
            s3_url,
            "--set",
            f"s3.endpoint={aws_env.endpoint}",
            "--set",
            "s3.allow_http=true",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert s3_url in proc.stdout + proc.stderr
    objects = all_objects(aws_env, s3_url)
    group = zarr.open_group(ObjectStore(raw_store(aws_env, s3_url), read_only=True), path="cam0", mode="r")
    session = group.attrs
    assert session["acqzarr_session"]["frames_on_disk"] == 20
    assert session["acqzarr_session"]["settings"]["store"] == s3_url
    assert read_zarr_s3(aws_env, s3_url, "cam0/0").shape == (20, 64, 48)
    for text in (proc.stdout, proc.stderr, *(blob.decode("latin-1") for blob in objects.values())):
        assert aws_env.secret_key not in text
        assert aws_env.access_key not in text


# -- a killed writer -----------------------------------------------------------------
_KILLED_WRITER = """
import sys, numpy as np, acqzarr as az
settings = az.StreamSettings.model_validate_json(sys.argv[1])
yy, xx = np.mgrid[0:48, 0:40]
stream = az.open_stream(settings)
last = -1
for i in range(100000):
    stream.append(((yy * 40 + xx + i * 977) % 4093).astype(np.uint16))
    flushed = stream.stats().frames_flushed
    if flushed != last:
        print(f"flushed {flushed}", flush=True)
        last = flushed
"""


def test_sigkill_mid_stream_keeps_every_frame_reported_flushed(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings
) -> None:
    """As on disk: metadata is published only after the data it exposes is stored."""
    settings = stream_settings(
        s3_url, 3, (0, 48, 40), (3, 16, 16), key="cam", s3=s3_settings, multiscale=az.Multiscale(levels=2)
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, settings.model_dump_json()],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    reported = 0
    for line in proc.stdout:
        reported = int(line.split()[1])
        if reported >= 30:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert reported >= 30
    kept = read_zarr_s3(aws_env, s3_url, "cam/0")
    assert kept.shape[0] >= reported
    yy, xx = np.mgrid[0:48, 0:40]
    expected = np.stack([((yy * 40 + xx + i * 977) % 4093).astype(np.uint16) for i in range(kept.shape[0])])
    np.testing.assert_array_equal(kept, expected)
    group = zarr.open_group(ObjectStore(raw_store(aws_env, s3_url), read_only=True), path="cam", mode="r")
    Image05.from_zarr(group)
