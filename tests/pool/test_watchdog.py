"""A blocked event loop is seen and named (issue 9 item 4).

Each worker's watchdog thread reports an async job that computes without awaiting:
the job's id and its stack reach the log, ``statistics()`` and the handle while the
loop is still blocked. A forced stop on that worker blames the blocker: it fails with
``WorkerKilled`` saying it blocked the loop; the job whose cancellation went unheard
ends cancelled as asked (not ``forced``: it did not ignore it) with its last checkpoint;
the other bystanders end with ``WorkerKilled`` naming the blocker, partial results kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator

import pytest

from _handshake import BACKSTOP, Gate, start_running
from cancelpool import CancelPool, JobCancelled, WorkerKilled, WorkerLost
from cancelpool._pool import _protocol as proto
from cancelpool._pool._watchdog import LoopWatchdog

from . import _blocking_jobs, _jobs
from .test_pool_workers import START_METHODS

# Seconds a cancellation may go unheard before the worker is killed, in these tests.
GRACE = 0.5


class LogWatch(logging.Handler):
    """Collects the ``cancelpool`` logger's records; a test waits for the one it needs
    (the supervisor thread logs them: a condition, not polling)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        """The first message that satisfies ``predicate`` (waits for it, with a backstop)."""

        def found() -> str | None:
            return next((m for r in self.records if predicate(m := r.getMessage())), None)

        with self.changed:
            if not self.changed.wait_for(lambda: found() is not None, BACKSTOP):
                raise AssertionError(f"no log of {what} within {BACKSTOP}s (backstop)")
            message = found()
        assert message is not None
        return message

    def messages(self) -> list[str]:
        with self.changed:
            return [record.getMessage() for record in self.records]


@pytest.fixture
def log() -> Iterator[LogWatch]:
    logger = logging.getLogger("cancelpool")
    watch = LogWatch()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


@pytest.fixture
def gate() -> Iterator[Gate]:
    with Gate() as g:
        yield g


def _blocked_log(job: int) -> Callable[[str], bool]:
    return lambda message: f"job {job} " in message and "has blocked the event loop" in message


# asyncio's loop is watched around its selector, uvloop's by a heartbeat timer.
@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_a_job_computing_without_awaiting_is_reported_with_its_stack(
    gate: Gate, log: LogWatch, use_uvloop: bool
) -> None:
    with CancelPool(workers=1, loop_block_threshold=0.2, use_uvloop=use_uvloop) as pool:
        spinner = pool.submit(_blocking_jobs.spin_until_released, gate.path)
        [arrival] = gate.wait(1)
        message = log.wait_for(_blocked_log(spinner.id), "the spinner's block")
        # Seen while the loop is still blocked: the watchdog thread wrote it itself.
        [worker] = pool.statistics().workers
        assert worker.pid == arrival.pid
        assert worker.blocked_by == spinner.id
        assert worker.blocked_for >= 0.2
        assert "(spin_until_released)" in message
        stack = spinner.blocked_stack
        assert stack is not None
        assert stack in message
        # The job's own frames, outermost first, down to the one computing; none of
        # the worker's machinery (the event loop, the task running the job).
        assert stack.index("in spin_until_released") < stack.index("in _compute_until_go")
        assert "_run_once" not in stack
        assert "_worker_process" not in stack
        gate.release(arrival)
        assert spinner.result(BACKSTOP) == "released"
        log.wait_for(lambda m: "turns again" in m, "the loop turning again")
        [worker] = pool.statistics().workers
        assert (worker.blocked_by, worker.blocked_for) == (None, 0.0)
        # The worker goes on, unharmed.
        assert pool.submit(_jobs.add, 2, 3).result(BACKSTOP) == 5


@pytest.mark.parametrize("method", START_METHODS)
def test_a_forced_stop_blames_the_blocker_and_bystanders_keep_their_partials(
    gate: Gate, log: LogWatch, method: str
) -> None:
    # A threshold far above the grace: the block is reported because a cancellation
    # goes unheard, before the forced stop has to choose whom to blame.
    with CancelPool(
        workers=1, cancel_grace=GRACE, loop_block_threshold=60, start_method=method
    ) as pool:
        polite = start_running(pool, gate, "polite", partial={"polite": 1})
        other = start_running(pool, gate, "other", partial={"other": 2})
        spinner = pool.submit(_blocking_jobs.spin_until_released, gate.path, name="hog")
        [arrival] = gate.wait(1)
        assert polite.cancel("stop, please") is True

        exc = polite.exception(BACKSTOP)
        assert isinstance(exc, JobCancelled)
        assert exc.forced is False  # it did not ignore its cancellation: it never heard it
        assert exc.partial_result == {"polite": 1}
        assert exc.message.startswith("stop, please; ")
        assert f"job {spinner.id} (hog) blocked its event loop" in exc.message

        lost = other.exception(BACKSTOP)
        assert isinstance(lost, WorkerKilled)
        assert isinstance(lost, WorkerLost)
        assert f"job {spinner.id} (hog) blocked its event loop" in str(lost)
        assert f"job {polite.id}'s cancellation could not be heard" in str(lost)
        assert lost.partial_result == {"other": 2}

        blamed = spinner.exception(BACKSTOP)
        assert isinstance(blamed, WorkerKilled)
        assert str(blamed).startswith(f"job {spinner.id} (hog) was stopped: it blocked")
        assert "in spin_until_released" in str(blamed)
        assert spinner.blocked_stack is not None

        log.wait_for(_blocked_log(spinner.id), "the spinner's block")
        # The worker was replaced; the pool goes on.
        [worker] = pool.statistics().workers
        assert worker.pid != arrival.pid
        assert worker.blocked_by is None
        assert pool.submit(_jobs.add, 1, 1).result(BACKSTOP) == 2
        stats = pool.statistics()
        assert (stats.cancelled, stats.failed) == (1, 2)


