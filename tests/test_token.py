# A ``pytest.raises`` block sometimes holds an operation's body: several statements.
# ruff: noqa: PT012
"""``CancelationToken`` and ``LinkedCancelationToken``: cancel from anywhere, observe anywhere.

Tasks are ordered with events and handshakes; ``BACKSTOP`` only guards against a hang.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from cancelpool import (
    Cancelable,
    CancelationError,
    CancelationReason,
    CancelationToken,
    ConditionCancelation,
    LinkedCancelationToken,
    ManualCancelation,
    TimeoutCancelation,
)

# Generous bound on anything that should be immediate: a guard against a lost wake-up.
BACKSTOP = 5.0
FOREVER = 100


def test_fresh_token_is_not_cancelled() -> None:
    token = CancelationToken()
    assert not token.is_cancelled
    assert token.reason is None
    assert token.message is None
    token.check()  # no error
    assert "active" in repr(token)


@pytest.mark.anyio
async def test_cancel_sets_reason_and_message_once() -> None:
    token = CancelationToken()
    assert await token.cancel(CancelationReason.CONDITION, "quota exhausted")
    assert token.is_cancelled
    assert token.reason is CancelationReason.CONDITION
    assert token.message == "quota exhausted"
    assert token.cancel_message == "quota exhausted"
    # A second cancellation changes nothing and says so.
    assert not await token.cancel(CancelationReason.MANUAL, "again")
    assert not token.cancel_sync("again")
    assert token.reason is CancelationReason.CONDITION
    assert token.message == "quota exhausted"
    assert "cancelled (condition)" in repr(token)


@pytest.mark.anyio
async def test_positional_message_form() -> None:
    token = CancelationToken()
    await token.cancel("Parent cancelled")
    assert token.reason is CancelationReason.MANUAL
    assert token.message == "Parent cancelled"

    other = CancelationToken()
    other.cancel_sync("from sync code")
    assert other.reason is CancelationReason.MANUAL
    assert other.message == "from sync code"


def test_reason_value_string_is_a_reason() -> None:
    token = CancelationToken()
    token.cancel_sync("timeout")
    assert token.reason is CancelationReason.TIMEOUT


def test_default_message_names_reason() -> None:
    token = CancelationToken()
    token.cancel_sync()
    assert token.reason is CancelationReason.MANUAL
    assert token.message is not None
    assert "manual" in token.message


def test_keyword_message_form() -> None:
    token = CancelationToken()
    token.cancel_sync(message="Cancelled from thread")
    assert token.reason is CancelationReason.MANUAL
    assert token.message == "Cancelled from thread"


def test_bad_reason_type_fails_at_call_site() -> None:
    with pytest.raises(TypeError, match="reason must be a CancelationReason"):
        CancelationToken().cancel_sync(3)  # type: ignore[arg-type]


def test_check_raises_manual_cancelation() -> None:
    token = CancelationToken()
    token.cancel_sync("stop")
    with pytest.raises(ManualCancelation) as info:
        token.check()
    assert info.value.reason is CancelationReason.MANUAL
    assert info.value.message == "stop"


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        (CancelationReason.TIMEOUT, TimeoutCancelation),
        (CancelationReason.CONDITION, ConditionCancelation),
        (CancelationReason.MANUAL, ManualCancelation),
    ],
)
def test_check_raises_error_matching_reason(
    reason: CancelationReason, error: type[CancelationError]
) -> None:
    token = CancelationToken()
    token.cancel_sync(reason, "why")
    with pytest.raises(error):
        token.check()


def test_check_from_another_thread(start_thread: Callable[..., threading.Thread]) -> None:
    token = CancelationToken()
    token.cancel_sync("stop")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            token.check()
        except ManualCancelation as exc:
            errors.append(exc)

    start_thread(worker).join(BACKSTOP)
    assert len(errors) == 1


@pytest.mark.anyio
async def test_check_async_raises_backend_cancelled_exception() -> None:
    token = CancelationToken()
    await token.check_async()  # not cancelled: a plain checkpoint
    await token.cancel()
    with pytest.raises(anyio.get_cancelled_exc_class()):
        await token.check_async()


@pytest.mark.anyio
async def test_check_async_inside_operation_unwinds_it() -> None:
    token = CancelationToken()
    reached = False
    with pytest.raises(ManualCancelation):
        async with Cancelable.with_token(token):
            token.cancel_sync()
            await token.check_async()
            reached = True
    assert not reached


@pytest.mark.anyio
async def test_wait_for_cancel_returns_when_cancelled_in_task() -> None:
    token = CancelationToken()
    woke = anyio.Event()

    async def waiter() -> None:
        await token.wait_for_cancel()
        woke.set()

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not woke.is_set()
            await token.cancel()
            await woke.wait()


@pytest.mark.anyio
async def test_wait_for_cancel_wakes_on_cancel_from_plain_thread(
    start_thread: Callable[..., threading.Thread],
) -> None:
    token = CancelationToken()
    with anyio.fail_after(BACKSTOP):
        start_thread(token.cancel_sync, "thread")
        await token.wait_for_cancel()
    assert token.message == "thread"


@pytest.mark.anyio
async def test_wait_for_cancel_on_cancelled_token_returns_at_once() -> None:
    token = CancelationToken()
    token.cancel_sync()
    with anyio.fail_after(BACKSTOP):
        await token.wait_for_cancel()


@pytest.mark.anyio
async def test_wait_for_cancel_is_itself_cancellable() -> None:
    token = CancelationToken()
    with anyio.move_on_after(0.01) as scope:
        await token.wait_for_cancel()
    assert scope.cancelled_caught
    # The waiter cleaned up its listener.
    assert token._listeners == []


@pytest.mark.anyio
async def test_register_sync_and_async_callbacks() -> None:
    token = CancelationToken()
    calls: list[tuple[str, str]] = []

    def sync_cb(message: str) -> None:
        calls.append(("sync", message))

    async def async_cb(message: str) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("async", message))

    token.register_callback(sync_cb)
    token.register_callback(async_cb)
    await token.cancel("Timeout reached")
    # ``await cancel()`` runs every callback before it returns.
    assert calls == [("sync", "Timeout reached"), ("async", "Timeout reached")]


@pytest.mark.anyio
async def test_callback_registered_after_cancel_runs_at_once() -> None:
    token = CancelationToken()
    token.cancel_sync("done")
    calls: list[str] = []
    token.register_callback(calls.append)
    assert calls == ["done"]


@pytest.mark.anyio
async def test_async_callback_runs_on_its_loop_when_cancelled_from_thread(
    start_thread: Callable[..., threading.Thread],
) -> None:
    token = CancelationToken()
    loop_thread = threading.get_ident()
    ran = anyio.Event()
    seen: dict[str, object] = {}

    async def on_cancel(message: str) -> None:
        seen["thread"] = threading.get_ident()
        seen["message"] = message
        # It runs as a task of this loop: awaiting works and the event is ours.
        await anyio.lowlevel.checkpoint()
        ran.set()

    sync_threads: list[int] = []
    token.register_callback(on_cancel)
    token.register_callback(lambda message: sync_threads.append(threading.get_ident()))
    thread = start_thread(token.cancel_sync, "from gui")
    with anyio.fail_after(BACKSTOP):
        await ran.wait()
    thread.join(BACKSTOP)
    assert seen == {"thread": loop_thread, "message": "from gui"}
    # Sync callbacks run in the cancelling thread.
    assert sync_threads == [thread.ident]


def test_async_callback_without_loop_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = CancelationToken()

    async def on_cancel(message: str) -> None:  # pragma: no cover - never runs
        pass

    token.register_callback(on_cancel)  # registered outside any event loop
    with caplog.at_level(logging.WARNING, logger="cancelpool"):
        token.cancel_sync()
    assert any("no running loop" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_failing_callback_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = CancelationToken()
    calls: list[str] = []

    def broken(message: str) -> None:
        raise RuntimeError("callback bug")

    token.register_callback(broken)
    token.register_callback(calls.append)
    with caplog.at_level(logging.ERROR, logger="cancelpool"):
        assert await token.cancel("x")
    assert calls == ["x"]
    assert any("token callback" in r.getMessage() for r in caplog.records)


def test_register_callback_rejects_non_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        CancelationToken().register_callback(None)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_one_token_cancels_many_operations() -> None:
    token = CancelationToken()
    started = [anyio.Event() for _ in range(3)]
    errors: list[BaseException] = []

    async def job(ready: anyio.Event) -> None:
        try:
            async with Cancelable.with_token(token):
                ready.set()
                await anyio.sleep(FOREVER)
        except ManualCancelation as exc:
            errors.append(exc)

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            for ready in started:
                tg.start_soon(job, ready)
            for ready in started:
                await ready.wait()
            token.cancel_sync("all of you")
    assert len(errors) == 3


# ------------------------------------------------------------------- linked tokens


@pytest.mark.anyio
async def test_linked_token_follows_its_parent() -> None:
    parent = CancelationToken()
    child = LinkedCancelationToken()
    child.link(parent)
    assert not child.is_cancelled
    await parent.cancel("Parent cancelled")
    assert child.is_cancelled
    assert child.reason is CancelationReason.MANUAL
    assert child.cancel_message is not None
    assert "Parent cancelled" in child.cancel_message


@pytest.mark.anyio
async def test_linked_token_preserves_reason_or_not() -> None:
    parent = CancelationToken()
    kept = LinkedCancelationToken()
    dropped = LinkedCancelationToken()
    kept.link(parent)
    dropped.link(parent, preserve_reason=False)
    await parent.cancel(CancelationReason.TIMEOUT, "too slow")
    assert kept.reason is CancelationReason.TIMEOUT
    assert dropped.reason is CancelationReason.MANUAL


def test_link_to_already_cancelled_token_cancels_at_once() -> None:
    parent = CancelationToken()
    parent.cancel_sync("earlier")
    child = LinkedCancelationToken()
    child.link(parent)
    assert child.is_cancelled


def test_linked_token_follows_any_of_several() -> None:
    a, b = CancelationToken(), CancelationToken()
    child = LinkedCancelationToken()
    child.link(a)
    child.link(b)
    b.cancel_sync("b went")
    assert child.is_cancelled
    assert not a.is_cancelled


def test_linked_chain_propagates() -> None:
    root = CancelationToken()
    mid = LinkedCancelationToken()
    leaf = LinkedCancelationToken()
    mid.link(root)
    leaf.link(mid)
    root.cancel_sync("root")
    assert leaf.is_cancelled


def test_linked_token_cancelled_itself_leaves_parent_alone() -> None:
    parent = CancelationToken()
    child = LinkedCancelationToken()
    child.link(parent)
    child.cancel_sync("just me")
    assert not parent.is_cancelled


def test_unlink_all_stops_following() -> None:
    parent = CancelationToken()
    child = LinkedCancelationToken()
    child.link(parent)
    child.unlink_all()
    parent.cancel_sync()
    assert not child.is_cancelled


def test_link_rejects_bad_input() -> None:
    child = LinkedCancelationToken()
    with pytest.raises(ValueError, match="itself"):
        child.link(child)
    with pytest.raises(TypeError, match="CancelationToken"):
        child.link("token")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_linked_token_cancelled_from_thread_wakes_operation(
    start_thread: Callable[..., threading.Thread],
) -> None:
    parent = CancelationToken()
    child = LinkedCancelationToken()
    child.link(parent)
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation):
        async with Cancelable.with_token(child):
            start_thread(parent.cancel_sync, "upstream")
            await anyio.sleep(FOREVER)


def test_cancel_sync_is_thread_safe_exactly_once(
    start_thread: Callable[..., threading.Thread],
) -> None:
    token = CancelationToken()
    calls: list[str] = []
    token.register_callback(calls.append)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait(BACKSTOP)
        results.append(token.cancel_sync(f"t{i}"))

    threads = [start_thread(race, i) for i in range(8)]
    for thread in threads:
        thread.join(BACKSTOP)
    assert results.count(True) == 1
    assert len(calls) == 1
    assert calls == [token.message]


@pytest.mark.anyio
async def test_an_operations_token_runs_its_callbacks_when_the_operation_is_cancelled() -> None:
    calls: list[str] = []
    ran = anyio.Event()

    async def async_cb(message: str) -> None:
        calls.append(f"async: {message}")
        ran.set()

    with pytest.raises(ManualCancelation):
        async with Cancelable(name="op") as op:
            op.token.register_callback(lambda message: calls.append(f"sync: {message}"))
            op.token.register_callback(async_cb)
            op.cancel_sync("stop")
            await anyio.sleep(FOREVER)
    with anyio.fail_after(BACKSTOP):
        await ran.wait()
    assert calls == ["sync: stop", "async: stop"]


@pytest.mark.anyio
async def test_an_operations_token_runs_its_callbacks_when_it_sees_the_deadline() -> None:
    calls: list[str] = []
    with pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(0.01, name="op") as op:
            op.token.register_callback(calls.append)
            backstop = time.monotonic() + BACKSTOP
            while not op.token.is_cancelled:  # read from the clock, no await
                assert time.monotonic() < backstop
            assert calls == ["operation 'op' timed out after 0.01s"]
            await anyio.sleep(FOREVER)
