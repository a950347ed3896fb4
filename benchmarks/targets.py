"""Issue 16's rows (Performance II), each beside the row it is a ratio of, measured in the same run.

    python benchmarks/targets.py --quick --json /tmp/quick.json   # every row at small sizes, ~1 minute:
                                                    # checks the harness; its figures are not results
    python benchmarks/targets.py --repeat 3         # full sizes, medians of 3 interleaved runs;
                                                    # writes benchmarks/last-run-targets.json
    python benchmarks/targets.py --row acqzarr-pyramid --repeat 3   # one row (its reference comes along)
    python benchmarks/targets.py --against main~3 --repeat 3        # also another commit's src: new / old
    python benchmarks/performance_doc.py            # then render docs/performance.md from the JSON

Rows (``--row``; sizes with ``--frames``, ``--steady-frames``, ``--small-frames``):

    limit-2-threads        numcodecs Blosc (lz4, clevel 1, byte shuffle) on a pool of 2 threads over
                           the chunks the default workload writes: the 2-core compression limit
    limit-1-thread         the same in plain calls on one thread (numcodecs >= 0.16 does not thread)
    acqzarr-default        the default workload (2048x2048 uint16, v3 shards of 4x4 chunks of
                           (32, 256, 256)), cold: a fresh process          x limit-2-threads
    acqzarr-steady         the same over 2,000 frames, rate after the first quarter   x limit-2-threads
    limit-pyramid          the pyramid's necessary work on 2 threads, no I/O: every frame halved
                           twice with acqzarr's mean reducer, every level's chunks compressed
    acqzarr-pyramid        the default workload with a 3-level mean pyramid     x limit-pyramid
    limit-small-2-threads  the compression limit for 512x512 frames in (32, 128, 128) chunks
    limit-small-write      the work no writer of those frames skips, done by a plain engine-less
                           pipeline: each frame copied into a band of chunks, Blosc on 2 threads,
                           O_DIRECT writes on a writer thread. A reference, not a bound: it
                           writes chunk by chunk, acqzarr a shard at a time x limit-small-2-threads
    limit-small-copy       the work no writer of those frames skips, at the speed of the cores: each
                           frame copied into a band of chunks as append must (the caller reuses
                           its buffer), every chunk compressed on 2 threads as its band fills,
                           fresh from memory; no I/O                     x limit-small-2-threads
    acqzarr-small          512x512 frames: frames/s, append p99          x limit-small-2-threads
                           (and x limit-small-copy, the same necessary work: "x necessary")
    acqzarr-small-metadata the same with 10 per-frame metadata fields (7 typed columns, 3 JSON)
                                                                          x acqzarr-small
    acqzarr-small-paced    the same appended at 2,000 frames/s, as a camera delivers them: the
                           append p99 when the stream keeps up (unpaced, p99 is backpressure)
    limit-tiny-2-threads   the compression limit for 128x128 frames in (256, 128, 128) chunks
    limit-tiny-write       the same for 128x128 frames                   x limit-tiny-2-threads
    limit-tiny-copy        the same without I/O, a band of 256 frames copied at once (a stack)
                                                                          x limit-tiny-2-threads
    acqzarr-tiny           128x128 (detector-like) frames appended one at a time: frames/s
                                                                          x limit-tiny-2-threads
    acqzarr-tiny-stacks    the same appended as stacks of 256            x limit-tiny-2-threads
                                                                (x necessary: limit-tiny-copy)
    acqzarr-4-cameras      four 1024x1024 cameras into one store, one thread each  x acqzarr-default
    zmq-tcp                the default workload sent over ZeroMQ on loopback TCP to ``acqzarr serve``,
                           until the server reports it finalized                 x acqzarr-default
    zmq-tcp-4-senders      four senders of 1024x1024 frames at once, one series (store) each: the
                           protocol numbers a series' messages from one sender          x zmq-tcp
    zmq-eiger-1m           EIGER2 1M photon-counting frames (1028x1062 uint32, Poisson counts) sent
                           raw over acqzarr's own protocol, stored as a detector series is
    dectris-stream2-1m     the same frames from ``acqzarr simulate-detector`` (its own process, full
                           speed) over DECTRIS Stream V2, bslz4, into ``acqzarr serve``'s
                           ``detectors:`` input; decode CPU per frame reported    x zmq-eiger-1m
    zmq-eiger-4m,          the same for an EIGER2 4M (2068x2162 uint16)
    dectris-stream2-4m                                                            x zmq-eiger-4m

The detector rows need ``acqzarr serve`` with ``detectors:`` (issue 24) and the simulator
(``drivers/acqzarr_drivers/dectris.py``); sizes with ``--detector-frames``.

Every row runs in a fresh process (the server and each sender their own) after ``sync`` and a
pause, with ``PYTHONPATH`` set to this checkout's ``src`` (and, with ``--against``, the other
commit's, checked out with ``git worktree add`` in a temporary directory; the two alternate per
row so drift hits both alike). Each row reports CPU cores used (process CPU / wall), peak RSS
(the process's high-water mark; for ZeroMQ the server's), append (or send) latency p50/p99, and
CPU seconds per thread, measured inside the process (``measure.py``). All frames come from one
pool file generated at the start, so every process and both commits append the same bytes.
Outputs are read back with tensorstore after the timed part (``--no-verify`` skips that).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from measure import ThreadCPU, latency
from performance_doc import targets_markdown
from stream import VARIANTS, machine

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUNS = HERE / "target_runs.py"
DEFAULT_JSON = HERE / "last-run-targets.json"


@dataclass(frozen=True)
class Row:
    """One row: what runs (``kind``: limit, stream or zmq, on ``workload``), what it is divided by
    (``ref``, another row of the same run and commit), and issue 16's target for it as
    (figure, operator, value) goals: ``x_ref``, ``fps``, ``p99`` (ms) or ``memory`` (RSS growth /
    in-flight cap)."""

    name: str
    kind: str
    what: str
    workload: dict[str, Any]
    ref: str | None = None
    goals: tuple[tuple[str, str, float], ...] = ()
    metric: str = "rate"  # what x_ref divides: "rate" (whole run) or "steady_rate"
    # A limit row doing this row's necessary work (``x_necessary``, shown beside ``x_ref``): where
    # the target's reference does less (compresses chunks from cache, copies nothing).
    necessary: str | None = None


@dataclass
class Side:
    """The acqzarr a row's processes import: this checkout ("new") or ``--against`` ("old")."""

    name: str
    rev: str
    src: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "PYTHONPATH": f"{self.src / 'src'}{os.pathsep}{self.src / 'drivers'}"}


