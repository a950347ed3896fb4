"""Sender-to-disk throughput over ZeroMQ on loopback, next to the same writer in-process.

    python benchmarks/ingest.py                      # 256 frames of 2048x2048 uint16, 3 interleaved runs
    python benchmarks/ingest.py --frames 128 --repeat 1 --mode in-process --mode zmq-tcp-raw

Every run is a fresh process after ``sync`` and a pause (see PERF-NOTES: cold memory is slow
here). ``in-process`` opens a stream and appends camera-like frames from a pool, timed from
``open_stream`` until ``close`` returns. The ``zmq-*`` modes start ``acqzarr serve`` (not timed),
then a sender process fills a pool buffer per frame (``np.copyto``, standing in for a camera's
``read_into``), sends it, and ends the series, timed from ``series_start`` until the server reports
the series finalized on its status socket: every byte on disk, metadata published. Both use the
writer settings of ``benchmarks/stream.py``'s default workload (v3, chunks (32, 256, 256), 4x4-chunk
shards, Blosc lz4 clevel 1 byte shuffle). Throughput is raw frame bytes per second; the figure
that matters is the ratio to in-process from the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ["in-process", "zmq-tcp-raw", "zmq-ipc-raw", "zmq-tcp-blosc2"]


def series_settings(w: dict[str, Any]) -> dict[str, Any]:
    s, c = w["size"], w["chunk_xy"]
    return {
        "version": 3,
        "arrays": [
            {
                "key": "cam0",
                "dtype": "uint16",
                "dimensions": [
                    {"name": "t", "kind": "time", "size": 0, "chunk": w["chunk_t"]},
                    {"name": "y", "kind": "space", "size": s, "chunk": c, "shard": 4},
                    {"name": "x", "kind": "space", "size": s, "chunk": c, "shard": 4},
                ],
                "compression": {"cname": "lz4", "clevel": 1, "shuffle": "byte"},
            }
        ],
    }


# -- child processes ---------------------------------------------------------------
def child_in_process(w: dict[str, Any], store: str) -> dict[str, Any]:
    import acqzarr as az
    from acqzarr.recording.synthetic import camera_frames

    pool = camera_frames(w["pool"], (w["size"], w["size"]))
    settings = az.StreamSettings.model_validate({**series_settings(w), "store": store, "overwrite": True})
    t0, c0 = time.perf_counter(), time.process_time()
    with az.open_stream(settings) as stream:
        for i in range(w["frames"]):
            stream.append(pool[i % len(pool)])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall": wall, "cpu": cpu, "bytes_written": stream.stats().bytes_written}


def child_send(w: dict[str, Any], endpoint: str, status: str, encoding: str) -> dict[str, Any]:
    import numpy as np

    from acqzarr.ingest import Sender
    from acqzarr.recording.synthetic import camera_frames

    pool = camera_frames(w["pool"], (w["size"], w["size"]))
    shape = (w["size"], w["size"])
    with Sender(endpoint, encoding=encoding, timeout=120, status_endpoint=status) as sender:  # type: ignore[arg-type]
        t0, c0 = time.perf_counter(), time.process_time()
        sender.start_series("bench", series_settings(w))
        for i in range(w["frames"]):
            buf = sender.acquire(shape, "uint16")
            np.copyto(buf, pool[i % len(pool)])  # what a camera's read_into would do
            sender.send(buf, key="cam0")
        summary = sender.end_series()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert summary is not None
    return {
        "wall": wall,
        "cpu_sender": cpu,
        "bytes_written": summary["bytes_written"],
        "completed": summary["completed"],
        "frames": summary["frames_total"],
    }


# -- orchestration ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _process_cpu(pid: int) -> float:
    """User + system seconds of a running process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(mode: str, w: dict[str, Any], base: Path, pause: float) -> dict[str, Any]:
    """One timed run. ``cpu`` is the CPU time of the timed part only: the in-process child's, or the
    sender's plus the server's over the same interval (start-up and frame generation excluded)."""
    os.sync()
    time.sleep(pause)
    if mode == "in-process":
        return _child(["_in_process", json.dumps(w), str(base / "inproc.zarr")])
    _, transport, encoding = mode.split("-")
    ipc_dir = Path(tempfile.mkdtemp(prefix="azb-", dir="/tmp"))
    tcp, status = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    ipc = f"ipc://{ipc_dir}/data.sock"
    config = base / "serve.json"
    config.write_text(
        json.dumps(
            {
                "root": str(base / "served"),
                "endpoints": [tcp, ipc],
                "status_endpoint": status,
                "overwrite": True,
            }
        )
    )
    log = open(base / "serve.log", "w")  # noqa: SIM115 - closed after the server exits
    server = subprocess.Popen([sys.executable, "-m", "acqzarr", "serve", str(config)], stdout=log, stderr=log)
    try:
        from acqzarr.ingest import StatusUnavailable, query

        deadline = time.monotonic() + 60
        while True:
            try:
                query(status, timeout=0.5)
                break
            except StatusUnavailable:
                if server.poll() is not None or time.monotonic() > deadline:
                    return {"error": "server did not start"}
        time.sleep(pause)  # the server's start-up settles before the timed part
        server_cpu = _process_cpu(server.pid)
        result = _child(["_send", json.dumps(w), tcp if transport == "tcp" else ipc, status, encoding])
        if "wall" in result:
            result["cpu_server"] = _process_cpu(server.pid) - server_cpu
            result["cpu"] = result["cpu_server"] + result["cpu_sender"]
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        log.close()
        for p in ipc_dir.iterdir():
            p.unlink()
        ipc_dir.rmdir()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_in_process":
        print(json.dumps(child_in_process(json.loads(sys.argv[2]), sys.argv[3])))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_send":
        print(json.dumps(child_send(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3, help="interleaved runs per mode; medians reported")
    p.add_argument("--mode", action="append", choices=MODES, help="repeatable; default: all")
    p.add_argument("--pause", type=float, default=3.0, help="seconds after sync before each run")
    p.add_argument("--dir", help="where stores are written (default: a temporary dir under the cwd)")
    p.add_argument("--json", default=str(HERE / "ingest-last-run.json"), help="write the results here")
    args = p.parse_args()
    w = {"frames": args.frames, "size": args.size, "chunk_t": 32, "chunk_xy": 256, "pool": 16}
    modes = args.mode or MODES
    raw = args.frames * args.size * args.size * 2
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(dir=args.dir or ".") as tmp:
        for _ in range(args.repeat):
            for mode in modes:
                result = run_mode(mode, w, Path(tmp), args.pause)
                runs[mode].append(result)
                print(f"{mode}: {result}", file=sys.stderr, flush=True)
    base = _median([raw / r["wall"] for r in runs.get("in-process", []) if "wall" in r])
    rows = []
    for mode, rs in runs.items():
        ok = [r for r in rs if "wall" in r]
        rate = _median([raw / r["wall"] for r in ok])
        rows.append(
            {
                "mode": mode,
                "runs": len(ok),
                "errors": [r["error"] for r in rs if "error" in r],
                "gb_per_s": rate / 1e9,
                "walls": [round(r["wall"], 3) for r in ok],
                "cpu_s": _median([r["cpu"] for r in ok]),
                "x_in_process": rate / base if base == base else float("nan"),
                "complete": all(
                    r.get("completed", True) and r.get("frames", args.frames) == args.frames for r in ok
                ),
            }
        )
    print(
        f"\n{args.frames} frames of {args.size}x{args.size} uint16, v3 chunks (32, 256, 256), "
        f"4x4-chunk shards, Blosc lz4 clevel 1 byte shuffle; median of {args.repeat}; {os.cpu_count()} vCPU, "
        f"Python {platform.python_version()}\n"
    )
    print("| mode | GB/s (raw frames, to disk) | x in-process | walls s | CPU s (timed part) | complete |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['gb_per_s']:.2f} | {r['x_in_process']:.2f} | "
            f"{', '.join(f'{x:.2f}' for x in r['walls'])} | {r['cpu_s']:.1f} | "
            f"{'yes' if r['complete'] else 'NO'} |"
        )
    Path(args.json).write_text(json.dumps({"workload": w, "repeat": args.repeat, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
