"""What a benchmark process measures about itself: CPU cores used, peak RSS, CPU per thread.

    from measure import Span, ThreadCPU
    threads = ThreadCPU()            # before the threads to be profiled start
    span, before = Span(), threads.snapshot()
    ...                              # the timed part
    figures = span.stop()            # wall, cpu, cores, peak_rss
    per_thread = threads.profile(before, threads.snapshot())

Imported by the worker processes of ``targets.py`` (and ``runners.py``); nothing here imports
acqzarr, so it measures whichever commit's ``src`` the process runs.

Thread CPU comes from ``/proc/self/task/<tid>/stat`` (utime + stime, in clock ticks): read for
every live thread when a snapshot is taken, and by each Python thread itself as it exits, because
a stream joins its compression pool and I/O thread inside ``close()`` and their ``/proc`` entries
are gone by the time the run ends. Names come from ``threading.enumerate()`` (by ``native_id``);
threads Python did not start (ZeroMQ's I/O threads) are named by the kernel's ``comm``.
"""

from __future__ import annotations

import os
import re
import resource
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["Span", "ThreadCPU", "latency", "steady_rate", "thread_group"]

_TICK = os.sysconf("SC_CLK_TCK")


def _task_stat(stat: str) -> tuple[float, int]:
    """(utime + stime in seconds, minor page faults) from a ``/proc/.../stat`` line (fields after
    the ``(comm)``)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK, int(fields[7])


def live_threads(names: dict[int, str]) -> dict[int, list[Any]]:
    """This process's live threads from ``/proc``: id -> [name, CPU seconds, minor faults], named
    by ``names`` (``threading``'s, by ``native_id``) or, for threads Python did not start, by the
    kernel's ``comm``.  A thread that exits between the listing and the read is left out."""
    threads: dict[int, list[Any]] = {}
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        try:
            cpu, faults = _task_stat((task / "stat").read_text())
            name = names.get(tid) or (task / "comm").read_text().strip()
        except OSError:
            continue
        threads[tid] = [name, cpu, faults]
    return threads


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def peak_rss() -> int:
    """The process's resident high-water mark in bytes (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Span:
    """Wall time, process CPU time (all threads, user + system) and resident memory of a timed part.

    ``cores`` is CPU seconds per wall second: 2.0 is both cores of a 2-vCPU machine busy the
    whole time. ``peak_rss`` is the process's high-water mark since it started (one run per
    process, so it is this run's), ``start_rss`` what was resident when the span began (the frame
    pool, the interpreter)."""

    def __init__(self) -> None:
        self.start_rss = rss()
        self._cpu = _process_cpu()
        self._t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self._t0
        cpu = _process_cpu() - self._cpu
        return {
            "wall": wall,
            "cpu": cpu,
            "cores": cpu / wall if wall > 0 else float("nan"),
            "peak_rss": peak_rss(),
            "start_rss": self.start_rss,
        }


Snapshot = dict[str, Any]  # {"threads": {tid: [name, cpu_s, minor_faults]}, "process": cpu_s}


class ThreadCPU:
    """CPU seconds (and minor page faults) per thread over a span, including threads that started
    and ended inside it.

    Creating one wraps ``threading.Thread._bootstrap_inner`` (the frame every Python thread's
    life runs in, whether it has a ``target`` or overrides ``run``) so that a thread records its
    own CPU time and faults just before it exits. Only threads started afterwards are covered by that; one
    tracker per process."""

    _installed = False

    def __init__(self) -> None:
        self._exited: dict[int, tuple[str, float, int]] = {}
        self._lock = threading.Lock()
        if ThreadCPU._installed:
            raise RuntimeError("one ThreadCPU per process")
        ThreadCPU._installed = True
        original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]
        exited, lock = self._exited, self._lock

        def bootstrap_inner(thread: threading.Thread) -> None:
            try:
                original(thread)
            finally:
                try:
                    cpu, faults = _task_stat(Path("/proc/thread-self/stat").read_text())
                except OSError:
                    cpu, faults = time.thread_time(), 0
                with lock:
                    exited[threading.get_native_id()] = (thread.name, cpu, faults)

        threading.Thread._bootstrap_inner = bootstrap_inner  # type: ignore[attr-defined]

    def snapshot(self) -> Snapshot:
        """Every thread's CPU seconds so far: the ones that exited (as they recorded it), then the
        live ones from ``/proc`` (a live thread with a reused id replaces an exited one)."""
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        with self._lock:
            threads = {tid: list(record) for tid, record in self._exited.items()}
        for tid, record in live_threads(names).items():
            if tid not in names and tid in threads:
                continue  # joined, and its record taken, but the kernel has not reaped it yet
            threads[tid] = record
        return {"threads": threads, "process": _process_cpu()}

    @staticmethod
    def profile(before: Snapshot, after: Snapshot) -> dict[str, Any]:
        """CPU seconds each thread used between two snapshots, and by group of names (with the
        group's minor page faults).

        Threads are told apart by id, not name: several streams in one process (the ZeroMQ server
        with a series per sender) each start an ``acqzarr-compress_0``, and a group counts them all.
        ``unattributed`` is the process's CPU time that no thread accounts for (threads that
        exited without recording, such as native threads, and clock-tick rounding)."""
        used: list[tuple[str, float, int]] = []
        for tid, (name, cpu, faults) in after["threads"].items():
            start = before["threads"].get(tid)
            same = bool(start) and start[0] == name
            spent = cpu - (start[1] if same else 0.0)
            if spent > 0:
                used.append((name, spent, faults - (start[2] if same else 0)))
        groups: dict[str, dict[str, float]] = {}
        for name, cpu, faults in used:
            g = groups.setdefault(thread_group(name), {"cpu": 0.0, "threads": 0, "faults": 0})
            g["cpu"] += cpu
            g["threads"] += 1
            g["faults"] += faults
        process = after["process"] - before["process"]
        return {
            "threads": sorted(([name, cpu] for name, cpu, _ in used), key=lambda nc: -nc[1]),
            "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]["cpu"])),
            "process": process,
            "unattributed": process - sum(cpu for _, cpu, _ in used),
        }


def thread_group(name: str) -> str:
    """Threads of one pool under one name: ``acqzarr-compress_1`` -> ``acqzarr-compress``,
    ``bench-camera-2`` -> ``bench-camera``, ``ZMQbg/IO/0`` -> ``ZMQbg/IO``."""
    return re.sub(r"([_/-]\d+)+$", "", name)


def latency(ms: list[float]) -> dict[str, float]:
    """p50, p99 and max of per-call latencies in milliseconds (nearest rank; no numpy needed)."""
    if not ms:
        return {}
    ordered = sorted(ms)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1]}


def steady_rate(stamps: list[float], frame_bytes: int, skip: float = 0.25) -> float | None:
    """Bytes per second accepted by ``append`` after the first ``skip`` of the frames.

    ``stamps`` are the perf_counter times at which each append returned. Once the in-flight cap
    is reached, append blocks until the writer frees room, so from then on the rate frames are
    accepted at is the rate they are written; the start (buffers filling before any write) and the
    close (the last bands written after the last append) are left out."""
    first = int(len(stamps) * skip)
    if len(stamps) - first < 2:
        return None
    span = stamps[-1] - stamps[first]
    return (len(stamps) - 1 - first) * frame_bytes / span if span > 0 else None
