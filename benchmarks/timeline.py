"""Where a targets row's idle cores are: each thread group's cores, over the run, in slices.

    python benchmarks/timeline.py --row acqzarr-pyramid              # the row at its targets size
    python benchmarks/timeline.py --row acqzarr-pyramid --frames 1024 --runs 3

``targets.py`` gives a row's CPU seconds per thread over the whole run, which says how much work
the row did but not when the cores sat idle.  A row below 2.0 cores may be held back all along
(a thread that waits on another) or only while it starts and ends: the first band has to be
filled before anything can be compressed, and after the last append only its own band's work is
left.  This runs one stream row of ``targets.py`` (same workload, same frames) in this process,
samples every thread's CPU each ``--interval`` seconds (from ``/proc``, on a sampling thread
of its own, ~0.2 ms a sample), and prints the cores each thread group used in every slice, then a
summary in three phases:

- **start**: open until the first slice in which the compression pool runs;
- **steady**: from there to the slice of the last ``append``;
- **end**: the rest, until ``close`` returns.

A row whose steady phase is near 2.0 cores is held back only by its start and end, which a
longer run spreads over more frames (``--frames``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import target_runs
import targets
from measure import live_threads, thread_group

APPENDER = "MainThread"
POOL = "acqzarr-compress"


class Sampler:
    """Cumulative CPU per thread group every ``interval`` seconds, on a thread of its own.

    Reads ``/proc/self/task`` (``measure.live_threads``: the row's own ``ThreadCPU`` is the one per
    process); a thread that exits keeps the CPU it had at its last sample, so its last slice is
    lost, not negative."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._seen: dict[int, tuple[str, float]] = {}  # thread id -> (name, CPU seconds) as last read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline-sampler", daemon=True)

    def _groups(self) -> dict[str, float]:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        for tid, (name, cpu, _faults) in live_threads(names).items():
            if tid not in names and tid in self._seen:
                name = self._seen[tid][0]  # a Python thread ending keeps its name (and group)
            self._seen[tid] = (name, cpu)
        groups: dict[str, float] = {}
        for name, cpu in self._seen.values():
            if name != self._thread.name:
                g = thread_group(name)
                groups[g] = groups.get(g, 0.0) + cpu
        return groups

    def _run(self) -> None:
        start = self.started
        first = self._groups()
        while not self._stop.wait(self.interval):
            now = self._groups()
            self.samples.append(
                (time.perf_counter() - start, {g: c - first.get(g, 0.0) for g, c in now.items()})
            )

    def __enter__(self) -> Sampler:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def slices(samples: list[tuple[float, dict[str, float]]]) -> list[tuple[float, float, dict[str, float]]]:
    """(start, length, cores per group) of each interval between samples."""
    out = []
    prev_t, prev = 0.0, {}
    for t, cpu in samples:
        dt = t - prev_t
        if dt > 0:
            out.append((prev_t, dt, {g: (c - prev.get(g, 0.0)) / dt for g, c in cpu.items()}))
        prev_t, prev = t, cpu
    return out


def phases(
    cut: list[tuple[float, float, dict[str, float]]], last_append: float
) -> dict[str, dict[str, float]]:
    """Seconds and mean cores (all groups, and per group) of the start, steady and end phases."""
    busy = [i for i, (_, _, c) in enumerate(cut) if c.get(POOL, 0.0) > 0.05]
    first = busy[0] if busy else len(cut)
    last = next((i for i, (t, dt, _) in enumerate(cut) if t + dt > last_append), len(cut)) + 1
    spans = {"start": cut[:first], "steady": cut[first : max(first, last)], "end": cut[max(first, last) :]}
    out: dict[str, dict[str, float]] = {}
    for name, part in spans.items():
        seconds = sum(dt for _, dt, _ in part)
        groups: dict[str, float] = {}
        for _, dt, cores in part:
            for g, c in cores.items():
                groups[g] = groups.get(g, 0.0) + c * dt
        out[name] = {
            "seconds": seconds,
            "cores": sum(groups.values()) / seconds if seconds else 0.0,
            **{g: cpu / seconds for g, cpu in groups.items() if seconds},
        }
    return out