# Issue 16: "memory stays bounded by the in-flight cap in every row". Judged on what the run added to
# resident memory over what was there before its timed part (``measure.Span``), against the cap.
BOUNDED = ("memory", "<=", 1.0)
# The paced 512x512 row: a camera's rate below what the stream sustains here, so its append p99 is
# what an acquisition loop sees (the unpaced row appends as fast as it can: its p99 is backpressure).
PACE_FPS = 2000


def plan(args: argparse.Namespace) -> list[Row]:
    """Issue 16's rows at the requested sizes (``--quick``: small ones), in the order they run."""
    default = dict(VARIANTS["default"])
    default.pop("compress")  # every row compresses (Blosc lz4 clevel 1 byte shuffle)
    small = dict(VARIANTS["small"])
    small.pop("compress")
    frames = args.frames or (64 if args.quick else default["frames"])
    default["frames"] = frames
    small["frames"] = args.small_frames or (1024 if args.quick else small["frames"])
    steady = args.steady_frames or (256 if args.quick else 2000)
    levels = args.pyramid_levels
    cameras = {**default, "size": default["size"] // 2, "cameras": 4}
    # Issue 26's detector-like frames: a chunk of 256 frames is one 8 MiB band, one shard.
    tiny = {"size": 128, "frames": 8192 if args.quick else 65536, "chunk_t": 256, "chunk_xy": 128}
    tiny |= {"shard_xy": 1, "pool": 256}
    detector_frames = args.detector_frames or (32 if args.quick else 0)
    eiger_1m = {"detector": "dectris-stream2", "width": 1028, "height": 1062, "dtype": "uint32", "pool": 4}
    eiger_4m = {"detector": "dectris-stream2", "width": 2068, "height": 2162, "dtype": "uint16", "pool": 4}
    eiger_1m["frames"] = detector_frames or 512  # 2.2 GB of pixels, about the default workload's
    eiger_4m["frames"] = detector_frames or 256
    return [
        Row(
            "limit-2-threads",
            "limit",
            "numcodecs Blosc, pool of 2 threads, default chunks",
            {**default, "threads": 2},
        ),
        Row(
            "limit-1-thread",
            "limit",
            "numcodecs Blosc, one thread",
            {**default, "threads": 1},
            "limit-2-threads",
        ),
        Row(
            "acqzarr-default",
            "stream",
            f"default workload, {frames} frames, cold",
            default,
            "limit-2-threads",
            (("x_ref", ">=", 0.6), BOUNDED),
        ),
        Row(
            "acqzarr-steady",
            "stream",
            f"{steady} frames, rate after the first quarter",
            {**default, "frames": steady},
            "limit-2-threads",
            (("x_ref", ">=", 0.75), BOUNDED),
            metric="steady_rate",
        ),
        Row(
            "limit-pyramid",
            "limit",
            f"{levels}-level mean pyramid: acqzarr's reducer + Blosc on every level, 2 threads",
            {**default, "threads": 2, "pyramid_levels": levels},
        ),
        Row(
            "acqzarr-pyramid",
            "stream",
            f"+ {levels}-level mean pyramid",
            {**default, "pyramid_levels": levels},
            "limit-pyramid",
            (("x_ref", ">=", 0.85), BOUNDED),
        ),
        Row(
            "limit-small-2-threads",
            "limit",
            "numcodecs Blosc, 2 threads, 512x512 chunks",
            {**small, "threads": 2},
        ),
        Row(
            "limit-small-write",
            "limit",
            "engine-less pipeline: copy into bands, Blosc on 2 threads, O_DIRECT writes, 512x512",
            {**small, "threads": 2, "write": True},
            "limit-small-2-threads",
        ),
        Row(
            "limit-small-copy",
            "limit",
            "copy each frame into bands + Blosc on 2 threads as they fill, no I/O, 512x512",
            {**small, "threads": 2, "copy": True, "frame_copies": True},
            "limit-small-2-threads",
        ),
        Row(
            "acqzarr-small",
            "stream",
            f"{small['frames']} frames of {small['size']}x{small['size']}",
            small,
            "limit-small-2-threads",
            (("x_ref", ">=", 0.7), BOUNDED),
            necessary="limit-small-copy",
        ),
        Row(
            "acqzarr-small-metadata",
            "stream",
            f"{small['frames']} frames of {small['size']}x{small['size']}, 10 metadata fields each",
            {**small, "metadata": True},
            "acqzarr-small",
            (("x_ref", ">=", 0.97), BOUNDED),
        ),
        Row(
            "acqzarr-small-paced",
            "stream",
            f"{small['frames']} frames of {small['size']}x{small['size']} at {PACE_FPS:,} frames/s",
            {**small, "pace_fps": PACE_FPS},
            None,
            (("p99", "<", 1.0), BOUNDED),
        ),
        Row(
            "limit-tiny-2-threads",
            "limit",
            "numcodecs Blosc, 2 threads, 128x128 frames in (256, 128, 128) chunks",
            {**tiny, "threads": 2},
        ),
        Row(
            "limit-tiny-write",
            "limit",
            "engine-less pipeline: copy into bands, Blosc on 2 threads, O_DIRECT writes, 128x128",
            {**tiny, "threads": 2, "write": True},
            "limit-tiny-2-threads",
        ),
        Row(
            "limit-tiny-copy",
            "limit",
            "copy bands of 256 frames + Blosc on 2 threads as they fill, no I/O, 128x128",
            {**tiny, "threads": 2, "copy": True},
            "limit-tiny-2-threads",
        ),
        Row(
            "acqzarr-tiny",
            "stream",
            f"{tiny['frames']} frames of 128x128, one a call",
            tiny,
            "limit-tiny-2-threads",
            (("fps", ">=", 20000), BOUNDED),
        ),
        Row(
            "acqzarr-tiny-stacks",
            "stream",
            f"{tiny['frames']} frames of 128x128, stacks of 256",
            {**tiny, "stack": 256},
            "limit-tiny-2-threads",
            (("x_ref", ">=", 0.8), BOUNDED),
            necessary="limit-tiny-copy",
        ),
        Row(
            "acqzarr-4-cameras",
            "stream",
            f"4 cameras of {cameras['size']}x{cameras['size']}, one store",
            cameras,
            "acqzarr-default",
            (("x_ref", ">=", 0.9), BOUNDED),
        ),
        Row(
            "zmq-tcp",
            "zmq",
            "ZeroMQ loopback TCP, 1 sender",
            default,
            "acqzarr-default",
            (("cpu_x_ref", "<=", 1.15), BOUNDED),
        ),
        Row(
            "zmq-tcp-4-senders",
            "zmq",
            f"ZeroMQ, 4 senders of {cameras['size']}x{cameras['size']}",
            cameras,
            "zmq-tcp",
            (("x_ref", ">=", 0.9), BOUNDED),
        ),
        *(
            row
            for label, w, geometry in (
                ("1m", eiger_1m, "1028x1062 uint32"),
                ("4m", eiger_4m, "2068x2162 uint16"),
            )
            for row in (
                Row(
                    f"zmq-eiger-{label}",
                    "zmq",
                    f"acqzarr protocol, raw: {w['frames']} counting frames of {geometry}",
                    w,
                    None,
                    (BOUNDED,),
                ),
                Row(
                    f"dectris-stream2-{label}",
                    "detector",
                    "DECTRIS Stream V2, bslz4, from the simulator: the same frames",
                    w,
                    f"zmq-eiger-{label}",
                    (("x_ref", ">=", 0.9), BOUNDED),
                ),
            )
        ),
    ]


def select(rows: list[Row], names: list[str] | None) -> list[Row]:
    """The named rows and, transitively, the rows they are ratios of (measured in the same run)."""
    if not names:
        return rows
    by_name = {r.name: r for r in rows}
    wanted: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            row = by_name[name]
            stack.extend(r for r in (row.ref, row.necessary) if r)
    return [r for r in rows if r.name in wanted]


# -- running one row ---------------------------------------------------------------
def _child(side: Side, args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(RUNS), *args], capture_output=True, text=True, env=side.env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(server: subprocess.Popen[str], command: str, out: Path, timeout: float = 120) -> dict[str, Any]:
    """Ask the profiled server (``target_runs.py serve``) for a snapshot and wait for its file."""
    assert server.stdin is not None
    server.stdin.write(f"{command} {out}\n")
    server.stdin.flush()
    deadline = time.monotonic() + timeout
    while not out.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server gave no {command} snapshot (exit {server.poll()})")
        time.sleep(0.02)
    snap: dict[str, Any] = json.loads(out.read_text())
    return snap


def _serve_config(work: Path, senders: int) -> tuple[Path, str, str]:
    """An ``acqzarr serve`` config on two free loopback ports: the data endpoint and the status
    endpoint the senders wait on for each series' finalize."""
    tcp, status = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    config = work / "serve.json"
    config.write_text(
        json.dumps(
            {
                "root": str(work / "served"),
                "endpoints": [tcp],
                "status_endpoint": status,
                "overwrite": True,
                "max_open_series": senders,  # one series per sender, all open at once
            }
        )
    )
    return config, tcp, status


def _send_all(
    w: dict[str, Any], side: Side, tcp: str, status: str, senders: int
) -> list[tuple[int, str, str]]:
    """Start every sender process at once (series ``bench-<k>``, key cam0) and wait for them all:
    (exit code, stdout, stderr) each."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(RUNS), "send", json.dumps(w), tcp, status, f"bench-{k}", "cam0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=side.env,
        )
        for k in range(senders)
    ]
    outs = [p.communicate() for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


def _frame_bytes(w: dict[str, Any]) -> int:
    """Bytes of one frame: a detector workload's ``width`` x ``height`` x its dtype, else
    ``size``^2 uint16."""
    if w.get("detector"):
        return int(w["width"] * w["height"] * {"uint8": 1, "uint16": 2, "uint32": 4}[w["dtype"]])
    return int(w["size"] * w["size"] * 2)


def _zmq_figures(
    w: dict[str, Any], sent: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any]
) -> dict[str, Any]:
    """One row's figures from the senders' reports and the server's two thread snapshots.

    Throughput counts every sender's frames over the span from the first ``start_series`` to the
    last finalize; CPU is the server's between its snapshots plus every sender's timed part. The
    in-flight cap is the sum of what each series reserves up to on the server (the server has no
    count of its own to ask for, so no in-flight peak)."""
    wall = max(s["end"] for s in sent) - min(s["start"] for s in sent)
    profile = ThreadCPU.profile(before, after)
    sender_cpu = sum(s["cpu"] for s in sent)
    profile["groups"]["sender processes"] = {"cpu": sender_cpu, "threads": len(sent)}
    caps = [s.get("inflight_cap") for s in sent]
    frames = len(sent) * w["frames"]
    return {
        "wall": wall,
        "cpu": profile["process"] + sender_cpu,
        "server_cpu": profile["process"],
        "cores": (profile["process"] + sender_cpu) / wall,
        "peak_rss": after["peak_rss"],
        "start_rss": before["peak_rss"],
        "sender_peak_rss": max(s["peak_rss"] for s in sent),
        **latency([x for s in sent for x in s["lat"]]),
        "raw_bytes": frames * _frame_bytes(w),
        "frames": frames,
        "threads": profile,
        "engine": {"cap": sum(caps), "peak": None, "source": "series plans"} if all(caps) else None,
        "completed": all(s["completed"] and s["frames_total"] == w["frames"] for s in sent),
        "disk": sum(s["bytes_written"] for s in sent),
    }


def run_zmq(row: Row, side: Side, work: Path, pause: float, check: bool) -> dict[str, Any]:
    """``acqzarr serve`` in its own process (``target_runs.py serve``, which snapshots its threads
    on request), then ``cameras`` sender processes at once, one series each; read back after."""
    w = row.workload
    senders = w.get("cameras", 1)
    config, tcp, status = _serve_config(work, senders)
    with open(work / "serve.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, str(RUNS), "serve", str(config)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            text=True,
            env=side.env,
        )
        try:
            _command(server, "ready", work / "ready.json")
            time.sleep(pause)  # the server's start-up settles before the timed part
            before = _command(server, "snap", work / "before.json")
            done = _send_all(w, side, tcp, status, senders)
            after = _command(server, "snap", work / "after.json")
        finally:
            server.terminate()
            server.wait(120)
    for code, _, stderr in done:
        if code != 0:
            return {"error": (stderr.strip().splitlines() or ["sender failed"])[-1]}
    result = _zmq_figures(w, [json.loads(out.strip().splitlines()[-1]) for _, out, _ in done], before, after)
    if check:
        arrays = [work / "served" / f"bench-{k}" / "cam0" / "0" for k in range(senders)]
        result["ok"] = result["completed"] and all(
            _child(side, ["verify", json.dumps(w), str(a)]).get("ok") for a in arrays
        )
    return result


def _detector_config(work: Path, protocol: str) -> tuple[Path, str, str]:
    """An ``acqzarr serve`` config with one detector input (``bench``) connecting to the
    simulator's endpoint, and a status endpoint, on free loopback ports; no sender endpoint."""
    bind, status = f"tcp://127.0.0.1:{_free_port()}", f"tcp://127.0.0.1:{_free_port()}"
    config = work / "serve.json"
    config.write_text(
        json.dumps(
            {
                "root": str(work / "served"),
                "detectors": [{"name": "bench", "protocol": protocol, "connect": bind}],
                "status_endpoint": status,
            }
        )
    )
    return config, bind, status


def run_detector(row: Row, side: Side, work: Path, pause: float, check: bool) -> dict[str, Any]:
    """``acqzarr serve`` with a ``detectors:`` input in its own process (profiled, as for the
    ZeroMQ rows), then the detector simulator in another (``target_runs.py detector-send``)
    sending one series at full speed; timed from the simulator's start message until the server
    lists the series as finalized. ``decode_cpu_per_frame`` is the CPU time of the server's
    decoding threads (``acqzarr-decode-*``: CBOR and bslz4) per image."""
    w = row.workload
    config, bind, status = _detector_config(work, w["detector"])
    with open(work / "serve.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, str(RUNS), "serve", str(config)],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            text=True,
            env=side.env,
        )
        try:
            _command(server, "ready", work / "ready.json")
            time.sleep(pause)
            before = _command(server, "snap", work / "before.json")
            sim = subprocess.run(
                [sys.executable, str(RUNS), "detector-send", json.dumps(w), bind, status],
                capture_output=True,
                text=True,
                env=side.env,
                timeout=900,
            )
            after = _command(server, "snap", work / "after.json")
        finally:
            server.terminate()
            server.wait(120)
    if sim.returncode != 0:
        return {"error": (sim.stderr.strip().splitlines() or ["simulator failed"])[-1]}
    sent = json.loads(sim.stdout.strip().splitlines()[-1])
    wall = sent["end"] - sent["start"]
    profile = ThreadCPU.profile(before, after)
    profile["groups"]["simulator process"] = {"cpu": sent["cpu"], "threads": 1}
    decode = sum(g["cpu"] for name, g in profile["groups"].items() if name.startswith("acqzarr-decode"))
    frames = w["frames"]
    result: dict[str, Any] = {
        "wall": wall,
        "cpu": profile["process"] + sent["cpu"],
        "cores": (profile["process"] + sent["cpu"]) / wall,
        "peak_rss": after["peak_rss"],
        "start_rss": before["peak_rss"],
        "sender_peak_rss": sent["peak_rss"],
        "raw_bytes": frames * _frame_bytes(w),
        "wire_bytes": sent["wire_bytes"],
        "frames": frames,
        "threads": profile,
        "decode_cpu_per_frame": decode / frames,
        "engine": {"cap": sent["inflight_cap"], "peak": None, "source": "series plan"}
        if sent.get("inflight_cap")
        else None,
        "completed": sent["completed"] and sent["frames_total"] == frames,
        "disk": sent["bytes_written"],
    }
    if check:
        result["ok"] = result["completed"] and bool(
            _child(side, ["verify", json.dumps(w), str(Path(sent["store"]) / "0")]).get("ok")
        )
    return result


def run_row(row: Row, side: Side, base: Path, pause: float, check: bool) -> dict[str, Any]:
    work = base / f"{row.name}-{side.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.sync()
    time.sleep(pause)  # memory freed by the previous process goes back to the host (see PERF-NOTES)
    w = {**row.workload, "verify": check}
    try:
        if row.kind == "zmq":
            result = run_zmq(row, side, work, pause, check)
        elif row.kind == "detector":
            result = run_detector(row, side, work, pause, check)
        else:
            result = _child(side, [row.kind, json.dumps(w), str(work)])
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        result = {"error": str(exc)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if "wall" in result:
        result["rate"] = result["raw_bytes"] / result["wall"]
        result["fps"] = result["frames"] / result["wall"]
    return result


# -- commits -------------------------------------------------------------------------
def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def this_checkout() -> Side:
    rev = _git("rev-parse", "--short", "HEAD")
    if _git("status", "--porcelain", "--", "src"):
        rev += "+changes"
    return Side("new", rev, REPO)


@contextlib.contextmanager
def other_commit(rev: str | None, base: Path) -> Iterator[Side | None]:
    """``rev`` checked out (detached) in a temporary worktree for the run, removed afterwards."""
    if rev is None:
        yield None
        return
    path = base / "against"
    _git("worktree", "add", "--detach", str(path), rev)
    try:
        yield Side("old", _git("-C", str(path), "rev-parse", "--short", "HEAD"), path)
    finally:
        _git("worktree", "remove", "--force", str(path))


def make_pools(rows: list[Row], side: Side, base: Path) -> None:
    """One pool file per (frame size, pool length), generated by this checkout's ``synthetic``."""
    for row in rows:
        w = row.workload
        shape = f"{w['width']}x{w['height']}-{w['dtype']}" if w.get("detector") else w["size"]
        out = base / f"pool-{shape}-{w['pool']}.npy"
        w["pool_file"] = str(out)
        if not out.exists():
            result = _child(side, ["pool", json.dumps(w), str(out)])
            if "error" in result:
                raise SystemExit(f"could not make the frame pool: {result['error']}")


# -- figures -------------------------------------------------------------------------
def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (so its other figures belong together); the first error if
    nothing ran."""
    ok = sorted((r for r in runs if "rate" in r), key=lambda r: r["rate"])
    if not ok:
        return runs[0] if runs else {"error": "not run"}
    median = dict(ok[len(ok) // 2])
    median["rates"] = [r["rate"] for r in ok]
    median["p99s"] = sorted(r["p99"] for r in ok if "p99" in r)
    median["errors"] = [r["error"] for r in runs if "error" in r]
    return median


def _metric(metric: str, m: dict[str, Any]) -> float | None:
    value = m.get(metric)
    return float(value) if value else None


def memory_over_cap(m: dict[str, Any]) -> float | None:
    """What the run added to resident memory (peak over the RSS before the timed part) as a
    fraction of the engine's in-flight cap: at most 1 when memory stays bounded by the cap."""
    cap = (m.get("engine") or {}).get("cap")
    if not cap or "peak_rss" not in m:
        return None
    return float(m["peak_rss"] - m.get("start_rss", 0)) / cap


def judge(
    goals: tuple[tuple[str, str, float], ...], figures: dict[str, float | None]
) -> list[dict[str, Any]]:
    """Each goal with the figure it is judged on and whether it is met (a missing figure is not)."""
    out = []
    for what, op, value in goals:
        got = figures.get(what)
        met = got is not None and (
            got >= value if op == ">=" else got <= value if op == "<=" else got < value
        )
        out.append({"figure": what, "op": op, "value": value, "got": got, "met": met})
    return out


def _side_figures(
    row: Row, m: dict[str, Any], ref: dict[str, Any] | None, necessary: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A row's figures on one side: the value its ratio divides (whole-run or steady rate), the
    reference's rate, the ratio (and the ratio to the row doing its necessary work), and its goals
    judged."""
    value = _metric(row.metric, m)
    ref_rate = ref.get("rate") if ref else None
    x_ref = value / ref_rate if value and ref_rate else None
    necessary_rate = necessary.get("rate") if necessary else None
    x_necessary = value / necessary_rate if value and necessary_rate else None
    # Latency is judged on the median of the runs' p99s, not on the p99 of the median-rate run: a
    # row whose p99 is below the goal in one run of three has not met it.
    p99 = statistics.median(m["p99s"]) if m.get("p99s") else m.get("p99")
    # CPU per frame over the reference's: for a ZeroMQ row the server's alone (its senders run on
    # the same two cores but are not the server's cost).
    cpu_x_ref = None
    if ref and m.get("frames") and ref.get("frames") and ref.get("cpu"):
        own = m.get("server_cpu", m.get("cpu"))
        if own:
            cpu_x_ref = (own / m["frames"]) / (ref["cpu"] / ref["frames"])
    figures = {
        "x_ref": x_ref,
        "fps": m.get("fps"),
        "p99": p99,
        "memory": memory_over_cap(m),
        "cpu_x_ref": cpu_x_ref,
    }
    judged = judge(row.goals, figures)
    return {
        "value": value,
        "ref_rate": ref_rate,
        "x_ref": x_ref,
        "x_necessary": x_necessary,
        "cpu_x_ref": cpu_x_ref,
        "p99": p99,
        "goals": judged,
    }


def summarise(
    rows: list[Row], runs: dict[tuple[str, str], list[dict[str, Any]]], sides: list[str]
) -> list[dict[str, Any]]:
    """One entry per row: its definition, every run, the median run per side, the figures judged
    against issue 16's goals per side and, with two sides, new / old of the row's value."""
    medians = {key: _median_run(rs) for key, rs in runs.items()}
    out = []
    for row in rows:
        entry: dict[str, Any] = {**asdict(row), "runs": {}, "median": {}, "figures": {}}
        for side in sides:
            m = medians[(row.name, side)]
            entry["runs"][side] = runs[(row.name, side)]
            entry["median"][side] = m
            ref = medians.get((row.ref, side)) if row.ref else None
            necessary = medians.get((row.necessary, side)) if row.necessary else None
            entry["figures"][side] = _side_figures(row, m, ref, necessary)
        if len(sides) == 2:
            new, old = (entry["figures"][s]["value"] for s in sides)
            entry["new_vs_old"] = new / old if new and old else None
        out.append(entry)
    return out


# -- main ----------------------------------------------------------------------------
def run_all(
    rows: list[Row], sides: list[Side], base: Path, args: argparse.Namespace, pause: float
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every row ``--repeat`` times on every side. The sides alternate from row to row and from
    one repeat to the next, so drift in the machine (other load, thermal) hits both alike."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(r.name, s.name): [] for r in rows for s in sides}
    for rep in range(args.repeat):
        for j, row in enumerate(rows):
            for side in sides if (rep + j) % 2 == 0 else sides[::-1]:
                result = run_row(row, side, base, pause, not args.no_verify)
                runs[(row.name, side.name)].append(result)
                shown = f"{result['rate'] / 1e9:.2f} GB/s" if "rate" in result else result.get("error")
                print(
                    f"[{rep + 1}/{args.repeat}] {row.name} ({side.name}): {shown}",
                    file=sys.stderr,
                    flush=True,
                )
    return runs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, no pauses: a check of the harness only")
    p.add_argument("--row", action="append", help="repeatable; default: every row")
    p.add_argument("--frames", type=int, help="frames of the default workload (and per camera/sender)")
    p.add_argument("--steady-frames", type=int, help="frames of the steady-state row (default 2000)")
    p.add_argument("--small-frames", type=int, help="frames of the 512x512 row (default 4096)")
    p.add_argument(
        "--detector-frames", type=int, help="images per detector row (default 512 for 1M, 256 for 4M)"
    )
    p.add_argument("--pyramid-levels", type=int, default=3, help="levels of the pyramid row (default 3)")
    p.add_argument("--repeat", type=int, default=1, help="runs per row (and commit); medians reported")
    p.add_argument(
        "--pause", type=float, help="seconds after sync before each process (default 5; --quick 0)"
    )
    p.add_argument("--against", metavar="REV", help="also run every row with this commit's src")
    p.add_argument("--no-verify", action="store_true", help="skip reading the outputs back")
    p.add_argument("--dir", help="where stores are written (default: a temporary dir under the cwd)")
    p.add_argument(
        "--judge",
        metavar="JSON",
        help="judge the runs stored in a report again with this version's rules, and rewrite it",
    )
    p.add_argument(
        "--json",
        help=f"write the report here (default: {DEFAULT_JSON.name}; with --quick only where this says)",
    )
    return p


def rejudge(path: Path) -> dict[str, Any]:
    """A stored report, its rows summarised again from their stored runs (same rows, same runs)."""
    report: dict[str, Any] = json.loads(path.read_text())
    fields = {f for f in Row.__dataclass_fields__}
    rows = []
    for e in report["rows"]:
        row = {k: v for k, v in e.items() if k in fields}
        row["goals"] = tuple(tuple(g) for g in row.get("goals", ()))
        rows.append(Row(**row))
    sides = list(report["sides"])
    runs = {(e["name"], side): e["runs"][side] for e in report["rows"] for side in sides}
    report["rows"] = summarise(rows, runs, sides)
    return report


def main() -> int:
    p = parser()
    args = p.parse_args()
    if args.judge:
        report = rejudge(Path(args.judge))
        Path(args.judge).write_text(json.dumps(report, indent=1) + "\n")
        print(targets_markdown(report))
        return 0
    rows = plan(args)
    unknown = sorted(set(args.row or []) - {r.name for r in rows})
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(r.name for r in rows)}")
    rows = select(rows, args.row)
    pause = args.pause if args.pause is not None else (0.0 if args.quick else 5.0)
    out_json = Path(args.json) if args.json else (None if args.quick else DEFAULT_JSON)
    new = this_checkout()
    with (
        tempfile.TemporaryDirectory(dir=args.dir or ".", prefix="bench-targets-") as tmp,
        other_commit(args.against, Path(tmp)) as old,
    ):
        sides = [new] + ([old] if old else [])
        make_pools(rows, new, Path(tmp))
        runs = run_all(rows, sides, Path(tmp), args, pause)
    report = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/targets.py", *sys.argv[1:]]),
        "quick": args.quick,
        "repeat": args.repeat,
        "sides": {s.name: {"rev": s.rev} for s in sides},
        "rows": summarise(rows, runs, [s.name for s in sides]),
    }
    print(targets_markdown(report))
    if out_json:
        out_json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
