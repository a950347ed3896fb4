"""What a recording shows while it runs: a live table on a terminal, log lines otherwise.

A person at a terminal wants one screen that updates in place; a log file or
a pipe wants one self-contained line per interval that greps well.  Both
show the same snapshot, computed from the stream's own counters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import IO, Any, Protocol

import numpy as np

from ..engine.stream import Stream

__all__ = [
    "Conditions",
    "Display",
    "DropReason",
    "LiveTable",
    "LogLines",
    "Snapshot",
    "drop_reason",
    "make_display",
    "snapshot",
]


@dataclass(frozen=True)
class Snapshot:
    """One array's progress; rates are averages since the recording started."""

    key: str
    frames: int
    flushed: int
    dropped: int
    fps: float
    mb_in: float  # raw frame bytes accepted per second, MB/s
    mb_out: float  # compressed bytes stored per second, MB/s
    ratio: float  # raw over stored bytes of the frames on disk, all pyramid levels (as `acqzarr info`)
    queued_frames: int  # accepted but not yet on disk
    inflight_mib: float
    cap_mib: float
    why: str = ""  # when frames were dropped: why, in a few words (DropReason.cause)


@dataclass(frozen=True)
class Conditions:
    """The stream and the machine while recording: enough to say why a camera lost frames."""

    cap_mib: float  # the in-flight cap
    peak_mib: float  # the most the stream had in flight
    cpu_share: float  # this process' CPU time over the time of every core since the start (0..1)
    load: float | None  # the machine's 1-minute load average (None where the OS has none)
    cores: int
    mb_out: float  # compressed MB/s stored


@dataclass(frozen=True)
class DropReason:
    cause: str  # why, in a few words: for the progress line
    advice: str  # what to change: for the final summary

    def text(self, dropped: int) -> str:
        return f"{dropped} frames dropped: {self.cause}. To avoid it: {self.advice}."


def _size(mib: float) -> str:
    return f"{mib:.0f} MiB" if mib >= 1 else f"{mib * 1024:.0f} KiB"


def drop_reason(dropped: int, c: Conditions) -> DropReason | None:
    """Why the camera lost frames, from what the recording saw; None when it lost none.

    The stream holds frames in memory up to its in-flight cap while they are compressed and
    written.  A camera loses frames when its ring overflows, which happens either because the
    appends waited at the cap (the writer fell behind: CPU or disk) or because the thread reading
    the camera did not get the CPU in time although the stream had room.  Which of CPU and disk
    held the writer back is told from this process' CPU use and the machine's load: a writer
    that used little CPU on a quiet machine was waiting for storage.
    """
    if dropped <= 0:
        return None
    load = f"load {c.load:.1f} on {c.cores} cores" if c.load is not None else f"{c.cores} cores"
    # The load average counts this process' own busy threads too: the rest is other processes.
    others = None if c.load is None else max(c.load - c.cpu_share * c.cores, 0.0)
    if c.cpu_share >= 0.75:
        cpu = f"CPU: this process kept all {c.cores} cores busy"
    elif others is not None and others >= c.cores / 2:
        cpu = (
            f"CPU: the machine is busy ({load}, ~{others:.1f} of it other processes), "
            "which took the time it needed"
        )
    else:
        cpu = ""
    if c.peak_mib >= 0.8 * c.cap_mib:  # appends waited at the cap
        raise_cap = f"raise max_inflight_bytes (now {_size(c.cap_mib)}) to hold a longer burst"
        if cpu:
            return DropReason(
                f"the writer fell behind the camera and filled the in-flight cap ({cpu})",
                "lower the camera's fps, use fewer pyramid levels or lighter compression, record "
                f"when the machine is quieter, or {raise_cap}",
            )
        return DropReason(
            f"the writer fell behind the camera and filled the in-flight cap (disk: it stored "
            f"only {c.mb_out:.0f} MB/s while this process used {100 * c.cpu_share:.0f}% of the "
            f"CPU and the machine was quiet, {load})",
            f"write to a faster disk, compress more, lower the camera's fps, or {raise_cap}",
        )
    return DropReason(
        f"the camera was not read in time although the stream had room ({_size(c.peak_mib)} of "
        f"{_size(c.cap_mib)} at most; {cpu or 'CPU: ' + load})",
        "give the camera a larger ring (its on-board buffer, `ring` for the simulators), lower its "
        "fps, or record when the machine is quieter",
    )