def test_a_blocker_whose_own_cancellation_is_ignored_is_force_stopped(
    gate: Gate, log: LogWatch
) -> None:
    with CancelPool(workers=1, cancel_grace=GRACE, loop_block_threshold=60) as pool:
        other = start_running(pool, gate, "other", partial={"other": 3})
        spinner = pool.submit(_blocking_jobs.spin_until_released, gate.path, name="hog")
        gate.wait(1)
        spinner.cancel("enough")
        exc = spinner.exception(BACKSTOP)
        # It ignored its own cancellation (by blocking): a forced stop, as ever.
        assert isinstance(exc, JobCancelled)
        assert exc.forced is True
        lost = other.exception(BACKSTOP)
        assert isinstance(lost, WorkerKilled)
        assert f"job {spinner.id} (hog) blocked its event loop" in str(lost)
        assert lost.partial_result == {"other": 3}


def test_a_retried_bystander_runs_again_and_the_blocker_does_not(gate: Gate, log: LogWatch) -> None:
    with CancelPool(workers=1, cancel_grace=GRACE, loop_block_threshold=60) as pool:
        polite = start_running(pool, gate, "polite")
        again = start_running(pool, gate, "again", retries=1)
        spinner = pool.submit(_blocking_jobs.spin_until_released, gate.path, retries=3)
        gate.wait(1)
        polite.cancel()
        assert isinstance(spinner.exception(BACKSTOP), WorkerKilled)
        # Its second attempt, on the replacement worker.
        [ready] = gate.wait(1)
        assert ready.tag == "again-ready"
        gate.release(ready)
        [held] = gate.wait(1)
        gate.release(held)
        assert again.result(BACKSTOP) == "released"


@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_a_bad_threshold_is_refused_at_the_call_site(value: float) -> None:
    with pytest.raises(ValueError, match="loop_block_threshold must be a finite number"):
        CancelPool(loop_block_threshold=value)


def test_a_threshold_that_is_no_number_is_refused() -> None:
    with pytest.raises(TypeError, match="loop_block_threshold must be a number of seconds"):
        CancelPool(loop_block_threshold="1")  # type: ignore[arg-type]


def test_without_a_watchdog_a_forced_stop_blames_the_job_it_stops(gate: Gate) -> None:
    # loop_block_threshold=None: no watchdog, nothing to tell the jobs apart.
    with CancelPool(workers=1, cancel_grace=GRACE, loop_block_threshold=None) as pool:
        polite = start_running(pool, gate, "polite", partial={"polite": 1})
        spinner = pool.submit(_blocking_jobs.spin_until_released, gate.path)
        gate.wait(1)
        polite.cancel()
        exc = polite.exception(BACKSTOP)
        assert isinstance(exc, JobCancelled)
        assert exc.forced is True
        lost = spinner.exception(BACKSTOP)
        assert isinstance(lost, WorkerKilled)
        assert f"force-stop job {polite.id}" in str(lost)
        assert spinner.blocked_stack is None


def test_a_block_in_a_task_the_job_started_is_reported_without_a_job(
    gate: Gate, log: LogWatch
) -> None:
    # The watchdog knows each job's own task; a task the job started is not told apart
    # from the worker's own code (a known limit, said in the log and the statistics).
    with CancelPool(workers=1, loop_block_threshold=0.2) as pool:
        job = pool.submit(_blocking_jobs.spin_in_a_subtask, gate.path)
        [arrival] = gate.wait(1)
        message = log.wait_for(lambda m: "no job's own task" in m, "the subtask's block")
        assert "in _compute_until_go" in message
        [worker] = pool.statistics().workers
        assert worker.blocked_by is None
        assert worker.blocked_for >= 0.2
        gate.release(arrival)
        assert job.result(BACKSTOP) == "released"
        assert job.blocked_stack is None


def test_an_idle_asyncio_loop_is_not_blocked_and_gets_no_timer() -> None:
    # An asyncio loop's turns are counted around its selector: the watchdog adds no
    # timer (a periodic one makes the loop's other timers late), and a loop waiting
    # for events far longer than the threshold is idle, not blocked. Then a real block
    # of the loop thread is reported, and its end.
    sent: list[object] = []
    reported = threading.Event()

    def send(message: object) -> None:
        sent.append(message)
        if isinstance(message, proto.LoopResumed):
            reported.set()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bell, ring = os.pipe()
        dog = LoopWatchdog(loop, 0.05, bell, lambda task: None, main.__code__, send)
        try:
            dog.start()
            assert not loop._scheduled  # type: ignore[attr-defined]
            idle = loop.create_future()
            # Idle for 10 thresholds: no event, no turn, no report.
            timer = threading.Timer(0.5, loop.call_soon_threadsafe, (idle.set_result, None))
            timer.start()
            turns = dog.turns
            await idle
            assert dog.turns - turns <= 2, "the loop turned while it had nothing to do"
            assert sent == []
            threading.Event().wait(0.3)  # the loop thread blocked, as a job's CPU work
            await loop.run_in_executor(None, reported.wait, BACKSTOP)
        finally:
            dog.stop()
            os.close(bell)
            os.close(ring)

    asyncio.run(main())
    assert [type(m) for m in sent] == [proto.LoopBlocked, proto.LoopResumed]
    assert sent[0].job is None  # the loop ran no job's task
