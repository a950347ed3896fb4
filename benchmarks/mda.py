"""The same pymmcore-plus MDA recorded by acqzarr and by ome-writers: frames/s and CPU s per frame.

    python benchmarks/mda.py                         # 2 x 200 timepoints x 2 channels of 512x512 uint16
    python benchmarks/mda.py --timepoints 50 --pause 0 --json /tmp/x.json   # smoke
    python benchmarks/mda.py --waits serial --json benchmarks/last-run-mda-serial.json

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
    acqzarr-process       output=MDAWriter(path, process=True): the stream in a writer process
                          (its CPU over the run, read from /proc, is counted in the row's)
    limit-compress        a handler that only compresses each frame (Blosc lz4, byte shuffle, as
                          acqzarr) on 2 threads and drops the bytes: the runner's rate while
                          the CPU does a writer's necessary work; no writer that compresses
                          can be faster on this machine

``--waits serial`` makes the core wait for its devices one after the other on the
runner's thread, as a C++ core waits for its adapters.  UniMMCore's own waits start
a thread pool and a thread per device for every wait, several per event, so the
runner's rate follows how soon a new thread gets a core, which any writer's
threads delay; with serial waits what is left of the runner is its own Python.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Rows every other row is divided by, in the same run.
REFERENCES = ("none", "limit-compress", "ome-writers-lz4")
WRITERS = ("none", "limit-compress", "acqzarr", "acqzarr-process", "ome-writers", "ome-writers-lz4")


def _frames(size: int) -> list[Any]:
    """The camera's 16 precomputed frames: Poisson noise on a smooth background, uint16."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    background = 400 + 300 * np.sin(xx / 37.0) * np.cos(yy / 53.0)
    return [rng.poisson(background + 20 * k).astype(np.uint16) for k in range(16)]


def _core(size: int, waits: str = "parallel") -> Any:
    import numpy as np
    from pymmcore_plus.experimental.unicore import SimpleCameraDevice

    from acqzarr.mda import simulated_core

    pool = _frames(size)

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

    core = simulated_core(camera=FreeRunningCamera())
    if waits == "serial":
        _wait_serially(core)
    return core


def _wait_serially(core: Any) -> None:
    """Make ``core`` wait for its Python devices one after the other on the calling thread, as a
    C++ core waits for its adapters, instead of UniMMCore's default: a new thread pool, and a
    thread per device, for every wait (several per event).  The devices here are never busy, so
    what is left of the runner is its own Python."""
    import types

    from pymmcore_plus import CMMCorePlus

    devices = core._pydevices

    def wait_for_device_type(self: Any, dev_type: int) -> None:
        CMMCorePlus.waitForDeviceType(self, dev_type)  # the C++ devices (none loaded here)
        devices.wait_for_device_type(dev_type, self.getTimeoutMs(), parallel=False)

    core.waitForDeviceType = types.MethodType(wait_for_device_type, core)


def _sequence(timepoints: int, z: int) -> Any:
    import useq

    return useq.MDASequence(
        time_plan={"interval": 0, "loops": timepoints},
        channels=["DAPI", "FITC"],
        stage_positions=[(0.0, 0.0, 0.0), (100.0, 0.0, 0.0)],
        z_plan={"range": float(z - 1), "step": 1.0} if z > 1 else None,
        axis_order="tpcz",
    )


class CompressOnly:
    """The limit row's handler: each frame compressed on a 2-thread pool (the GIL released in
    Blosc), at most 32 frames in flight, the bytes dropped."""

    def __init__(self) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np

        from acqzarr.codecs.blosc import BloscCodec
        from acqzarr.settings import Blosc

        self._codec = BloscCodec(Blosc(), np.dtype("uint16"))
        self._pool = ThreadPoolExecutor(2)
        self._room = threading.Semaphore(32)
        self._out = threading.local()

    def _compress(self, img: Any) -> None:
        import numpy as np

        try:
            out = getattr(self._out, "buf", None)
            if out is None or out.nbytes < img.nbytes + 16:
                out = self._out.buf = np.empty(img.nbytes + 16, np.uint8)
            self._codec.encode_into(img, out, 0)
        finally:
            self._room.release()

    def frameReady(self, img: Any, event: Any, meta: Any) -> None:
        self._room.acquire()
        self._pool.submit(self._compress, img)

    def sequenceFinished(self, sequence: Any) -> None:
        self._pool.shutdown(wait=True)


def _output(writer: str, path: Path, core: Any) -> Any:
    if writer == "none":
        return None
    if writer == "limit-compress":
        return CompressOnly()
    if writer in ("acqzarr", "acqzarr-process"):
        from acqzarr.mda import MDAWriter

        if writer == "acqzarr-process":
            return MDAWriter(path / "run.zarr", core=core, overwrite=True, process=True)
        return MDAWriter(path / "run.zarr", core=core, overwrite=True)
    if writer == "ome-writers":
        return str(path / "run.ome.zarr")
    from ome_writers import AcquisitionSettings

    return AcquisitionSettings(root_path=str(path / "run.ome.zarr"), compression="blosc-lz4", overwrite=True)


