"""Jobs that end normally or raise: results, arguments, exceptions, Future interop, map.

Most tests share one module-wide pool: each submits its own jobs and looks only at its
own handles, so they cannot disturb each other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os

import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import (
    CancelationError,
    CancelationReason,
    CancelPool,
    JobCancelled,
    JobHandle,
    OperationStatus,
)

from . import _jobs


def test_sync_use_in_a_with_block() -> None:
    with CancelPool(workers=1) as pool:
        handle = pool.submit(_jobs.add, 2, 3)
        assert isinstance(handle, JobHandle)
        assert isinstance(handle, concurrent.futures.Future)
        assert handle.result(BACKSTOP) == 5
    assert handle.status is OperationStatus.COMPLETED
    assert handle.done()
    assert not handle.cancelled()


def test_pool_is_an_executor(shared_pool: CancelPool) -> None:
    assert isinstance(shared_pool, concurrent.futures.Executor)


@pytest.mark.parametrize("fn", [_jobs.echo, _jobs.echo_sync], ids=["async", "sync"])
def test_args_and_kwargs_reach_the_job(shared_pool: CancelPool, fn: object) -> None:
    handle = shared_pool.submit(fn, 1, "two", [3], x={"y": (4, 5)}, flag=True)
    args, kwargs = handle.result(BACKSTOP)
    assert args == (1, "two", [3])
    assert kwargs == {"x": {"y": (4, 5)}, "flag": True}


@pytest.mark.parametrize("fn", [_jobs.echo, _jobs.echo_sync], ids=["async", "sync"])
def test_kwargs_named_like_the_pools_internals_reach_the_job(
    shared_pool: CancelPool, fn: object
) -> None:
    # submit() takes fn positionally only, so a job may have a parameter named "fn".
    handle = shared_pool.submit(fn, fn="mine", self="also mine")
    assert handle.result(BACKSTOP) == ((), {"fn": "mine", "self": "also mine"})


def test_async_job_runs_in_the_workers_event_loop(shared_pool: CancelPool) -> None:
    facts = shared_pool.submit(_jobs.where).result(BACKSTOP)
    assert facts["pid"] != os.getpid()
    assert facts["main_thread"] is True
    assert facts["name"] == "where"  # the default name is the function's


def test_sync_job_runs_in_a_worker_thread_with_its_operation(shared_pool: CancelPool) -> None:
    handle = shared_pool.submit(_jobs.where_sync, name="in_a_thread")
    facts = handle.result(BACKSTOP)
    assert facts["pid"] != os.getpid()
    assert facts["main_thread"] is False
    assert facts["name"] == "in_a_thread"  # current_operation() is the job's, in the thread
    assert handle.name == "in_a_thread"


@pytest.mark.parametrize("fn", [_jobs.fail, _jobs.fail_sync], ids=["async", "sync"])
def test_job_exception_arrives_as_its_own_type_with_remote_traceback(
    shared_pool: CancelPool, fn: object
) -> None:
    handle = shared_pool.submit(fn, "boom", code=42)
    with pytest.raises(_jobs.JobError) as info:
        handle.result(BACKSTOP)
    exc = info.value
    assert exc.args == ("boom", 42)
    assert exc.code == 42
    assert not isinstance(exc, (CancelationError, concurrent.futures.CancelledError))
    cause = exc.__cause__
    assert cause is not None
    text = str(cause)
    assert "Traceback (most recent call last)" in text
    assert "_deep_failure" in text  # the frame that raised, in the worker
    assert "JobError: ('boom', 42)" in text
    assert handle.exception(0) is exc
    assert handle.status is OperationStatus.FAILED
    assert handle.context.error is exc


def test_unpicklable_exception_arrives_as_a_runtime_error_naming_it(
    shared_pool: CancelPool,
) -> None:
    handle = shared_pool.submit(_jobs.fail_unpicklable, "with a lock inside")
    exc = handle.exception(BACKSTOP)
    assert type(exc) is RuntimeError
    assert "UnpicklableError: with a lock inside" in str(exc)
    assert "could not be pickled" in str(exc)
    assert "UnpicklableError" in str(exc.__cause__)


def test_as_completed_and_wait(pool: CancelPool) -> None:
    # Handles of one pool share their Future condition: these calls hold them all at once.
    handles = [pool.submit(_jobs.add, i, i) for i in range(8)]
    results = {h.result() for h in concurrent.futures.as_completed(handles, timeout=BACKSTOP)}
    assert results == {2 * i for i in range(8)}
    done, not_done = concurrent.futures.wait(handles, timeout=BACKSTOP)
    assert done == set(handles)
    assert not not_done


def test_wait_first_completed_leaves_the_held_job_pending(pool: CancelPool, gate: Gate) -> None:
    held = pool.submit(_jobs.hold, gate.path)
    gate.wait(1)
    quick = pool.submit(_jobs.add, 1, 1)
    done, not_done = concurrent.futures.wait(
        [held, quick], timeout=BACKSTOP, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert done == {quick}
    assert not_done == {held}
    gate.release()
    assert held.result(BACKSTOP) == "released"


def test_as_completed_and_wait_over_one_handle(shared_pool: CancelPool) -> None:
    handle = shared_pool.submit(_jobs.add, 1, 2)
    assert [h.result() for h in concurrent.futures.as_completed([handle], BACKSTOP)] == [3]
    done, not_done = concurrent.futures.wait([handle], timeout=BACKSTOP)
    assert done == {handle}
    assert not not_done


def test_wait_first_completed_over_two_pools(shared_pool: CancelPool, gate: Gate) -> None:
    with CancelPool(workers=1) as other:
        held = shared_pool.submit(_jobs.hold, gate.path)
        gate.wait(1)
        quick = other.submit(_jobs.add, 1, 1)
        done, not_done = concurrent.futures.wait(
            [held, quick], timeout=BACKSTOP, return_when=concurrent.futures.FIRST_COMPLETED
        )
        assert done == {quick}
        assert not_done == {held}
        gate.release()
        assert held.result(BACKSTOP) == "released"


def test_asyncio_wrap_future() -> None:
    async def main(pool: CancelPool) -> None:
        assert await asyncio.wrap_future(pool.submit(_jobs.add, 20, 22)) == 42
        with pytest.raises(_jobs.JobError):
            await asyncio.wrap_future(pool.submit(_jobs.fail, "wrapped"))

    with CancelPool(workers=1) as pool:
        asyncio.run(main(pool))


def test_asyncio_wrap_future_of_a_timed_out_job_raises_job_cancelled() -> None:
    # Inside a TaskGroup: a bare CancelledError here would end the task "cancelled"
    # and the group would swallow the job's timeout without a trace.
    async def main(pool: CancelPool) -> None:
        async def waiter() -> None:
            await asyncio.wrap_future(pool.submit(_jobs.nap, 60, timeout=0.05))

        with pytest.raises(BaseExceptionGroup) as caught:
            async with asyncio.TaskGroup() as group:
                group.create_task(waiter())
        (error,) = caught.value.exceptions
        assert isinstance(error, JobCancelled)
        assert error.reason is CancelationReason.TIMEOUT

    with CancelPool(workers=1) as pool:
        asyncio.run(main(pool))


def test_map_returns_results_in_order(shared_pool: CancelPool) -> None:
    assert list(shared_pool.map(_jobs.square, range(12))) == [i * i for i in range(12)]
    assert list(shared_pool.map(_jobs.add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
    assert list(shared_pool.map(_jobs.add_sync, [1, 2], [3, 4])) == [4, 6]


def test_map_raises_the_jobs_exception(shared_pool: CancelPool) -> None:
    with pytest.raises(_jobs.JobError):
        list(shared_pool.map(_jobs.fail, ["mapped"]))


def test_map_timeout_and_abandoning_it_cancels_the_rest(
    shared_pool: CancelPool, gate: Gate
) -> None:
    results = shared_pool.map(_jobs.hold, [gate.path, gate.path], timeout=0.2, name="abandoned")
    gate.wait(2)  # both held: neither can finish before the iteration's timeout
    handles = shared_pool.jobs(name_pattern="abandoned")
    assert len(handles) == 2
    with pytest.raises(TimeoutError):
        next(results)
    results.close()  # leaving the iteration cancels the jobs not collected
    for handle in handles:
        exc = handle.exception(BACKSTOP)
        assert isinstance(exc, JobCancelled)
        assert exc.message == "map() was abandoned"


def test_map_job_timeout_bounds_each_job(shared_pool: CancelPool) -> None:
    results = list(shared_pool.map(_jobs.square, [3], job_timeout=BACKSTOP))
    assert results == [9]
    with pytest.raises(JobCancelled) as info:
        list(shared_pool.map(_jobs.nap, [BACKSTOP], job_timeout=0.1))
    assert info.value.reason == "timeout"


# -- callables other than module-level functions are pickled per submit --------------------
def test_a_stateful_callable_is_pickled_anew_per_submit(pool: CancelPool) -> None:
    job = _jobs.Stateful("one")
    first = pool.submit(job, "!")
    job.value = "two"
    second = pool.submit(job, "?")
    assert first.result(BACKSTOP) == "one!"
    assert second.result(BACKSTOP) == "two?"


def test_partials_do_not_grow_the_function_cache(pool: CancelPool) -> None:
    assert pool.submit(_jobs.add, 0, 0).result(BACKSTOP) == 0
    cached = len(pool._fn_cache)
    # Kept alive, so that a weak-keyed cache could not lose them before we look.
    partials = [functools.partial(_jobs.add, i) for i in range(2000)]
    handles = [pool.submit(p, 1) for p in partials]
    assert len(pool._fn_cache) == cached
    assert [h.result(BACKSTOP) for h in handles] == [i + 1 for i in range(2000)]
    assert len(pool._fn_cache) == cached
