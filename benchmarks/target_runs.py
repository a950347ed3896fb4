"""What runs inside each worker process of ``targets.py``: one row's timed part, measured from inside.

    python benchmarks/target_runs.py pool '<workload json>' <file.npy>     # make the frame pool once
    python benchmarks/target_runs.py limit '<workload json>' <dir>         # numcodecs Blosc on a pool
    python benchmarks/target_runs.py stream '<workload json>' <dir>        # acqzarr, in-process
    python benchmarks/target_runs.py send '<workload json>' <endpoint> <status> <series> <key>
    python benchmarks/target_runs.py serve <config.json>                   # acqzarr serve, profiled
    python benchmarks/target_runs.py detector-send '<workload json>' <bind> <status>  # a DECTRIS detector
    python benchmarks/target_runs.py verify '<workload json>' <array dir>  # read back, after timing

``targets.py`` starts these with ``PYTHONPATH`` pointing at one commit's ``src``, so whatever
imports ``acqzarr`` here measures that commit. Each prints one JSON line. A workload is the dict
``runners.axes`` takes (size, frames, chunk_t, chunk_xy, shard_xy, pool), plus ``pool_file``
(the frames every process of a run shares, generated once), ``cameras``, ``pyramid_levels`` and
``threads`` where the row needs them. A detector workload (``detector``: the protocol) has
``width``, ``height`` and ``dtype`` instead of ``size``: photon-counting frames
(``acqzarr_drivers.dectris.counting_frames``), written with the settings the server gives a
detector series (``detector_settings``), sent by ``acqzarr simulate-detector``'s simulator or,
for the reference row, by acqzarr's own ``Sender``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from measure import Span, ThreadCPU, latency, peak_rss, rss, steady_rate
from runners import axes, chunk_frames, disk_bytes, engine_memory, frame_bytes, verify

Workload = dict[str, Any]


def stream_settings(w: Workload) -> dict[str, Any]:
    """The settings every acqzarr row writes with, in-process or sent over ZeroMQ: v3, the
    workload's chunks and shards, Blosc lz4 clevel 1 byte shuffle (what the limit rows compress
    with), one array per camera (cam0, cam1, ...), and a mean pyramid when the row has one."""
    pyramid = (
        {"multiscale": {"levels": w["pyramid_levels"], "method": "mean"}} if w.get("pyramid_levels") else {}
    )
    return {
        "version": 3,
        "arrays": [
            {
                "key": f"cam{k}",
                "dtype": "uint16",
                "dimensions": [
                    {"name": a.name, "kind": a.kind, "size": a.size, "chunk": a.chunk, "shard": a.shard}
                    for a in axes(w)
                ],
                "compression": {"cname": "lz4", "clevel": 1, "shuffle": "byte"},
                **pyramid,
            }
            for k in range(w.get("cameras", 1))
        ],
    }


def load_pool(w: Workload) -> np.ndarray:
    pool: np.ndarray = np.load(w["pool_file"])
    return pool


# -- the compression limit ----------------------------------------------------------
def layer_chunks(w: Workload, pool: np.ndarray) -> list[list[np.ndarray]]:
    """The chunks of every layer (chunk_t frames) acqzarr is given, in the order it is given them.

    Frame i is ``pool[i % len(pool)]``, so layers repeat after lcm(pool, chunk_t) frames: only the
    distinct layers are tiled (contiguous copies, as the engine's band buffers hold them) and the
    list refers to them again, which keeps the tiles of a 2,000-frame run in memory."""
    ct, c, size = chunk_frames(w), w["chunk_xy"], w["size"]
    layers = w["frames"] // ct
    distinct: dict[int, list[np.ndarray]] = {}
    order = []
    for k in range(layers):
        first = (k * ct) % len(pool)
        if first not in distinct:
            frames = pool[(first + np.arange(ct)) % len(pool)]
            distinct[first] = [
                np.ascontiguousarray(frames[:, y : y + c, x : x + c])
                for y in range(0, size, c)
                for x in range(0, size, c)
            ]
        order.append(distinct[first])
    return order


def run_limit(w: Workload, base: Path | None = None) -> dict[str, Any]:
    """Compress the workload's chunks with numcodecs Blosc (lz4, clevel 1, byte shuffle), on a
    pool of ``threads`` threads over chunks, or with plain calls in this thread when 1.

    Blosc's own threads are off (``use_threads = False``), so each call runs on one core and the
    pool's width is the only parallelism: the machine's compression limit for these chunks, with
    nothing else (no tiling, no I/O) in the timed part. One layer is compressed first, untimed."""
    from numcodecs import Blosc, blosc

    blosc.use_threads = False
    codec = Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE)
    if w.get("pyramid_levels"):
        return run_limit_pyramid(w, codec)
    if w.get("copy") or w.get("write"):
        return run_limit_copy(w, codec, base)
    layers = layer_chunks(w, load_pool(w))
    chunks = [ch for layer in layers for ch in layer]
    for ch in layers[0]:
        codec.encode(ch)
    threads = ThreadCPU()
    before, span = threads.snapshot(), Span()
    if w["threads"] == 1:
        encoded = sum(len(codec.encode(ch)) for ch in chunks)
    else:
        with ThreadPoolExecutor(w["threads"], thread_name_prefix="bench-blosc") as ex:
            encoded = sum(ex.map(lambda ch: len(codec.encode(ch)), chunks))
    figures = span.stop()
    raw = sum(ch.nbytes for ch in chunks)
    return {
        **figures,
        "raw_bytes": raw,
        "frames": w["frames"],
        "encoded_bytes": encoded,
        "threads": threads.profile(before, threads.snapshot()),
    }


def run_limit_copy(w: Workload, codec: Any, base: Path | None) -> dict[str, Any]:
    """What a stream must do with a camera's frames, with no engine: each frame copied from the
    pool into its place in a band buffer of chunks (one strided numpy copy a frame, on this
    thread, as ``append`` does, since the caller reuses its buffer once the call returns; one
    for the whole band where its frames lie together in the pool, as a stack appended in one
    call can be, unless ``frame_copies``), and every chunk compressed on a pool of ``threads``
    threads as its band fills: fresh from memory another core just wrote, not from this core's
    cache (here ~1.3x the CPU of the same chunk compressed again at once).  Band buffers are
    reused (four of them, touched before timing).  Without ``write``, nothing else: the work no
    writer of these frames can skip, at the speed of the cores (``limit-*-copy``).

    With ``write`` (``limit-*-write``), the compressed chunks are also written one after the
    other into one file by a writer thread, with O_DIRECT from page-aligned buffers as acqzarr
    writes (on this VM a write through the page cache runs at first-touch speed, ~0.4 GB/s).  No
    index, no metadata, no publishing.  It writes chunk by chunk and waits on each (acqzarr
    writes a shard at a time), so it is a reference for the work, not a bound on the speed."""
    import mmap
    import queue

    pool = load_pool(w)
    ct, c, size = chunk_frames(w), w["chunk_xy"], w["size"]
    g = -(-size // c)
    assert size % c == 0, "whole chunks only"
    bands = [np.ones((g, g, ct, c, c), np.uint16) for _ in range(4)]
    readers: list[list[Any]] = [[] for _ in bands]
    write = bool(w.get("write"))
    per_frame = bool(w.get("frame_copies"))  # as frames appended one a call are copied
    align = 4096
    direct = getattr(os, "O_DIRECT", 0)
    fd = -1
    if write:
        assert base is not None, "the writing limit row needs a directory"
        fd = os.open(base / "limit.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o644)
    # Page-aligned staging for the writer (numcodecs returns bytes; acqzarr encodes in place).
    chunk_bytes = ct * c * c * 2 + 4096
    stage = np.frombuffer(mmap.mmap(-1, -(-chunk_bytes // align) * align), np.uint8)
    written = queue.SimpleQueue()
    offset = [0]

    def writer() -> None:
        while (data := written.get()) is not None:
            n = len(data)
            padded = -(-n // align) * align
            stage[:n] = np.frombuffer(data, np.uint8)
            os.pwrite(fd, stage[:padded], offset[0])
            offset[0] += padded

    def compress(chunk: np.ndarray) -> int:
        data = codec.encode(chunk)
        if write:
            written.put(data)
        return len(data)

    codec.encode(bands[0][0, 0])
    threads = ThreadCPU()
    before, span = threads.snapshot(), Span()
    futures: list[Any] = []
    io = threading.Thread(target=writer, name="bench-writer")
    if write:
        io.start()
    try:
        with ThreadPoolExecutor(w["threads"], thread_name_prefix="bench-blosc") as ex:
            for n in range(w["frames"] // ct):
                b = n % len(bands)
                for f in readers[b]:
                    f.result()  # the band buffer is free again
                band, first = bands[b], (n * ct) % len(pool)
                if not per_frame and first + ct <= len(pool):  # the layer's frames lie together: one copy
                    frames = pool[first : first + ct]
                    band[...] = frames.reshape(ct, g, c, g, c).transpose(1, 3, 0, 2, 4)
                else:
                    for k in range(ct):
                        frame = pool[(first + k) % len(pool)]
                        band[:, :, k] = frame.reshape(g, c, g, c).transpose(0, 2, 1, 3)
                readers[b] = [ex.submit(compress, band[y, x]) for y in range(g) for x in range(g)]
                futures += readers[b]
            encoded = sum(f.result() for f in futures)
    finally:
        if write:
            written.put(None)
            io.join()
            os.close(fd)
    figures = span.stop()
    return {
        **figures,
        "raw_bytes": w["frames"] * frame_bytes(w),
        "frames": w["frames"],
        "encoded_bytes": encoded,
        "file_bytes": offset[0],
        "threads": threads.profile(before, threads.snapshot()),
    }


def run_limit_pyramid(w: Workload, codec: Any) -> dict[str, Any]:
    """The pyramid's necessary work on a pool of ``threads`` threads, no I/O: every level-0 chunk
    compressed and halved along y and x with acqzarr's own mean reducer (``reduce_block``)
    straight into its quarter of a level-1 chunk, and so on down, every level's chunks compressed.
    Nothing is copied: the lower levels' chunks are made where they are compressed from (the
    stream halves planes and copies them into its band buffers, so this is a bound it cannot
    beat).  Level 0's chunks are tiled before timing, as in ``run_limit``.  Layer n's level-0
    tasks are queued before layer n-1's lower levels are finished, so the pool always has work."""
    from acqzarr.engine.reducers import reduce_block

    pool = load_pool(w)
    levels, c, size = w["pyramid_levels"], w["chunk_xy"], w["size"]
    layers = layer_chunks(w, pool)
    ct = layers[0][0].shape[0]
    grids = [size // c >> k for k in range(levels)]  # chunks per side on each level
    assert size % (c << (levels - 1)) == 0, "the chunks must tile every level"
    assert c % 2 == 0, "a chunk must halve evenly"
    # Two sets (layers alternate) of lower-level chunks, touched before timing.
    sets = [[np.ones((g * g, ct, c, c), np.uint16) for g in grids[1:]] for _ in range(2)]

    def halve(source: np.ndarray, level: int, k: int, chunks: list[np.ndarray]) -> None:
        """Chunk k of ``level`` into its quarter of its chunk one level down."""
        g, half = grids[level], c // 2
        y, x = divmod(k, g)
        parent = chunks[level][(y // 2) * grids[level + 1] + x // 2]  # chunks[level]: level + 1's
        quarter = parent[:, (y % 2) * half : (y % 2 + 1) * half, (x % 2) * half : (x % 2 + 1) * half]
        reduce_block(source, (1, 2), "mean", out=quarter)

    def encode(ch: np.ndarray) -> tuple[int, int]:
        return len(codec.encode(ch)), ch.nbytes

    for ch in layers[0]:
        codec.encode(ch)
    threads = ThreadCPU()
    before, span = threads.snapshot(), Span()
    futures: list[Any] = []
    with ThreadPoolExecutor(w["threads"], thread_name_prefix="bench-blosc") as ex:
        reading: list[list[Any]] = [[], []]  # per set: the tasks still reading its chunks
        previous: tuple[int, list[Any]] | None = None  # the layer whose level 1 is being made
        for n, layer in enumerate([*layers, None]):
            if layer is not None:
                chunks = sets[n % 2]
                for f in reading[n % 2]:
                    f.result()  # two layers back: its chunks are free again
                futures += [ex.submit(encode, ch) for ch in layer]
                made = [ex.submit(halve, ch, 0, k, chunks) for k, ch in enumerate(layer)]
            if previous is not None:  # the lower levels of the previous layer
                m, pending = previous
                done = sets[m % 2]
                reading[m % 2] = []
                for level in range(1, levels):
                    for f in pending:
                        f.result()
                    pending = []
                    for k, ch in enumerate(done[level - 1]):
                        reading[m % 2].append(ex.submit(encode, ch))
                        if level + 1 < levels:
                            pending.append(ex.submit(halve, ch, level, k, done))
                futures += reading[m % 2]
            previous = None if layer is None else (n, made)
        results = [f.result() for f in futures]
    figures = span.stop()
    return {
        **figures,
        "raw_bytes": w["frames"] * frame_bytes(w),  # what the stream rows count: level 0's frames
        "compressed_raw_bytes": sum(r for _e, r in results),
        "frames": w["frames"],
        "encoded_bytes": sum(e for e, _r in results),
        "threads": threads.profile(before, threads.snapshot()),
    }


# -- acqzarr in-process -------------------------------------------------------------
def frame_metadata(frames: int) -> list[dict[str, Any]]:
    """Ten fields a frame, as a camera loop reports them: seven with a built-in column (counter,
    timestamps, exposure, stage) and three that go to the JSON column; made before timing."""
    return [
        {
            "frame_id": i,
            "timestamp_ns": 1_000_000 * i,
            "elapsed_ms": 0.5 * i,
            "exposure_ms": 10.0,
            "stage_x_um": 100.0 + i % 7,
            "stage_y_um": -50.0,
            "stage_z_um": 2.5,
            "camera": "cam0",
            "binning": 1,
            "temperature_c": -10.0,
        }
        for i in range(frames)
    ]


def run_stream(w: Workload, base: Path) -> dict[str, Any]:
    """Open a stream, append ``frames`` frames to each camera's array, close; timed from
    ``open_stream`` until ``close`` returns, every append timed on its own.

    One camera appends from the main thread; several cameras append from one thread each
    (``bench-camera-<k>``), as a recording session's sources do, all at once."""
    import acqzarr as az

    pool = load_pool(w)
    path = base / "stream.zarr"
    settings = az.StreamSettings.model_validate({**stream_settings(w), "store": str(path), "overwrite": True})
    keys = [a.key for a in settings.arrays]
    lat: dict[str, list[float]] = {k: [] for k in keys}
    stamps: dict[str, list[float]] = {k: [] for k in keys}
    errors: list[BaseException] = []
    threads = ThreadCPU()
    before, span = threads.snapshot(), Span()
    stream = az.open_stream(settings)

    pace = w.get("pace_fps")  # frames per second per camera, as a camera delivers them; None: flat out
    metas = frame_metadata(w["frames"]) if w.get("metadata") else None
    stack = w.get("stack")  # frames a call (a slice of the pool: no copy in the timed part)

    def feed(key: str) -> None:
        try:
            if stack:
                assert len(pool) % stack == 0
                assert w["frames"] % stack == 0
                for i in range(0, w["frames"], stack):
                    t0 = time.perf_counter()
                    stream.append(pool[i % len(pool) : i % len(pool) + stack], key=key)
                    t1 = time.perf_counter()
                    lat[key].append((t1 - t0) * 1e3)
                    stamps[key].extend([t1] * stack)
                return
            start = time.perf_counter()
            for i in range(w["frames"]):
                if pace:
                    ahead = start + i / pace - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
                t0 = time.perf_counter()
                if metas is None:
                    stream.append(pool[i % len(pool)], key=key)
                else:
                    stream.append(pool[i % len(pool)], key=key, metadata=metas[i])
                t1 = time.perf_counter()
                lat[key].append((t1 - t0) * 1e3)
                stamps[key].append(t1)
        except BaseException as exc:
            errors.append(exc)

    if len(keys) == 1:
        feed(keys[0])
    else:
        cameras = [
            threading.Thread(target=feed, args=(k,), name=f"bench-camera-{i}") for i, k in enumerate(keys)
        ]
        for t in cameras:
            t.start()
        for t in cameras:
            t.join()
    if errors:
        raise errors[0]
    memory = engine_memory(stream)
    stream.close()
    figures = span.stop()
    profile = threads.profile(before, threads.snapshot())
    frames = len(keys) * w["frames"]
    result = {
        **figures,
        **latency([x for k in keys for x in lat[k]]),
        "raw_bytes": frames * frame_bytes(w),
        "frames": frames,
        "steady_rate": steady_rate(sorted(s for k in keys for s in stamps[k]), frame_bytes(w)),
        "engine": memory,
        "threads": profile,
        "disk": disk_bytes(path),
        "acqzarr": str(Path(az.__file__).parent),
    }
    if w.get("verify", True):
        w["_pool"] = pool
        result["ok"] = all(
            verify({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / k / "0")}}, w)
            for k in keys
        )
    return result


# -- ZeroMQ: a sender, and the server it sends to ------------------------------------------
def run_send(w: Workload, endpoint: str, status: str, series: str, key: str) -> dict[str, Any]:
    """One sender: start a series of one camera, send ``frames`` frames, end it; timed from
    ``start_series`` until the server reports the series finalized (every byte on disk).

    Each frame is copied into a pool buffer first (``np.copyto``, standing in for a camera's
    ``read_into``); the latency of a frame is acquire + copy + send. ``start``/``end`` are
    CLOCK_MONOTONIC, which every process on the machine shares, so concurrent senders give one
    span."""
    from acqzarr.ingest import Sender

    pool = load_pool(w)
    if w.get("detector"):  # a detector's frames, stored as the server stores a detector series
        shape, dtype, settings = (w["height"], w["width"]), w["dtype"], detector_settings(w, key)
    else:
        shape, dtype, settings = (w["size"], w["size"]), "uint16", stream_settings({**w, "cameras": 1})
    lat: list[float] = []
    with Sender(endpoint, timeout=300, status_endpoint=status) as sender:
        span, start = Span(), time.monotonic()
        sender.start_series(series, settings)
        for i in range(w["frames"]):
            t0 = time.perf_counter()
            buf = sender.acquire(shape, dtype)
            np.copyto(buf, pool[i % len(pool)])
            sender.send(buf, key=key)
            lat.append((time.perf_counter() - t0) * 1e3)
        summary = sender.end_series()
        end = time.monotonic()
        figures = span.stop()
    assert summary is not None
    return {
        **figures,
        **latency(lat),
        "lat": lat,
        "start": start,
        "end": end,
        "completed": bool(summary["completed"]),
        "frames_total": summary["frames_total"],
        "bytes_written": summary["bytes_written"],
        "inflight_cap": inflight_cap(settings),
    }


# -- a DECTRIS detector: the simulator, in a process of its own ------------------------------------
def detector_settings(w: Workload, key: str = "") -> dict[str, Any]:
    """What ``acqzarr serve`` writes a one-channel detector series with (its ``DetectorInput``
    defaults: Zarr v3, one image per chunk, 16 chunks per shard, the whole image one chunk, Blosc
    lz4 clevel 1 with bit shuffle), so the reference row over acqzarr's own protocol writes the
    same arrays; no pixel size or frame time, which change no byte of the chunks."""
    return {
        "version": 3,
        "arrays": [
            {
                "key": key,
                "dtype": w["dtype"],
                "dimensions": [
                    {"name": "t", "kind": "time", "size": w["frames"], "chunk": 1, "shard": 16},
                    {"name": "y", "kind": "space", "size": w["height"], "chunk": w["height"]},
                    {"name": "x", "kind": "space", "size": w["width"], "chunk": w["width"]},
                ],
                "compression": {"cname": "lz4", "clevel": 1, "shuffle": "bit"},
            }
        ],
    }


def run_detector_send(w: Workload, bind: str, status: str) -> dict[str, Any]:
    """``acqzarr simulate-detector``'s simulator sending one series at full speed (no --fps) from
    its pool (generated and bslz4-compressed before the span: a detector compresses in hardware),
    timed from its start message until the server's status lists the series as finalized."""
    from acqzarr_drivers.dectris import DetectorSimulator, DetectorSimulatorOptions

    from acqzarr.ingest import StatusUnavailable, query

    options = DetectorSimulatorOptions(
        protocol=w["detector"],
        bind=bind,
        frames=w["frames"],
        width=w["width"],
        height=w["height"],
        dtype=w["dtype"],
        pool=w["pool"],
        compression="bslz4",
        image_appendix=False,
        connect_timeout=120,
    )
    sim = DetectorSimulator(options, say=lambda _: None)
    span = Span()
    report = sim.run()
    uid = report.series_unique_ids[0]
    deadline = time.monotonic() + 600
    while True:
        try:
            done = [s for s in query(status, timeout=1.0)["recent_series"] if s["series_id"] == uid]
        except StatusUnavailable:
            done = []
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    end = time.monotonic()
    figures = span.stop()
    if not done:
        raise SystemExit(f"the server did not finalize series {uid} in 600 s")
    summary = done[0]
    return {
        **figures,
        "start": report.started,
        "end": end,
        "wire_bytes": report.wire_bytes,
        "completed": bool(summary["completed"]),
        "frames_total": summary["frames_total"],
        "bytes_written": summary["bytes_written"],
        "store": summary["store"],
        "inflight_cap": inflight_cap(detector_settings(w)),
    }


def verify_detector(w: Workload, array: str) -> bool:
    """Every image of the series read back (tensorstore) equals the pool frame it was sent from."""
    import tensorstore as ts

    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": array}}, read=True).result()
    pool = load_pool(w)
    if tuple(arr.shape) != (w["frames"], w["height"], w["width"]):
        return False
    for start in range(0, w["frames"], 16):
        got = arr[start : min(start + 16, w["frames"])].read().result()
        if not np.array_equal(got, pool[np.arange(start, start + got.shape[0]) % len(pool)]):
            return False
    return True


def inflight_cap(settings: dict[str, Any]) -> int | None:
    """The in-flight cap a stream with these settings reserves up to (for a series: on the
    server), from the engine's own memory plan; None for a commit without one (``--against``)."""
    import acqzarr as az

    try:
        from acqzarr.engine.memory import plan_memory
    except ImportError:  # a commit from before the stage folders (--against)
        try:
            from acqzarr.memory import plan_memory  # type: ignore[no-redef]
        except ImportError:
            return None
    validated = az.StreamSettings.model_validate({**settings, "store": "unused.zarr"})
    return int(plan_memory(validated).cap(validated))


def run_serve(config_path: str) -> int:
    """``acqzarr serve`` in this process, with a control thread reading commands on stdin:

    ``ready <file>`` waits until the status socket answers, ``snap <file>`` records every thread's
    CPU so far; both then write a JSON snapshot to ``<file>`` (written whole, then renamed)."""
    from acqzarr.cli import main

    threads = ThreadCPU()
    status = json.loads(Path(config_path).read_text())["status_endpoint"]

    def control() -> None:
        from acqzarr.ingest import StatusUnavailable, query

        for line in sys.stdin:
            command, out = line.split(maxsplit=1)
            if command == "ready":
                while True:
                    try:
                        query(status, timeout=0.5)
                        break
                    except StatusUnavailable:
                        continue
            snap = {**threads.snapshot(), "peak_rss": peak_rss()}
            tmp = Path(out.strip() + ".tmp")
            tmp.write_text(json.dumps(snap))
            tmp.rename(out.strip())

    threading.Thread(target=control, name="bench-control", daemon=True).start()
    return main(["serve", config_path])


def run_verify(w: Workload, array: str) -> dict[str, Any]:
    if w.get("detector"):
        return {"ok": verify_detector(w, array)}
    w["_pool"] = load_pool(w)
    return {"ok": verify({"driver": "zarr3", "kvstore": {"driver": "file", "path": array}}, w)}


def make_pool(w: Workload, out: str) -> dict[str, Any]:
    """Generate the run's camera-like frames once (seconds for 16 frames of 2048x2048), so every
    process, and both commits under ``--against``, appends the very same frames."""
    if w.get("detector"):  # photon counts: what the detector simulator sends, one channel
        from acqzarr_drivers.dectris import counting_frames

        pool = counting_frames(w["pool"], w["height"], w["width"], w["dtype"])[:, 0]
    else:
        from acqzarr.recording.synthetic import camera_frames

        pool = camera_frames(w["pool"], (w["size"], w["size"]))
    tmp = out + ".tmp.npy"
    np.save(tmp, pool)
    os.replace(tmp, out)
    return {"bytes": int(pool.nbytes), "rss": rss()}


def main(argv: list[str]) -> int:
    command = argv[0]
    if command == "serve":
        return run_serve(argv[1])
    w = json.loads(argv[1])
    if command == "pool":
        out = make_pool(w, argv[2])
    elif command == "limit":
        out = run_limit(w, Path(argv[2]) if len(argv) > 2 else None)
    elif command == "stream":
        out = run_stream(w, Path(argv[2]))
    elif command == "send":
        out = run_send(w, *argv[2:6])
    elif command == "detector-send":
        out = run_detector_send(w, argv[2], argv[3])
    elif command == "verify":
        out = run_verify(w, argv[2])
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
