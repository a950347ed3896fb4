"""One function per writer or machine limit; each runs inside its own worker process.

Every writer run returns the same figures (wall time including close, append
latencies, bytes on disk) and leaves a store that ``verify`` reads back.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Workload = dict[str, Any]


# -- the array every writer builds --------------------------------------------------
@dataclass(frozen=True)
class Axis:
    """One axis of the benchmark array, as every writer is told it (acqzarr's and acquire-zarr's
    dimensions, tensorstore's chunk grid) and as the read-back checks it."""

    name: str
    kind: str  # "time" or "space"
    size: int  # 0 on the append axis (t): grows as frames arrive
    chunk: int
    shard: int  # chunks per shard along this axis (Zarr v3 writers)


def axes(w: Workload) -> list[Axis]:
    """(t, y, x), or (t, z, y, x) when the workload has ``planes`` (z planes per timepoint).

    Frames are appended in storage order: t slowest, then z, so frame i is plane i % planes of
    timepoint i // planes."""
    s, c, sh = w["size"], w["chunk_xy"], w["shard_xy"]
    z = [Axis("z", "space", w["planes"], w["chunk_z"], w["shard_z"])] if w.get("planes") else []
    return [
        Axis("t", "time", 0, w["chunk_t"], 1),
        *z,
        Axis("y", "space", s, c, sh),
        Axis("x", "space", s, c, sh),
    ]


def array_shape(w: Workload) -> tuple[int, ...]:
    planes = w.get("planes")
    lead = (w["frames"] // planes, planes) if planes else (w["frames"],)
    return (*lead, w["size"], w["size"])


def frame_bytes(w: Workload) -> int:
    return int(w["size"] * w["size"] * 2)


def raw_bytes(w: Workload) -> int:
    """What every throughput figure counts: the frames' own bytes."""
    return int(w["frames"]) * frame_bytes(w)


def chunk_frames(w: Workload) -> int:
    """Frames one chunk spans (chunk_t, times chunk_z for a z-stack)."""
    return math.prod(a.chunk for a in axes(w)[:-2])


def band_bytes(w: Workload) -> int:
    """The unit memory is reported in: one chunk of the axis next to the frame (chunk_z planes of
    a z-stack, chunk_t frames otherwise) across the whole frame."""
    return axes(w)[-3].chunk * frame_bytes(w)


def shard_bytes(w: Workload) -> int:
    """Raw bytes of one full v3 shard."""
    return 2 * math.prod(a.chunk * a.shard for a in axes(w))


def frame_pool(w: Workload) -> np.ndarray:
    from acqzarr.recording.synthetic import camera_frames

    return camera_frames(w["pool"], (w["size"], w["size"]))


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Pacer:
    """Sleeps until frame i's slot at ``fps`` (a camera's frame clock); free-running when fps is 0."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.start = time.perf_counter()

    def wait(self, i: int) -> None:
        if self.period:
            delay = self.start + i * self.period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


def _timed_appends(w: Workload, pool: np.ndarray, append: Callable[[np.ndarray], Any]) -> list[float]:
    lat = []
    pacer = Pacer(w.get("fps", 0))
    for i in range(w["frames"]):
        pacer.wait(i)
        t0 = time.perf_counter_ns()
        append(pool[i % len(pool)])
        lat.append((time.perf_counter_ns() - t0) / 1e6)
    return lat


# -- writers -------------------------------------------------------------------
def s3_location(path: Path) -> tuple[str, dict[str, Any]]:
    """The S3 URL standing in for ``path`` on the server stream.py started, and its tensorstore kvstore."""
    bucket, endpoint = os.environ["ACQZARR_BENCH_S3_BUCKET"], os.environ["ACQZARR_BENCH_S3_ENDPOINT"]
    prefix = path.name
    kvstore = {
        "driver": "s3",
        "bucket": bucket,
        "path": f"{prefix}/cam0/0/",
        "endpoint": endpoint,
        "aws_region": "us-east-1",
        "aws_credentials": {"type": "environment"},
    }
    return f"s3://{bucket}/{prefix}", kvstore


def s3_bytes(bucket: str, prefix: str) -> int:
    """Total size of the objects under ``prefix``, from a listing (nothing downloaded)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        prefix=prefix,
        endpoint=os.environ["ACQZARR_BENCH_S3_ENDPOINT"],
        region="us-east-1",
        client_options={"allow_http": True},
    )
    return sum(meta["size"] for batch in obstore.list(store) for meta in batch)


def run_acqzarr(
    w: Workload, path: Path, version: int, pyramid: bool = False, s3: bool = False
) -> dict[str, Any]:
    import acqzarr as az

    store, kvstore = str(path), {"driver": "file", "path": str(path / "cam0" / "0")}
    s3_settings = az.S3Settings()
    if s3:
        store, kvstore = s3_location(path)
        s3_settings = az.S3Settings(endpoint=os.environ["ACQZARR_BENCH_S3_ENDPOINT"], allow_http=True)
    settings = az.StreamSettings(
        store=store,
        s3=s3_settings,
        version=version,
        overwrite=True,  # type: ignore[arg-type]
        arrays=[
            az.ArraySettings(
                key="cam0",
                dtype="uint16",
                dimensions=[
                    az.Dimension(
                        name=a.name,
                        kind=a.kind,  # type: ignore[arg-type]
                        size=a.size,
                        chunk=a.chunk,
                        shard=a.shard if version == 3 else 1,
                    )
                    for a in axes(w)
                ],
                compression=az.Blosc(cname="lz4", clevel=1, shuffle="byte") if w["compress"] else None,
                # The pyramid row: mean, levels "auto" (2048 -> 256: 4 levels); its disk bytes include them.
                multiscale=az.Multiscale(levels="auto", method="mean") if pyramid else None,
            )
        ],
    )
    pool = w["_pool"]
    t0 = time.perf_counter()
    stream = az.open_stream(settings)
    lat = _timed_appends(w, pool, stream.append)
    memory = engine_memory(stream)
    stream.close()
    wall = time.perf_counter() - t0
    with contextlib.suppress(az.StateError):  # a closed stream may refuse; then the figure before close
        memory = engine_memory(stream) or memory
    result = {"wall": wall, "lat": lat, "kvstore": kvstore, "driver": "zarr3" if version == 3 else "zarr"}
    if memory:
        result["engine"] = memory
    if s3:
        result["disk"] = s3_bytes(kvstore["bucket"], path.name)
        result["s3"] = store
    return result


def engine_memory(stream: Any) -> dict[str, Any] | None:
    """The engine's own account of the memory it holds for frames (cap, used, peak in bytes).

    ``Stream.memory()`` where the engine has it; before that, the in-flight budget of the
    pipeline, whose cap ``append`` blocks at. Either may be absent: then there is no figure."""
    memory = getattr(stream, "memory", None)
    if callable(memory):
        m, source = memory(), "memory()"
    else:
        m, source = getattr(getattr(stream, "pipeline", None), "budget", None), "pipeline.budget"
    if m is None:
        return None
    return {"cap": int(m.cap), "used": int(m.used), "peak": int(m.peak), "source": source}


def run_acquire_zarr(w: Workload, path: Path) -> dict[str, Any]:
    import acquire_zarr as aqz

    comp = None
    if w["compress"]:
        comp = aqz.CompressionSettings(
            compressor=aqz.Compressor.BLOSC1, codec=aqz.CompressionCodec.BLOSC_LZ4, level=1, shuffle=1
        )
    kinds = {"time": aqz.DimensionType.TIME, "space": aqz.DimensionType.SPACE}
    dims = [
        aqz.Dimension(
            name=a.name,
            kind=kinds[a.kind],
            array_size_px=a.size,
            chunk_size_px=a.chunk,
            shard_size_chunks=a.shard,
        )
        for a in axes(w)
    ]
    settings = aqz.StreamSettings(
        store_path=str(path),
        overwrite=True,
        version=aqz.ZarrVersion.V3,
        arrays=[aqz.ArraySettings(output_key="cam0", data_type=np.uint16, compression=comp, dimensions=dims)],
    )
    pool = w["_pool"]
    t0 = time.perf_counter()
    stream = aqz.ZarrStream(settings)
    lat = _timed_appends(w, pool, stream.append)
    stream.close()
    array = path / "cam0" / "0" if (path / "cam0" / "0").exists() else path / "cam0"
    kvstore = {"driver": "file", "path": str(array)}
    return {"wall": time.perf_counter() - t0, "lat": lat, "kvstore": kvstore, "driver": "zarr3"}


def _tensorstore_spec(w: Workload, path: Path) -> dict[str, Any]:
    inner = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if w["compress"]:
        inner.append(
            {
                "name": "blosc",
                "configuration": {
                    "cname": "lz4",
                    "clevel": 1,
                    "shuffle": "shuffle",
                    "typesize": 2,
                    "blocksize": 0,
                },
            }
        )
    return {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path / "cam0" / "0")},
        "create": True,
        "delete_existing": True,
        "metadata": {
            "shape": list(array_shape(w)),
            "data_type": "uint16",
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": [a.chunk * a.shard for a in axes(w)]},
            },
            "codecs": [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": [a.chunk for a in axes(w)],
                        "codecs": inner,
                        "index_codecs": [
                            {"name": "bytes", "configuration": {"endian": "little"}},
                            {"name": "crc32c"},
                        ],
                    },
                }
            ],
        },
    }


