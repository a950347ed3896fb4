"""Recording sessions in-process: live per-frame metadata, counted drops behind a slow sink,
several cameras at once, and the progress display."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import pty
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr

import acqzarr as az
from acqzarr.recording.command import SessionConfig, load_session, record
from acqzarr.recording.progress import Conditions, LiveTable, LogLines, Snapshot, drop_reason, make_display
from acqzarr.stores import Buffer
from builders import UNSHARDED, array_document


def _session(tmp_path: Path, version: int = 3, **source: Any) -> dict[str, Any]:
    return {
        "store": str(tmp_path / "s.zarr"),
        "version": version,
        "arrays": [array_document(version, (0, 32, 24), (4, 16, 8), shards=UNSHARDED)],
        "source": {"driver": "simulated.noise", "options": {"height": 32, "width": 24}, **source},
    }


def _load(tmp_path: Path, data: dict[str, Any]) -> tuple[SessionConfig, list[Any]]:
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_session(path, environ={})


class SlowStore(az.LocalStore):
    """A disk that takes ``delay`` per chunk or shard object: the sink falls behind on purpose."""

    def __init__(self, root: Path, delay: float) -> None:
        super().__init__(root)
        self.delay = delay

    def put(self, key: str, parts: Sequence[Buffer]) -> None:
        if "/c/" in key and "acqzarr_frames" not in key:
            time.sleep(self.delay)
        super().put(key, parts)

    def put_padded(self, key: str, buffer: np.ndarray[Any, Any], nbytes: int) -> None:
        time.sleep(self.delay)
        super().put_padded(key, buffer, nbytes)


@pytest.mark.slow
def test_a_slow_sink_yields_counted_drops_matching_the_gaps_and_metadata_is_live(tmp_path: Path) -> None:
    data = _session(tmp_path, frames=40, options={"height": 32, "width": 24, "fps": 400, "ring": 2})
    data["max_inflight_bytes"] = 32 * 1024  # one band and its worst-case encoding: appends wait for the disk
    config, cameras = _load(tmp_path, data)
    store_path = tmp_path / "s.zarr"
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def watch() -> None:  # a live reader: metadata length first, then the image's frames
        while not done.is_set():
            try:
                meta = json.loads((store_path / "cam0/acqzarr_frames/frame_id/zarr.json").read_text())
                image = json.loads((store_path / "cam0/0/zarr.json").read_text())
                seen.append((meta["shape"][0], image["shape"][0]))
            except (FileNotFoundError, KeyError):
                pass
            time.sleep(0.02)

    reader = threading.Thread(target=watch)
    reader.start()
    try:
        (session,) = record(config, cameras, log=io.StringIO(), store=SlowStore(store_path, 0.02))
    finally:
        done.set()
        reader.join()
    frames = zarr.open_group(str(store_path / "cam0" / "acqzarr_frames"), mode="r")
    ids = np.asarray(frames["frame_id"][:])  # type: ignore[index]
    dropped = np.asarray(frames["dropped_before"][:])  # type: ignore[index]
    assert ids.shape == (40,) and session["frames_on_disk"] == 40
    assert dropped.sum() > 0  # the sink was slower than the camera
    np.testing.assert_array_equal(np.diff(ids) - 1, dropped[1:])  # each gap is exactly its counted drops
    assert ids[0] == dropped[0]
    assert session["frames_dropped"] >= dropped.sum()  # the camera may also lose frames after the last read
    pool = cameras[0]._pool
    np.testing.assert_array_equal(zarr.open_array(str(store_path / "cam0" / "0"), mode="r")[:], pool[ids % 8])
    live = [m for m, _ in seen if 0 < m < 40]
    assert live, "per-frame metadata was not published while recording"
    assert all(m <= i for m, i in seen), "metadata ran ahead of the image frames on disk"


def test_two_sources_record_concurrently_into_one_store(tmp_path: Path) -> None:
    data = _session(tmp_path, version=2)
    second = json.loads(json.dumps(data["arrays"][0]))
    second.update(key="cam1", dtype="uint8")
    data["arrays"].append(second)
    data["source"] = [
        {
            "key": "cam1",
            "driver": "simulated.radial_sine",
            "frames": 9,
            "options": {"height": 32, "width": 24, "dtype": "uint8"},
        },
        {
            "key": "cam0",
            "driver": "simulated.noise",
            "frames": 13,
            "options": {"height": 32, "width": 24, "ring": 64},
        },
    ]
    config, cameras = _load(tmp_path, data)
    out = io.StringIO()
    records = record(config, cameras, log=out, refresh=0.01)
    assert [r["frames_on_disk"] for r in records] == [9, 13]
    assert "cam0: frames 13" in out.getvalue() and "cam1: frames 9" in out.getvalue()
    store = tmp_path / "s.zarr"
    for key, n, rec in (("cam1", 9, records[0]), ("cam0", 13, records[1])):
        assert zarr.open_array(str(store / key / "0"), mode="r").shape[0] == n
        assert zarr.open_array(str(store / key / "acqzarr_frames" / "frame_id"), mode="r").shape == (n,)
        attrs = json.loads((store / key / ".zattrs").read_text())
        assert attrs["acqzarr_session"] == rec
        assert rec["source"]["camera"]["roi"] == {"x": 0, "y": 0, "width": 24, "height": 32}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            [{"driver": "simulated.noise"}, {"driver": "simulated.noise", "key": "cam0"}],
            "source.0.key: must name one of",
        ),
        (
            [{"driver": "simulated.noise", "key": "cam0"}, {"driver": "simulated.noise", "key": "cam0"}],
            "source.1.key: array 'cam0' already has a source",
        ),
        (
            {"driver": "simulated.noise", "key": "cam7"},
            "source.key: must name one of the arrays ['cam0', 'cam1']",
        ),
        (
            [
                {"driver": "simulated.noise", "key": "cam0", "options": {"height": 32, "width": 24}},
                {"driver": "simulated.noise", "key": "cam1", "options": {"fps": 0}},
            ],
            "source.1.options.fps: Input should be greater than 0",
        ),
    ],
)
def test_source_lists_are_validated_per_entry(tmp_path: Path, source: Any, message: str) -> None:
    data = _session(tmp_path)
    data["arrays"].append({**data["arrays"][0], "key": "cam1"})
    data["source"] = source
    with pytest.raises(az.ConfigError) as info:
        _load(tmp_path, data)
    assert message in str(info.value)
    assert not (tmp_path / "s.zarr").exists()


def _snap(key: str, dropped: int) -> Snapshot:
    return Snapshot(key, 120, 96, dropped, 59.5, 180.0, 100.0, 1.8, 24, 40.0, 128.0)


def test_log_lines_and_live_table_show_the_same_counters() -> None:
    out = io.StringIO()
    LogLines(out).update([_snap("cam0", 3)])
    line = out.getvalue()
    for part in (
        "frames 120 (59.5 fps)",
        "in 180 MB/s",
        "out 100 MB/s",
        "ratio 1.80",
        "queued 24 frames",
        "40/128 MiB",
        "dropped 3",
        "flushed 96",
    ):
        assert part in line
    from rich.console import Console

    console = Console(file=io.StringIO(), width=60, record=True)
    table = LiveTable.__new__(LiveTable)
    table._title, table._start = "t", time.monotonic()
    console.print(table.render([_snap("cam0", 3), _snap("cam1", 0)]))
    text = console.export_text()
    for row in ("frames", "fps", "MB/s in", "MB/s out", "ratio", "queued frames", "MiB used/cap", "dropped"):
        assert row in text
    assert "cam0" in text and "cam1" in text and "59.5" in text and "40/128" in text
    assert isinstance(make_display(io.StringIO()), LogLines)


def test_record_on_a_terminal_draws_the_live_table(tmp_path: Path) -> None:
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump(_session(tmp_path, frames=20)))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "acqzarr", "record", str(path)],
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "100"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    screen = b"".join(chunks).decode(errors="replace")
    assert "MB/s in" in screen and "queued frames" in screen and "recorded 20 frames" in screen


def test_a_session_with_positions_records_one_source_per_image(tmp_path: Path) -> None:
    """With stage positions every image ("p0/cam0", "p1/cam0") is a source of its own; each gets its
    frames, its per-frame metadata and a session record naming its driver."""
    data = _session(tmp_path, version=2)
    data["positions"] = [{"name": "p0", "x": 10.0, "y": 5.0}, {"name": "p1", "x": 20.0, "y": 5.0}]
    data["source"] = [
        {"key": "p0/cam0", "driver": "simulated.noise", "frames": 5, "options": {"height": 32, "width": 24}},
        {
            "key": "p1/cam0",
            "driver": "simulated.radial_sine",
            "frames": 7,
            "options": {"height": 32, "width": 24},
        },
    ]
    config, cameras = _load(tmp_path, data)
    records = record(config, cameras, log=io.StringIO(), refresh=0.01)
    assert [(r["frames_on_disk"], r["source"]["driver"]) for r in records] == [
        (5, "simulated.noise"),
        (7, "simulated.radial_sine"),
    ]
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert root.attrs["bioformats2raw.layout"] == 3
    for key, n in (("p0/cam0", 5), ("p1/cam0", 7)):
        assert root[f"{key}/0"].shape == (n, 32, 24)  # type: ignore[union-attr]
        assert root[f"{key}/acqzarr_frames/frame_id"].shape == (n,)  # type: ignore[union-attr]
    with pytest.raises(az.ConfigError, match="must name one of the arrays"):
        _load(tmp_path, {**data, "source": [{**data["source"][0], "key": "cam0"}]})


class _ClosedPipe(io.StringIO):
    """A log whose reader went away (``acqzarr record ... | head``)."""

    def write(self, s: str) -> int:
        raise BrokenPipeError("the reader went away (injected)")


def test_a_session_that_fails_itself_still_closes_the_store_as_incomplete(tmp_path: Path) -> None:
    """Not a source but the session fails (its progress output breaks): the sources are stopped,
    every accepted frame is flushed, the record says incomplete, and the failure reaches the caller."""
    config, cameras = _load(tmp_path, _session(tmp_path))  # no frame limit: records until stopped
    with pytest.raises(BrokenPipeError):
        record(config, cameras, log=_ClosedPipe(), refresh=0.01)
    image = zarr.open_group(str(tmp_path / "s.zarr" / "cam0"), mode="r")
    session = image.attrs["acqzarr_session"]
    assert isinstance(session, dict)
    assert session["completed"] is False and session["interrupted"] is None and session["stop"] is not None
    assert session["frames_on_disk"] == session["frames_accepted"] == image["0"].shape[0]  # type: ignore[union-attr]


def test_the_progress_ratio_is_the_one_acqzarr_info_reports(tmp_path: Path) -> None:
    """Progress counted level 0's raw bytes against the bytes of every pyramid level (ratio 1.24 live
    where ``acqzarr info`` said 1.65 for the same store); both now count every level."""
    from acqzarr.read.info import describe
    from acqzarr.stores import open_store

    data = {
        "store": str(tmp_path / "s.zarr"),
        "version": 3,
        "arrays": [
            {
                "key": "cam0",
                "dtype": "uint16",
                "dimensions": [
                    {"name": "t", "kind": "time", "size": 0, "chunk": 8},
                    {"name": "y", "kind": "space", "size": 256, "chunk": 64},
                    {"name": "x", "kind": "space", "size": 256, "chunk": 64},
                ],
                "multiscale": {"levels": 3, "method": "mean"},
            }
        ],
        "source": {"driver": "simulated.noise", "frames": 36, "options": {"height": 256, "width": 256}},
    }
    data["max_inflight_bytes"] = 1  # refused, saying what the pyramid needs
    with pytest.raises(az.ConfigError, match=r"need: (\d+) bytes") as refused:
        record(*_load(tmp_path, data), log=io.StringIO())
    need = re.search(r"need: (\d+) bytes", str(refused.value))
    assert need is not None
    data["max_inflight_bytes"] = int(need.group(1))
    config, cameras = _load(tmp_path, data)  # the source now waits for the disk: live lines while writing
    out = io.StringIO()
    record(config, cameras, log=out, store=SlowStore(tmp_path / "s.zarr", 0.002), refresh=0.02)
    ratios = [float(line.split("| ratio ")[1].split(" ")[0]) for line in out.getvalue().strip().splitlines()]
    final = ratios[-1]
    live = [r for r in ratios[:-1] if not math.isnan(r)]
    assert live, "no live line with a ratio"
    assert all(r == pytest.approx(final, rel=0.1) for r in live), ratios  # it read 3.25 before a flush
    info = describe(open_store(str(tmp_path / "s.zarr"), direct_io=False))
    levels = [a for a in info["arrays"] if a["path"] in ("cam0/0", "cam0/1", "cam0/2")]
    assert len(levels) == 3  # info's per-array ratios, taken together over the image's levels
    expected = sum(a["ratio"] * a["stored_bytes"] for a in levels) / sum(a["stored_bytes"] for a in levels)
    assert final == pytest.approx(expected, abs=0.01)


def test_an_overloaded_run_says_in_words_why_frames_were_dropped(tmp_path: Path) -> None:
    """A camera faster than a slow disk, with the smallest cap: the progress lines and the final
    summary say that the writer fell behind and filled the in-flight cap, and what to change."""
    data = _session(tmp_path, frames=40, options={"height": 32, "width": 24, "fps": 400, "ring": 2})
    data["max_inflight_bytes"] = 32 * 1024  # one band and its worst-case encoding
    config, cameras = _load(tmp_path, data)
    out = io.StringIO()
    (session,) = record(config, cameras, log=out, store=SlowStore(tmp_path / "s.zarr", 0.02), refresh=0.05)
    assert session["frames_dropped"] > 0
    reason = session["dropped_reason"]  # stored in the session record, printed by acqzarr record
    n = session["frames_dropped"]
    assert reason.startswith(f"{n} frames dropped: the writer fell behind the camera and filled the in-fl")
    assert "To avoid it: " in reason
    assert "raise max_inflight_bytes (now 32 KiB) to hold a longer burst" in reason
    lines = out.getvalue().strip().splitlines()
    dropping = [line for line in lines if "| dropped 0 |" not in line]
    assert dropping and all(
        "| dropped because the writer fell behind the camera and filled the in-flight cap (" in line
        for line in dropping
    )
    assert "dropped because" not in "".join(line for line in lines if "| dropped 0 |" in line)


def _conditions(**changes: Any) -> Conditions:
    base = Conditions(cap_mib=1360.0, peak_mib=1300.0, cpu_share=0.3, load=0.5, cores=2, mb_out=90.0)
    return dataclasses.replace(base, **changes)


def test_the_drop_reason_names_cpu_disk_or_the_reader() -> None:
    assert drop_reason(0, _conditions()) is None
    cpu = drop_reason(5, _conditions(cpu_share=0.9))
    assert cpu is not None
    assert cpu.text(5) == (
        "5 frames dropped: the writer fell behind the camera and filled the in-flight cap (CPU: this "
        "process kept all 2 cores busy). To avoid it: lower the camera's fps, use fewer pyramid levels or "
        "lighter compression, record when the machine is quieter, or raise max_inflight_bytes (now 1360 "
        "MiB) to hold a longer burst."
    )
    busy = drop_reason(5, _conditions(load=4.8))
    assert busy is not None and busy.cause == (
        "the writer fell behind the camera and filled the in-flight cap (CPU: the machine is busy "
        "(load 4.8 on 2 cores, ~4.2 of it other processes), which took the time it needed)"
    )
    disk = drop_reason(5, _conditions(load=1.2))  # 0.6 of it this process: a quiet machine
    assert disk is not None and disk.cause.startswith(
        "the writer fell behind the camera and filled the in-flight cap (disk: it stored only 90 MB/s"
    )
    assert disk.advice.startswith("write to a faster disk")
    reader = drop_reason(5, _conditions(peak_mib=200.0, load=3.0))
    assert reader is not None and reader.cause == (
        "the camera was not read in time although the stream had room (200 MiB of 1360 MiB at most; CPU: "
        "the machine is busy (load 3.0 on 2 cores, ~2.4 of it other processes), which took the time it "
        "needed)"
    )
    assert "larger ring" in reader.advice
