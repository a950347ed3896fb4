"""`acqzarr serve` opens new series off its receive thread, holding their messages meanwhile.

A series' open (its ``Series`` being built: the store created, the stream's buffers mapped) is held
on a threading.Event, and a finalizing series' close likewise, so the order of events is fixed by
the test, never by timing. While a series waits, for its store or for a slot, the other series'
frames are received and written; once it is open its held messages are handled in order; every
store is read back with zarr-python.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from acqzarr.ingest.series import Series
from ingest_helpers import WAIT, Served, assert_store, hold_closes, recent, wait_until


class HeldOpen:
    """Makes the open of series ``sid`` wait (on its open thread) until ``release`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sid: str) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        real_init = Series.__init__

        def init(series: Series, *args: Any, **kw: Any) -> None:
            if series_id(args) == sid:
                self.entered.set()
                self.release.wait(WAIT)
            real_init(series, *args, **kw)

        monkeypatch.setattr(Series, "__init__", init)


def series_id(args: tuple[Any, ...]) -> str:
    return str(args[0].series_id)  # Series(start_header, settings, user_data_cap)


@pytest.fixture
def held_b(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldOpen]:
    held = HeldOpen(monkeypatch, "B")
    yield held
    held.release.set()


def test_a_slow_open_does_not_hold_up_another_series(held_b: HeldOpen, tmp_path: Path) -> None:
    """B's store takes long to open: A's frames sent after B's start are received and written
    meanwhile, B's own frames are held, and once B is open they land in order."""
    root = tmp_path / "root"
    served = Served(root, max_open_series=2)
    try:
        served.start("A")
        served.frames("A", 1, 2)
        served.wait_status(lambda s: s["frames"] == 2, "A's first frames in")
        served.start("B")
        served.frames("B", 1, 4)
        assert held_b.entered.wait(WAIT)
        served.frames("A", 3, 3)  # sent after all of B's messages
        served.send("A", 6, {"htype": "series_end"})
        snap = served.wait_status(lambda s: s["series_finished"] == 1, "A finalized while B opens")
        assert snap["waiting_series"] == ["B"] and snap["held_bytes"] > 0 and snap["frames"] == 5
        assert not held_b.release.is_set() and list(snap["open_series"]) == []
        served.send("B", 5, {"htype": "series_end"})
        held_b.release.set()
        snap = served.wait_status(lambda s: s["series_finished"] == 2, "B finalized")
    finally:
        served.shutdown()
    assert snap["rejected"] == {} and snap["waiting_series"] == [] and snap["held_bytes"] == 0
    assert snap["frames"] == 9 and snap["series_started"] == 2
    assert_store(root, "A", range(1, 6))
    assert_store(root, "B", range(1, 5))


def test_a_start_waiting_for_a_slot_does_not_pause_other_series(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two slots, A finalizing (its close held) and C open: B's start waits for a slot. C's frames,
    sent after B's, are written meanwhile; when C ends, its slot goes to B, whose held frames land;
    A's close is released last."""
    holds = hold_closes(monkeypatch, "A")
    root = tmp_path / "root"
    served = Served(root, max_open_series=2)
    try:
        served.series("A", 2)
        wait_until(lambda: bool(holds) and holds[0].entered.is_set(), "A's close entered")
        served.start("C")
        served.frames("C", 1, 1)
        served.wait_status(lambda s: list(s["open_series"]) == ["C"] and s["frames"] == 3, "C open")
        served.start("B")
        served.frames("B", 1, 3)
        served.frames("C", 2, 4)  # sent after all of B's messages
        snap = served.wait_status(lambda s: s["frames"] == 7, "C's frames in while B waits")
        assert snap["waiting_series"] == ["B"] and list(snap["finalizing_series"]) == ["A"]
        served.send("B", 4, {"htype": "series_end"})
        served.send("C", 6, {"htype": "series_end"})
        snap = served.wait_status(lambda s: s["series_finished"] == 2, "C and then B finalized")
        assert "A" not in recent(served.server) and list(snap["finalizing_series"]) == ["A"]
        holds[0].release.set()
        snap = served.wait_status(lambda s: s["series_finished"] == 3, "A finalized")
    finally:
        for held in holds:
            held.release.set()
        served.shutdown()
    assert snap["rejected"] == {} and snap["frames"] == 10
    assert_store(root, "A", range(1, 3))
    assert_store(root, "B", range(1, 4))
    assert_store(root, "C", range(1, 6))


def test_held_messages_are_bounded(held_b: HeldOpen, tmp_path: Path) -> None:
    """max_waiting_bytes reached by B's series_start alone: the socket is left unread while B opens
    (nothing more is held; the status still answers), and nothing is lost."""
    root = tmp_path / "root"
    served = Served(root, max_open_series=2, max_waiting_bytes=1)
    try:
        served.start("A")
        served.frames("A", 1, 1)
        served.wait_status(lambda s: s["frames"] == 1, "A's first frame in")
        served.start("B")
        assert held_b.entered.wait(WAIT)
        served.frames("B", 1, 2)
        served.frames("A", 2, 2)
        time.sleep(0.3)  # time for the server to take them, were it reading
        snap = served.status()
        start_nbytes = snap["held_bytes"]
        assert snap["waiting_series"] == ["B"] and snap["frames"] == 1
        assert 0 < start_nbytes < 4096  # B's series_start only: its frames were not taken off the socket
        held_b.release.set()
        served.send("A", 4, {"htype": "series_end"})
        served.send("B", 3, {"htype": "series_end"})
        snap = served.wait_status(lambda s: s["series_finished"] == 2, "A and B finalized")
    finally:
        served.shutdown()
    assert snap["rejected"] == {} and snap["frames"] == 5
    assert_store(root, "A", range(1, 4))
    assert_store(root, "B", range(1, 3))


def test_a_series_still_waiting_for_a_slot_at_shutdown_is_rejected_and_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stopped while B waits for A's slot (A's close held): B is never started, its three messages
    are rejected as 'shutdown' (counted, not silently dropped), and A still finishes complete."""
    holds = hold_closes(monkeypatch)
    root = tmp_path / "root"
    served = Served(root, drain_timeout=0.2)
    try:
        served.series("A", 2)
        wait_until(lambda: bool(holds) and holds[0].entered.is_set(), "A's close entered")
        served.start("B")
        served.frames("B", 1, 2)
        served.wait_status(lambda s: s["waiting_series"] == ["B"] and s["held_bytes"] > 0, "B waiting")
        served.stop.set()
        wait_until(lambda: served.server.counters.rejected["shutdown"] == 3, "B's messages given up")
        holds[0].release.set()
    finally:
        for held in holds:
            held.release.set()
        served.shutdown()
    counters = served.server.counters
    assert counters.rejected == {"shutdown": 3} and counters.series_started == 1
    assert recent(served.server)["A"]["completed"] is True and not (root / "B").exists()
    assert_store(root, "A", range(1, 3))


@pytest.mark.parametrize("failure", ["series_exists", "store"])
def test_a_series_that_cannot_open_is_rejected_with_its_held_messages(
    failure: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """X's open fails on its open thread: its store already exists (the server does not overwrite),
    or creating it fails (an OSError, held until X's frames are held too). The series_start is
    rejected for that reason, each held message as 'unknown_series' (counted, none written), an
    existing store is left as it was, and the next series is taken as usual."""
    root = tmp_path / "root"
    if failure == "series_exists":
        (root / "X").mkdir(parents=True)
        (root / "X" / "keep.txt").write_text("mine")
    else:
        held = HeldOpen(monkeypatch, "X")
        real_init = Series.__init__

        def init(series: Series, *args: Any, **kw: Any) -> None:
            real_init(series, *args, **kw)  # HeldOpen's wait, then the real open
            if series.id == "X":
                series.recording.stream.close()
                raise OSError("disk gone (injected)")

        monkeypatch.setattr(Series, "__init__", init)
    served = Served(root)
    try:
        served.series("X", 2)
        if failure == "store":
            assert held.entered.wait(WAIT)
            served.wait_status(lambda s: s["held_bytes"] > 0 and s["waiting_series"] == ["X"], "X held")
            held.release.set()
        snap = served.wait_status(lambda s: sum(s["rejected"].values()) == 4, "X's messages rejected")
        assert snap["rejected"] == {failure: 1, "unknown_series": 3} and snap["waiting_series"] == []
        assert snap["series_started"] == 0 and snap["frames"] == 0 and snap["held_bytes"] == 0
        served.series("Y", 2)
        snap = served.wait_status(lambda s: s["series_finished"] == 1, "Y finalized")
    finally:
        served.shutdown()
    assert snap["series_started"] == 1
    assert_store(root, "Y", range(1, 3))
    if failure == "series_exists":
        assert sorted(p.name for p in (root / "X").iterdir()) == ["keep.txt"]
