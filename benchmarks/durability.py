"""What the durability deadline costs: the same paced recording with ``max_unflushed_seconds`` on and
off, in the same run.

    python benchmarks/durability.py                      # three workloads, 3 repeats each way
    python benchmarks/durability.py --quick --repeat 1   # smoke

Each run is a fresh subprocess (after ``sync`` and a pause) that appends camera-like 2048x2048 (or
1024x1024) uint16 frames at a fixed rate, as a camera would, then closes the stream.  Workloads:

    camera        50 fps, chunks 32 deep along t: a band fills in 0.64 s, faster than a quarter of the
                  5 s default deadline, so the deadline never writes (the cost should be nothing)
    slow-bands    10 fps, chunks 16 deep, shards 4 chunks deep: a band takes 1.6 s, so with a 2 s
                  deadline the bands still filling are written every 0.5-1 s
    time-lapse    2 fps 1024x1024, chunks 4, shards 16 chunks deep, 3-level pyramid (the
                  ``configs/timelapse-unbounded.yaml`` layout) with its 2 s deadline

Reported per run: checkpoints taken, process CPU per frame (every thread: copies, compression,
writes), the appending thread's p99 ``append`` latency, what went to the disk
(``/proc/self/io`` write_bytes: block I/O, O_DIRECT included) against the bytes the closed store
holds, and resident memory growth.  Ratios are on/off of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import Span, latency  # noqa: E402

WORKLOADS: dict[str, dict[str, Any]] = {
    "camera": {"size": 2048, "fps": 50, "frames": 150, "chunk": 32, "shard": 1, "levels": 1, "deadline": 5.0},
    "slow-bands": {
        "size": 2048,
        "fps": 10,
        "frames": 80,
        "chunk": 16,
        "shard": 4,
        "levels": 1,
        "deadline": 2.0,
    },
    "time-lapse": {
        "size": 1024,
        "fps": 2,
        "frames": 30,
        "chunk": 4,
        "shard": 16,
        "levels": 3,
        "deadline": 2.0,
    },
}


def _disk_writes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def child(name: str, deadline_on: bool, workdir: Path, frames: int) -> dict[str, Any]:
    """One paced recording in this process."""
    import numpy as np

    import acqzarr as az

    w = WORKLOADS[name]
    size = w["size"]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    background = 400 + 300 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    pool = [rng.poisson(background + 20 * k).astype(np.uint16) for k in range(8)]
    space_shard = 4 if size >= 1024 else 1
    settings = az.StreamSettings(
        store=str(workdir / "run.zarr"),
        version=3,
        max_unflushed_seconds=w["deadline"] if deadline_on else None,
        arrays=[
            az.ArraySettings(
                key="cam0",
                dtype="uint16",
                dimensions=[
                    az.Dimension(name="t", kind="time", size=0, chunk=w["chunk"], shard=w["shard"]),
                    az.Dimension(name="y", kind="space", size=size, chunk=256, shard=space_shard),
                    az.Dimension(name="x", kind="space", size=size, chunk=256, shard=space_shard),
                ],
                multiscale=az.Multiscale(levels=w["levels"], method="mean") if w["levels"] > 1 else None,
            )
        ],
    )
    period = 1.0 / w["fps"]
    times: list[float] = []
    io0 = _disk_writes()
    span = Span()
    with az.open_stream(settings) as stream:
        start = time.perf_counter()
        for i in range(frames):
            wait = start + i * period - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            t0 = time.perf_counter()
            stream.append(pool[i % len(pool)])
            times.append((time.perf_counter() - t0) * 1000)
        checkpoints = stream.stats().checkpoints
    figures = span.stop()
    disk = _disk_writes() - io0
    stored = sum(f.stat().st_size for f in (workdir / "run.zarr").rglob("*") if f.is_file())
    return {
        "checkpoints": checkpoints,
        "cpu_ms_per_frame": figures["cpu"] / frames * 1000,
        "append_ms": latency(times),
        "disk_bytes": disk,
        "stored_bytes": stored,
        "rss_growth": figures["peak_rss"] - figures["start_rss"],
    }


def run(name: str, on: bool, frames: int, pause: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"durability-{name}-", dir=os.environ.get("BENCH_DIR")))
    try:
        os.sync()
        time.sleep(pause)
        out = subprocess.run(
            [sys.executable, __file__, "--child", name, "on" if on else "off", str(work), str(frames)],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"{name} ({'on' if on else 'off'}) failed:\n{out.stderr}")
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--workload", action="append", choices=list(WORKLOADS), help="default: all")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds after sync before each run")
    parser.add_argument("--quick", action="store_true", help="a third of the frames")
    parser.add_argument("--json", type=Path, default=HERE / "last-run-durability.json")
    args = parser.parse_args()
    if args.child:
        name, mode, work, frames = args.child
        print(json.dumps(child(name, mode == "on", Path(work), int(frames))))
        return
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.python_version()}, {platform.platform()}",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "rows": {},
    }
    print(
        f"{'workload':<11} {'deadline':>8} {'checkpoints':>11} {'CPU ms/frame':>12} {'append p99 ms':>13} "
        f"{'disk / stored':>13} {'RSS +MiB':>8}"
    )
    for name in args.workload or list(WORKLOADS):
        frames = WORKLOADS[name]["frames"] // (3 if args.quick else 1)
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for _ in range(args.repeat):
            for mode in ("off", "on"):  # alternated, so drift on the machine hits both
                runs[mode].append(run(name, mode == "on", frames, args.pause))
        row: dict[str, Any] = {"frames": frames, **WORKLOADS[name], "runs": runs}
        for mode in ("off", "on"):
            r = runs[mode]
            summary = {
                "checkpoints": _median(r, "checkpoints"),
                "cpu_ms_per_frame": _median(r, "cpu_ms_per_frame"),
                "append_p99_ms": statistics.median(x["append_ms"]["p99"] for x in r),
                "disk_over_stored": statistics.median(x["disk_bytes"] / x["stored_bytes"] for x in r),
                "rss_growth_mib": _median(r, "rss_growth") / 2**20,
            }
            row[mode] = summary
            deadline = f"{WORKLOADS[name]['deadline']:g} s" if mode == "on" else "off"
            print(
                f"{name:<11} {deadline:>8} {summary['checkpoints']:>11g} "
                f"{summary['cpu_ms_per_frame']:>12.2f} "
                f"{summary['append_p99_ms']:>13.2f} {summary['disk_over_stored']:>13.2f} "
                f"{summary['rss_growth_mib']:>8.0f}"
            )
        row["cpu_on_over_off"] = row["on"]["cpu_ms_per_frame"] / row["off"]["cpu_ms_per_frame"]
        print(f"{'':<11} CPU per frame on/off: {row['cpu_on_over_off']:.2f}")
        report["rows"][name] = row
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.json}")


if __name__ == "__main__":
    main()
