"""The writer's own CPU per frame in an MDA's layout, without the runner: MDAWriter fed by a loop.

    python benchmarks/mda_loop.py                    # 2 x 200 timepoints x 2 channels of 512x512, 3 runs
    python benchmarks/mda_loop.py --fps 0 --fps 600 --runs 1 --json /tmp/x.json   # one run each

``benchmarks/mda.py`` measures what users feel, the MDA's frame rate, but the
writer's CPU there is the process's CPU minus the engine-alone row's, and
UniMMCore's runner shares the GIL and the cores with it.  Here the same
sequence's events, frames and per-frame metadata go straight to
``MDAWriter.frameReady`` from a loop, free-running (``--fps 0``) or paced at a
camera's rate, and every thread's CPU is read when it ends: the appending
(relay) thread counts only its time inside ``frameReady``, so the pacing is
not counted.  Page faults per frame are each thread's minor faults.

The reference row, ``blosc-alone``, compresses the same frames with the same
codec call (``BloscCodec.encode_into``, lz4 byte shuffle, into one reused
buffer) on one thread, again and again from cache.  ``copy-compress`` does the
work no writer of these frames can skip: each frame copied into its image's
band (a ring of four per position and channel; the caller reuses its frame once
``frameReady`` returns) and every band of 8 planes (a z stack of up to 8 with
``--z``: the chunks acqzarr's MDA defaults write) compressed as it fills, on a
pool of 2 threads, fresh from memory.  ``copy-compress-write`` adds what no
writer of a Zarr store can skip either: each compressed band written as its own
object at its chunk key (``p0/0/c/<t>/<c>/0/0``, directories made as keys need
them), staged in a file created with O_DIRECT from a page-aligned buffer,
truncated to its size and renamed into place, on one writer thread, as acqzarr
writes its objects; no metadata; free-running and at each ``--fps``, beside the
acqzarr row of that rate.  ``x_blosc`` and ``x_necessary`` divide a row's CPU
per frame by theirs; ``x_necessary_write`` by ``copy-compress-write``'s at the
same rate.  Every row runs in a fresh process; runs are
interleaved and medians reported.
"""

from __future__ import annotations

import argparse
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

# benchmarks/mda.py's camera frames and sequence (this folder is on sys.path)
from mda import _frames, _sequence
from measure import Snapshot, ThreadCPU

HERE = Path(__file__).resolve().parent


def _threads(counter: ThreadCPU, before: Snapshot) -> dict[str, dict[str, float]]:
    """Every thread group's CPU seconds and minor faults since ``before``, but the feeding (main)
    thread's: the rows count that one themselves (only inside ``frameReady``, or the copies)."""
    groups = ThreadCPU.profile(before, counter.snapshot())["groups"]
    return {name: g for name, g in groups.items() if name != "MainThread"}


