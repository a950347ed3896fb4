"""Long runs: resident memory stays flat, no file descriptor leaks, every frame reads back."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import acqzarr as az
from acqzarr.recording.synthetic import camera_frames
from builders import array_settings, stream_settings

from .sizes import scale

pytestmark = pytest.mark.reliability


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _soak(
    path: Path, frame: tuple[int, int], count: int, chunk: tuple[int, int, int], shard: int, pyramid: bool
) -> dict[str, Any]:
    pool = camera_frames(8, frame)
    settings = stream_settings(
        path,
        3,
        (0, *frame),
        chunk,
        shards=(1, shard, shard),
        key="cam",
        multiscale=az.Multiscale(levels=2, method="mean") if pyramid else None,
    )
    fds_before = _fds()
    samples: list[int] = []
    pooled: list[int] = []  # buffers the pools have mapped at each sample (they grow within the cap)
    quarter_times: list[float] = []
    every = max(1, count // 40)
    t0 = last = time.perf_counter()
    with az.open_stream(settings) as stream:
        cap = stream.memory().cap
        for i in range(count):
            stream.append(pool[i % len(pool)])
            if i % every == 0:
                samples.append(_rss())
                pooled.append(stream.memory().mapped)
            if (i + 1) % (count // 4) == 0:
                now = time.perf_counter()
                quarter_times.append(now - last)
                last = now
        usage = stream.memory()  # after the last append: the most ever reserved
    checkpoints = stream.stats("cam").checkpoints  # after close: every checkpoint that ran, counted
    elapsed = time.perf_counter() - t0
    fds_after = _fds()
    array = zarr.open_array(str(path / "cam" / "0"), mode="r")
    assert array.shape[0] == count
    for i in np.linspace(0, count - 1, 9).astype(int):
        np.testing.assert_array_equal(array[i], pool[i % len(pool)])
    half = len(samples) // 2
    frame_bytes = frame[0] * frame[1] * 2
    return {
        "frames": count,
        "frame_shape": list(frame),
        "pyramid": pyramid,
        "seconds": round(elapsed, 2),
        "mb_per_s": round(count * frame_bytes / elapsed / 1e6, 1),
        "mb_per_s_by_quarter": [round(count / 4 * frame_bytes / q / 1e6, 1) for q in quarter_times],
        "rss_first_half_max_mib": round(max(samples[:half]) / 2**20, 1),
        "rss_second_half_max_mib": round(max(samples[half:]) / 2**20, 1),
        "inflight_cap_mib": round(cap / 2**20, 1),
        "inflight_peak_mib": round(usage.peak / 2**20, 1),
        "inflight_required_mib": round(usage.required / 2**20, 1),
        "checkpoints": checkpoints,
        "pools_first_half_max_mib": round(max(pooled[:half]) / 2**20, 1),
        "pools_max_mib": round(max(pooled) / 2**20, 1),
        "fds_before": fds_before,
        "fds_after": fds_after,
    }


@pytest.mark.parametrize(
    ("name", "frame", "count", "chunk", "shard", "pyramid"),
    [
        ("small", (64, 64), scale("SOAK_SMALL_FRAMES", 20_000), (64, 32, 32), 2, False),
        ("large", (2048, 2048), scale("SOAK_LARGE_FRAMES", 320), (32, 256, 256), 4, False),
        ("large-pyramid", (1024, 1024), scale("SOAK_PYRAMID_FRAMES", 640), (32, 256, 256), 2, True),
    ],
)
def test_memory_and_descriptors_stay_flat(
    tmp_path: Path,
    name: str,
    frame: tuple[int, int],
    count: int,
    chunk: tuple[int, int, int],
    shard: int,
    pyramid: bool,
    record_figures: dict[str, Any],
) -> None:
    figures = _soak(tmp_path / "s.zarr", frame, count, chunk, shard, pyramid)
    record_figures.update(name=name, **figures)
    assert figures["fds_after"] == figures["fds_before"], "file descriptors leaked"
    # What append reserves stays within the cap.  A durability checkpoint (the deadline passed: a
    # stalled disk, a slow machine) takes a copy of the open bands beside the cap, neither waiting
    # nor making append wait: at most ``required`` more (every level's open bands), and only then.
    beside = figures["inflight_required_mib"] if figures["checkpoints"] else 0
    assert figures["inflight_peak_mib"] <= figures["inflight_cap_mib"] + beside
    # Flat: the second half needs no more than the first, beyond what the buffer pools grew by and
    # 64 MiB of allocator slack.  The pools map a buffer when the most in flight at once first needs
    # it, which can be late in a run (timing decides when a third band is out at once), within the cap.
    late_pools = figures["pools_max_mib"] - figures["pools_first_half_max_mib"]
    assert figures["rss_second_half_max_mib"] <= figures["rss_first_half_max_mib"] + late_pools + 64


def test_concurrent_appends_to_different_keys_with_a_polling_reader(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    keys = ["a", "b", "c"]
    n = 300
    settings = az.StreamSettings(
        store=str(path),
        version=3,
        arrays=[array_settings(3, (0, 40, 40), (8, 16, 16), key=k) for k in keys],
    )
    data = {
        k: np.random.default_rng(i).integers(0, 4096, (n, 40, 40), dtype=np.uint16)
        for i, k in enumerate(keys)
    }
    errors: list[BaseException] = []
    done = threading.Event()
    reads = {"n": 0}

    def produce(key: str) -> None:
        try:
            for f in data[key]:
                stream.append(f, key=key)
        except BaseException as exc:
            errors.append(exc)

    def poll() -> None:
        while not done.is_set():
            for k in keys:
                arr = zarr.open_array(str(path / k / "0"), mode="r")
                got = np.asarray(arr[:])
                if not np.array_equal(got, data[k][: got.shape[0]]):
                    errors.append(AssertionError(f"{k}: inconsistent prefix of {got.shape[0]} frames"))
                reads["n"] += 1

    with az.open_stream(settings) as stream:
        reader = threading.Thread(target=poll)
        reader.start()
        threads = [threading.Thread(target=produce, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    done.set()
    reader.join()
    assert errors == []
    assert reads["n"] > 3
    for k in keys:
        np.testing.assert_array_equal(np.asarray(zarr.open_array(str(path / k / "0"), mode="r")[:]), data[k])
