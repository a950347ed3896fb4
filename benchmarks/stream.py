"""Side-by-side streaming benchmark: acqzarr vs acquire-zarr vs tensorstore, against the machine's limits.

    python benchmarks/stream.py                    # default, raw and small variants
    python benchmarks/stream.py --variant default --json results.json
    python benchmarks/stream.py --variant zstack-small --variant zstack   # (t, z, y, x) z-stacks
    python benchmarks/stream.py --variant zstack --size 256 --planes 64 --frames 128 --pause 0  # smoke

Each writer (and each limit) runs in its own subprocess after ``sync`` and a
pause, so peak RSS is clean and memory starts cold.  Inside that process the
writer runs twice on the same frames: "cold" (fresh process, first touch of
memory) and "warm" (the process's memory already touched).  Figures are ratios
from the same run: to acquire-zarr and to the machine limit
(min(2-thread Blosc rate, disk rate) compressed; disk rate uncompressed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runners import array_shape, axes, band_bytes, raw_bytes

HERE = Path(__file__).resolve().parent

# A workload: frames of size x size uint16 drawn in turn from a pool of ``pool`` camera-like frames,
# chunked (chunk_t, [chunk_z,] chunk_xy, chunk_xy) with shard_xy x shard_xy chunks per v3 shard in
# y/x. ``planes`` makes it a z-stack (t, z, y, x): frames fill z, then the next timepoint, and
# ``frames`` counts planes over all timepoints. ``writers`` and ``limits`` narrow the rows a
# variant runs (default: all).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {
        "size": 2048,
        "frames": 256,
        "chunk_t": 32,
        "chunk_xy": 256,
        "shard_xy": 4,
        "compress": True,
        "pool": 16,
    },
    "raw": {
        "size": 2048,
        "frames": 256,
        "chunk_t": 32,
        "chunk_xy": 256,
        "shard_xy": 4,
        "compress": False,
        "pool": 16,
    },
    "small": {
        "size": 512,
        "frames": 4096,
        "chunk_t": 32,
        "chunk_xy": 128,
        "shard_xy": 4,
        "compress": True,
        "pool": 64,
    },
    # z-stacks: 2 timepoints of 512 planes, chunks (1, 64, 256, 256), v3 shards of (1, 4, 4, 4)
    # chunks (256 planes x 1024 x 1024, 512 MiB raw). acquire-zarr gets the same chunks and shards.
    "zstack": {
        "size": 2048,
        "frames": 1024,
        "planes": 512,
        "chunk_t": 1,
        "chunk_z": 64,
        "shard_z": 4,
        "chunk_xy": 256,
        "shard_xy": 4,
        "compress": True,
        "pool": 16,
        "writers": ["acqzarr-v3", "acqzarr-v2", "acquire-zarr"],
        "limits": ["disk-write-cache", "disk-write-direct", "blosc-2-threads"],
    },
    # chunks (1, 32, 128, 128), v3 shards of (1, 4, 4, 4) chunks (128 planes x 512 x 512, 64 MiB raw).
    "zstack-small": {
        "size": 512,
        "frames": 1024,
        "planes": 512,
        "chunk_t": 1,
        "chunk_z": 32,
        "shard_z": 4,
        "chunk_xy": 128,
        "shard_xy": 4,
        "compress": True,
        "pool": 64,
        "writers": ["acqzarr-v3", "acqzarr-v2", "acquire-zarr"],
        "limits": ["disk-write-cache", "disk-write-direct", "blosc-2-threads"],
    },
}
# Run when no --variant is given; the z-stacks only when named. An engine that buffers a whole
# volume per layer reserves two layers and their worst-case output: 16 GiB for ``zstack``.
DEFAULT_VARIANTS = ["default", "raw", "small"]
WRITERS = [
    "acqzarr-v3",
    "acqzarr-v2",
    "acqzarr-v3-pyramid",
    "acquire-zarr",
    "tensorstore-frame",
    "tensorstore-layer",
    "acqzarr-v3-s3",
    "acqzarr-v2-s3",
]
LIMITS = [
    "memcpy",
    "disk-write+fsync",
    "disk-write-cache",
    "disk-write-direct",
    "blosc-1-thread",
    "blosc-2-threads",
]


@contextlib.contextmanager
def s3_server(base: Path, needed: bool) -> Iterator[dict[str, str]]:
    """A local S3 server (SeaweedFS ``weed mini``, the one the tests use) for the ``-s3`` writers.

    It runs for the whole benchmark, on the same machine: its CPU use is part of what those rows
    measure.  The writers get its address and keys through the environment.
    """
    if not needed:
        yield {}
        return
    sys.path.insert(0, str(HERE.parent / "tests" / "s3"))
    from seaweed import Seaweed

    with Seaweed(base / "seaweed", bucket="bench") as server:
        yield {
            **server.env,
            "ACQZARR_BENCH_S3_ENDPOINT": server.endpoint,
            "ACQZARR_BENCH_S3_BUCKET": server.bucket,
        }


WORKER_ENV: dict[str, str] = {}


def run_one(name: str, workload: dict[str, Any], base: Path, pause: float) -> dict[str, Any]:
    os.sync()
    time.sleep(pause)  # memory freed by the previous process goes back to the host (see PERF-NOTES)
    proc = subprocess.run(
        [sys.executable, str(HERE / "runners.py"), name, json.dumps(workload), str(base)],
        capture_output=True,
        text=True,
        env={**os.environ, **WORKER_ENV},
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    py = platform.python_version()
    return f"{os.cpu_count()} vCPU {cpu}, {mem:.0f} GiB RAM, Python {py}, {platform.system()}"


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def variant_report(
    name: str, w: dict[str, Any], base: Path, writers: list[str], pause: float, repeat: int
) -> dict[str, Any]:
    """Limits and writers ``repeat`` times each (interleaved, so drift hits all alike); medians reported."""
    raw = raw_bytes(w)
    band = band_bytes(w)
    limit_names = w.get("limits", LIMITS) + (["s3-put"] if any(wr.endswith("-s3") for wr in writers) else [])
    samples: dict[str, list[float]] = {lim: [] for lim in limit_names}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(repeat):
        for lim in limit_names:
            samples[lim].append(run_one(lim, w, base, pause).get("rate", float("nan")))
        for writer in writers:
            res = run_one(writer, w, base, pause)
            for run in res.get("runs", [{"attempt": "-", "error": res.get("error", "?")}]):
                runs.setdefault((writer, run["attempt"]), []).append(run)
    limits = {lim: _median(v) for lim, v in samples.items()}
    rows = []
    for (writer, _attempt), rs in runs.items():
        ok = sorted((r for r in rs if "wall" in r), key=lambda r: r["wall"])
        if not ok:
            rows.append({"writer": writer, **rs[0]})
            continue
        median = dict(ok[len(ok) // 2])
        median["walls"] = [r["wall"] for r in ok]
        median["ok"] = all(r["ok"] for r in ok)
        rows.append({"writer": writer, **median})
    # No writer here fsyncs by default, so the disk rate that bounds them is the best non-fsync write
    # path (O_DIRECT or page cache, whichever this machine does faster). Throughput is counted in raw
    # frame bytes and a compressed stream writes raw/ratio bytes, so the disk binds at rate x ratio
    # (the ratio measured on this run's output).
    disk = max(limits["disk-write-cache"], limits["disk-write-direct"])
    ratios = sorted(raw / r["disk"] for r in rows if r.get("disk") and "pyramid" not in r["writer"])
    ratio = ratios[len(ratios) // 2] if ratios else 1.0
    limit = min(limits["blosc-2-threads"], disk * ratio) if w["compress"] else disk
    ref = {r["attempt"]: raw / r["wall"] for r in rows if r["writer"] == "acquire-zarr" and "wall" in r}
    local = {(r["writer"], r["attempt"]): raw / r["wall"] for r in rows if "wall" in r}
    for r in rows:
        if "wall" not in r:
            continue
        rate = raw / r["wall"]
        if r["writer"].endswith("-s3"):
            r["vs_local"] = rate / local.get((r["writer"].removesuffix("-s3"), r["attempt"]), float("nan"))
        r.update(
            rate=rate,
            fps=w["frames"] / r["wall"],
            vs_acquire=rate / ref.get(r["attempt"], float("nan")),
            vs_limit=rate / limit,
            ratio=raw / max(r["disk"], 1),
            # What the writer added to the worker: its high-water mark over the resident memory
            # before it started (frame pool, interpreter, and for a warm run what the cold one kept).
            rss_growth=r["peak_rss"] - r["start_rss"],
        )
    return {
        "variant": name,
        "workload": w,
        "raw_bytes": raw,
        "band_bytes": band,
        "limits": limits,
        "limit": limit,
        "rows": rows,
        "repeat": repeat,
    }


def describe(w: dict[str, Any]) -> str:
    """The workload in one line, from the same axes the writers are given."""
    ax = axes(w)
    names = ", ".join(a.name for a in ax)
    shape = ", ".join(map(str, array_shape(w)))
    band = band_bytes(w)
    band_of = f"{ax[-3].chunk} {'planes' if w.get('planes') else 'frames'} of {w['size']}x{w['size']}"
    return (
        f"{w['frames']} frames of {w['size']}x{w['size']} uint16 in ({names}) = ({shape}), "
        f"chunks ({', '.join(str(a.chunk) for a in ax)}), "
        f"v3 shards ({', '.join(str(a.shard) for a in ax)}) chunks, "
        f"{'Blosc lz4 clevel 1 byte shuffle' if w['compress'] else 'uncompressed'}; "
        f"1 band = {band_of} = {band / 2**20:g} MiB"
    )


def _bands(nbytes: float, band: int) -> str:
    return f"{nbytes / band:.1f}"


def markdown(report: dict[str, Any]) -> str:
    w = report["workload"]
    band = report["band_bytes"]
    head = f"### {report['variant']}: {describe(w)}\n\n"
    lim = ", ".join(f"{k} {v / 1e9:.2f} GB/s" for k, v in report["limits"].items())
    head += f"Machine limits: {lim}; limit used: {report['limit'] / 1e9:.2f} GB/s of raw frames"
    head += " (min of 2-thread Blosc and disk x compression ratio)" if w["compress"] else " (disk)"
    pacing = f"Paced at {w['fps']:g} fps." if w.get("fps") else "Free-running (as fast as accepted)."
    head += f". {pacing} Median of {report['repeat']} run(s) per row.\n\n"
    head += (
        "`RSS growth` is the worker's peak resident memory over its resident memory just before the "
        "writer started; `in flight` is acqzarr's own count of bytes reserved for frames not yet "
        "written (peak / cap).\n\n"
    )
    cols = (
        "| writer | run | wall s | GB/s | frames/s | x acquire-zarr | x limit | append p50/p99/max ms "
        "| peak RSS MiB | RSS growth MiB (bands) | in flight peak / cap MiB (bands) | disk MB | ratio "
        "| read back |"
    )
    lines = [cols, "|---" * (cols.count("|") - 1) + "|"]
    for r in report["rows"]:
        if "wall" not in r:
            lines.append(f"| {r['writer']} | {r['attempt']} | failed: {r.get('error', '?')} |")
            continue
        growth = f"+{r['rss_growth'] / 2**20:.0f} (+{_bands(r['rss_growth'], band)})"
        engine = r.get("engine")
        inflight = (
            f"{engine['peak'] / 2**20:.0f} / {engine['cap'] / 2**20:.0f} "
            f"({_bands(engine['peak'], band)} / {_bands(engine['cap'], band)})"
            if engine
            else "-"
        )
        lines.append(
            f"| {r['writer']} | {r['attempt']} | {r['wall']:.2f} | {r['rate'] / 1e9:.2f} | {r['fps']:.0f} | "
            f"{r['vs_acquire']:.2f} | {r['vs_limit']:.2f} "
            f"| {r['p50']:.2f} / {r['p99']:.1f} / {r['max']:.0f} | {r['peak_rss'] / 2**20:.0f} "
            f"| {growth} | {inflight} "
            f"| {r['disk'] / 1e6:.0f} | {r['ratio']:.2f} | {'ok' if r['ok'] else 'MISMATCH'} |"
        )
    s3 = [r for r in report["rows"] if "vs_local" in r]
    if s3:
        put = report["limits"]["s3-put"]
        ratio = report["raw_bytes"] / max(s3[0]["disk"], 1)
        lines.append(
            "\nS3 rows write to a local SeaweedFS server (`weed mini`) on the same machine. Against the "
            "same writer on the filesystem: "
            + ", ".join(f"{r['writer']} {r['attempt']} {r['vs_local']:.2f}" for r in s3)
            + f". The server alone accepts {put / 1e9:.2f} GB/s of uploads (s3-put: shard-sized "
            f"objects, 4 at a time, nothing else running), {put * ratio / 1e9:.2f} GB/s of raw frames at "
            "this compression ratio; against that: "
            + ", ".join(f"{r['writer']} {r['attempt']} {r['rate'] / (put * ratio):.2f}" for r in s3)
            + "."
        )
    return head + "\n".join(lines) + "\n"


def workload_problem(w: dict[str, Any]) -> str | None:
    """What makes a (possibly overridden) workload unrunnable, said before any process starts."""
    if w.get("planes"):
        if w["frames"] % w["planes"]:
            return f"{w['frames']} frames are not whole timepoints of {w['planes']} planes"
        if w["chunk_z"] > w["planes"]:
            return f"chunk_z {w['chunk_z']} is deeper than the {w['planes']} planes of a timepoint"
    if w["chunk_xy"] > w["size"]:
        return f"chunk_xy {w['chunk_xy']} is larger than the {w['size']}x{w['size']} frame"
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--variant",
        action="append",
        choices=list(VARIANTS),
        help=f"repeatable; default: {', '.join(DEFAULT_VARIANTS)}",
    )
    p.add_argument(
        "--writer", action="append", choices=WRITERS, help="repeatable; default: all the variant runs"
    )
    p.add_argument(
        "--frames", type=int, help="override the frame count (z-stacks: planes over all timepoints)"
    )
    p.add_argument("--size", type=int, help="override the frame edge (size x size) of every variant")
    p.add_argument("--planes", type=int, help="override the planes per timepoint of z-stack variants")
    p.add_argument(
        "--fps", type=float, default=0, help="pace appends at this frame rate (default: free-running)"
    )
    p.add_argument("--no-warm", action="store_true", help="only the cold run per writer")
    p.add_argument("--repeat", type=int, default=1, help="runs per writer and limit; medians reported")
    p.add_argument(
        "--pause", type=float, default=5.0, help="seconds to pause before each process (default 5)"
    )
    p.add_argument("--dir", help="where stores are written (default: a temporary dir under the cwd)")
    p.add_argument("--json", help="also write the full results as JSON to this file")
    args = p.parse_args()
    plan = []
    for name in args.variant or DEFAULT_VARIANTS:
        w = dict(VARIANTS[name], warm=not args.no_warm, fps=args.fps)
        overrides = {
            "frames": args.frames,
            "size": args.size,
            "planes": args.planes if "planes" in w else None,
        }
        w.update({k: v for k, v in overrides.items() if v})
        problem = workload_problem(w)
        if problem:
            p.error(f"variant {name}: {problem}")
        writers = [wr for wr in args.writer or WRITERS if wr in w.get("writers", WRITERS)]
        skipped = sorted(set(args.writer or []) - set(writers))
        if skipped:
            print(f"variant {name}: not run for {', '.join(skipped)}", file=sys.stderr)
        plan.append((name, w, writers))
    out: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "variants": []}
    print(f"Machine: {out['machine']}\n")
    with (
        tempfile.TemporaryDirectory(dir=args.dir or ".", prefix="bench-") as tmp,
        s3_server(Path(tmp), any(wr.endswith("-s3") for _, _, ws in plan for wr in ws)) as env,
    ):
        WORKER_ENV.update(env)
        for name, w, writers in plan:
            report = variant_report(name, w, Path(tmp), writers, args.pause, args.repeat)
            out["variants"].append(report)
            print(markdown(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