def run_tensorstore(w: Workload, path: Path, per: str) -> dict[str, Any]:
    """per="frame": a write per frame inside one transaction per 32-frame layer (its best per-frame
    pattern); per="layer": one write of a stacked 32-frame layer."""
    import tensorstore as ts

    pool = w["_pool"]
    n, ct = w["frames"], w["chunk_t"]
    t0 = time.perf_counter()
    store = ts.open(_tensorstore_spec(w, path)).result()
    lat: list[float] = []
    pacer = Pacer(w.get("fps", 0))
    if per == "frame":
        for start in range(0, n, ct):
            txn = ts.Transaction()
            for i in range(start, min(n, start + ct)):
                pacer.wait(i)
                t1 = time.perf_counter_ns()
                store.with_transaction(txn)[i].write(pool[i % len(pool)]).result()
                lat.append((time.perf_counter_ns() - t1) / 1e6)
            t1 = time.perf_counter_ns()
            txn.commit_async().result()
            lat[-1] += (
                time.perf_counter_ns() - t1
            ) / 1e6  # the commit blocks the frame that closed the layer
    else:
        layer = np.empty((ct, w["size"], w["size"]), np.uint16)
        for start in range(0, n, ct):
            m = min(n, start + ct) - start
            for k in range(m):
                pacer.wait(start + k)
                layer[k] = pool[(start + k) % len(pool)]
            t1 = time.perf_counter_ns()
            store[start : start + m].write(layer[:m]).result()
            lat.extend(
                [0.0] * (m - 1) + [(time.perf_counter_ns() - t1) / 1e6]
            )  # the layer write blocks one frame
    return {
        "wall": time.perf_counter() - t0,
        "lat": lat,
        "kvstore": {"driver": "file", "path": str(path / "cam0" / "0")},
        "driver": "zarr3",
    }


