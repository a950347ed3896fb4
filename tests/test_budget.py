"""InflightBudget: the byte accounting and when ``acquire`` waits, raises or lets the caller through.

Waiting is observed with a thread and events: a waiter that should block is checked not to have returned
after a short pause (which can only miss a bug, never fail a correct budget), and every release is
followed by a generous wait for the waiter to finish.  Calls that must not wait pass ``timeout=0`` (or a
bounded one), so a budget that wrongly blocks fails the test instead of hanging it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from acqzarr.errors import BackpressureTimeout, FrameError, WriterError
from acqzarr.writers.budget import InflightBudget

PAUSE = 0.05  # how long a blocked waiter is given to (wrongly) return
DONE = 10.0  # how long a released waiter may take to return


class Waiter:
    """``budget.acquire(...)`` on its own thread; ``error`` is what it raised, if anything."""

    def __init__(self, budget: InflightBudget, nbytes: int, **kwargs: Any) -> None:
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(budget, nbytes, kwargs), daemon=True)
        self._thread.start()

    def _run(self, budget: InflightBudget, nbytes: int, kwargs: dict[str, Any]) -> None:
        try:
            budget.acquire(nbytes, **kwargs)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def assert_blocked(self) -> None:
        assert not self.done.wait(PAUSE), f"acquire returned instead of waiting (raised {self.error!r})"

    def finish(self) -> BaseException | None:
        assert self.done.wait(DONE), "acquire still waiting"
        self._thread.join(DONE)
        return self.error

    def join(self) -> None:
        self._thread.join(DONE)


@pytest.fixture
def waiters() -> Iterator[Callable[..., Waiter]]:
    """Start waiters; any still blocked at the end are released by failing their budget."""
    started: list[tuple[InflightBudget, Waiter]] = []

    def start(budget: InflightBudget, nbytes: int, **kwargs: Any) -> Waiter:
        w = Waiter(budget, nbytes, **kwargs)
        started.append((budget, w))
        return w

    yield start
    for budget, w in started:
        if not w.done.is_set():
            budget.fail(WriterError("test over"))
        w.join()


def in_flight(cap: int, nbytes: int) -> InflightBudget:
    """A budget holding ``nbytes`` submitted to the writers (nothing filling)."""
    budget = InflightBudget(cap)
    budget.acquire(nbytes, timeout=0)
    budget.submitted(nbytes)
    return budget


def test_acquire_submitted_and_release_account_used_filling_and_peak() -> None:
    budget = InflightBudget(100)
    assert (budget.used, budget.filling, budget.peak) == (0, 0, 0)
    budget.acquire(30, timeout=0)
    assert (budget.used, budget.filling, budget.peak) == (30, 30, 30)
    budget.acquire(70, timeout=0)  # exactly the cap is allowed
    assert (budget.used, budget.filling, budget.peak) == (100, 100, 100)
    budget.submitted(30)
    assert (budget.used, budget.filling) == (100, 70)
    budget.release(30)
    assert (budget.used, budget.filling, budget.peak) == (70, 70, 100)
    budget.submitted(70)
    budget.release(70)
    assert (budget.used, budget.filling, budget.peak) == (0, 0, 100)
    budget.acquire(10, timeout=0)
    assert budget.peak == 100  # the high-water mark stays


def test_acquire_waits_until_in_flight_bytes_are_released(waiters: Callable[..., Waiter]) -> None:
    budget = in_flight(100, 60)
    w = waiters(budget, 60, timeout=None)
    w.assert_blocked()
    assert (budget.used, budget.filling) == (60, 0)
    budget.release(20)  # 40 + 60 = 100 fits the cap
    assert w.finish() is None
    assert (budget.used, budget.filling, budget.peak) == (100, 60, 100)


def test_a_partial_release_keeps_the_waiter_waiting(waiters: Callable[..., Waiter]) -> None:
    budget = in_flight(100, 90)
    w = waiters(budget, 50, timeout=None)
    budget.release(30)  # 60 + 50 > 100
    w.assert_blocked()
    budget.release(10)
    assert w.finish() is None
    assert budget.used == 100


def test_timeout_raises_backpressure_timeout_and_takes_nothing() -> None:
    budget = in_flight(100, 60)
    with pytest.raises(BackpressureTimeout, match="cap 100"):
        budget.acquire(60, timeout=0.01)
    assert (budget.used, budget.filling, budget.peak) == (60, 0, 60)
    with pytest.raises(BackpressureTimeout):
        budget.acquire(60, timeout=0)
    assert budget.used == 60
    budget.acquire(40, timeout=0)  # what fits needs no wait, even with no time to wait
    assert budget.used == 100


def test_may_exceed_lets_the_caller_past_the_cap() -> None:
    budget = in_flight(100, 90)
    budget.acquire(50, timeout=0, may_exceed=lambda: True)
    assert (budget.used, budget.filling, budget.peak) == (140, 50, 140)


def test_a_waiter_rechecks_may_exceed_when_notified(waiters: Callable[..., Waiter]) -> None:
    budget = in_flight(100, 90)
    exempt = threading.Event()
    w = waiters(budget, 50, timeout=None, may_exceed=exempt.is_set)
    w.assert_blocked()
    exempt.set()
    budget.notify()
    assert w.finish() is None
    assert budget.used == 140


def test_stuck_is_raised_at_once_when_only_filling_bytes_hold_the_cap() -> None:
    budget = InflightBudget(100)
    budget.acquire(60, timeout=0)  # an open band, never submitted: nothing will free it
    with pytest.raises(FrameError, match="stuck"):
        budget.acquire(60, timeout=DONE, stuck=lambda: FrameError("stuck"))
    assert (budget.used, budget.filling, budget.peak) == (60, 60, 60)


def test_stuck_is_not_raised_while_something_in_flight_can_free_memory() -> None:
    budget = InflightBudget(100)
    budget.acquire(60, timeout=0)
    budget.acquire(30, timeout=0)
    budget.submitted(30)  # 30 on its way to the store
    with pytest.raises(BackpressureTimeout):
        budget.acquire(60, timeout=0.01, stuck=lambda: FrameError("stuck"))
    assert budget.used == 90


def test_a_waiter_becomes_stuck_when_the_last_in_flight_bytes_leave_it_over_the_cap(
    waiters: Callable[..., Waiter],
) -> None:
    budget = InflightBudget(100)
    budget.acquire(60, timeout=0)
    budget.acquire(30, timeout=0)
    budget.submitted(30)
    w = waiters(budget, 60, timeout=None, stuck=lambda: FrameError("stuck"))
    w.assert_blocked()
    budget.release(30)  # 60 filling + 60 > 100, and nothing left in flight
    err = w.finish()
    assert isinstance(err, FrameError)
    assert (budget.used, budget.filling) == (60, 60)


def test_fail_wakes_a_waiter_with_the_failure(waiters: Callable[..., Waiter]) -> None:
    budget = in_flight(100, 60)
    w = waiters(budget, 60, timeout=None)
    w.assert_blocked()
    failure = WriterError("disk full")
    budget.fail(failure)
    assert w.finish() is failure
    assert budget.used == 60


def test_after_a_failure_acquire_over_the_cap_raises_it_instead_of_waiting() -> None:
    budget = in_flight(100, 60)
    failure = WriterError("disk full")
    budget.fail(failure)
    with pytest.raises(WriterError) as info:
        budget.acquire(60, timeout=DONE)
    assert info.value is failure
    assert budget.used == 60
