"""Disk faults: the error reaches the caller with path and cause; flushed data stays readable."""

from __future__ import annotations

import errno
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import acqzarr as az
import acqzarr.stores.local as local_store
from builders import stream_settings

from .sizes import scale

pytestmark = pytest.mark.reliability


def _settings(path: Path, version: int, direct: bool) -> az.StreamSettings:
    return stream_settings(
        path,
        version,
        (0, 512, 512),
        (4, 128, 128),
        key="cam",
        direct_io=direct,
        multiscale=az.Multiscale(levels=2),
    )


def _frames(n: int) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(7)
    return rng.integers(0, 4096, (n, 512, 512), dtype=np.uint16)


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
def test_no_space_left_at_random_points(
    tmp_path: Path,
    version: int,
    direct: bool,
    monkeypatch: pytest.MonkeyPatch,
    record_figures: dict[str, Any],
) -> None:
    rng = random.Random(version * 10 + direct)
    data = _frames(40)
    faults = scale("DISK_FAULTS", 6)
    budget = {"left": 0}
    real_plain, real_direct = local_store._write_all, local_store._pwrite_all

    def consume(n: int) -> None:
        if n > budget["left"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        budget["left"] -= n

    def plain(fd: int, parts: Any) -> None:
        consume(sum(memoryview(p).nbytes for p in parts))
        real_plain(fd, parts)

    def direct_write(fd: int, view: memoryview, nbytes: int) -> None:
        consume(nbytes)
        real_direct(fd, view, nbytes)

    monkeypatch.setattr(local_store, "_write_all", plain)
    monkeypatch.setattr(local_store, "_pwrite_all", direct_write)
    surfaced = 0
    for k in range(faults):
        path = tmp_path / f"s{k}.zarr"
        budget["left"] = rng.randint(200_000, 12_000_000)
        try:
            stream = az.open_stream(_settings(path, version, direct))
        except az.StoreError as exc:  # the disk filled while writing the first documents
            assert "No space left on device" in str(exc)
            surfaced += 1
            continue
        error: Exception | None = None
        try:
            for f in data:
                stream.append(f)
                time.sleep(0.001)
        except az.WriterError as exc:
            error = exc
        try:
            stream.close()
        except az.WriterError as exc:
            error = error or exc
        if error is None:
            continue  # the budget was large enough for everything
        surfaced += 1
        assert "No space left on device" in str(error)
        assert str(path) in str(error)  # names the file
        flushed = stream.stats().frames_flushed
        got = np.asarray(zarr.open_array(str(path / "cam" / "0"), mode="r")[:])
        assert got.shape[0] == flushed
        np.testing.assert_array_equal(got, data[:flushed])
        level1 = zarr.open_array(str(path / "cam" / "1"), mode="r")
        assert level1.shape[0] <= flushed
        assert not [p for p in path.rglob("*") if p.name.endswith(".tmp")], "a partial file was left behind"
    assert surfaced > 0
    record_figures.update(version=version, direct=direct, faults_injected=faults, errors_surfaced=surfaced)


FSIZE_CHILD = """
import resource, signal, sys, numpy as np, acqzarr as az
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
settings = az.StreamSettings.model_validate_json(sys.argv[1])
rng = np.random.default_rng(7)
data = rng.integers(0, 4096, (40, 512, 512), dtype=np.uint16)
stream = az.open_stream(settings)
try:
    for f in data:
        stream.append(f)
    stream.close()
    print("no error")
except az.WriterError as exc:
    try:
        stream.close()
    except az.WriterError:
        pass
    print(f"flushed {stream.stats().frames_flushed}")
    print(f"error {exc}")
"""


@pytest.mark.parametrize("version", [2, 3])
def test_kernel_file_size_limit(tmp_path: Path, version: int) -> None:
    """RLIMIT_FSIZE: the kernel refuses writes past a size (EFBIG), a real fault, not a mock."""
    path = tmp_path / "s.zarr"
    settings = _settings(path, version, True).model_dump_json()
    limit = 60_000  # larger than any metadata document, smaller than a chunk of noise
    out = subprocess.run(
        [sys.executable, "-c", FSIZE_CHILD, settings, str(limit)], capture_output=True, text=True, timeout=120
    ).stdout.splitlines()
    error = next(ln for ln in out if ln.startswith("error"))
    assert "File too large" in error
    assert str(path) in error
    flushed = int(next(ln for ln in out if ln.startswith("flushed")).split()[1])
    got = zarr.open_array(str(path / "cam" / "0"), mode="r")
    assert got.shape[0] == flushed
    assert not [p for p in path.rglob("*") if p.name.endswith(".tmp")]
