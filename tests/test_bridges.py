"""ContextBridge (context variables into threads) and AnyioBridge (calls from threads)."""

from __future__ import annotations

import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import cancelpool
from cancelpool import (
    AnyioBridge,
    Cancelable,
    ContextBridge,
    ManualCancelation,
    TimeoutCancelation,
    current_operation,
)

# Backstop for waits in plain threads: only a broken bridge makes a test wait this long.
THREAD_BACKSTOP = 30.0


def run_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target)
    thread.start()
    return thread


# -- ContextBridge ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_run_in_thread_with_context_sees_the_current_operation() -> None:
    def work(x: int, *, y: int) -> tuple[str | None, bool, int]:
        op = current_operation()
        assert op is not None
        return op.context.name, op.token.is_cancelled, threading.get_ident()

    async with Cancelable.with_timeout(60, name="parent"):
        name, cancelled, ident = await ContextBridge().run_in_thread_with_context(work, 1, y=2)
    assert (name, cancelled) == ("parent", False)
    assert ident != threading.get_ident()


@pytest.mark.anyio
async def test_run_in_thread_with_context_outside_an_operation() -> None:
    assert await ContextBridge.run_in_thread_with_context(current_operation) is None


@pytest.mark.anyio
async def test_the_thread_sees_a_cancellation_through_the_token() -> None:
    def work() -> None:
        op = current_operation()
        assert op is not None
        op.token.check()

    async def run() -> None:
        async with Cancelable(name="op") as op:
            with anyio.CancelScope(shield=True):
                op.cancel_sync(message="stop the thread")
                await ContextBridge.run_in_thread_with_context(work)

    with pytest.raises(ManualCancelation, match="stop the thread"):
        await run()


@pytest.mark.anyio
async def test_the_thread_sees_the_deadline_pass() -> None:
    def cpu_bound_loop() -> None:
        op = current_operation()
        assert op is not None
        backstop = time.monotonic() + THREAD_BACKSTOP
        while time.monotonic() < backstop:  # how CPU-bound code watches its operation
            op.token.check()
            time.sleep(0.001)

    async def run() -> None:
        async with Cancelable.with_timeout(0.02, name="deadline"):
            await ContextBridge.run_in_thread_with_context(cpu_bound_loop)

    with pytest.raises(TimeoutCancelation):
        await run()


_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@pytest.mark.anyio
async def test_copy_and_restore_context_in_a_plain_thread() -> None:
    seen: dict[str, Any] = {}

    def worker(ctx: contextvars.Context) -> None:
        seen["before"] = (current_operation(), _request_id.get())
        with ContextBridge.restore_context(ctx) as restored:
            op = current_operation()
            seen["inside"] = (op, _request_id.get())
            seen["cancelled"] = op.token.is_cancelled if op is not None else None
            seen["restored"] = restored
        seen["after"] = (current_operation(), _request_id.get())

    async with Cancelable.with_timeout(60, name="request") as op:
        reset = _request_id.set("r-42")
        ctx = ContextBridge.copy_context()
        _request_id.reset(reset)
        thread = threading.Thread(target=worker, args=(ctx,))
        thread.start()
        await anyio.to_thread.run_sync(thread.join, THREAD_BACKSTOP)

    assert seen["before"] == (None, "-")
    assert seen["inside"] == (op, "r-42")
    assert seen["cancelled"] is False
    assert seen["restored"] is ctx
    assert seen["after"] == (None, "-")


def test_restore_context_puts_back_the_previous_values_even_on_error() -> None:
    ctx = contextvars.Context()
    ctx.run(_request_id.set, "captured")
    reset = _request_id.set("mine")
    seen: list[str] = []

    def fail_inside() -> None:
        with ContextBridge.restore_context(ctx):
            seen.append(_request_id.get())
            raise KeyError("boom")

    try:
        with pytest.raises(KeyError):
            fail_inside()
        assert seen == ["captured"]
        assert _request_id.get() == "mine"
    finally:
        _request_id.reset(reset)