WRITERS: dict[str, Callable[[Workload, Path], dict[str, Any]]] = {
    "acqzarr-v3": lambda w, p: run_acqzarr(w, p, 3),
    "acqzarr-v2": lambda w, p: run_acqzarr(w, p, 2),
    "acqzarr-v3-pyramid": lambda w, p: run_acqzarr(w, p, 3, pyramid=True),
    "acquire-zarr": run_acquire_zarr,
    "tensorstore-frame": lambda w, p: run_tensorstore(w, p, "frame"),
    "tensorstore-layer": lambda w, p: run_tensorstore(w, p, "layer"),
    # The same streams into a local S3 server (SeaweedFS, started by stream.py), not the filesystem.
    "acqzarr-v3-s3": lambda w, p: run_acqzarr(w, p, 3, s3=True),
    "acqzarr-v2-s3": lambda w, p: run_acqzarr(w, p, 2, s3=True),
}


def verify(result: dict[str, Any], w: Workload) -> bool:
    """Read every frame back with tensorstore and compare with what was appended (frame i at its
    storage-order position), 64 frames at a time along the axis next to the frame."""
    import tensorstore as ts

    arr = ts.open({"driver": result["driver"], "kvstore": result["kvstore"]}, read=True).result()
    shape = array_shape(w)
    if tuple(arr.shape) != shape:
        return False
    pool = w["_pool"]
    lead = shape[:-2]
    for outer in np.ndindex(*lead[:-1]):
        for start in range(0, lead[-1], 64):
            got = arr[(*outer, slice(start, min(start + 64, lead[-1])))].read().result()
            first = int(np.ravel_multi_index((*outer, start), lead))
            want = pool[np.arange(first, first + got.shape[0]) % len(pool)]
            if not np.array_equal(got, want):
                return False
    return True


# -- machine limits --------------------------------------------------------------
def limit_memcpy(w: Workload, path: Path) -> dict[str, Any]:
    src = np.ones(256 << 20, np.uint8)
    dst = np.zeros_like(src)
    np.copyto(dst, src)
    t0 = time.perf_counter()
    for _ in range(8):
        np.copyto(dst, src)
    return {"rate": 8 * src.nbytes / (time.perf_counter() - t0)}


def limit_disk(w: Workload, path: Path, how: str) -> dict[str, Any]:
    """Sequential write of the workload's compressed size (raw size when uncompressed) from a reused,
    page-aligned 8 MiB buffer: through the page cache with fsync at the end ("fsync"), through the
    page cache without ("cache"), or with O_DIRECT ("direct")."""
    import mmap

    path.mkdir(parents=True, exist_ok=True)
    block = mmap.mmap(-1, 8 << 20)
    block.write(os.urandom(8 << 20))
    total = raw_bytes(w)
    if w["compress"]:
        total = int(total / 1.6)
    total -= total % 4096
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if how == "direct" else 0)
    t0 = time.perf_counter()
    fd = os.open(path / "raw.bin", flags)
    written = 0
    while written < total:
        written += os.write(fd, memoryview(block)[: min(len(block), total - written)])
    if how == "fsync":
        os.fsync(fd)
    os.close(fd)
    return {"rate": total / (time.perf_counter() - t0)}


