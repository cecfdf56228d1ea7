"""Lifecycle events of a real pool (issue 13 item 1): each kind seen end to end, with
real worker processes, pipes and signals; a failing subscriber harms nobody."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _handshake import Gate, start_running
from cancelpool import (
    CancelationReason,
    CancelPool,
    JobCancelled,
    JobFinished,
    JobProgress,
    JobRetried,
    JobStarted,
    JobSubmitted,
    LoopStalled,
    WorkerDied,
    WorkerRecycled,
    WorkerStarted,
)
from pool import _blocking_jobs, _jobs

from ._collect import Collector

MakePool = Callable[..., CancelPool]


def subscribed(make_pool: MakePool, **options: Any) -> tuple[CancelPool, Collector]:
    pool = make_pool(**options)
    seen = Collector()
    pool.subscribe(seen)
    return pool, seen


def test_a_job_that_succeeds_is_submitted_started_reports_and_finishes(
    make_pool: MakePool,
) -> None:
    pool, seen = subscribed(make_pool, workers=1)
    handle = pool.submit(_jobs.report_and_return, 2, "done", name="reporter")
    assert handle.result() == "done"
    [finished] = seen.wait_for(JobFinished, lambda e: e.job_id == handle.id)
    assert seen.kinds_of_job(handle.id) == [
        "JobSubmitted",
        "JobStarted",
        "JobProgress",
        "JobProgress",
        "JobFinished",
    ]
    [submitted] = seen.of(JobSubmitted)
    assert submitted.name == "reporter"
    assert submitted.parent_id is None
    [started] = seen.of(JobStarted)
    assert started.attempt == 1
    [worker] = seen.wait_for(WorkerStarted)
    assert started.worker_pid == worker.pid
    assert worker.pid != os.getpid()
    progress = seen.of(JobProgress)
    assert [(p.message, p.progress) for p in progress] == [
        ("step 0", {"i": 0}),
        ("step 1", {"i": 1}),
    ]
    assert finished.outcome == "succeeded"
    assert finished.reason is None
    assert finished.duration is not None
    assert finished.duration >= 0
    assert finished.cancel_latency is None
    assert seen.threads == {"cancelpool-supervisor"}


def test_a_failing_job_finishes_failed_with_its_error(make_pool: MakePool) -> None:
    pool, seen = subscribed(make_pool, workers=1)
    handle = pool.submit(_jobs.fail, "broken on purpose")
    with pytest.raises(_jobs.JobError):
        handle.result()
    [finished] = seen.wait_for(JobFinished)
    assert finished.outcome == "failed"
    assert finished.message is not None
    assert "broken on purpose" in finished.message


def test_a_cancelled_job_finishes_cancelled_with_its_reason_and_latency(
    make_pool: MakePool,
) -> None:
    pool, seen = subscribed(make_pool, workers=1)
    with Gate() as gate:
        handle = start_running(pool, gate, "held")
        handle.cancel("not needed any more")
        with pytest.raises(JobCancelled):
            handle.result()
    [finished] = seen.wait_for(JobFinished)
    assert finished.outcome == "cancelled"
    assert finished.reason is CancelationReason.MANUAL
    assert finished.message == "not needed any more"
    assert finished.cancel_latency is not None
    assert finished.cancel_latency >= 0


def test_a_stubborn_job_finishes_forced_and_its_worker_is_replaced(
    make_pool: MakePool,
) -> None:
    pool, seen = subscribed(make_pool, workers=1, cancel_grace=0.2)
    with Gate() as gate:
        handle = pool.submit(_jobs.stubborn, gate.path, "partial")
        gate.wait(1)
        handle.cancel("stop now")
        with pytest.raises(JobCancelled) as caught:
            handle.result()
    assert caught.value.forced
    [finished] = seen.wait_for(JobFinished)
    assert finished.outcome == "forced"
    assert finished.reason is CancelationReason.MANUAL
    assert finished.cancel_latency is not None
    assert finished.cancel_latency >= 0.2
    [died] = seen.wait_for(WorkerDied)
    assert died.how == "killed by signal 9"
    assert not died.expected
    seen.wait_for(WorkerStarted, count=2)


def test_a_killed_worker_gives_worker_died_then_worker_started(make_pool: MakePool) -> None:
    pool, seen = subscribed(make_pool, workers=1)
    assert pool.submit(_jobs.add, 1, 2).result() == 3
    [first] = seen.wait_for(WorkerStarted)
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    [died] = seen.wait_for(WorkerDied)
    assert died.pid == first.pid
    assert died.how == "killed by signal 9"
    [_, replacement] = seen.wait_for(WorkerStarted, count=2)
    assert replacement.pid not in (None, first.pid)
    assert replacement.index == first.index
    names = [type(e).__name__ for e in seen.events if not hasattr(e, "job_id")]
    assert names[-2:] == ["WorkerDied", "WorkerStarted"]
    assert pool.submit(_jobs.add, 2, 2).result() == 4


def test_a_retried_job_is_reported_with_its_next_attempt(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool, seen = subscribed(make_pool, workers=1)
    handle = pool.submit(_jobs.die_once_then_finish, str(tmp_path / "marker"), 0.0, retries=1)
    assert handle.result() == "second attempt"
    seen.wait_for(JobFinished)
    [retried] = seen.of(JobRetried)
    assert retried.job_id == handle.id
    assert retried.attempt == 2
    assert "killed by signal 9" in retried.why
    starts = seen.of(JobStarted)
    assert [s.attempt for s in starts] == [1, 2]
    assert starts[0].worker_pid == retried.worker_pid != starts[1].worker_pid
    assert seen.kinds_of_job(handle.id) == [
        "JobSubmitted",
        "JobStarted",
        "JobRetried",
        "JobStarted",
        "JobFinished",
    ]


def test_max_tasks_per_child_recycles_the_worker(make_pool: MakePool) -> None:
    pool, seen = subscribed(make_pool, workers=1, max_tasks_per_child=1)
    assert pool.submit(_jobs.add, 1, 1).result() == 2
    [recycled] = seen.wait_for(WorkerRecycled)
    assert recycled.why == "max_tasks_per_child"
    [died] = seen.wait_for(WorkerDied)
    assert died.pid == recycled.pid
    assert died.expected
    [first, second] = seen.wait_for(WorkerStarted, count=2)
    assert first.pid == recycled.pid != second.pid


def test_a_blocked_loop_gives_loop_stalled_naming_the_job(make_pool: MakePool) -> None:
    pool, seen = subscribed(make_pool, workers=1, loop_block_threshold=0.2)
    with Gate() as gate:
        spinner = pool.submit(_blocking_jobs.spin_until_released, gate.path)
        [arrival] = gate.wait(1)
        [stalled] = seen.wait_for(LoopStalled)
        gate.release(arrival)
        assert spinner.result() == "released"
    assert stalled.job_id == spinner.id
    assert stalled.pid == arrival.pid
    assert stalled.blocked_for >= 0.2
    assert "in spin_until_released" in stalled.stack


def test_a_raising_subscriber_is_logged_and_the_others_still_hear(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(workers=1)

    def broken(event: Any) -> None:
        raise ValueError("a subscriber's bug")

    pool.subscribe(broken)
    seen = Collector()
    pool.subscribe(seen)
    with caplog.at_level(logging.ERROR, logger="cancelpool"):
        assert pool.submit(_jobs.add, 2, 3).result() == 5
        seen.wait_for(JobFinished)
        assert pool.submit(_jobs.add, 3, 3).result() == 6
        seen.wait_for(JobFinished, count=2)
    failures = [r for r in caplog.records if "event subscriber failed" in r.getMessage()]
    assert failures
    assert all(r.exc_info and r.exc_info[0] is ValueError for r in failures)


def test_unsubscribing_stops_the_events(make_pool: MakePool) -> None:
    pool, seen = subscribed(make_pool, workers=1)
    later = Collector()
    stop = pool.subscribe(later)
    assert pool.submit(_jobs.add, 1, 1).result() == 2
    later.wait_for(JobFinished)
    stop()
    stop()  # idempotent
    assert pool.submit(_jobs.add, 1, 2).result() == 3
    seen.wait_for(JobFinished, count=2)  # delivered after every earlier event
    assert len(later.of(JobFinished)) == 1


def test_subscribe_wants_a_callable(pool: CancelPool) -> None:
    with pytest.raises(TypeError, match="subscribe\\(\\) wants a callable"):
        pool.subscribe("print")  # type: ignore[arg-type]