def run_once(w: dict[str, Any], base: Path, interval: float) -> dict[str, Any]:
    """One run in a fresh process, as ``targets.py`` runs a row (``--one``)."""
    work = Path(tempfile.mkdtemp(dir=base, prefix="run-"))
    command = [sys.executable, __file__, "--one", json.dumps(w), str(work), str(interval)]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the run failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def one(w: dict[str, Any], work: Path, interval: float) -> dict[str, Any]:
    """The row's stream with the sampler running; the slices from ``open_stream`` on (the row's
    timed part: loading the frame pool before it is not shown)."""
    import acqzarr

    opened: list[float] = []
    open_stream = acqzarr.open_stream

    def timed_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(time.perf_counter())
        return open_stream(*args, **kwargs)

    from acqzarr.engine.stream import Stream

    appended: list[float] = [0.0]
    append = Stream.append

    def timed_append(self: Stream, *args: Any, **kwargs: Any) -> None:
        append(self, *args, **kwargs)
        appended[0] = time.perf_counter()

    acqzarr.open_stream = timed_open  # type: ignore[assignment]
    Stream.append = timed_append  # type: ignore[method-assign]
    with Sampler(interval) as sampler:
        result = target_runs.run_stream({**w, "verify": False}, work)
    origin = opened[0] - sampler.started
    cut = [(t - origin, dt, c) for t, dt, c in slices(sampler.samples)]
    cut = [s for s in cut if s[0] + s[1] > 0]
    last = appended[0] - opened[0]
    return {"wall": result["wall"], "last_append": last, "slices": cut, "phases": phases(cut, last)}


def show(run: dict[str, Any], every: int) -> None:
    groups = sorted({g for _, _, c in run["slices"] for g in c}, key=lambda g: (g != APPENDER, g != POOL, g))
    print("  t s    " + " ".join(f"{g[-12:]:>12s}" for g in groups) + "   all")
    for k in range(0, len(run["slices"]), every):
        part = run["slices"][k : k + every]
        span = sum(dt for _, dt, _ in part)
        cores = {g: sum(c.get(g, 0.0) * dt for _, dt, c in part) / span for g in groups}
        print(
            f"  {part[0][0]:5.2f}  "
            + " ".join(f"{cores[g]:12.2f}" for g in groups)
            + f"  {sum(cores.values()):5.2f}"
        )


def main() -> int:
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one(json.loads(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--row", required=True, help="a stream row of targets.py (acqzarr-...)")
    p.add_argument("--frames", type=int, help="frames to append (default: the row's)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.05, help="seconds between samples")
    p.add_argument("--every", type=int, default=2, help="samples a printed line sums")
    p.add_argument("--dir", help="where stores are written (default: a temporary dir under the cwd)")
    p.add_argument("--json", help="write every run's slices and phases here")
    args = p.parse_args()
    plan_args = targets.parser().parse_args([])
    rows = [r for r in targets.plan(plan_args) if r.name == args.row]
    if not rows or rows[0].kind != "stream":
        names = [r.name for r in targets.plan(plan_args) if r.kind == "stream"]
        raise SystemExit(f"--row must be one of {names}")
    w = dict(rows[0].workload)
    if args.frames:
        w["frames"] = args.frames
    runs = []
    with tempfile.TemporaryDirectory(dir=args.dir or ".", prefix="bench-timeline-") as tmp:
        base = Path(tmp)
        w["pool_file"] = str(base / "pool.npy")
        target_runs.make_pool(w, w["pool_file"])
        for k in range(args.runs):
            time.sleep(2)
            run = run_once(w, base, args.interval)
            runs.append(run)
            print(f"-- {args.row}, {w['frames']} frames, run {k + 1} of {args.runs}: {run['wall']:.2f} s")
            show(run, args.every)
            for name, ph in run["phases"].items():
                rest = ", ".join(f"{g} {c:.2f}" for g, c in ph.items() if g not in ("seconds", "cores"))
                print(f"  {name:6s} {ph['seconds']:5.2f} s at {ph['cores']:.2f} cores ({rest})")
    if len(runs) > 1:
        print("-- medians over the runs")
        for name in ("start", "steady", "end"):
            secs = statistics.median(r["phases"][name]["seconds"] for r in runs)
            cores = statistics.median(r["phases"][name]["cores"] for r in runs)
            print(f"  {name:6s} {secs:5.2f} s at {cores:.2f} cores")
    if args.json:
        Path(args.json).write_text(json.dumps({"row": args.row, "workload": w, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
