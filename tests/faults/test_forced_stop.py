"""Forced stops: a job that ignores its cancellation past ``cancel_grace`` has its worker
killed and replaced; its handle resolves ``JobCancelled(forced=True)`` with its last
checkpointed partial result; async jobs sharing that worker are lost (``WorkerLost``,
partial kept) or re-run under ``retries``; a plain function runs alone in its worker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import CancelPool, JobCancelled, OperationStatus, WorkerCrashed, WorkerLost

from . import _jobs
from ._util import is_gone

GRACE = 0.3
# Seconds past the grace a forced stop may take before the test calls it a hang. A
# backstop against a deadlock, not a speed target (benchmarks/measure_issue4.py measures that).
FORCED_STOP_BACKSTOP = 10.0


def assert_replaced(pool: CancelPool, dead_pid: int) -> None:
    """The killed worker is gone, a new one took its place, and the pool runs jobs."""
    assert is_gone(dead_pid)
    pids = {w.pid for w in pool.statistics().workers}
    assert dead_pid not in pids
    assert None not in pids
    assert all(not is_gone(pid) for pid in pids if pid is not None)
    ran_on = {pool.submit(_jobs.where).result(BACKSTOP) for _ in range(8)}
    assert dead_pid not in ran_on


@pytest.mark.parametrize("grace_from", ["job", "pool"])
def test_a_job_swallowing_its_cancellation_is_force_stopped(
    make_pool: Callable[..., CancelPool], gate: Gate, grace_from: str
) -> None:
    if grace_from == "pool":
        pool = make_pool(cancel_grace=GRACE)
        handle = pool.submit(_jobs.swallow, gate.path)
    else:
        pool = make_pool()  # default grace: 5 s
        handle = pool.submit(_jobs.swallow, gate.path, cancel_grace=GRACE)
    [arrival] = gate.wait(1)
    started = time.monotonic()
    assert handle.cancel("stop now") is True
    exc = handle.exception(GRACE + FORCED_STOP_BACKSTOP)
    elapsed = time.monotonic() - started
    print(f"forced stop ({grace_from} grace {GRACE}s): resolved after {elapsed * 1000:.1f} ms")
    assert isinstance(exc, JobCancelled)
    assert exc.forced is True
    assert exc.message == "stop now"
    assert exc.partial_result == {"step": 0}
    assert handle.status is OperationStatus.CANCELLED
    assert elapsed >= GRACE  # it had its grace period
    assert_replaced(pool, arrival.pid)
    stats = pool.statistics()
    assert (stats.cancelled, stats.failed, stats.running) == (1, 0, 0)


def test_a_grace_of_zero_stops_at_once(pool: CancelPool, gate: Gate) -> None:
    handle = pool.submit(_jobs.swallow, gate.path, cancel_grace=0)
    [arrival] = gate.wait(1)
    handle.cancel()
    exc = handle.exception(FORCED_STOP_BACKSTOP)
    assert exc.forced is True
    assert_replaced(pool, arrival.pid)


def test_a_forced_stop_keeps_the_last_partial_result_recorded(pool: CancelPool, gate: Gate) -> None:
    handle = pool.submit(_jobs.swallow, gate.path, 5, cancel_grace=GRACE)
    gate.wait(1)
    handle.cancel()
    exc = handle.exception(GRACE + FORCED_STOP_BACKSTOP)
    assert exc.forced is True
    assert exc.partial_result == {"step": 4}


def test_async_jobs_sharing_the_killed_worker_are_lost_with_their_partial_results(
    make_pool: Callable[..., CancelPool], gate: Gate
) -> None:
    pool = make_pool(workers=1)
    stubborn = pool.submit(_jobs.swallow, gate.path, cancel_grace=GRACE)
    lost = [pool.submit(_jobs.hold, gate.path, f"lost{i}", {"rows": i}) for i in range(3)]
    first = gate.wait_tags(4)
    assert len({a.pid for a in first.values()}) == 1  # one worker, four async jobs

    stubborn.cancel()
    assert stubborn.exception(GRACE + FORCED_STOP_BACKSTOP).forced is True
    for i, handle in enumerate(lost):
        exc = handle.exception(BACKSTOP)
        assert isinstance(exc, WorkerLost)
        assert not isinstance(exc, WorkerCrashed)
        assert f"force-stop job {stubborn.id}" in str(exc)
        assert exc.partial_result == {"rows": i}
        assert exc.job_id == str(handle.id)
        assert handle.status is OperationStatus.FAILED
    assert_replaced(pool, first["swallow"].pid)
    stats = pool.statistics()
    assert (stats.cancelled, stats.failed) == (1, 3)


def test_async_jobs_sharing_the_killed_worker_rerun_under_retries(
    make_pool: Callable[..., CancelPool], gate: Gate
) -> None:
    pool = make_pool(workers=1)
    stubborn = pool.submit(_jobs.swallow, gate.path, cancel_grace=GRACE)
    rerun = pool.submit(_jobs.hold, gate.path, "rerun", {"rows": 9}, retries=1)
    first = gate.wait_tags(2)
    stubborn.cancel()
    assert stubborn.exception(GRACE + FORCED_STOP_BACKSTOP).forced is True
    # The job runs again, from the start, on the new worker.
    [again] = gate.wait(1)
    assert again.tag == "rerun"
    assert again.pid != first["rerun"].pid
    gate.release(again)
    assert rerun.result(BACKSTOP) == again.pid
    assert pool.submit(_jobs.where).result(BACKSTOP) == again.pid


def test_a_sync_job_runs_alone_in_its_worker(pool: CancelPool, gate: Gate) -> None:
    alone = pool.submit(_jobs.sync_hold, gate.path, "sync")
    [sync] = gate.wait(1)
    # While it runs, every async job goes to the other worker.
    others = {pool.submit(_jobs.where).result(BACKSTOP) for _ in range(20)}
    assert sync.pid not in others
    assert len(others) == 1
    gate.release(sync)
    assert alone.result(BACKSTOP) == sync.pid


def test_a_sync_job_waits_for_a_worker_without_async_jobs(pool: CancelPool, gate: Gate) -> None:
    a = pool.submit(_jobs.hold, gate.path, "a")
    b = pool.submit(_jobs.hold, gate.path, "b")
    held = gate.wait_tags(2)
    assert held["a"].pid != held["b"].pid
    sync = pool.submit(_jobs.sync_hold, gate.path, "sync")
    gate.release(held["a"])
    assert a.result(BACKSTOP) == held["a"].pid
    [running] = gate.wait(1)
    assert running.tag == "sync"
    assert running.pid == held["a"].pid  # the worker a left, not b's
    # The job reached the gate; its Started message travels on another channel (the
    # worker's pipe to the supervisor thread): wait for it, within a backstop.
    deadline = time.monotonic() + BACKSTOP
    while sync.started_at is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert sync.started_at is not None
    assert a.ended_at is not None
    assert sync.started_at >= a.ended_at
    assert not b.done()
    gate.release()
    assert sync.result(BACKSTOP) == running.pid
    assert b.result(BACKSTOP) == held["b"].pid


def test_a_forced_stop_of_a_sync_job_hits_no_one_else(pool: CancelPool, gate: Gate) -> None:
    stubborn = pool.submit(_jobs.sync_stubborn, gate.path, {"done": 3}, cancel_grace=GRACE)
    [sync] = gate.wait(1)
    bystanders = [pool.submit(_jobs.hold, gate.path, f"by{i}") for i in range(3)]
    held = gate.wait(3)
    assert {a.pid for a in held} != {sync.pid}
    assert all(a.pid != sync.pid for a in held)

    stubborn.cancel()
    exc = stubborn.exception(GRACE + FORCED_STOP_BACKSTOP)
    assert isinstance(exc, JobCancelled)
    assert exc.forced is True
    assert exc.partial_result == {"done": 3}
    assert all(not h.done() for h in bystanders)
    gate.release()
    assert [h.result(BACKSTOP) for h in bystanders] == [a.pid for a in held]
    assert_replaced(pool, sync.pid)
