"""Regression tests for the pool fixes a code review asked for, one test per fix.

Each test runs the scenario the review described against real worker processes and
fails if the old behaviour comes back (a hang is caught by a generous backstop, never
by a sleep).
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import signal
import threading
from pathlib import Path

import anyio
import pytest

from _handshake import BACKSTOP, Gate, start_running
from cancelpool import (
    CancelPool,
    JobCancelled,
    JobHandle,
    OperationStatus,
    TimeoutCancelation,
    WorkerCrashed,
)

from . import _jobs

# Seconds within which something that should happen "at once" must have happened. Far
# below BACKSTOP, so that an outcome that only arrives through a backstop (or never)
# fails the test; still generous against a loaded machine.
PROMPT = 10.0
# File descriptors held open before a pool starts: more than select() can watch.
MANY_FDS = 1100
TESTS_DIR = Path(__file__).resolve().parents[1]


# -- 1. fds above 1023 -------------------------------------------------------------------------
def test_a_pool_works_with_more_than_1024_fds_open(gate: Gate) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = MANY_FDS + 512  # ours, plus the pool's pipes, sockets and pytest's own
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    fds: list[int] = []
    try:
        while len(fds) < MANY_FDS:
            fds.extend(os.pipe())
        with CancelPool(workers=2) as pool:
            assert pool.submit(_jobs.add, 1, 2).result(BACKSTOP) == 3
            # The scenario really happened: the supervisor watches fds above 1023.
            assert pool._sup._wakeup.fd > 1024
            held = start_running(pool, gate, "held", partial="half")
            assert held.cancel("fds") is True
            with pytest.raises(JobCancelled) as info:
                held.result(BACKSTOP)
            assert info.value.partial_result == "half"
            assert pool.submit(_jobs.add_sync, 2, 3).result(BACKSTOP) == 5
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- 2. shutdown while the only worker dies with a job queued ---------------------------------
def test_shutdown_does_not_hang_when_the_only_worker_dies_with_a_job_queued(gate: Gate) -> None:
    pool = CancelPool(workers=1, concurrency=1)
    a = pool.submit(_jobs.exit_at_gate, gate.path, "a")
    [arrival] = gate.wait(1)
    b = pool.submit(_jobs.where)  # queued: the one worker runs A and takes one job
    assert b.status is OperationStatus.PENDING
    pool.shutdown(wait=False)  # closing from here on: no new worker "while running"
    gate.release(arrival)  # A ends its worker; B still waits for one
    closer = threading.Thread(target=pool.shutdown, kwargs={"wait": True}, daemon=True)
    closer.start()
    closer.join(BACKSTOP)  # backstop against the old hang
    assert not closer.is_alive(), f"shutdown(wait=True) still blocked after {BACKSTOP}s"
    assert isinstance(a.exception(0), WorkerCrashed)
    assert b.result(0)["pid"] != arrival.pid  # a replacement worker ran it


# -- 3. asyncio.wrap_future of a cancelled job ------------------------------------------------
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


# -- 4. a retried attempt gets its own timeout ------------------------------------------------
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


# -- 5. a child result that cannot be unpickled in the parent's worker ------------------------
def test_a_child_result_that_cannot_be_unpickled_fails_the_await_promptly(
    pool: CancelPool,
) -> None:
    parent = pool.submit(_jobs.await_unreadable_child)
    outcome = parent.result(PROMPT)  # well before any backstop: no hang
    assert outcome.startswith("RuntimeError")
    assert "could not be read in this worker" in outcome
    assert "refuses to be unpickled" in outcome
    [child] = [h for h in pool.jobs() if h.parent is parent]
    assert child.status is OperationStatus.FAILED


# -- 6. progress() started as the job finishes -----------------------------------------------
@pytest.mark.anyio
async def test_progress_started_as_a_job_finishes_never_hangs(
    shared_pool: CancelPool, backstop: float
) -> None:
    async def follow(handle: JobHandle[int], i: int) -> None:
        seen = [event async for event in handle.progress()]
        assert len(seen) <= i % 3
        # The first iteration ended as the job's progress ended, typically before the
        # handle resolves: a second one starts right at the job's end, and ends at once.
        assert [event async for event in handle.progress()] == []
        assert await handle == i

    def submit(i: int) -> JobHandle[int]:
        return shared_pool.submit(_jobs.report_and_return, i % 3, i)

    with anyio.fail_after(backstop):  # backstop against the old hang
        for i in range(100):  # iteration starts at once after submit
            await follow(submit(i), i)
        batch = [submit(i) for i in range(100)]
        for i, handle in enumerate(batch):  # before, as and after each job ends
            await follow(handle, i)
        async with anyio.create_task_group() as tg:  # many at once
            for i in range(100):
                tg.start_soon(follow, submit(i), i)


# -- 7. callables other than module-level functions are pickled per submit --------------------
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


# -- 8. an inner timeout the job does not catch ----------------------------------------------
def test_an_escaping_inner_timeout_fails_the_job(shared_pool: CancelPool) -> None:
    handle = shared_pool.submit(_jobs.inner_timeout_escapes, 0.05)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, TimeoutCancelation)
    assert isinstance(exc, TimeoutError)
    assert not isinstance(exc, JobCancelled)
    assert handle.status is OperationStatus.FAILED


# -- 9. a parent from another pool ----------------------------------------------------------
def test_a_parent_from_another_pool_is_refused(pool: CancelPool, gate: Gate) -> None:
    parent = pool.submit(_jobs.hold, gate.path, "parent")
    [arrival] = gate.wait(1)
    with CancelPool(workers=1) as other:
        assert other.submit(_jobs.add, 1, 1).result(BACKSTOP) == 2
        before = other.statistics()
        with pytest.raises(ValueError, match="another CancelPool"):
            other.submit(_jobs.add, 2, 2, parent=parent)
        assert other.statistics() == before
        assert [h.id for h in other.jobs() if h.status is not OperationStatus.COMPLETED] == []
    unstarted = CancelPool(workers=1)
    with pytest.raises(ValueError, match="another CancelPool"):
        unstarted.submit(_jobs.add, 2, 2, parent=parent)
    assert all(w.pid is None for w in unstarted.statistics().workers)  # never started
    unstarted.shutdown()
    assert pool.jobs() == [parent]  # no child was registered with the parent's pool
    gate.release(arrival)
    assert parent.result(BACKSTOP) == "released"


# -- 10. a queued sync job does not hold up async jobs behind it ------------------------------
def test_a_queued_sync_job_does_not_block_an_async_job_behind_it(
    pool: CancelPool, gate: Gate
) -> None:
    long_jobs = [pool.submit(_jobs.hold, gate.path, f"long-{i}") for i in range(2)]
    arrivals = gate.wait(2)
    assert len({a.pid for a in arrivals}) == 2  # both workers are busy
    sync_job = pool.submit(_jobs.add_sync, 1, 2)  # needs an idle worker: waits
    quick = pool.submit(_jobs.add, 3, 4)
    assert quick.result(PROMPT) == 7
    assert sync_job.status is OperationStatus.PENDING
    assert all(not h.done() for h in long_jobs)  # the gate still holds them
    gate.release()
    assert [h.result(BACKSTOP) for h in long_jobs] == ["released", "released"]
    assert sync_job.result(BACKSTOP) == 3


# -- 11. child request ids on a replacement worker --------------------------------------------
def test_children_of_a_job_on_a_replacement_worker_get_their_own_results(gate: Gate) -> None:
    # A long grace: the orphan below ignores its cancellation until the test lets it go,
    # and must not be force-stopped (with its worker) meanwhile.
    with CancelPool(workers=2, cancel_grace=BACKSTOP) as pool:
        first = pool.submit(_jobs.parent_of_shielded, gate.path, "one", 2)
        a = {arrival.tag: arrival for arrival in gate.wait(3)}
        dead_pid = a["parent-one"].pid
        orphans = [arrival for tag, arrival in a.items() if tag.startswith("one-")]
        survivors = [arrival for arrival in orphans if arrival.pid != dead_pid]
        assert survivors, "a child of the first parent runs on the other worker"
        os.kill(dead_pid, signal.SIGKILL)
        assert isinstance(first.exception(BACKSTOP), WorkerCrashed)

        second = pool.submit(_jobs.parent_of_shielded, gate.path, "two", 2)
        b = {arrival.tag: arrival for arrival in gate.wait(3)}
        replacement = b["parent-two"].pid
        assert replacement not in (dead_pid, survivors[0].pid)  # the new worker
        # The orphans end now, while the second parent's children (request ids 1 and 2
        # in the new process, as the dead one's were) are still waiting.
        gate.release(*orphans)
        for handle in [h for h in pool.jobs() if h.parent is first]:
            handle.exception(BACKSTOP)  # its outcome has been dealt with by now
        gate.release(b["two-0"], b["two-1"])
        assert second.result(BACKSTOP) == ["two-0", "two-1"]