def _own_faults() -> int:
    with open("/proc/thread-self/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def child(row: str, fps: float, size: int, timepoints: int, z: int, workdir: Path) -> dict[str, Any]:
    counter = ThreadCPU()  # before acqzarr starts any thread
    import numpy as np

    pool = _frames(size)
    sequence = _sequence(timepoints, z)
    events = list(sequence)
    before = counter.snapshot()  # after numpy started its own (BLAS) threads: not the writer's
    n = len(events)
    if row == "blosc-alone":
        from acqzarr.codecs.blosc import BloscCodec
        from acqzarr.settings import Blosc

        codec = BloscCodec(Blosc(), np.dtype("uint16"))
        out = np.empty(pool[0].nbytes + 16, np.uint8)
        t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(n):
            codec.encode_into(pool[i % len(pool)], out, 0)
        cpu = time.thread_time() - c0
        return {
            "row": row,
            "fps_asked": 0,
            "frames": n,
            "wall": time.perf_counter() - t0,
            "threads": {"blosc": {"cpu": cpu, "faults": 0, "threads": 1}},
        }

    if row in ("copy-compress", "copy-compress-write"):
        write_to = workdir / "objects" if row == "copy-compress-write" else None
        return _copy_compress(pool, events, z, counter, before, write_to, fps)

    from acqzarr.mda import MDAWriter

    class _Core:  # what MDAWriter cancels on an error: nothing runs here
        class mda:
            @staticmethod
            def cancel() -> None: ...

    writer = MDAWriter(workdir / "run.zarr", core=_Core(), overwrite=True)
    summary = {
        "image_infos": [{"width": size, "height": size, "dtype": "uint16", "plane_shape": [size, size]}]
    }
    relay, relay_faults = 0.0, 0
    t0 = time.perf_counter()
    writer.sequenceStarted(sequence, summary)
    for i, event in enumerate(events):
        if fps:
            due = t0 + i / fps
            while (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
        meta = {
            "camera_device": "Camera",
            "exposure_ms": 10.0,
            "runner_time_ms": 1e3 * (time.perf_counter() - t0),
            "position": {"x": event.x_pos or 0.0, "y": event.y_pos or 0.0, "z": event.z_pos or 0.0},
            "mda_event": event,
        }
        c, f = time.thread_time(), _own_faults()
        writer.frameReady(pool[i % len(pool)], event, meta)
        relay += time.thread_time() - c
        relay_faults += _own_faults() - f
    c, f = time.thread_time(), _own_faults()
    writer.sequenceFinished(sequence)
    relay += time.thread_time() - c
    relay_faults += _own_faults() - f
    wall = time.perf_counter() - t0
    writer.raise_if_failed()
    threads = _threads(counter, before)
    threads["relay (frameReady)"] = {"cpu": relay, "faults": relay_faults, "threads": 1}
    flushed = sum(writer.stats(key).frames_flushed for key in writer.images)
    if flushed != n:
        raise RuntimeError(f"{flushed} of {n} frames readable after the run")
    return {"row": row, "fps_asked": fps, "frames": n, "wall": wall, "threads": threads}


def _copy_compress(
    pool: list[Any],
    events: list[Any],
    z: int,
    counter: ThreadCPU,
    before: Snapshot,
    write_to: Path | None = None,
    fps: float = 0.0,
) -> dict[str, Any]:
    """The necessary work per frame (see the module's docstring), free-running or fed at ``fps``;
    with ``write_to``, every compressed band is also written there as its own object."""
    import mmap
    import queue
    from concurrent.futures import Future, ThreadPoolExecutor

    import numpy as np

    from acqzarr.codecs.blosc import BloscCodec
    from acqzarr.settings import Blosc

    codec = BloscCodec(Blosc(), np.dtype("uint16"))
    planes = 8 if z == 1 else min(z, 8)
    band_nbytes = planes * pool[0].nbytes
    # Page-aligned, pre-faulted output buffers (O_DIRECT writes from them), handed back once
    # written: 8 in flight at most, as acqzarr's writer keeps its outputs bounded.
    page = mmap.PAGESIZE
    out_nbytes = -(-(band_nbytes + 4096) // page) * page
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    free: queue.Queue[Any] = queue.Queue()
    for _ in range(8):
        free.put(np.frombuffer(mmap.mmap(-1, out_nbytes, flags=flags), np.uint8))
    made: set[str] = set()
    staging = None if write_to is None else write_to / ".staging"
    if staging is not None:
        staging.mkdir(parents=True)
    direct = getattr(os, "O_DIRECT", 0)

    def write(key: str, out: Any, n: int, serial: int) -> None:
        assert write_to is not None
        assert staging is not None
        path = os.path.join(write_to, key)
        directory = os.path.dirname(path)
        if directory not in made:
            os.makedirs(directory, exist_ok=True)
            made.add(directory)
        tmp = os.path.join(staging, f".{serial}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o644)
        try:
            padded = -(-n // 4096) * 4096
            os.pwrite(fd, memoryview(out)[:padded], 0)
            os.ftruncate(fd, n)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        free.put(out)

    writes: list[Future[None]] = []
    writer = ThreadPoolExecutor(1, thread_name_prefix="copy-write") if write_to is not None else None

    def compress(band: Any, key: str, serial: int) -> int:
        out = free.get()
        n = codec.encode_into(band, out, 0)
        if writer is None:
            free.put(out)
        else:
            writes.append(writer.submit(write, key, out, n, serial))
        return n

    rings: dict[tuple[int, int], list[Any]] = {}
    busy: dict[int, Future[int]] = {}  # id(band) -> its compression, until it is free again
    filled: dict[tuple[int, int], int] = {}
    copy = 0.0
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2, thread_name_prefix="copy-compress") as ex:
        for i, event in enumerate(events):
            if fps:
                due = t0 + i / fps
                while (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
            c0 = time.thread_time()
            index = event.index
            key = (index.get("p", 0), index.get("c", 0))
            ring = rings.get(key)
            if ring is None:
                ring = rings[key] = [np.ones((planes, *pool[0].shape), pool[0].dtype) for _ in range(4)]
            k = filled.get(key, 0)
            band = ring[(k // planes) % len(ring)]
            if k % planes == 0 and id(band) in busy:
                busy.pop(id(band)).result()  # the band is free again
            band[k % planes] = pool[i % len(pool)]
            filled[key] = k + 1
            if (k + 1) % planes == 0:
                object_key = f"p{key[0]}/0/c/{k // planes}/{key[1]}/0/0"
                busy[id(band)] = ex.submit(compress, band, object_key, i)
            copy += time.thread_time() - c0
        for f in busy.values():
            f.result()
    if writer is not None:
        writer.shutdown(wait=True)
        for w in writes:
            w.result()
    return {
        "row": "copy-compress" if write_to is None else "copy-compress-write",
        "fps_asked": fps,
        "frames": len(events),
        "wall": time.perf_counter() - t0,
        "threads": {
            **_threads(counter, before),
            "copy (appending thread)": {"cpu": copy, "faults": 0, "threads": 1},
        },
    }


def _run(row: str, fps: float, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            row,
            "--fps",
            str(fps),
            "--size",
            str(args.size),
            "--timepoints",
            str(args.timepoints),
            "--z",
            str(args.z),
            "--workdir",
            work,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"{row} at {fps} frames/s failed:\n{out.stderr}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _per_frame(result: dict[str, Any]) -> dict[str, Any]:
    n = result["frames"]
    threads = {
        k: {"cpu_ms": 1e3 * v["cpu"] / n, "faults": v["faults"] / n} for k, v in result["threads"].items()
    }
    total = sum(t["cpu_ms"] for t in threads.values())
    return {"fps": n / result["wall"], "cpu_ms": total, "threads": threads}


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--fps", type=float, action="append", help="frames/s to feed at (0: free); default 0 and 600"
    )
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--timepoints", type=int, default=200)
    p.add_argument("--z", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--dir", help="where the stores are written (default: the system's temporary directory)")
    p.add_argument("--json", type=Path, default=HERE / "last-run-mda-loop.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fps = (args.fps or [0.0])[0]
        print(json.dumps(child(args.child, fps, args.size, args.timepoints, args.z, args.workdir)))
        return
    rows = [("blosc-alone", 0.0), ("copy-compress", 0.0)]
    for f in args.fps or [0.0, 600.0]:  # each acqzarr row beside the necessary work at its rate
        rows += [("copy-compress-write", f), ("acqzarr", f)]
    runs: dict[str, list[dict[str, Any]]] = {}
    for k in range(args.runs):
        print(f"-- run {k + 1} of {args.runs}")
        blosc = necessary = necessary_write = None
        for row, fps in rows:
            figures = _per_frame(_run(row, fps, args))
            rate = "free" if not fps else f"{fps:g}/s"
            name = row if row in ("blosc-alone", "copy-compress") else f"{row} @ {rate}"
            if row == "blosc-alone":
                blosc = figures["cpu_ms"]
            if row == "copy-compress":
                necessary = figures["cpu_ms"]
            if row == "copy-compress-write":
                necessary_write = figures["cpu_ms"]
            figures["x_blosc"] = figures["cpu_ms"] / blosc if blosc else None
            figures["x_necessary"] = figures["cpu_ms"] / necessary if necessary else None
            figures["x_necessary_write"] = figures["cpu_ms"] / necessary_write if necessary_write else None
            runs.setdefault(name, []).append(figures)
            by = ", ".join(
                f"{t}={v['cpu_ms']:.3f} ({v['faults']:.0f} faults)" for t, v in figures["threads"].items()
            )
            rate, cpu = f"{figures['fps']:7.0f} frames/s", f"writer CPU {figures['cpu_ms']:.3f} ms/frame"
            print(f"{name:22s} {rate}  {cpu}  [{by}]")
    summary: dict[str, Any] = {}
    print(
        "-- medians over the runs (x_blosc, x_necessary, x_necessary_write: writer CPU over "
        "blosc-alone's, copy-compress's, copy-compress-write's)"
    )
    for name, figs in runs.items():
        threads = {
            t: round(statistics.median(f["threads"][t]["cpu_ms"] for f in figs if t in f["threads"]), 3)
            for t in figs[0]["threads"]
        }
        summary[name] = {
            "fps": round(statistics.median(f["fps"] for f in figs), 1),
            "cpu_ms": round(statistics.median(f["cpu_ms"] for f in figs), 3),
            "x_blosc": round(statistics.median(f["x_blosc"] for f in figs), 2),
            "x_necessary": _median_or_none([f["x_necessary"] for f in figs]),
            "x_necessary_write": _median_or_none([f["x_necessary_write"] for f in figs]),
            "threads_cpu_ms": threads,
        }
        print(f"{name:22s} {summary[name]}")
    report = {
        "machine": f"{os.cpu_count()} vCPU {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/mda_loop.py " + " ".join(sys.argv[1:]),
        "workload": {
            "size": args.size,
            "timepoints": args.timepoints,
            "z": args.z,
            "positions": 2,
            "channels": 2,
        },
        "summary": summary,
        "runs": runs,
    }
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
