"""Progress reports from jobs in workers: callbacks, async iteration, bad payloads."""

from __future__ import annotations

import logging
import threading
from typing import Any

import anyio
import pytest

from _handshake import BACKSTOP, Gate
from cancelpool import (
    CancelPool,
    JobCancelled,
    JobHandle,
    OperationStatus,
    ProgressEvent,
)

from . import _jobs

STEPS = 40


def expected_steps(job_id: int) -> list[tuple[int, str, dict[str, Any]]]:
    return [
        (job_id, f"step {i}", {"i": i, "of": STEPS, "items": [i, str(i)]}) for i in range(STEPS)
    ]


def test_on_progress_callbacks_receive_every_event_in_order(
    shared_pool: CancelPool, gate: Gate
) -> None:
    handle = shared_pool.submit(_jobs.steps, gate.path, STEPS)
    gate.wait(1)  # nothing reported yet: the callbacks cannot miss anything
    first: list[tuple[int, str, dict[str, Any]]] = []
    second: list[tuple[int, str, dict[str, Any]]] = []
    threads: set[str] = set()

    def record(job_id: int, message: str, metadata: dict[str, Any]) -> None:
        threads.add(threading.current_thread().name)
        first.append((job_id, message, metadata))

    assert handle.on_progress(record) is handle  # chainable
    handle.on_progress(lambda *event: second.append(event))
    gate.release()
    assert handle.result(BACKSTOP) == STEPS
    # Every report was delivered before the result: nothing arrives late.
    assert first == expected_steps(handle.id)
    assert second == first
    assert threading.current_thread().name not in threads  # the supervisor thread's job


def test_a_failing_progress_callback_is_logged_and_the_others_still_run(
    shared_pool: CancelPool, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    handle = shared_pool.submit(_jobs.steps, gate.path, STEPS)
    gate.wait(1)
    events: list[tuple[int, str, dict[str, Any]]] = []

    def broken(job_id: int, message: str, metadata: dict[str, Any]) -> None:
        raise RuntimeError("callback bug")

    handle.on_progress(broken)
    handle.on_progress(lambda *event: events.append(event))
    with caplog.at_level(logging.ERROR, logger="cancelpool"):
        gate.release()
        assert handle.result(BACKSTOP) == STEPS
    assert events == expected_steps(handle.id)
    failures = [r for r in caplog.records if r.exc_info and "callback bug" in str(r.exc_info[1])]
    assert len(failures) == STEPS


def test_on_progress_needs_a_callable(shared_pool: CancelPool) -> None:
    handle = shared_pool.submit(_jobs.add, 1, 1)
    with pytest.raises(TypeError, match="needs a callable"):
        handle.on_progress("print")  # type: ignore[arg-type]
    assert handle.result(BACKSTOP) == 2


@pytest.mark.anyio
async def test_async_iteration_over_progress(shared_pool: CancelPool) -> None:
    # The ticker reports until cancelled, so the iteration sees events however late it
    # subscribes; it ends by itself when the job ends.
    handle = shared_pool.submit(_jobs.ticker, 0.005)
    events: list[ProgressEvent] = []
    async for event in handle.progress():
        events.append(event)
        if len(events) == 5:
            assert handle.cancel("seen enough") is True
    assert len(events) >= 5
    assert all(isinstance(event, ProgressEvent) for event in events)
    assert {(event.job_id, event.message) for event in events} == {(handle.id, "tick")}
    ticks = [event.metadata["i"] for event in events]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # in order, none lost
    with pytest.raises(JobCancelled) as info:
        await handle
    assert info.value.message == "seen enough"
    assert info.value.partial_result["ticks"] >= ticks[4]


@pytest.mark.anyio
async def test_progress_of_a_finished_job_ends_at_once(shared_pool: CancelPool) -> None:
    handle = shared_pool.submit(_jobs.add, 1, 1)
    assert await handle == 2
    assert [event async for event in handle.progress()] == []


def test_unencodable_progress_metadata_fails_the_job(shared_pool: CancelPool) -> None:
    # The job would wait for the whole backstop if the bad report did not stop it.
    handle = shared_pool.submit(_jobs.bad_progress_then_wait)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, TypeError)
    assert "this job's progress metadata cannot be encoded" in str(exc)
    assert "report JSON-like data" in str(exc)
    assert handle.status is OperationStatus.FAILED
    assert shared_pool.submit(_jobs.add, 2, 2).result(BACKSTOP) == 4  # the pool is fine


def test_unencodable_progress_metadata_fails_the_job_even_if_it_returns_at_once(
    shared_pool: CancelPool,
) -> None:
    handle = shared_pool.submit(_jobs.bad_progress_then_return)
    exc = handle.exception(BACKSTOP)
    assert isinstance(exc, TypeError), f"the job completed: {handle.result()!r}"
    assert "cannot be encoded" in str(exc)


def test_a_plain_function_reports_progress_from_its_thread(shared_pool: CancelPool) -> None:
    seen: list[str] = []
    handle = shared_pool.submit(_jobs.report_sync, 30)
    handle.on_progress(lambda job_id, message, meta: seen.append(message))
    assert handle.result(BACKSTOP) == 30
    # Progress is sent before the result on the same pipe, in order; callbacks added
    # after submit may miss the first reports, never reorder them.
    assert seen
    assert seen == [f"sync {i}" for i in range(30 - len(seen), 30)]


# -- progress() started as the job finishes -----------------------------------------------
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
