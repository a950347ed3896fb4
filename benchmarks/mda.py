"""The same pymmcore-plus MDA recorded by acqzarr and by ome-writers: frames/s and CPU s per frame.

    python benchmarks/mda.py                         # 2 x 200 timepoints x 2 channels of 512x512 uint16
    python benchmarks/mda.py --timepoints 50 --pause 0 --json /tmp/x.json   # smoke

The microscope is pymmcore-plus's UniMMCore with a pure-Python camera that
free-runs (no exposure wait: each snap copies one of 16 precomputed
camera-like frames, Poisson noise on a smooth background), so the run goes as
fast as the writer lets it.  Each writer runs in a fresh subprocess after
``sync`` and a pause; ``run()`` is timed from the call to its return (for
every writer that includes finalizing the store), CPU is the process's user +
system time over the same span.  The "no output" row is the runner and camera
alone: what any writer adds is the difference.  Rows:

    none                  core.mda.run(seq)
    acqzarr               core.mda.run(seq, output=MDAWriter(path))        (v3 shards, blosc lz4)
    ome-writers           core.mda.run(seq, output="run.ome.zarr")          (its default: tensorstore
                                                                            backend, no compression)
    ome-writers-lz4       output=AcquisitionSettings(..., compression="blosc-lz4")
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WRITERS = ("none", "acqzarr", "acqzarr-process", "ome-writers", "ome-writers-lz4")


def _core(size: int) -> Any:
    import numpy as np
    from pymmcore_plus.experimental.unicore import SimpleCameraDevice

    from acqzarr.mda import simulated_core

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    background = 400 + 300 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    pool = [rng.poisson(background + 20 * k).astype(np.uint16) for k in range(16)]

    class FreeRunningCamera(SimpleCameraDevice):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def get_exposure(self) -> float:
            return 0.0

        def set_exposure(self, exposure: float) -> None: ...

        def sensor_shape(self) -> tuple[int, int]:
            return (size, size)

        def dtype(self) -> Any:
            return np.uint16

        def snap(self, buffer: Any) -> dict[str, Any]:
            buffer[:] = pool[self.n % len(pool)]
            self.n += 1
            return {}

    return simulated_core(camera=FreeRunningCamera())


def _sequence(timepoints: int, z: int) -> Any:
    import useq

    return useq.MDASequence(
        time_plan={"interval": 0, "loops": timepoints},
        channels=["DAPI", "FITC"],
        stage_positions=[(0.0, 0.0, 0.0), (100.0, 0.0, 0.0)],
        z_plan={"range": float(z - 1), "step": 1.0} if z > 1 else None,
        axis_order="tpcz",
    )


def _output(writer: str, path: Path, core: Any) -> Any:
    if writer == "none":
        return None
    if writer in ("acqzarr", "acqzarr-process"):
        from acqzarr.mda import MDAWriter

        if writer == "acqzarr-process":
            return MDAWriter(path / "run.zarr", core=core, overwrite=True, process=True)
        return MDAWriter(path / "run.zarr", core=core, overwrite=True)
    if writer == "ome-writers":
        return str(path / "run.ome.zarr")
    from ome_writers import AcquisitionSettings

    return AcquisitionSettings(root_path=str(path / "run.ome.zarr"), compression="blosc-lz4", overwrite=True)


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (the writer process once it has exited)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child(writer: str, size: int, timepoints: int, z: int, workdir: Path) -> dict[str, Any]:
    """One writer in this process: time ``core.mda.run``, the process CPU it used, and per thread."""
    sys.path.insert(0, str(HERE))
    from measure import ThreadCPU

    threads = ThreadCPU()
    core = _core(size)
    sequence = _sequence(timepoints, z)
    frames = len(list(sequence))
    out = _output(writer, workdir, core)
    before = threads.snapshot()
    children0 = _children_cpu()  # a writer process started before (process=True) counts from here
    cpu0, t0 = time.process_time(), time.perf_counter()
    core.mda.run(sequence, output=out, overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    per_thread = threads.profile(before, threads.snapshot())
    if writer.startswith("acqzarr"):
        out.close()  # the writer process (process=True) exits; its CPU is counted below
        out.raise_if_failed()
    child_cpu = _children_cpu() - children0
    stored = sum(f.stat().st_size for f in workdir.rglob("*") if f.is_file())
    raw = frames * size * size * 2
    return {
        "writer": writer,
        "frames": frames,
        "seconds": round(wall, 3),
        "frames_per_s": round(frames / wall, 1),
        "MB_per_s": round(raw / wall / 1e6, 1),
        "cpu_s_per_frame": round((cpu + child_cpu) / frames, 5),
        "cores_used": round((cpu + child_cpu) / wall, 2),
        "writer_process_ms_per_frame": round(child_cpu / frames * 1e3, 3),
        "stored_MB": round(stored / 1e6, 1),
        "ratio": round(raw / stored, 2) if stored else None,
        # CPU ms per frame by thread group: MainThread runs the MDA engine, Thread (pymmcore-plus's
        # relay) calls the writer's frameReady, acqzarr-io / acqzarr-compress are the stream's.
        "thread_ms_per_frame": {
            name: round(g["cpu"] / frames * 1e3, 3)
            for name, g in per_thread["groups"].items()
            if g["cpu"] > 0.005
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--timepoints", type=int, default=200)
    parser.add_argument("--z", type=int, default=1, help="z planes per stack (1: no z plan)")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds after sync before each writer")
    parser.add_argument("--writer", action="append", choices=WRITERS, help="default: all")
    parser.add_argument("--json", type=Path, default=HERE / "last-run-mda.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.timepoints, args.z, args.workdir)))
        return
    rows = []
    for writer in args.writer or WRITERS:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/tmp")) as tmp:
            subprocess.run(["sync"], check=False)
            time.sleep(args.pause)
            cmd = [sys.executable, __file__, "--child", writer, "--workdir", tmp]
            cmd += ["--size", str(args.size), "--timepoints", str(args.timepoints), "--z", str(args.z)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"{writer:16s} {row['frames_per_s']:8.1f} frames/s {row['MB_per_s']:7.1f} MB/s "
                f"{row['cpu_s_per_frame'] * 1e3:7.2f} ms CPU/frame  {row['cores_used']:.2f} cores  "
                f"ratio {row['ratio']}"
            )
            print(
                "    CPU ms/frame by thread: "
                + "  ".join(f"{k}={v:.2f}" for k, v in row["thread_ms_per_frame"].items())
            )
    import ome_writers
    import pymmcore_plus

    result = {
        "workload": {
            "size": args.size,
            "timepoints": args.timepoints,
            "channels": 2,
            "positions": 2,
            "z": args.z,
        },
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "versions": {"pymmcore-plus": pymmcore_plus.__version__, "ome-writers": ome_writers.__version__},
        "rows": rows,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