def limit_blosc(w: Workload, path: Path, threads: int) -> dict[str, Any]:
    from numcodecs import blosc

    blosc.use_threads = False
    pool = w["_pool"]
    c, span = w["chunk_xy"], min(w["size"], w["shard_xy"] * w["chunk_xy"])
    chunks = [  # the chunks of one shard's frame area, each chunk_frames(w) frames deep
        np.ascontiguousarray(pool[np.arange(chunk_frames(w)) % len(pool), y : y + c, x : x + c])
        for y in range(0, span, c)
        for x in range(0, span, c)
    ]
    reps = 6
    out_bytes = [0]

    def work() -> None:
        for _ in range(reps):
            for ch in chunks:
                out_bytes[0] += len(blosc.compress(ch, b"lz4", 1, 1, 0))

    work()  # warm
    t0 = time.perf_counter()
    ts_ = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts_:
        t.start()
    for t in ts_:
        t.join()
    total = threads * reps * sum(ch.nbytes for ch in chunks)
    return {"rate": total / (time.perf_counter() - t0)}


def limit_s3_put(w: Workload, path: Path) -> dict[str, Any]:
    """Upload the workload's compressed size to the S3 server as shard-sized objects (4 shards of a
    layer at a time, as the writers do), with the store's own client and defaults: what the server
    and the client accept with no compression competing for the cores."""
    from concurrent.futures import ThreadPoolExecutor

    import acqzarr as az

    url, _ = s3_location(path)
    store = az.S3Store(url, az.S3Settings(endpoint=os.environ["ACQZARR_BENCH_S3_ENDPOINT"], allow_http=True))
    shard = shard_bytes(w)
    if w["compress"]:
        shard = int(shard / 1.6)
    blob = np.frombuffer(os.urandom(shard), np.uint8)
    total = raw_bytes(w)
    if w["compress"]:
        total = int(total / 1.6)
    count = max(1, total // shard)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: store.put_padded(f"s{i}", blob, shard), range(count)))
    rate = count * shard / (time.perf_counter() - t0)
    store.clear()
    return {"rate": rate}


LIMITS: dict[str, Callable[[Workload, Path], dict[str, Any]]] = {
    "s3-put": limit_s3_put,
    "memcpy": limit_memcpy,
    "disk-write+fsync": lambda w, p: limit_disk(w, p, "fsync"),
    "disk-write-cache": lambda w, p: limit_disk(w, p, "cache"),
    "disk-write-direct": lambda w, p: limit_disk(w, p, "direct"),
    "blosc-1-thread": lambda w, p: limit_blosc(w, p, 1),
    "blosc-2-threads": lambda w, p: limit_blosc(w, p, 2),
}


def _reset_peak_rss() -> None:
    """Reset the kernel's high-water mark of resident memory (Linux >= 4.0), so each run has its own."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _rss() -> int:
    """Resident memory now: what a run's peak starts from (a warm run inherits the cold run's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_worker(name: str, w: Workload, base: Path) -> dict[str, Any]:
    """Entry point inside the worker process: cold run, then (optionally) a warm run of the same writer.

    Peak RSS is per run (high-water mark reset before each) and includes the frame pool the
    benchmark holds (reported separately as ``pool_bytes``)."""
    import gc

    w["_pool"] = frame_pool(w)
    if name in LIMITS:
        out = LIMITS[name](w, base / name)
        shutil.rmtree(base / name, ignore_errors=True)
        return out
    runs = []
    for attempt in ("cold", "warm")[: 1 + int(w["warm"])]:
        path = base / f"{name}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        os.sync()
        gc.collect()
        _reset_peak_rss()
        start_rss = _rss()
        r = WRITERS[name](w, path)
        peak = _peak_rss()
        lat = np.asarray(r.pop("lat"))
        r.update(
            attempt=attempt,
            p50=float(np.percentile(lat, 50)),
            p99=float(np.percentile(lat, 99)),
            max=float(lat.max()),
            peak_rss=peak,
            start_rss=start_rss,
            pool_bytes=int(w["_pool"].nbytes),
            disk=r.get("disk") or disk_bytes(path),
            ok=verify(r, w),
        )
        shutil.rmtree(path, ignore_errors=True)
        if "s3" in r:
            import acqzarr as az

            az.S3Store(
                r.pop("s3"), az.S3Settings(endpoint=os.environ["ACQZARR_BENCH_S3_ENDPOINT"], allow_http=True)
            ).clear()
        runs.append(r)
    return {"runs": runs}


if __name__ == "__main__":  # pragma: no cover - invoked by stream.py
    import sys

    name, workload, base = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    print(json.dumps(run_worker(name, workload, base)))
