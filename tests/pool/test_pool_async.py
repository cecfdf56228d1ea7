"""The pool from async code (anyio's plugin: asyncio, uvloop and trio): ``async with``,
``await pool.submit(...)``, and what cancelling the awaiting task does to the job."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import CancelationReason, CancelPool, JobCancelled, OperationStatus, PoolClosed

from . import _jobs

pytestmark = pytest.mark.anyio


async def test_async_with_and_await_submit() -> None:
    async with CancelPool(workers=1) as pool:
        assert await pool.submit(_jobs.add, 2, 3) == 5
        assert await pool.submit(_jobs.add_sync, 4, 5) == 9
        with pytest.raises(_jobs.JobError) as info:
            await pool.submit(_jobs.fail, "awaited")
        assert "_deep_failure" in str(info.value.__cause__)
    with pytest.raises(PoolClosed):
        pool.submit(_jobs.add, 1, 1)


async def test_await_a_cancelled_job(shared_pool: CancelPool, gate: Gate) -> None:
    handle = shared_pool.submit(_jobs.hold, gate.path, partial=[1, 2])
    await gate.wait_async(1)
    assert handle.cancel("from async code") is True
    with pytest.raises(JobCancelled) as info:
        await handle
    assert info.value.reason is CancelationReason.MANUAL
    assert info.value.partial_result == [1, 2]


async def test_await_a_timed_out_job(shared_pool: CancelPool) -> None:
    with pytest.raises(JobCancelled) as info:
        await shared_pool.submit(_jobs.nap, 60, timeout=0.2)
    assert info.value.reason is CancelationReason.TIMEOUT


async def test_many_jobs_awaited_concurrently(shared_pool: CancelPool) -> None:
    results: dict[int, int] = {}

    async def one(i: int) -> None:
        results[i] = await shared_pool.submit(_jobs.square, i)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, i)
    assert results == {i: i * i for i in range(20)}


async def test_cancelling_the_awaiting_task_cancels_the_job(
    shared_pool: CancelPool, gate: Gate
) -> None:
    handle = shared_pool.submit(_jobs.hold, gate.path, partial="half")
    await gate.wait_async(1)

    async def awaiter() -> None:
        await handle

    async with anyio.create_task_group() as tg:
        tg.start_soon(awaiter)
        await anyio.wait_all_tasks_blocked()  # the awaiter is waiting for the job
        tg.cancel_scope.cancel()
    with pytest.raises(JobCancelled) as info:
        await handle
    assert info.value.reason is CancelationReason.PARENT
    assert info.value.partial_result == "half"
    assert handle.status is OperationStatus.CANCELLED


async def test_a_cancelled_scope_around_await_cancels_the_job(
    shared_pool: CancelPool, gate: Gate
) -> None:
    handle = shared_pool.submit(_jobs.hold, gate.path)
    await gate.wait_async(1)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await handle
    assert scope.cancelled_caught
    with pytest.raises(JobCancelled):
        await handle


# -- asyncio.wrap_future of a cancelled job ------------------------------------------------
def test_wrap_future_of_a_cancelled_job_raises_job_cancelled(
    shared_pool: CancelPool, gate: Gate
) -> None:
    async def main() -> None:
        before = shared_pool.submit(_jobs.hold, gate.path, "before", partial="p1")
        await asyncio.to_thread(gate.wait, 1)
        wrapped = asyncio.wrap_future(before)  # wrapped while the job still runs
        assert before.cancel("while wrapped") is True
        with pytest.raises(JobCancelled) as info:
            await wrapped
        assert info.value.partial_result == "p1"

        after = shared_pool.submit(_jobs.hold, gate.path, "after")
        await asyncio.to_thread(gate.wait, 1)
        after.cancel("before wrapping")
        await asyncio.to_thread(after.exception, BACKSTOP)
        with pytest.raises(JobCancelled):
            await asyncio.wrap_future(after)

        # A TaskGroup sees the job's error, not its own cancellation.
        async def await_wrapped() -> None:
            await asyncio.wrap_future(after)

        with pytest.raises(ExceptionGroup) as group:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(await_wrapped())
        # (A cancelled Future would have cancelled the task instead: no error at all.)
        assert group.group_contains(JobCancelled)

        for handle in (before, after):
            assert handle.cancelled() is False
            assert handle.done() is True
            assert handle.status is OperationStatus.CANCELLED

    asyncio.run(main())