def test_restore_context_refuses_other_objects() -> None:
    with (
        pytest.raises(TypeError, match=r"contextvars\.Context"),
        ContextBridge.restore_context(
            {"a": 1}  # type: ignore[arg-type]
        ),
    ):
        pass


# -- AnyioBridge -------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_calls_from_a_plain_thread_run_on_the_loop_in_order() -> None:
    loop_thread = threading.get_ident()
    calls: list[tuple[int, int]] = []
    done = anyio.Event()

    def record(i: int) -> None:
        calls.append((i, threading.get_ident()))

    async with AnyioBridge(buffer_size=1000) as bridge:

        def producer() -> None:
            for i in range(200):
                bridge.call_soon_threadsafe(record, i)
            bridge.call_soon_threadsafe(done.set)

        thread = run_thread(producer)
        await done.wait()
    thread.join(THREAD_BACKSTOP)
    assert [i for i, _ in calls] == list(range(200))
    assert {ident for _, ident in calls} == {loop_thread}
    stats = bridge.statistics()
    assert (stats.started, stats.failed, stats.queued, stats.running) == (201, 0, 0, 0)


@pytest.mark.anyio
async def test_async_calls_and_awaitables_are_run_too() -> None:
    results: list[str] = []
    done = anyio.Event()

    async def store(value: str, *, suffix: str = "") -> None:
        await anyio.lowlevel.checkpoint()
        results.append(value + suffix)
        if len(results) == 3:
            done.set()

    async with AnyioBridge() as bridge:

        def producer() -> None:
            bridge.call_soon_threadsafe(store, "a")
            bridge.call_soon_threadsafe(functools.partial(store, "b", suffix="!"))
            bridge.call_soon_threadsafe(lambda: store("c"))

        thread = run_thread(producer)
        await done.wait()
    thread.join(THREAD_BACKSTOP)
    assert sorted(results) == ["a", "b!", "c"]


@pytest.mark.anyio
async def test_failing_calls_are_logged_and_the_bridge_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = anyio.Event()

    def broken_sync() -> None:
        raise ValueError("sync failure")

    async def broken_async() -> None:
        raise KeyError("async failure")

    with caplog.at_level(logging.ERROR, logger="cancelpool"):
        async with AnyioBridge() as bridge:

            def producer() -> None:
                bridge.call_soon_threadsafe(broken_async)
                bridge.call_soon_threadsafe(broken_sync)
                bridge.call_soon_threadsafe(done.set)

            thread = run_thread(producer)
            await done.wait()
            await anyio.wait_all_tasks_blocked()
            assert bridge.statistics().failed == 2
        thread.join(THREAD_BACKSTOP)
    messages = [record.getMessage() for record in caplog.records]
    assert any("broken_sync" in message for message in messages)
    assert any("broken_async" in message for message in messages)


@pytest.mark.anyio
async def test_a_full_buffer_raises_queue_full_in_the_calling_thread() -> None:
    release = threading.Event()
    blocker_running = threading.Event()
    outcome: dict[str, Any] = {}
    done = anyio.Event()

    def blocker() -> None:
        # Holds the loop so that calls pile up (the bridge drained it already).
        blocker_running.set()
        release.wait(THREAD_BACKSTOP)

    async with AnyioBridge(buffer_size=3) as bridge:

        def producer() -> None:
            bridge.call_soon_threadsafe(blocker)
            blocker_running.wait(THREAD_BACKSTOP)
            bridge.call_soon_threadsafe(lambda: None)
            bridge.call_soon_threadsafe(lambda: None)
            bridge.call_soon_threadsafe(done.set)
            try:
                bridge.call_soon_threadsafe(lambda: None)
            except queue.Full as exc:
                outcome["error"] = exc
            outcome["queued"] = bridge.statistics().queued
            release.set()

        thread = run_thread(producer)
        await done.wait()
    thread.join(THREAD_BACKSTOP)
    assert "buffer_size" in str(outcome["error"])
    assert outcome["queued"] == 3


