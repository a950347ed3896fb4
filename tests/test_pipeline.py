"""Pipeline: ordered I/O on one thread, drain, failure recording and the idle hook, without a stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from acqzarr.errors import WriterError
from acqzarr.writers.budget import InflightBudget
from acqzarr.writers.pipeline import Pipeline

WAIT = 10.0  # generous bound for anything that must happen; never a measure of speed


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    p = Pipeline(threads=2, budget=InflightBudget(1 << 20))
    yield p
    p.close()


def recorder(log: list[object], value: object) -> Callable[[bool], None]:
    def job(failed: bool) -> None:
        log.append(value)

    return job


def raiser(exc: BaseException) -> Callable[[bool], None]:
    def job(failed: bool) -> None:
        raise exc

    return job


def test_io_jobs_run_in_submission_order_on_one_thread(pipeline: Pipeline) -> None:
    log: list[tuple[int, threading.Thread]] = []
    for i in range(300):
        pipeline.submit_io(lambda failed, i=i: log.append((i, threading.current_thread())))
    pipeline.drain()
    assert [i for i, _ in log] == list(range(300))
    threads = {t for _, t in log}
    assert len(threads) == 1
    assert threads.pop() is not threading.current_thread()


def test_compress_runs_on_the_pool_and_returns_a_future(pipeline: Pipeline) -> None:
    future = pipeline.compress(lambda a, b: (a + b, threading.current_thread()), 2, 3)
    total, thread = future.result(WAIT)
    assert total == 5
    assert thread is not threading.current_thread()


def test_drain_waits_for_jobs_that_running_jobs_submit(pipeline: Pipeline) -> None:
    log: list[str] = []

    def last(failed: bool) -> None:
        time.sleep(0.05)  # late enough that a drain that does not wait for it returns first
        log.append("c")

    def middle(failed: bool) -> None:
        log.append("b")
        pipeline.submit_io(last)

    def first(failed: bool) -> None:
        log.append("a")
        pipeline.submit_io(middle)

    pipeline.submit_io(first)
    pipeline.drain()
    assert log == ["a", "b", "c"]


def test_drain_waits_for_io_jobs_submitted_by_side_jobs(pipeline: Pipeline) -> None:
    log: list[str] = []

    def io_job(failed: bool) -> None:
        time.sleep(0.05)
        log.append("io")

    def side_job(failed: bool) -> None:
        log.append("side")
        pipeline.submit_io(io_job)

    pipeline.submit_side(side_job)
    pipeline.drain()
    assert log == ["side", "io"]


def test_side_jobs_run_in_order_on_their_own_thread(pipeline: Pipeline) -> None:
    side: list[tuple[int, threading.Thread]] = []
    io: list[threading.Thread] = []
    for i in range(100):
        pipeline.submit_side(lambda failed, i=i: side.append((i, threading.current_thread())))
    pipeline.submit_io(lambda failed: io.append(threading.current_thread()))
    pipeline.drain()
    assert [i for i, _ in side] == list(range(100))
    side_threads = {t for _, t in side}
    assert len(side_threads) == 1
    assert side_threads.pop() not in (threading.current_thread(), io[0])


def test_drain_side_without_side_jobs_returns(pipeline: Pipeline) -> None:
    pipeline.drain_side()
    pipeline.drain()


def test_a_failed_job_is_recorded_as_writer_error_and_later_jobs_are_told(pipeline: Pipeline) -> None:
    seen: list[tuple[str, bool]] = []
    pipeline.submit_io(lambda failed: seen.append(("before", failed)))
    cause = OSError("disk full")
    pipeline.submit_io(raiser(cause))
    pipeline.submit_io(lambda failed: seen.append(("after", failed)))
    pipeline.submit_io(raiser(ValueError("second failure")))
    pipeline.submit_io(lambda failed: seen.append(("last", failed)))
    pipeline.drain()
    assert seen == [("before", False), ("after", True), ("last", True)]
    with pytest.raises(WriterError, match="disk full") as info:
        pipeline.check()
    assert info.value.__cause__ is cause  # the first failure, not the second
    with pytest.raises(WriterError) as again:
        pipeline.check()
    assert again.value is info.value


def test_check_passes_while_nothing_failed(pipeline: Pipeline) -> None:
    pipeline.submit_io(lambda failed: None)
    pipeline.drain()
    pipeline.check()


def test_a_writer_error_is_recorded_as_it_is(pipeline: Pipeline) -> None:
    err = WriterError("shard index write failed")
    pipeline.submit_io(raiser(err))
    pipeline.drain()
    with pytest.raises(WriterError) as info:
        pipeline.check()
    assert info.value is err


def test_a_failed_side_job_fails_the_pipeline(pipeline: Pipeline) -> None:
    seen: list[bool] = []
    pipeline.submit_side(raiser(ValueError("bad level")))
    pipeline.drain_side()
    pipeline.submit_io(seen.append)
    pipeline.drain()
    assert seen == [True]
    with pytest.raises(WriterError, match="bad level"):
        pipeline.check()


def test_a_failure_wakes_the_budgets_waiters_with_it() -> None:
    budget = InflightBudget(100)
    budget.acquire(100, timeout=0)
    budget.submitted(100)
    p = Pipeline(threads=1, budget=budget)
    raised: list[BaseException] = []
    done = threading.Event()

    def wait_for_room() -> None:
        try:
            budget.acquire(50, timeout=None)
        except BaseException as exc:
            raised.append(exc)
        finally:
            done.set()

    waiter = threading.Thread(target=wait_for_room, daemon=True)
    waiter.start()
    try:
        assert not done.wait(0.05)  # blocked: 100 bytes in flight, cap 100
        p.submit_io(raiser(OSError("disk full")))
        assert done.wait(WAIT)
        with pytest.raises(WriterError) as info:
            p.check()
        assert raised == [info.value]
    finally:
        budget.fail(WriterError("test over"))
        waiter.join(WAIT)
        p.close()


def test_the_idle_hook_runs_when_a_job_leaves_the_queue_empty() -> None:
    log: list[str] = []
    idle = threading.Event()
    started = threading.Event()
    gate = threading.Event()

    def hook() -> None:
        log.append("idle")
        idle.set()

    def first(failed: bool) -> None:
        started.set()
        assert gate.wait(WAIT)
        log.append("1")

    pipeline = Pipeline(threads=2, budget=InflightBudget(1 << 20), on_io_idle=hook)
    pipeline.submit_io(first)
    assert started.wait(WAIT)
    pipeline.submit_io(recorder(log, "2"))  # queued behind the running job
    pipeline.submit_io(recorder(log, "3"))
    gate.set()
    assert idle.wait(WAIT)
    pipeline.close()
    assert log == ["1", "2", "3", "idle"]


def test_the_idle_hook_does_not_run_after_a_failure() -> None:
    calls: list[str] = []
    pipeline = Pipeline(threads=2, budget=InflightBudget(1 << 20), on_io_idle=lambda: calls.append("idle"))
    pipeline.submit_io(raiser(OSError("disk full")))
    pipeline.drain()
    pipeline.submit_io(lambda failed: None)
    pipeline.close()  # joins the I/O thread: every hook that would run has run
    assert calls == []


def test_a_failing_idle_hook_fails_the_pipeline() -> None:
    pipeline = Pipeline(threads=2, budget=InflightBudget(1 << 20), on_io_idle=_failing_hook)
    pipeline.submit_io(lambda failed: None)
    pipeline.drain()
    with pytest.raises(WriterError, match="publish failed"):
        pipeline.check()
    pipeline.close()


def _failing_hook() -> None:
    raise RuntimeError("publish failed")


def test_close_is_idempotent_and_stops_the_threads() -> None:
    p = Pipeline(threads=1, budget=InflightBudget(1 << 20))
    threads: list[threading.Thread] = []
    p.submit_io(lambda failed: threads.append(threading.current_thread()))
    p.submit_side(lambda failed: threads.append(threading.current_thread()))
    p.drain()
    p.close()
    p.close()
    assert len(threads) == 2
    assert not any(t.is_alive() for t in threads)
