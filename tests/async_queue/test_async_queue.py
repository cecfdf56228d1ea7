"""cancelpool.AsyncQueue on SQLite and PostgreSQL, on asyncio and trio: the Queue API as
coroutines, waits against a real ``cancelpool serve``, cancellation in the middle of a
store call held by a real database lock, many calls at once, and an event loop that
keeps turning while a call is held."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from qhelpers import BACKSTOP, DEMO

import cancelpool
from cancelpool import AsyncQueue
from cancelpool.queue import (
    InvalidJob,
    JobNotFinished,
    JobNotFound,
    JobStatus,
    NoLiveServer,
    Queue,
    QueueError,
    TaskNotAllowed,
)

pytestmark = pytest.mark.anyio

# The probe's pause between ticks (seconds). Shorter sees shorter stalls; longer costs
# less CPU. It is a tick of a measurement, never a synchronization.
PROBE_TICK = 0.005
# Ticks the probe must make while a call is held before the test lets the call go: the
# proof that the loop kept turning (a blocked loop makes none, and the backstop fails).
TICKS_WHILE_HELD = 20


async def until(predicate: Callable[[], Any], what: str) -> Any:
    """Poll ``predicate`` on the event loop until it is truthy (a handshake with a
    generous backstop; the loop keeps running meanwhile)."""
    with anyio.fail_after(BACKSTOP):
        while not (value := predicate()):
            await anyio.sleep(PROBE_TICK)
    return value


class Probe:
    """A task that ticks every PROBE_TICK seconds and records the largest gap."""

    def __init__(self) -> None:
        self.ticks = 0
        self.max_gap = 0.0

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(PROBE_TICK)
            now = time.monotonic()
            self.max_gap = max(self.max_gap, now - last - PROBE_TICK)
            last = now
            self.ticks += 1


class DbLock:
    """Another connection that holds the write lock on the queue's jobs (SQLite: the
    database's write lock; PostgreSQL: an EXCLUSIVE lock on the jobs table), so a
    submit waits in the database until :meth:`release`."""

    def __init__(self, db: Any) -> None:
        self.db = db
        if isinstance(db, str) and db.startswith("postgresql://"):
            import psycopg

            self.conn: Any = psycopg.connect(db)
            self.conn.execute("LOCK TABLE cancelpool.jobs IN EXCLUSIVE MODE")
        else:
            self.conn = sqlite3.connect(db, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")

    def someone_waits(self) -> bool:
        """PostgreSQL: a backend of this database waits on a lock (the held call).
        SQLite's busy wait is invisible from outside: True."""
        if not isinstance(self.db, str):
            return True
        import psycopg

        with psycopg.connect(self.db, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
        return bool(row and row[0] >= 1)

    def release(self) -> None:
        if self.conn is None:
            return
        if isinstance(self.conn, sqlite3.Connection):
            self.conn.execute("ROLLBACK")
        else:
            self.conn.rollback()
        self.conn.close()
        self.conn = None


def assert_idle(aq: AsyncQueue) -> None:
    stats = aq.connection_statistics()
    assert stats.running == 0
    assert stats.waiting == 0
    assert stats.idle == stats.opened


async def test_exported_lazily_and_cheaply() -> None:
    assert cancelpool.AsyncQueue is AsyncQueue
    assert AsyncQueue.__module__ == "cancelpool"


async def test_the_queue_api_as_coroutines(db: Any) -> None:
    async with AsyncQueue(db, connections=2) as aq:
        first = await aq.submit(f"{DEMO}:add", 2, 3, name="user_1_sum", priority=5)
        second = await aq.submit(f"{DEMO}:echo", x=[1, "a"], name="user_1_echo", timeout=9)
        third = await aq.submit(f"{DEMO}:add", 1, 1, name="other", parent=first)
        job = await aq.get(second)
        assert job is not None
        assert (job.task, job.args, job.kwargs, job.timeout) == (
            f"{DEMO}:echo",
            [],
            {"x": [1, "a"]},
            9,
        )
        assert await aq.get(10**9) is None
        assert [j.id for j in await aq.list("queued")] == [first, second, third]
        assert [j.id for j in await aq.list(name_pattern="user_1_*", limit=1)] == [first]
        assert [j.id for j in await aq.list(iter(["queued", JobStatus.RUNNING]))] == [
            first,
            second,
            third,
        ]
        assert await aq.live_servers(refresh=True) == ()
        assert await aq.nodes() == ()
        reason = await aq.unserved_reason(first)
        assert reason is not None
        assert "no live server" in reason
        stats = await aq.statistics()
        assert (stats.queued, stats.total) == (3, 3)

        # cancelling the parent cancels its child; a pattern cancels the rest
        assert await aq.cancel(first, message="not needed") == 2
        outcome = await aq.cancel_jobs(iter([second, first]))
        assert outcome.cancelled == (second,)
        assert outcome.finished == (first,)
        assert await aq.cancel_all("user_1_*") == 0
        cancelled = await aq.get(third)
        assert cancelled is not None
        assert cancelled.status is JobStatus.CANCELLED
        assert (await aq.wait(first)).cancel_message == "not needed"
        assert (await aq.statistics()).cancelled == 3
        assert repr(aq).startswith("<AsyncQueue ")
        assert aq.path is not None
        assert "s3cret" not in str(aq.path)
    assert aq.connection_statistics().opened == 0


async def test_errors_are_the_queues(db: Any) -> None:
    async with AsyncQueue(db) as aq:
        with pytest.raises(InvalidJob, match="nan"):
            await aq.submit(f"{DEMO}:add", float("nan"), 1)
        with pytest.raises(InvalidJob):
            await aq.submit("not a task")
        with pytest.raises(InvalidJob):
            await aq.submit(f"{DEMO}:add", 1, 2, timeout=-1)
        with pytest.raises(JobNotFound):
            await aq.cancel(10**9)
        with pytest.raises(JobNotFound):
            await aq.wait(10**9)
        with pytest.raises(InvalidJob):
            await aq.list("no-such-status")
        with pytest.raises(InvalidJob):
            aq.watch(0)
        with pytest.raises(InvalidJob, match="interval"):
            aq.watch(1, interval=0)
        with pytest.raises(JobNotFound):
            async for _ in aq.watch(10**9):
                pass
        queued = await aq.submit(f"{DEMO}:add", 1, 2)
        with pytest.raises(JobNotFinished, match="still queued"):
            await aq.wait(queued, timeout=0.05)
        assert_idle(aq)
        assert await aq.list(status="failed") == []
    with pytest.raises(QueueError, match="closed"):
        await aq.get(queued)
    with pytest.raises(ValueError, match="connections"):
        AsyncQueue(db, connections=0)


async def test_a_bad_path_fails_when_opened(tmp_path: Any, anyio_backend: str) -> None:
    with pytest.raises(cancelpool.queue.QueueFileError):
        async with AsyncQueue(tmp_path / "missing.db", create=False):
            pass


async def test_wait_and_watch_follow_a_real_server(
    db: Any, start_server: Callable[[], Any]
) -> None:
    async with AsyncQueue(db, connections=1) as aq:
        job_id = await aq.submit(f"{DEMO}:add", 2, 3)
        with pytest.raises(NoLiveServer):
            # no server yet: gives up after the grace (a backstop bounds the test)
            with anyio.fail_after(BACKSTOP):
                await aq.wait(job_id, need_server=True)
        start_server()
        assert len(await aq.live_servers(refresh=True)) == 1
        with pytest.raises(TaskNotAllowed):
            await aq.submit("os:system", "id")
        done = await aq.wait(job_id, timeout=BACKSTOP, need_server=True)
        assert (done.status, done.result) == (JobStatus.COMPLETED, 5)

        steps = await aq.submit(f"{DEMO}:crunch", 5, 0.01)
        seen = [record async for record in aq.watch(steps, interval=0.01)]
        assert [r.id for r in seen] == [steps] * len(seen)
        assert seen[-1].status is JobStatus.COMPLETED
        assert seen[-1].result == {"steps": 5, "sum": 15}
        assert all(not r.finished for r in seen[:-1])
        assert len({(r.status, r.progress_message, str(r.progress)) for r in seen}) == len(seen)
        # a pattern watches the unfinished jobs it matches; none: the loop ends at once
        assert [r async for r in aq.watch(name_pattern="nothing-*")] == []
        assert_idle(aq)


async def test_a_cancelled_wait_stops_at_once_and_leaves_the_job(db: Any) -> None:
    async with AsyncQueue(db) as aq:
        job_id = await aq.submit(f"{DEMO}:add", 2, 3)
        entered = anyio.Event()
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def waiter() -> None:
                    entered.set()
                    await aq.wait(job_id)

                tg.start_soon(waiter)
                await entered.wait()
                scope.cancel()
        assert scope.cancelled_caught
        job = await aq.get(job_id)
        assert job is not None
        assert job.status is JobStatus.QUEUED
        assert not job.cancel_requested
        with anyio.move_on_after(0.05) as timed:
            async for _ in aq.watch(job_id, interval=0.01):
                pass
        assert timed.cancelled_caught
        assert_idle(aq)


async def test_a_cancel_mid_call_finishes_the_write_and_the_loop_keeps_turning(
    db: Any,
) -> None:
    async with AsyncQueue(db, connections=2) as aq, anyio.create_task_group() as tg:
        probe = Probe()
        tg.start_soon(probe.run)
        lock = DbLock(db)
        outcome: dict[str, Any] = {}
        scope = anyio.CancelScope()

        async def call() -> None:
            with scope:
                outcome["id"] = await aq.submit(f"{DEMO}:add", 2, 3, name="held")
                await anyio.lowlevel.checkpoint()  # the pending cancel is raised here
                outcome["went on"] = True
            outcome["returned"] = True

        try:
            tg.start_soon(call)
            await until(lambda: aq.connection_statistics().running == 1, "the call's thread")
            await until(lambda: lock.someone_waits(), "the call to wait on the lock")
            start = probe.ticks
            await until(lambda: probe.ticks >= start + TICKS_WHILE_HELD, "the loop to turn")
            scope.cancel()
            # the write is in the database's hands: the cancel waits for it
            start = probe.ticks
            await until(lambda: probe.ticks >= start + TICKS_WHILE_HELD, "the loop to turn")
            assert "returned" not in outcome
        finally:
            lock.release()
        await until(lambda: "returned" in outcome, "the held call to return")
        # the write committed as a whole and its id came back; the cancel came after
        assert scope.cancelled_caught
        assert "went on" not in outcome
        held = await aq.list(name_pattern="held")
        assert [(j.id, j.task, j.args, j.status) for j in held] == [
            (outcome["id"], f"{DEMO}:add", [2, 3], JobStatus.QUEUED)
        ]
        assert_idle(aq)
        print(f"max loop lag while a call was held: {probe.max_gap * 1000:.1f} ms")
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("how", ["task.cancel", "asyncio.timeout"])
async def test_asyncios_own_cancel_mid_call_also_waits_for_the_write(db: Any, how: str) -> None:
    # task.cancel() (and so wait_for and asyncio.timeout) goes through anyio's shielded
    # scope: the call must still wait for its thread, not leave it writing behind the
    # caller's back with its connection and its slot given back.
    import asyncio

    async with AsyncQueue(db, connections=1) as aq:
        lock = DbLock(db)
        outcome: dict[str, Any] = {}
        timeouts: list[asyncio.Timeout] = []

        async def call() -> None:
            async with asyncio.timeout(None) as timeout:
                timeouts.append(timeout)
                outcome["id"] = await aq.submit(f"{DEMO}:add", 2, 3, name="held")
                await asyncio.sleep(0)  # the pending cancel is raised here
                outcome["went on"] = True

        task = asyncio.ensure_future(call())
        try:
            await until(lambda: aq.connection_statistics().running == 1, "the call's thread")
            await until(lambda: lock.someone_waits(), "the call to wait on the lock")
            if how == "task.cancel":
                task.cancel()
            else:
                timeouts[0].reschedule(asyncio.get_running_loop().time())
            probe = Probe()
            async with anyio.create_task_group() as tg:
                tg.start_soon(probe.run)
                await until(lambda: probe.ticks >= TICKS_WHILE_HELD, "the loop to turn")
                tg.cancel_scope.cancel()
            assert not task.done(), "the cancelled call left its write running"
            assert aq.connection_statistics().running == 1  # its slot is still held
            if how == "task.cancel":
                task.cancel()  # a second cancel changes nothing
                await anyio.sleep(PROBE_TICK)
                assert not task.done()
        finally:
            lock.release()
        # asyncio.timeout still tells its own cancel from others: TimeoutError.
        expected = asyncio.CancelledError if how == "task.cancel" else TimeoutError
        with pytest.raises(expected):
            await task
        assert "went on" not in outcome
        held = await aq.list(name_pattern="held")
        assert [(j.id, j.status) for j in held] == [(outcome["id"], JobStatus.QUEUED)]
        assert_idle(aq)


async def test_a_call_waiting_for_a_connection_is_cancelled_at_once(db: Any) -> None:
    async with AsyncQueue(db, connections=1) as aq, anyio.create_task_group() as tg:
        lock = DbLock(db)
        done: dict[str, Any] = {}
        held_scope = anyio.CancelScope()
        waiting_scope = anyio.CancelScope()

        async def held() -> None:
            with held_scope:
                done["held"] = await aq.submit(f"{DEMO}:add", 1, 1, name="held")

        async def waiting() -> None:
            with waiting_scope:
                done["waiting"] = await aq.submit(f"{DEMO}:add", 1, 1, name="waiting")
            done["waiting returned"] = True

        try:
            tg.start_soon(held)
            await until(lambda: aq.connection_statistics().running == 1, "the held call")
            tg.start_soon(waiting)
            await until(lambda: aq.connection_statistics().waiting == 1, "the second call")
            waiting_scope.cancel()
            await until(lambda: "waiting returned" in done, "the waiting call to stop")
            assert aq.connection_statistics().running == 1  # the first is still held
        finally:
            lock.release()
        await until(lambda: "held" in done, "the held call")
        assert [j.name for j in await aq.list()] == ["held"]
        assert waiting_scope.cancelled_caught
        assert "waiting" not in done
        assert_idle(aq)


async def test_many_concurrent_calls(db: Any) -> None:
    count = 60
    async with AsyncQueue(db, connections=4) as aq:
        ids: list[int] = []
        reads: list[int] = []

        async def submit(i: int) -> None:
            ids.append(await aq.submit(f"{DEMO}:add", i, i, name=f"many_{i}"))
            job = await aq.get(ids[-1])
            assert job is not None
            reads.append(len(await aq.list(limit=5)))

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(submit, i)
        assert len(set(ids)) == count
        jobs = await aq.list(name_pattern="many_*")
        assert sorted(j.args[0] for j in jobs) == list(range(count))
        assert all(1 <= n <= 5 for n in reads)
        stats = aq.connection_statistics()
        assert 1 <= stats.opened <= 4
        assert await aq.cancel_all("many_*") == count
        assert_idle(aq)


async def test_aclose_while_a_call_runs_closes_its_connection_after(db: Any) -> None:
    aq = AsyncQueue(db, connections=2)
    await aq.get(1)
    lock = DbLock(db)
    done: dict[str, Any] = {}
    try:
        async with anyio.create_task_group() as tg:

            async def held() -> None:
                done["id"] = await aq.submit(f"{DEMO}:add", 1, 1)

            tg.start_soon(held)
            await until(lambda: aq.connection_statistics().running == 1, "the held call")
            await aq.aclose()
            assert aq.connection_statistics().opened == 1  # the busy one
            lock.release()
    finally:
        lock.release()
    assert aq.connection_statistics().opened == 0
    with Queue(db) as queue:
        assert queue.get(done["id"]) is not None