def _process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system, all its threads) of the live process ``pid``; 0 for None."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child(writer: str, size: int, timepoints: int, z: int, workdir: Path, waits: str) -> dict[str, Any]:
    """One writer in this process: time ``core.mda.run``, the process CPU it used, and per thread."""
    sys.path.insert(0, str(HERE))
    from measure import ThreadCPU

    threads = ThreadCPU()
    core = _core(size, waits)
    sequence = _sequence(timepoints, z)
    frames = len(list(sequence))
    out = _output(writer, workdir, core)
    before = threads.snapshot()
    writer_pid = getattr(out, "writer_pid", None)  # MDAWriter(process=True): its CPU in the run
    child0 = _process_cpu(writer_pid)
    cpu0, t0 = time.process_time(), time.perf_counter()
    core.mda.run(sequence, output=out, overwrite=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    child_cpu = _process_cpu(writer_pid) - child0
    per_thread = threads.profile(before, threads.snapshot())
    if writer.startswith("acqzarr"):
        if hasattr(out, "close"):  # stops the writer process (process=True); older commits have none
            out.close()
        out.raise_if_failed()
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


def _run_writer(writer: str, args: argparse.Namespace, src: Path | None) -> dict[str, Any]:
    """One writer in a fresh process (``src``: another commit's acqzarr on PYTHONPATH)."""
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/tmp")) as tmp:
        subprocess.run(["sync"], check=False)
        time.sleep(args.pause)
        cmd = [sys.executable, __file__, "--child", writer, "--workdir", tmp]
        cmd += ["--size", str(args.size), "--timepoints", str(args.timepoints), "--z", str(args.z)]
        cmd += ["--waits", args.waits]
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"{writer} failed:\n{done.stderr}")
        row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def _summary(runs: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Per writer, the median over runs of frames/s and CPU, and the medians of its ratios to the
    rows measured in the same run: the engine alone (none), the compression limit, ome-writers-lz4."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["writer"] for rows in runs for r in rows):
        per_run = []
        for rows in runs:
            by = {r["writer"]: r for r in rows}
            if name not in by:
                continue
            fps = by[name]["frames_per_s"]
            ratios = {f"x_{ref}": fps / by[ref]["frames_per_s"] for ref in REFERENCES if ref in by}
            per_run.append({"fps": fps, "cpu_ms": by[name]["cpu_s_per_frame"] * 1e3, **ratios})
        out[name] = {
            key: round(statistics.median(r[key] for r in per_run), 3)
            for key in per_run[0]
            if all(key in r for r in per_run)
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--timepoints", type=int, default=200)
    parser.add_argument("--z", type=int, default=1, help="z planes per stack (1: no z plan)")
    parser.add_argument(
        "--waits",
        choices=("parallel", "serial"),
        default="parallel",
        help="how the core waits for its devices: UniMMCore's thread per device and wait (parallel), "
        "or one after the other on the runner's thread, as a C++ core does (serial)",
    )
    parser.add_argument("--pause", type=float, default=5.0, help="seconds after sync before each writer")
    parser.add_argument("--writer", action="append", choices=WRITERS, help="default: all")
    parser.add_argument("--runs", type=int, default=3, help="every writer this many times, interleaved")
    parser.add_argument(
        "--against", metavar="REV", help="also row acqzarr@REV: in-process acqzarr of that commit"
    )
    parser.add_argument("--json", type=Path, default=HERE / "last-run-mda.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args.timepoints, args.z, args.workdir, args.waits)))
        return
    with contextlib.ExitStack() as stack:
        old = None
        if args.against:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            git = ["git", "-C", str(HERE.parent)]
            subprocess.run([*git, "worktree", "add", "--detach", str(tmp / "old"), args.against], check=True)
            stack.callback(subprocess.run, [*git, "worktree", "remove", "--force", str(tmp / "old")])
            old = tmp / "old" / "src"
            label = subprocess.run(
                [*git, "rev-parse", "--short", args.against], check=True, capture_output=True, text=True
            ).stdout.strip()
        runs = []
        for run in range(args.runs):
            print(f"-- run {run + 1} of {args.runs}")
            rows = []
            plan = [(w, None) for w in args.writer or WRITERS]
            if old is not None:
                plan.append(("acqzarr", old))
            for writer, src in plan:
                row = _run_writer(writer, args, src)
                if src is not None:
                    row["writer"] = f"acqzarr@{label}"
                rows.append(row)
                print(
                    f"{row['writer']:16s} {row['frames_per_s']:8.1f} frames/s {row['MB_per_s']:7.1f} MB/s "
                    f"{row['cpu_s_per_frame'] * 1e3:7.2f} ms CPU/frame  {row['cores_used']:.2f} cores  "
                    f"ratio {row['ratio']}"
                )
                print(
                    "    CPU ms/frame by thread: "
                    + "  ".join(f"{k}={v:.2f}" for k, v in row["thread_ms_per_frame"].items())
                )
            runs.append(rows)
    import ome_writers
    import pymmcore_plus

    summary = _summary(runs)
    print("-- medians over the runs (x_REF: frames/s over REF's in the same run)")
    for name, figures in summary.items():
        print(f"{name:16s} " + "  ".join(f"{k}={v}" for k, v in figures.items()))
    result = {
        "workload": {
            "size": args.size,
            "timepoints": args.timepoints,
            "channels": 2,
            "positions": 2,
            "z": args.z,
            "waits": args.waits,
        },
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "versions": {"pymmcore-plus": pymmcore_plus.__version__, "ome-writers": ome_writers.__version__},
        "summary": summary,
        "runs": [{"rows": rows} for rows in runs],
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
