"""`acqzarr info` and `acqzarr validate` read an S3 store through the same interface the writers use."""

from __future__ import annotations

import json
import subprocess
import sys

import obstore
import pytest

import acqzarr as az
from builders import frames_for

from .readback import all_objects, raw_store
from .seaweed import Seaweed
from .test_s3_stream import FRAME, _settings

# A SeaweedFS server for the session and real uploads: left out of the quick loop.
pytestmark = pytest.mark.slow


def _cli(server: Seaweed, *args: str) -> subprocess.CompletedProcess[str]:
    s3 = ["--s3", f"endpoint={server.endpoint}", "--s3", "allow_http=true"]
    return subprocess.run(
        [sys.executable, "-m", "acqzarr", *args, *s3], capture_output=True, text=True, timeout=120
    )


def test_info_and_validate_read_an_s3_store(
    aws_env: Seaweed, s3_url: str, s3_settings: az.S3Settings
) -> None:
    with az.open_stream(_settings(s3_url, 3, s3_settings)) as stream:
        stream.append(frames_for(FRAME, 8, "uint16"))
    result = _cli(aws_env, "info", s3_url, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    objects = all_objects(aws_env, s3_url)
    level0 = next(a for a in info["arrays"] if a["path"] == "cam0/0")
    chunks = {k: v for k, v in objects.items() if k.startswith("cam0/0/c/")}
    assert level0["objects"] == len(chunks) and level0["stored_bytes"] == sum(map(len, chunks.values()))
    assert info["store"] == s3_url and info["images"][0]["frames"] == 8
    assert _cli(aws_env, "validate", s3_url, "--deep").returncode == 0

    key = sorted(chunks)[0]
    broken = bytearray(chunks[key])
    broken[-5] ^= 0xFF  # a shard index byte
    obstore.put(raw_store(aws_env, s3_url), key, bytes(broken))
    result = _cli(aws_env, "validate", s3_url)
    assert result.returncode == 1 and f"{key}: shard index crc32c does not match" in result.stdout


def test_a_bad_s3_option_is_a_config_error_naming_it(aws_env: Seaweed, s3_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acqzarr", "info", s3_url, "--s3", "retries=3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "s3.retries: Extra inputs are not permitted" in result.stderr
