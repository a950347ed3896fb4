"""How long resuming a store takes as it grows: 10 vs 1,000 timepoints of 2048x2048 uint16.

    python benchmarks/resume.py                 # Zarr v2 and v3, 3 repeats
    python benchmarks/resume.py --quick         # 10 vs 100 timepoints

Each store is written once (chunks of 4 timepoints, 256x256 tiles; Zarr v3 shards 4 chunks deep
along t and 4x4 tiles wide), ending one frame into a band row, as a clean close or a kill leaves it.
Then, in a fresh process each time after ``sync`` and a pause, ``open_stream(existing="resume")``
is timed up to the moment it returns (the compatibility check, the clean-up past the extent, the
partial row read back and decoded), and so is the first ``append`` after it.  The objects the
resume reads are counted by wrapping the store.  Resume time should not grow with the store: the
ratio of the 1,000-timepoint store to the 10-timepoint one is the figure of merit (target ~1).
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
SIZE = 2048


def _settings(path: Path, version: int, existing: str) -> Any:
    import acqzarr as az

    shard = 4 if version == 3 else 1
    return az.StreamSettings(
        store=str(path),
        version=version,
        existing=existing,  # type: ignore[arg-type]
        arrays=[
            az.ArraySettings(
                key="cam0",
                dtype="uint16",
                dimensions=[
                    az.Dimension(name="t", kind="time", size=0, chunk=4, shard=shard),
                    az.Dimension(name="y", kind="space", size=SIZE, chunk=256, shard=shard),
                    az.Dimension(name="x", kind="space", size=SIZE, chunk=256, shard=shard),
                ],
                frame_columns={"exposure_ms": "float64"},
            )
        ],
    )


def _frame(t: int) -> Any:
    import numpy as np

    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    return ((yy + xx + 7 * t) % 4096).astype(np.uint16)


def build(path: Path, version: int, timepoints: int) -> None:
    import acqzarr as az

    with az.open_stream(_settings(path, version, "error")) as stream:
        for t in range(timepoints + 1):  # one frame into the next band row
            stream.append(_frame(t), metadata={"exposure_ms": 10.0})


def child(path: Path, version: int) -> dict[str, Any]:
    """Resume ``path`` in this process: seconds to open, to the first append, objects read."""
    import acqzarr as az
    from acqzarr.stores import LocalStore

    read: list[str] = []

    class Counting(LocalStore):
        def get(self, key: str) -> bytes:
            read.append(key)
            return super().get(key)

    settings = _settings(path, version, "resume")
    store = Counting(path)
    t0 = time.perf_counter()
    stream = az.Stream(settings, store)
    opened = time.perf_counter() - t0
    extent = stream.stats().resumed_at
    stream.append(_frame(extent), metadata={"exposure_ms": 10.0})
    first = time.perf_counter() - t0
    stream.close()
    return {"open_s": opened, "first_append_s": first, "objects_read": len(read), "extent": extent}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pause", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=HERE / "last-run-resume.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), int(args.child[1]))))
        return
    sizes = (10, 100) if args.quick else (10, 1000)
    work = Path(tempfile.mkdtemp(prefix="resume-bench-", dir=os.environ.get("BENCH_DIR")))
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.python_version()}, {platform.platform()}",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "rows": [],
    }
    print(f"{'format':<7} {'timepoints':>10} {'open s':>8} {'first append s':>14} {'objects read':>12}")
    try:
        for version in (2, 3):
            medians = {}
            for n in sizes:
                runs = []
                for _ in range(args.repeat):
                    path = work / f"v{version}-{n}.zarr"
                    shutil.rmtree(path, ignore_errors=True)
                    build(path, version, n)  # afresh each time: a resume changes the store
                    os.sync()
                    time.sleep(args.pause)
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", str(path), str(version)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                row = {
                    "version": version,
                    "timepoints": n,
                    "open_s": statistics.median(r["open_s"] for r in runs),
                    "first_append_s": statistics.median(r["first_append_s"] for r in runs),
                    "objects_read": statistics.median(r["objects_read"] for r in runs),
                    "runs": runs,
                }
                medians[n] = row
                report["rows"].append(row)
                print(
                    f"v{version:<6} {n:>10} {row['open_s']:>8.3f} {row['first_append_s']:>14.3f} "
                    f"{row['objects_read']:>12g}"
                )
            small, large = (medians[n] for n in sizes)
            ratio = large["first_append_s"] / small["first_append_s"]
            print(f"v{version}: {sizes[1]} / {sizes[0]} timepoints, time to the first append: {ratio:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.json}")


if __name__ == "__main__":
    main()