@pytest.mark.anyio
async def test_the_loop_thread_may_queue_calls_too() -> None:
    ran: list[int] = []
    async with AnyioBridge(buffer_size=2) as bridge:
        bridge.call_soon_threadsafe(ran.append, 1)
        bridge.call_soon_threadsafe(ran.append, 2)
        with pytest.raises(queue.Full):
            bridge.call_soon_threadsafe(ran.append, 3)
    assert ran == [1, 2]


@pytest.mark.anyio
async def test_leaving_normally_runs_every_accepted_call() -> None:
    ran: list[str] = []

    async def slow(tag: str) -> None:
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        ran.append(tag)

    async with AnyioBridge() as bridge:
        bridge.call_soon_threadsafe(ran.append, "sync")
        bridge.call_soon_threadsafe(slow, "async")
    assert sorted(ran) == ["async", "sync"]
    assert not bridge.is_running


@pytest.mark.anyio
async def test_leaving_with_an_error_cancels_running_calls_and_drops_queued_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    bridge = AnyioBridge()

    async def forever() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            events.append("cancelled")

    async def run() -> None:
        async with bridge:
            bridge.call_soon_threadsafe(forever)
            await anyio.wait_all_tasks_blocked()
            bridge.call_soon_threadsafe(events.append, "never")
            raise LookupError("body failed")

    with caplog.at_level(logging.WARNING, logger="cancelpool"), pytest.raises(LookupError):
        await run()
    assert events == ["cancelled"]
    assert any("1 calls not run" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_cancelling_the_enclosing_scope_stops_the_bridge() -> None:
    events: list[str] = []

    async def forever() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            events.append("cancelled")

    with anyio.CancelScope() as scope:
        async with AnyioBridge() as bridge:
            bridge.call_soon_threadsafe(forever)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert events == ["cancelled"]


@pytest.mark.anyio
async def test_calls_before_start_are_queued_and_after_close_raise() -> None:
    bridge = AnyioBridge(buffer_size=2)
    ran: list[str] = []
    # As the seed library: before the bridge starts, calls wait for it (bounded).
    bridge.call_soon_threadsafe(ran.append, "early")
    run_thread(lambda: bridge.call_soon_threadsafe(ran.append, "from a thread")).join(
        THREAD_BACKSTOP
    )
    with pytest.raises(queue.Full):
        bridge.call_soon_threadsafe(ran.append, "one too many")
    assert ran == []
    async with bridge:
        assert bridge.is_running
    assert ran == ["early", "from a thread"]
    errors: list[BaseException] = []

    def late() -> None:
        try:
            bridge.call_soon_threadsafe(print)
        except RuntimeError as exc:
            errors.append(exc)

    run_thread(late).join(THREAD_BACKSTOP)
    assert "closed" in str(errors[0])
    with pytest.raises(RuntimeError, match="only once"):
        async with bridge:
            pass


def test_buffer_size_is_validated() -> None:
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="buffer_size"):
            AnyioBridge(buffer_size=bad)  # type: ignore[arg-type]
    assert AnyioBridge().buffer_size == 1000


def test_call_soon_threadsafe_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        AnyioBridge().call_soon_threadsafe(42)  # type: ignore[arg-type]


# -- the module-level helper ---------------------------------------------------------------------
@pytest.mark.anyio
async def test_module_call_soon_threadsafe_uses_the_latest_running_bridge() -> None:
    with pytest.raises(RuntimeError, match="running AnyioBridge"):
        cancelpool.call_soon_threadsafe(print)
    seen: list[str] = []
    done = anyio.Event()

    async with AnyioBridge() as outer:
        async with AnyioBridge() as inner:

            def producer() -> None:
                cancelpool.call_soon_threadsafe(seen.append, "inner")
                cancelpool.call_soon_threadsafe(done.set)

            thread = run_thread(producer)
            await done.wait()
            thread.join(THREAD_BACKSTOP)
            assert inner.statistics().started == 2
        done = anyio.Event()
        cancelpool.call_soon_threadsafe(seen.append, "outer")
        cancelpool.call_soon_threadsafe(done.set)
        await done.wait()
        assert outer.statistics().started == 2
    assert seen == ["inner", "outer"]
    with pytest.raises(RuntimeError, match="running AnyioBridge"):
        cancelpool.call_soon_threadsafe(print)
