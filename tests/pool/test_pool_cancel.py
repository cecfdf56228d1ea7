"""Cancelling jobs: running and queued, one by one, by id, by name pattern, by timeout,
by shutdown. Jobs are held at a gate, so a test knows they are running when it cancels.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import pytest

from _handshake import BACKSTOP, Gate, start_running
from cancelpool import (
    CancelationError,
    CancelationReason,
    CancelPool,
    JobCancelled,
    JobHandle,
    OperationStatus,
    PoolClosed,
)

from . import _jobs

MANUAL = CancelationReason.MANUAL
TIMEOUT = CancelationReason.TIMEOUT


def cancelled_error(handle: JobHandle[Any]) -> JobCancelled:
    """The JobCancelled the handle resolved with (waits up to the backstop)."""
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, JobCancelled), f"expected JobCancelled, got {exc!r}"
    return exc


# -- one running job --------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [_jobs.hold, _jobs.hold_sync], ids=["async", "sync"])
def test_cancel_a_running_job(shared_pool: CancelPool, gate: Gate, fn: Any) -> None:
    handle = shared_pool.submit(fn, gate.path, partial={"pages": [1, 2, 3]})
    gate.wait(1)  # the job recorded its partial result and is waiting
    assert handle.cancel("the user pressed stop") is True
    exc = cancelled_error(handle)
    assert isinstance(exc, concurrent.futures.CancelledError)
    assert isinstance(exc, CancelationError)
    assert exc.reason is MANUAL
    assert exc.message == "the user pressed stop"
    assert exc.partial_result == {"pages": [1, 2, 3]}
    assert exc.job_id == str(handle.id)
    assert exc.forced is False  # it stopped on its own, nobody killed its worker
    with pytest.raises(JobCancelled):
        handle.result(0)
    assert handle.done()
    # Finished with JobCancelled: Future.cancelled() stays False (see JobHandle).
    assert not handle.cancelled()
    assert handle.status is OperationStatus.CANCELLED
    assert handle.partial_result == {"pages": [1, 2, 3]}
    assert handle.cancel_reason is MANUAL
    assert handle.cancel_message == "the user pressed stop"
    context = handle.context
    assert context.cancel_reason is MANUAL
    assert context.cancel_message == "the user pressed stop"
    assert context.partial_result == {"pages": [1, 2, 3]}
    assert handle.cancel("again") is False  # it has ended: nothing changes
    assert handle.exception(0) is exc
    assert handle.context.cancel_message == "the user pressed stop"


def test_cancel_without_a_message_says_which_job(shared_pool: CancelPool, gate: Gate) -> None:
    handle = shared_pool.submit(_jobs.hold, gate.path)
    gate.wait(1)
    assert handle.cancel() is True
    exc = cancelled_error(handle)
    assert exc.reason is MANUAL
    assert str(handle.id) in exc.message
    assert exc.partial_result is None


def test_cancel_a_finished_job_returns_false(shared_pool: CancelPool) -> None:
    handle = shared_pool.submit(_jobs.add, 1, 1)
    assert handle.result(BACKSTOP) == 2
    assert handle.cancel() is False
    assert shared_pool.cancel(handle) is False
    assert handle.status is OperationStatus.COMPLETED
    assert handle.cancel_reason is None
    assert handle.cancel_message is None
    assert handle.result() == 2


def test_sync_job_in_a_thread_stops_at_token_check(shared_pool: CancelPool, gate: Gate) -> None:
    handle = shared_pool.submit(_jobs.spin, gate.path)
    gate.wait(1)  # spinning, with a partial result recorded
    assert handle.cancel("enough") is True
    exc = cancelled_error(handle)
    assert exc.reason is MANUAL
    assert exc.message == "enough"
    assert isinstance(exc.partial_result, int)
    assert exc.partial_result >= 1
    assert exc.forced is False


def test_async_job_that_never_awaits_stops_at_token_check(
    shared_pool: CancelPool, gate: Gate
) -> None:
    # cancel_grace well above the job's limit: a forced kill cannot stand in for the check.
    handle = shared_pool.submit(_jobs.spin_async, gate.path, 2.0, cancel_grace=BACKSTOP)
    gate.wait(1)
    assert handle.cancel("enough") is True
    exc = handle.exception(BACKSTOP)  # the job returns -1 at its limit if it missed it
    assert isinstance(exc, JobCancelled), f"the job ran to its end: {handle.result()!r}"
    assert exc.forced is False


def test_pool_cancel_by_id_and_by_handle(shared_pool: CancelPool, gate: Gate) -> None:
    first = shared_pool.submit(_jobs.hold, gate.path, "first")
    second = shared_pool.submit(_jobs.hold, gate.path, "second")
    gate.wait(2)
    assert shared_pool.cancel(first.id, "by id") is True
    assert shared_pool.cancel(second, "by handle") is True
    assert cancelled_error(first).message == "by id"
    assert cancelled_error(second).message == "by handle"
    assert shared_pool.cancel(first.id) is False  # ended
    assert shared_pool.cancel(10**9) is False  # unknown


def test_pool_cancel_rejects_what_is_not_a_job(shared_pool: CancelPool) -> None:
    for bad in ("1", 1.0, None, True):
        with pytest.raises(TypeError, match="takes a JobHandle or a job id"):
            shared_pool.cancel(bad)  # type: ignore[arg-type]


def test_cancel_a_job_of_another_pool_is_refused(shared_pool: CancelPool, gate: Gate) -> None:
    with CancelPool(workers=1) as other:
        handle = other.submit(_jobs.hold, gate.path)
        gate.wait(1)
        with pytest.raises(ValueError, match="belongs to another pool"):
            shared_pool.cancel(handle)
        assert not handle.done()
        gate.release()
        assert handle.result(BACKSTOP) == "released"


# -- by name pattern ---------------------------------------------------------------------------
def test_cancel_all_by_name_pattern_leaves_the_others_running(
    shared_pool: CancelPool, gate: Gate
) -> None:
    ours = [
        shared_pool.submit(_jobs.hold, gate.path, f"u42-{i}", name=f"user_42_crawl_{i}")
        for i in range(3)
    ]
    others = [
        shared_pool.submit(_jobs.hold, gate.path, "u7", name="user_7_crawl"),
        shared_pool.submit(_jobs.hold, gate.path, "u420", name="user_420_crawl"),
        shared_pool.submit(_jobs.hold, gate.path, "unnamed"),
    ]
    gate.wait(6)
    assert shared_pool.cancel_all(name_pattern="user_42_*") == 3
    for handle in ours:
        exc = cancelled_error(handle)
        assert exc.reason is MANUAL
    # The others were never touched: released, they finish normally.
    assert not any(handle.done() for handle in others)
    gate.release()
    assert [handle.result(BACKSTOP) for handle in others] == ["released"] * 3
    assert shared_pool.cancel_all(name_pattern="user_42_*") == 0  # nothing live matches


def test_cancel_all_with_a_message_and_a_status(shared_pool: CancelPool, gate: Gate) -> None:
    handle = start_running(shared_pool, gate, "st", name="status_filter_job")
    assert shared_pool.cancel_all("status_filter_*", status=OperationStatus.PENDING) == 0
    assert (
        shared_pool.cancel_all(
            name_pattern="status_filter_*", status=OperationStatus.RUNNING, message="bulk stop"
        )
        == 1
    )
    assert cancelled_error(handle).message == "bulk stop"


# -- queued jobs ------------------------------------------------------------------------------
def test_cancelled_queued_jobs_never_start(gate: Gate, tmp_path: Path) -> None:
    with CancelPool(workers=2, concurrency=1) as pool:
        blockers = [pool.submit(_jobs.hold, gate.path, f"b{i}") for i in range(2)]
        gate.wait(2)  # both workers are busy: whatever comes next waits in the queue
        markers = [tmp_path / f"queued-{i}" for i in range(4)]
        queued = [pool.submit(_jobs.touch, str(marker)) for marker in markers]
        assert all(handle.status is OperationStatus.PENDING for handle in queued)
        assert queued[0].cancel("not needed") is True
        assert pool.cancel(queued[1].id) is True
        assert pool.cancel_all(name_pattern="touch", status=OperationStatus.PENDING) == 2
        for handle in queued:
            assert handle.done()  # a queued job resolves at once, no worker involved
            exc = handle.exception(0)
            assert isinstance(exc, JobCancelled)
            assert exc.reason is MANUAL
            assert exc.partial_result is None
        kept_marker = tmp_path / "kept"
        kept = pool.submit(_jobs.touch, str(kept_marker), "kept")
        gate.release()
        assert [b.result(BACKSTOP) for b in blockers] == ["released"] * 2
        assert kept.result(BACKSTOP) == "kept"
    assert kept_marker.read_text() == "kept"
    assert not [marker for marker in markers if marker.exists()]  # none of them ever ran


# -- timeouts ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fn", "args"),
    [(_jobs.nap, (BACKSTOP,)), (_jobs.spin, ()), (_jobs.spin_async, ())],
    ids=["async-await", "sync-token-check", "async-token-check"],
)
def test_timeout_cancels_the_job(shared_pool: CancelPool, fn: Any, args: Any) -> None:
    began = time.monotonic()
    handle = shared_pool.submit(fn, *args, timeout=0.3)
    exc = cancelled_error(handle)
    elapsed = time.monotonic() - began
    assert exc.reason is TIMEOUT
    assert "0.3" in exc.message
    assert exc.forced is False
    # The deadline counts from the job's start, which is after submit(). The upper
    # bound is a generous backstop, not a latency target (see benchmarks/).
    assert 0.3 <= elapsed < 0.3 + 5.0
    assert handle.context.cancel_reason is TIMEOUT


def test_timeout_keeps_the_partial_result(shared_pool: CancelPool) -> None:
    handle = shared_pool.submit(_jobs.ticker, 0.01, timeout=0.3)
    exc = cancelled_error(handle)
    assert exc.reason is TIMEOUT
    assert exc.partial_result["ticks"] >= 0
    assert handle.partial_result == exc.partial_result


def test_a_job_that_ends_in_time_is_not_cancelled(shared_pool: CancelPool) -> None:
    handle = shared_pool.submit(_jobs.add, 1, 2, timeout=BACKSTOP)
    assert handle.result(BACKSTOP) == 3
    assert handle.status is OperationStatus.COMPLETED


# -- shutdown ---------------------------------------------------------------------------------
def test_shutdown_cancel_pending_and_running(gate: Gate, tmp_path: Path) -> None:
    pool = CancelPool(workers=2, concurrency=1)
    running = [pool.submit(_jobs.hold, gate.path, f"r{i}", partial=i + 10) for i in range(2)]
    gate.wait(2)
    markers = [tmp_path / f"queued-{i}" for i in range(3)]
    queued = [pool.submit(_jobs.touch, str(marker)) for marker in markers]
    pool.shutdown(wait=True, cancel_pending=True, cancel_running=True)
    for i, handle in enumerate(running):
        exc = cancelled_error(handle)
        assert exc.reason is MANUAL
        assert exc.message == "the pool shut down"
        assert exc.partial_result == i + 10
    for handle in queued:
        assert cancelled_error(handle).message == "the pool shut down"
    assert not [marker for marker in markers if marker.exists()]
    with pytest.raises(PoolClosed):
        pool.submit(_jobs.add, 1, 1)


def test_shutdown_cancel_pending_lets_running_jobs_finish(gate: Gate, tmp_path: Path) -> None:
    pool = CancelPool(workers=1, concurrency=1)
    running = start_running(pool, gate, "r")
    marker = tmp_path / "queued"
    queued = pool.submit(_jobs.touch, str(marker))
    pool.shutdown(wait=False, cancel_pending=True)
    assert cancelled_error(queued).reason is MANUAL
    with pytest.raises(PoolClosed):
        pool.submit(_jobs.add, 1, 1)
    gate.release()
    assert running.result(BACKSTOP) == "released"
    pool.shutdown(wait=True)
    assert not marker.exists()


def test_shutdown_cancel_pending_spares_a_job_that_is_running(gate: Gate) -> None:
    pool = CancelPool(workers=1, concurrency=1)
    # An async job busy without awaiting: it is inside its function (it announced
    # itself) but its worker's loop cannot send Started until it returns.
    running = pool.submit(_jobs.spin_async, gate.path, 1.0, cancel_grace=0.2)
    gate.wait(1)
    pool.shutdown(wait=True, cancel_pending=True)
    assert running.result(BACKSTOP) == -1  # ran to its end, untouched


def test_shutdown_without_cancelling_runs_every_queued_job(tmp_path: Path) -> None:
    pool = CancelPool(workers=1, concurrency=1)
    markers = [tmp_path / f"job-{i}" for i in range(4)]
    handles = [pool.submit(_jobs.touch, str(marker), i) for i, marker in enumerate(markers)]
    pool.shutdown(wait=True)
    assert [handle.result(0) for handle in handles] == [0, 1, 2, 3]
    assert all(marker.exists() for marker in markers)


def test_an_exception_leaving_the_with_block_cancels_the_jobs(gate: Gate) -> None:
    with pytest.raises(KeyError), CancelPool(workers=1) as pool:  # noqa: PT012
        handle = pool.submit(_jobs.hold, gate.path, partial="so far")
        gate.wait(1)
        raise KeyError("the caller failed")
    exc = cancelled_error(handle)
    assert exc.reason is MANUAL
    assert "KeyError" in exc.message
    assert exc.partial_result == "so far"


# -- parents and children ------------------------------------------------------------------------
def test_cancelling_a_parent_cancels_its_descendants(shared_pool: CancelPool, gate: Gate) -> None:
    parent = shared_pool.submit(_jobs.hold, gate.path, "parent")
    child = shared_pool.submit(_jobs.hold, gate.path, "child", parent=parent)
    grandchild = shared_pool.submit(_jobs.hold, gate.path, "grandchild", parent=child)
    unrelated = shared_pool.submit(_jobs.hold, gate.path, "unrelated")
    arrivals = {arrival.tag: arrival for arrival in gate.wait(4)}
    assert parent.cancel("stop the tree") is True
    assert cancelled_error(parent).reason is MANUAL
    for handle in (child, grandchild):
        exc = cancelled_error(handle)
        assert exc.reason is CancelationReason.PARENT
        assert str(parent.id) in exc.message or str(child.id) in exc.message
    assert not unrelated.done()
    gate.release(arrivals["unrelated"])
    assert unrelated.result(BACKSTOP) == "released"


def test_children_do_not_outlive_their_parent(shared_pool: CancelPool, gate: Gate) -> None:
    parent = shared_pool.submit(_jobs.hold, gate.path, "parent")
    child = shared_pool.submit(_jobs.hold, gate.path, "child", parent=parent)
    arrivals = {arrival.tag: arrival for arrival in gate.wait(2)}
    gate.release(arrivals["parent"])
    assert parent.result(BACKSTOP) == "released"
    exc = cancelled_error(child)
    assert exc.reason is CancelationReason.PARENT
    assert f"parent job {parent.id}" in exc.message
    # A child submitted to a parent that has ended never starts.
    late = shared_pool.submit(_jobs.add, 1, 1, parent=parent)
    assert cancelled_error(late).reason is CancelationReason.PARENT


def test_supervisor_backstop_stops_a_running_job_whose_loop_is_blocked() -> None:
    # The worker cannot enforce this timeout (the job blocks its event loop after its
    # first await); the supervisor's backstop cancels it and, the job ignoring that too,
    # stops it by force. The job would return at 3 s if nothing stopped it.
    with CancelPool(workers=1) as pool:
        handle = pool.submit(_jobs.block_loop_after_await, 3.0, timeout=0.2, cancel_grace=0.2)
        exc = cancelled_error(handle)
        assert exc.reason is TIMEOUT
        assert exc.forced is True
        assert pool.submit(_jobs.add, 1, 1).result(BACKSTOP) == 2  # a new worker


def test_supervisor_backstop_stops_a_job_whose_loop_is_blocked() -> None:
    # The worker cannot enforce this timeout (the job blocks its event loop); the
    # supervisor's backstop cancels it and, the job ignoring that too, stops it by force.
    with CancelPool(workers=1) as pool:
        handle = pool.submit(_jobs.block_loop, 3.0, timeout=0.2, cancel_grace=0.2)
        exc = cancelled_error(handle)  # the job returns at 3 s if nothing stops it
        assert exc.reason is TIMEOUT
        assert exc.forced is True
        assert pool.submit(_jobs.add, 1, 1).result(BACKSTOP) == 2  # a new worker


# -- a retried attempt gets its own timeout ------------------------------------------------
def test_a_retried_attempt_is_not_cut_short_by_the_first_attempts_timeout(
    pool: CancelPool, tmp_path: Path
) -> None:
    marker = tmp_path / "first-attempt"
    # Attempt 1 dies at ~1.5 s; its supervisor backstop (2.0 s + margin) falls inside
    # attempt 2, which needs ~1.5 s of its own 2.0 s.
    handle = pool.submit(_jobs.die_once_then_finish, str(marker), 1.5, timeout=2.0, retries=1)
    assert handle.result(BACKSTOP) == "second attempt"
    assert handle.status is OperationStatus.COMPLETED
    first_start = float(marker.read_text())
    second_start = float(Path(f"{marker}.again").read_text())
    assert second_start > first_start
    # started_at is the second attempt's: it reached the supervisor after that start.
    assert handle.started_at is not None
    assert handle.started_at >= second_start