def snapshot(stream: Stream, key: str, elapsed: float, dropped: int, why: str = "") -> Snapshot:
    stats = stream.stats(key)
    array = next(a for a in stream.settings.images if a.key == key)
    frame_bytes = math.prod(array.frame_shape) * np.dtype(array.dtype).itemsize
    raw = stats.frames_appended * frame_bytes
    span = max(elapsed, 1e-9)
    memory = stream.memory()
    return Snapshot(
        key=key,
        frames=stats.frames_appended,
        flushed=stats.frames_flushed,
        dropped=dropped,
        fps=stats.frames_appended / span,
        mb_in=raw / span / 1e6,
        mb_out=stats.bytes_written / span / 1e6,
        # What is stored, raw over compressed, every pyramid level: dividing the raw bytes of the
        # frames appended (level 0 only, some still in memory) by the bytes of every level stored
        # read 3.25 before anything was flushed and 1.24 at the end where `acqzarr info` said 1.65.
        ratio=stats.raw_bytes_written / stats.bytes_written if stats.bytes_written else math.nan,
        queued_frames=stats.frames_appended - stats.frames_flushed,
        inflight_mib=memory.used / 2**20,
        cap_mib=memory.cap / 2**20,
        why=why,
    )


class Display(Protocol):
    def update(self, snaps: list[Snapshot]) -> None: ...

    def close(self, snaps: list[Snapshot]) -> None: ...


class LogLines:
    """One line per array per update (for pipes, files, CI logs)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def update(self, snaps: list[Snapshot]) -> None:
        for s in snaps:
            name = f"{s.key or '(root)'}: " if len(snaps) > 1 else ""
            print(
                f"{name}frames {s.frames} ({s.fps:.1f} fps) | in {s.mb_in:.0f} MB/s | out {s.mb_out:.0f} MB/s"
                f" | ratio {s.ratio:.2f} | queued {s.queued_frames} frames, "
                f"{s.inflight_mib:.0f}/{s.cap_mib:.0f} MiB | dropped {s.dropped} | flushed {s.flushed}"
                + (f" | dropped because {s.why}" if s.why else ""),
                file=self._out,
                flush=True,
            )

    def close(self, snaps: list[Snapshot]) -> None:
        self.update(snaps)


ROWS = (
    "frames",
    "fps",
    "MB/s in",
    "MB/s out",
    "ratio",
    "queued frames",
    "MiB used/cap",
    "dropped",
    "flushed",
)


def _cells(s: Snapshot) -> list[str]:
    return [
        str(s.frames),
        f"{s.fps:.1f}",
        f"{s.mb_in:.0f}",
        f"{s.mb_out:.0f}",
        f"{s.ratio:.2f}",
        str(s.queued_frames),
        f"{s.inflight_mib:.0f}/{s.cap_mib:.0f}",
        f"[red]{s.dropped}[/red]" if s.dropped else "0",
        str(s.flushed),
    ]


class LiveTable:
    """A rich table redrawn in place, one column per array; drops turn red (the sink fell behind)."""

    def __init__(self, out: IO[str], title: str = "acqzarr record") -> None:
        from rich.console import Console
        from rich.live import Live

        self._title = title
        self._start = time.monotonic()
        self._live = Live(console=Console(file=out), auto_refresh=False, transient=False)
        self._live.start()

    def render(self, snaps: list[Snapshot]) -> Any:
        from rich import box
        from rich.table import Table

        table = Table(title=f"{self._title}  ({time.monotonic() - self._start:.0f} s)", box=box.SIMPLE)
        table.add_column("")
        for snap in snaps:  # one column per array: the table stays narrow however many metrics
            table.add_column(snap.key or "(root)", justify="right", no_wrap=True)
        columns = [_cells(snap) for snap in snaps]
        for i, name in enumerate(ROWS):
            table.add_row(name, *(col[i] for col in columns))
        why = [f"{s.key or '(root)'}: dropped because {s.why}" for s in snaps if s.why]
        if why:  # under the table, wrapped: the columns stay narrow
            table.caption = "\n".join(why)
            table.caption_style = "red"
        return table

    def update(self, snaps: list[Snapshot]) -> None:
        self._live.update(self.render(snaps), refresh=True)

    def close(self, snaps: list[Snapshot]) -> None:
        self.update(snaps)
        self._live.stop()


def make_display(out: IO[str]) -> Display:
    """The live table when ``out`` is a terminal, log lines otherwise."""
    isatty = getattr(out, "isatty", None)
    return LiveTable(out) if isatty is not None and isatty() else LogLines(out)
