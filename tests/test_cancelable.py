# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012
"""``Cancelable``: own cancellation, outside cancellation, hierarchies, threads, helpers.

Each test states one line of the contract (issue 2, "Semantics") and runs on asyncio,
uvloop and trio. Tasks are ordered with events, ``wait_all_tasks_blocked()`` and
handshakes; real-time bounds (``BACKSTOP``) only guard against a hang.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cancelpool import (
    Cancelable,
    CancelationError,
    CancelationReason,
    CancelationToken,
    ConditionCancelation,
    ManualCancelation,
    OperationStatus,
    ParentCancelation,
    SignalCancelation,
    SignalSource,
    ThreadSafeRegistry,
    TimeoutCancelation,
    current_operation,
)

# Generous bound on anything that should take microseconds: a guard against a hang
# (a lost wake-up), never a measurement.
BACKSTOP = 5.0
# Sleeps that must never finish: only a cancellation ends them.
FOREVER = 100


def cancelled_exc() -> type[BaseException]:
    return anyio.get_cancelled_exc_class()


# ------------------------------------------------------------------ own cancellation


@pytest.mark.anyio
async def test_completes_normally() -> None:
    async with Cancelable(name="ok") as op:
        assert op.context.status is OperationStatus.RUNNING
        assert current_operation() is op
        await anyio.lowlevel.checkpoint()
    assert current_operation() is None
    ctx = op.context
    assert ctx.status is OperationStatus.COMPLETED
    assert ctx.cancel_reason is None
    assert ctx.cancel_message is None
    assert ctx.start_time is not None
    assert ctx.end_time is not None
    assert ctx.elapsed_time is not None
    assert ctx.elapsed_time >= 0
    assert ctx.duration == ctx.elapsed_time


@pytest.mark.anyio
async def test_own_timeout_raises_timeout_cancelation() -> None:
    with pytest.raises(TimeoutCancelation) as info:
        async with Cancelable.with_timeout(0.01, name="slow") as op:
            op.context.partial_result = {"done": 3}
            await anyio.sleep(FOREVER)
    err = info.value
    assert isinstance(err, TimeoutError)
    assert isinstance(err, CancelationError)
    assert err.reason is CancelationReason.TIMEOUT
    assert err.context is op.context
    assert err.partial_result == {"done": 3}
    ctx = op.context
    assert ctx.status is OperationStatus.CANCELLED
    assert ctx.cancel_reason is CancelationReason.TIMEOUT
    assert ctx.cancel_message == err.message
    assert "'slow'" in err.message
    assert "timed out" in err.message
    assert ctx.partial_result == {"done": 3}


@pytest.mark.anyio
async def test_timeout_accepts_timedelta() -> None:
    with pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(timedelta(milliseconds=10)):
            await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_timeout_zero_cancels_at_first_checkpoint() -> None:
    reached = False
    with pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(0):
            await anyio.lowlevel.checkpoint()
            reached = True
    assert not reached


@pytest.mark.anyio
async def test_token_cancel_raises_manual_cancelation() -> None:
    token = CancelationToken()
    started = anyio.Event()
    errors: list[BaseException] = []

    async def worker() -> None:
        try:
            async with Cancelable.with_token(token, name="worker") as op:
                op.context.partial_result = [1, 2]
                started.set()
                await anyio.sleep(FOREVER)
        except CancelationError as exc:
            errors.append(exc)

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await started.wait()
            assert await token.cancel(message="user clicked stop")
    [err] = errors
    assert type(err) is ManualCancelation
    assert err.reason is CancelationReason.MANUAL
    assert err.message == "user clicked stop"
    assert err.context is not None
    assert err.context.status is OperationStatus.CANCELLED
    assert err.context.cancel_message == "user clicked stop"
    assert err.partial_result == [1, 2]


@pytest.mark.anyio
async def test_cancel_from_inside_raises_manual_cancelation() -> None:
    reached = False
    with pytest.raises(ManualCancelation) as info:
        async with Cancelable(name="self") as op:
            await op.cancel(message="enough")
            reached = True
    assert not reached
    assert info.value.message == "enough"
    assert op.context.cancel_reason is CancelationReason.MANUAL
    assert op.is_cancelled


@pytest.mark.anyio
async def test_cancel_accepts_positional_message() -> None:
    with pytest.raises(ManualCancelation, match="stop now"):
        async with Cancelable() as op:
            await op.cancel("stop now")


@pytest.mark.anyio
async def test_cancel_with_explicit_reason_picks_matching_error() -> None:
    with pytest.raises(ConditionCancelation):
        async with Cancelable() as op:
            await op.cancel(CancelationReason.CONDITION, "disk full")
    assert op.context.cancel_reason is CancelationReason.CONDITION
    assert op.context.cancel_message == "disk full"


@pytest.mark.anyio
async def test_condition_raises_condition_cancelation() -> None:
    state = {"stop": False}
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation) as info:
        async with Cancelable.with_condition(
            lambda: state["stop"], check_interval=0.001, condition_name="stop flag"
        ) as op:
            await anyio.lowlevel.checkpoint()
            assert not op.is_cancelled
            state["stop"] = True
            await anyio.sleep(FOREVER)
    assert info.value.reason is CancelationReason.CONDITION
    assert "stop flag" in info.value.message
    assert op.context.cancel_reason is CancelationReason.CONDITION


@pytest.mark.anyio
async def test_async_condition() -> None:
    state = {"stop": False}

    async def should_stop() -> bool:
        await anyio.lowlevel.checkpoint()
        return state["stop"]

    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation):
        async with Cancelable.with_condition(should_stop, check_interval=0.001):
            state["stop"] = True
            await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_signal_raises_signal_cancelation() -> None:
    assert threading.current_thread() is threading.main_thread()
    with anyio.fail_after(BACKSTOP), pytest.raises(SignalCancelation) as info:
        async with Cancelable.with_signal(signal.SIGUSR1, name="svc") as op:
            # Once every other task is blocked, the signal monitor is listening.
            await anyio.wait_all_tasks_blocked()
            os.kill(os.getpid(), signal.SIGUSR1)
            await anyio.sleep(FOREVER)
    assert info.value.reason is CancelationReason.SIGNAL
    assert "SIGUSR1" in info.value.message
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.SIGNAL


@pytest.mark.anyio
async def test_error_in_body_marks_failed_and_propagates() -> None:
    with pytest.raises(KeyError):
        async with Cancelable.with_timeout(FOREVER, name="boom") as op:
            raise KeyError("x")
    assert op.context.status is OperationStatus.FAILED
    assert isinstance(op.context.error, KeyError)
    assert op.context.cancel_reason is None


@pytest.mark.anyio
async def test_error_in_body_with_monitored_source_is_not_wrapped() -> None:
    with pytest.raises(KeyError):
        async with Cancelable.with_condition(lambda: False, check_interval=0.001) as op:
            await anyio.lowlevel.checkpoint()
            raise KeyError("x")
    assert op.context.status is OperationStatus.FAILED


@pytest.mark.anyio
async def test_cancelled_before_start_cancels_at_entry() -> None:
    op = Cancelable(name="early")
    op.cancel_sync(message="not needed")
    reached = False
    with pytest.raises(ManualCancelation, match="not needed"):
        async with op:
            await anyio.lowlevel.checkpoint()
            reached = True
    assert not reached


@pytest.mark.anyio
async def test_token_cancelled_before_start_cancels_at_entry() -> None:
    token = CancelationToken()
    token.cancel_sync("already")
    with pytest.raises(ManualCancelation, match="already"):
        async with Cancelable.with_token(token):
            await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_combine_is_cancelled_by_any_member() -> None:
    token = CancelationToken()
    combined = Cancelable.with_timeout(FOREVER, name="a").combine(Cancelable.with_token(token))
    assert combined.name == "combined_a"  # the seed library's name
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation):
        async with combined:
            token.cancel_sync("via token")
            await anyio.sleep(FOREVER)

    with pytest.raises(TimeoutCancelation):
        async with Cancelable.with_token(CancelationToken()).combine(Cancelable.with_timeout(0.01)):
            await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_combine_keeps_earliest_timeout_and_conditions() -> None:
    state = {"stop": False}
    combined = Cancelable.with_timeout(FOREVER).combine(
        Cancelable.with_timeout(FOREVER * 2),
        Cancelable.with_condition(lambda: state["stop"], check_interval=0.001),
    )
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation):
        async with combined:
            state["stop"] = True
            await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_combine_follows_one_rule_shared_tokens_fresh_sources_no_observers() -> None:
    token = CancelationToken()
    state = {"stop": False}
    seen: list[str] = []
    first = Cancelable.with_condition(lambda: state["stop"], 0.001, name="first", metadata={"u": 1})
    first.on_progress(lambda *_: seen.append("progress")).on_cancel(lambda _: seen.append("hook"))
    second = Cancelable.with_token(token)
    combined = first.combine(second, name="both", operation_id="op-1", register=True)
    assert (combined.name, combined.operation_id) == ("both", "op-1")
    assert combined.context.metadata == {
        "sources": [first.operation_id, second.operation_id],
        "combined": True,
    }
    assert combined.tokens == (token,)  # shared
    [condition] = combined.sources
    assert condition is not first.sources[0]  # a fresh copy
    assert combined.progress_callbacks == ()
    async with Cancelable(name="outer") as outer:
        with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation):
            async with combined:
                assert combined.parent is outer  # the current operation, as any new one
                await combined.report_progress("not relayed to first's callbacks")
                state["stop"] = True
                await anyio.sleep(FOREVER)
    assert seen == []  # the templates' observers are not carried
    assert not first.sources[0].triggered  # the template's own source never ran
    assert first.context.status is OperationStatus.PENDING


# -------------------------------------------------------------- outside cancellation


@pytest.mark.anyio
async def test_outside_cancel_scope_propagates_untouched() -> None:
    seen: list[BaseException] = []
    with anyio.CancelScope() as outer:
        try:
            async with Cancelable.with_timeout(FOREVER, name="inner") as op:
                op.context.partial_result = "half"
                outer.cancel()
                await anyio.sleep(FOREVER)
        except BaseException as exc:
            seen.append(exc)
            raise
    assert outer.cancelled_caught
    [exc] = seen
    assert isinstance(exc, cancelled_exc())
    assert not isinstance(exc, CancelationError)
    ctx = op.context
    assert ctx.status is OperationStatus.CANCELLED
    assert ctx.cancel_reason is CancelationReason.PARENT
    assert ctx.cancel_message is not None
    assert "enclosing" in ctx.cancel_message
    assert ctx.partial_result == "half"


@pytest.mark.anyio
async def test_outside_move_on_after_propagates_untouched() -> None:
    seen: list[BaseException] = []
    with anyio.move_on_after(0.01) as outer:
        try:
            async with Cancelable(name="inner") as op:
                await anyio.sleep(FOREVER)
        except BaseException as exc:
            seen.append(exc)
            raise
    assert outer.cancelled_caught
    assert isinstance(seen[0], cancelled_exc())
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.PARENT


@pytest.mark.anyio
async def test_outside_cancel_with_monitored_source_still_settles() -> None:
    # The source monitors run in a task group that must wind down without swallowing
    # the outside cancellation or skipping the bookkeeping.
    with anyio.CancelScope() as outer:
        async with Cancelable.with_condition(
            lambda: False, check_interval=0.001, register=True
        ) as op:
            outer.cancel()
            await anyio.sleep(FOREVER)
    assert outer.cancelled_caught
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.PARENT
    stats = ThreadSafeRegistry().get_statistics()
    assert stats.running_operations == 0
    assert stats.cancelled_operations == 1


@pytest.mark.anyio
async def test_outside_and_own_cancellation_together_outside_wins() -> None:
    seen: list[BaseException] = []
    with anyio.CancelScope() as outer:
        try:
            async with Cancelable() as op:
                outer.cancel()
                op.cancel_sync()
                await anyio.sleep(FOREVER)
        except BaseException as exc:
            seen.append(exc)
            raise
    assert outer.cancelled_caught
    assert isinstance(seen[0], cancelled_exc())
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.MANUAL


@pytest.mark.anyio
async def test_task_group_cancellation_of_task_propagates() -> None:
    started = anyio.Event()
    ops: list[Cancelable] = []

    async def worker() -> None:
        async with Cancelable(name="worker") as op:
            ops.append(op)
            started.set()
            await anyio.sleep(FOREVER)

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await started.wait()
        tg.cancel_scope.cancel()
    assert ops[0].context.status is OperationStatus.CANCELLED
    assert ops[0].context.cancel_reason is CancelationReason.PARENT


# ----------------------------------------------------------------- parent and child


async def _run_child_in_other_task(
    parent: Cancelable,
    *,
    trigger: Callable[[], Any] | None,
    child_timeout: float | None = None,
) -> tuple[Cancelable, BaseException | None]:
    """Run ``parent``; start a child with ``parent=parent`` in a task group OUTSIDE it.

    Returns the child and what its ``async with`` raised.
    """
    child_started = anyio.Event()
    box: dict[str, Any] = {"exc": None}

    async def child_task() -> None:
        child = (
            Cancelable.with_timeout(child_timeout, name="child", parent=parent)
            if child_timeout is not None
            else Cancelable(name="child", parent=parent)
        )
        box["child"] = child
        try:
            async with child:
                child_started.set()
                await anyio.sleep(FOREVER)
        except Exception as exc:
            box["exc"] = exc

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            try:
                async with parent:
                    tg.start_soon(child_task)
                    await child_started.wait()
                    if trigger is not None:
                        await trigger()
                    await anyio.sleep(FOREVER)
            except CancelationError as exc:
                box["parent_exc"] = exc
    return box["child"], box["exc"]


@pytest.mark.anyio
async def test_child_in_other_task_cancelled_when_parent_cancelled() -> None:
    parent = Cancelable(name="parent")
    child, exc = await _run_child_in_other_task(
        parent, trigger=lambda: parent.cancel(message="stop all")
    )
    assert isinstance(exc, ParentCancelation)
    assert exc.reason is CancelationReason.PARENT
    assert "'parent'" in exc.message
    assert "manual" in exc.message
    assert child.context.status is OperationStatus.CANCELLED
    assert child.context.cancel_reason is CancelationReason.PARENT
    assert child.context.parent_id == parent.context.id
    assert parent.context.cancel_reason is CancelationReason.MANUAL


@pytest.mark.anyio
async def test_child_in_other_task_cancelled_when_parent_times_out() -> None:
    parent = Cancelable.with_timeout(0.02, name="parent")
    child, exc = await _run_child_in_other_task(parent, trigger=None)
    assert isinstance(exc, ParentCancelation)
    assert "'parent'" in exc.message
    assert "timeout" in exc.message
    assert child.context.cancel_reason is CancelationReason.PARENT
    assert parent.context.status is OperationStatus.CANCELLED
    assert parent.context.cancel_reason is CancelationReason.TIMEOUT


@pytest.mark.anyio
async def test_child_in_other_task_cancelled_when_parent_cancelled_from_thread(
    start_thread: Callable[..., threading.Thread],
) -> None:
    parent = Cancelable(name="parent")

    async def trigger() -> None:
        start_thread(parent.cancel_sync)

    _, exc = await _run_child_in_other_task(parent, trigger=trigger)
    assert isinstance(exc, ParentCancelation)


@pytest.mark.anyio
async def test_child_in_other_task_cancelled_when_parent_cancelled_from_outside() -> None:
    parent = Cancelable(name="parent")
    child_started = anyio.Event()
    errors: list[BaseException] = []

    async def child_task() -> None:
        try:
            async with Cancelable(name="child", parent=parent):
                child_started.set()
                await anyio.sleep(FOREVER)
        except CancelationError as exc:
            errors.append(exc)

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(child_task)
            with anyio.CancelScope() as outer:
                async with parent:
                    # The child is started from here: it inherits ``parent`` as its
                    # context's current operation, but runs outside the parent's scope.
                    await child_started.wait()
                    outer.cancel()
                    await anyio.sleep(FOREVER)
    assert isinstance(errors[0], ParentCancelation)
    assert parent.context.cancel_reason is CancelationReason.PARENT


@pytest.mark.anyio
async def test_child_own_timeout_cancels_only_child() -> None:
    async with Cancelable(name="parent") as parent:
        with pytest.raises(TimeoutCancelation) as info:
            async with Cancelable.with_timeout(0.01, name="child") as child:
                await anyio.sleep(FOREVER)
        assert info.value.reason is CancelationReason.TIMEOUT
        assert not parent.is_cancelled
        await anyio.lowlevel.checkpoint()
    assert child.context.cancel_reason is CancelationReason.TIMEOUT
    assert parent.context.status is OperationStatus.COMPLETED


@pytest.mark.anyio
async def test_child_in_other_task_own_timeout_cancels_only_child() -> None:
    done = anyio.Event()
    errors: list[BaseException] = []

    async with Cancelable(name="parent") as parent:
        async with anyio.create_task_group() as tg:

            async def child_task() -> None:
                try:
                    async with Cancelable.with_timeout(0.01, name="child", parent=parent):
                        await anyio.sleep(FOREVER)
                except CancelationError as exc:
                    errors.append(exc)
                done.set()

            tg.start_soon(child_task)
            with anyio.fail_after(BACKSTOP):
                await done.wait()
        assert not parent.is_cancelled
    assert isinstance(errors[0], TimeoutCancelation)
    assert parent.context.status is OperationStatus.COMPLETED


@pytest.mark.anyio
async def test_nested_child_gets_parent_reason_when_parent_cancelled() -> None:
    seen: list[BaseException] = []
    with pytest.raises(ManualCancelation):
        async with Cancelable(name="parent") as parent:
            try:
                async with Cancelable(name="child") as child:
                    assert child.parent is parent
                    await parent.cancel(message="halt")
            except BaseException as exc:
                seen.append(exc)
                raise
    # The parent's cancellation passes through the child untouched.
    assert isinstance(seen[0], cancelled_exc())
    ctx = child.context
    assert ctx.status is OperationStatus.CANCELLED
    assert ctx.cancel_reason is CancelationReason.PARENT
    assert ctx.parent_id == parent.context.id
    assert ctx.cancel_message is not None
    assert "'parent'" in ctx.cancel_message
    assert "manual" in ctx.cancel_message


@pytest.mark.anyio
async def test_nested_child_gets_parent_reason_when_parent_times_out() -> None:
    with pytest.raises(TimeoutCancelation):
        async with (
            Cancelable.with_timeout(0.01, name="outer"),
            Cancelable.with_timeout(FOREVER, name="step") as step,
        ):
            await anyio.sleep(FOREVER)
    assert step.context.cancel_reason is CancelationReason.PARENT
    assert step.context.cancel_message is not None
    assert "'outer'" in step.context.cancel_message
    assert "timeout" in step.context.cancel_message


@pytest.mark.anyio
async def test_grandchild_in_other_task_cancelled_through_chain() -> None:
    grand_started = anyio.Event()
    errors: list[BaseException] = []
    root = Cancelable(name="root")

    async def grandchild(middle: Cancelable) -> None:
        try:
            async with Cancelable(name="grandchild", parent=middle):
                grand_started.set()
                await anyio.sleep(FOREVER)
        except CancelationError as exc:
            errors.append(exc)

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            with pytest.raises(ManualCancelation):
                async with root, Cancelable(name="middle") as middle:
                    tg.start_soon(grandchild, middle)
                    await grand_started.wait()
                    await root.cancel()
    assert isinstance(errors[0], ParentCancelation)
    assert "'middle'" in errors[0].message


@pytest.mark.anyio
async def test_parent_cancelled_before_child_enters() -> None:
    parent = Cancelable(name="parent")
    errors: list[BaseException] = []
    parent_cancelled = anyio.Event()

    async def child_task() -> None:
        await parent_cancelled.wait()
        try:
            async with Cancelable(name="late", parent=parent):
                await anyio.sleep(FOREVER)
        except CancelationError as exc:
            errors.append(exc)

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(child_task)
            with pytest.raises(ManualCancelation):
                async with parent:
                    parent.cancel_sync()
                    parent_cancelled.set()
                    # Hold the parent open until the child has entered and failed.
                    await anyio.wait_all_tasks_blocked()
                    await anyio.sleep(FOREVER)
    assert isinstance(errors[0], ParentCancelation)


# ------------------------------------------------------- cancelling from plain threads


@pytest.mark.anyio
async def test_cancel_sync_from_thread_wakes_awaiting_task(
    start_thread: Callable[..., threading.Thread],
) -> None:
    # The operation's own deadline is huge and the sleep is long: only the thread's
    # wake-up can end this promptly (no polling interval would be this fast either).
    op = Cancelable.with_timeout(10_000, name="blocked")
    t0 = time.monotonic()
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="from thread"):
        async with op:
            start_thread(op.cancel_sync, CancelationReason.MANUAL, "from thread")
            await anyio.sleep(FOREVER)
    assert time.monotonic() - t0 < BACKSTOP


@pytest.mark.anyio
async def test_cancel_sync_from_thread_after_task_blocked(
    start_thread: Callable[..., threading.Thread],
) -> None:
    op = Cancelable(name="blocked")
    entered = anyio.Event()
    errors: list[BaseException] = []

    async def worker() -> None:
        try:
            async with op:
                entered.set()
                await anyio.sleep(FOREVER)
        except CancelationError as exc:
            errors.append(exc)

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await entered.wait()
            await anyio.wait_all_tasks_blocked()
            start_thread(op.cancel_sync)
    assert isinstance(errors[0], ManualCancelation)


@pytest.mark.anyio
async def test_token_cancel_sync_from_thread_wakes_awaiting_task(
    start_thread: Callable[..., threading.Thread],
) -> None:
    token = CancelationToken()
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="gui"):
        async with Cancelable.with_token(token):
            start_thread(token.cancel_sync, "gui button")
            await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_thread_safe_registry_cancel_operation_from_thread(
    start_thread: Callable[..., threading.Thread],
) -> None:
    results: list[bool] = []

    def cancel(op_id: str) -> None:
        results.append(ThreadSafeRegistry().cancel_operation(op_id, "user asked"))

    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="user asked"):
        async with Cancelable(name="job", register=True) as op:
            thread = start_thread(cancel, op.context.id)
            await anyio.sleep(FOREVER)
    thread.join(BACKSTOP)  # the wake-up may beat the thread's own bookkeeping
    assert results == [True]


@pytest.mark.anyio
async def test_thread_safe_registry_cancel_all_by_pattern_from_thread(
    start_thread: Callable[..., threading.Thread],
) -> None:
    outcomes: dict[str, str] = {}
    started = {name: anyio.Event() for name in ("user_42_a", "user_42_b", "user_7_a")}
    counts: list[int] = []

    async def job(name: str) -> None:
        try:
            async with Cancelable(name=name, register=True):
                started[name].set()
                await anyio.sleep(FOREVER)
        except ManualCancelation:
            outcomes[name] = "cancelled"

    def cancel_user_42() -> None:
        counts.append(ThreadSafeRegistry().cancel_all(name_pattern="user_42_*"))

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            for name in started:
                tg.start_soon(job, name)
            for event in started.values():
                await event.wait()
            start_thread(cancel_user_42).join(BACKSTOP)
            while len(outcomes) < 2:
                await anyio.wait_all_tasks_blocked()
                if len(outcomes) < 2:
                    await anyio.lowlevel.checkpoint()
            assert outcomes == {"user_42_a": "cancelled", "user_42_b": "cancelled"}
            tg.cancel_scope.cancel()
    assert counts == [2]


# ------------------------------------------------------------------------- progress


@pytest.mark.anyio
async def test_progress_reaches_own_and_every_ancestor_callback() -> None:
    calls: list[tuple[str, str, str, dict[str, Any]]] = []

    def recorder(label: str) -> Callable[[str, str, dict[str, Any]], None]:
        def cb(op_id: str, message: str, meta: dict[str, Any]) -> None:
            calls.append((label, op_id, message, meta))

        return cb

    async def async_cb(op_id: str, message: str, meta: dict[str, Any]) -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(("root-async", op_id, message, meta))

    async with Cancelable(name="root") as root:
        root.on_progress(recorder("root")).on_progress(async_cb)
        async with Cancelable(name="mid") as mid:
            mid.on_progress(recorder("mid"))
            async with Cancelable(name="leaf") as leaf:
                leaf.on_progress(recorder("leaf"))
                await leaf.report_progress("half way", {"progress": 50})
            await mid.report_progress("mid only")

    leaf_id, mid_id = leaf.context.id, mid.context.id
    assert calls == [
        ("leaf", leaf_id, "half way", {"progress": 50}),
        ("mid", leaf_id, "half way", {"progress": 50}),
        ("root", leaf_id, "half way", {"progress": 50}),
        ("root-async", leaf_id, "half way", {"progress": 50}),
        ("mid", mid_id, "mid only", {}),
        ("root", mid_id, "mid only", {}),
        ("root-async", mid_id, "mid only", {}),
    ]


@pytest.mark.anyio
async def test_report_progress_sync_from_a_thread_runs_callbacks_on_the_loop_in_order() -> None:
    loop_thread = threading.get_ident()
    calls: list[tuple[str, int]] = []
    all_in = anyio.Event()

    def cb(op_id: str, message: str, meta: dict[str, Any]) -> None:
        calls.append((message, threading.get_ident()))
        if len(calls) == 20:
            all_in.set()

    def work(op: Cancelable) -> None:
        for i in range(20):
            op.report_progress_sync(f"step {i}", {"i": i})

    async with Cancelable(name="sync-progress") as op:
        op.on_progress(cb)
        await op.run_in_thread(work, op)
        with anyio.fail_after(10):  # a backstop against a lost report, not a delay
            await all_in.wait()
    assert [message for message, _ in calls] == [f"step {i}" for i in range(20)]
    assert {thread for _, thread in calls} == {loop_thread}


def test_report_progress_sync_outside_a_running_operation_is_refused() -> None:
    with pytest.raises(RuntimeError, match="needs a running operation"):
        Cancelable(name="not started").report_progress_sync("hello")


@pytest.mark.anyio
async def test_progress_bubbles_from_child_in_other_task() -> None:
    calls: list[str] = []
    parent = Cancelable(name="pipeline").on_progress(lambda i, m, d: calls.append(m))
    async with anyio.create_task_group() as tg, parent:

        async def step() -> None:
            async with Cancelable(name="step", parent=parent) as child:
                await child.report_progress("step done")

        tg.start_soon(step)
    assert calls == ["step done"]


@pytest.mark.anyio
async def test_failing_progress_callback_is_logged_and_operation_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(op_id: str, message: str, meta: dict[str, Any]) -> None:
        raise RuntimeError("callback bug")

    async def broken_async(op_id: str, message: str, meta: dict[str, Any]) -> None:
        raise ValueError("async callback bug")

    with caplog.at_level(logging.ERROR, logger="cancelpool"):
        async with Cancelable(name="robust") as op:
            op.on_progress(broken).on_progress(broken_async)
            op.on_progress(lambda i, m, d: calls.append(m))
            await op.report_progress("one")
            await op.report_progress("two")
    assert calls == ["one", "two"]
    assert op.context.status is OperationStatus.COMPLETED
    messages = [r.getMessage() for r in caplog.records]
    assert sum("progress callback" in m for m in messages) == 4
    assert any(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in caplog.records)


def test_on_progress_rejects_non_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        Cancelable().on_progress("print")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_status_hooks() -> None:
    events: list[tuple[str, OperationStatus]] = []

    def hook(name: str) -> Callable[[Any], None]:
        return lambda ctx: events.append((name, ctx.status))

    async def async_hook(ctx: Any) -> None:
        await anyio.lowlevel.checkpoint()
        events.append(("cancel-async", ctx.status))

    op = Cancelable().on_start(hook("start")).on_complete(hook("complete"))
    async with op:
        pass
    with pytest.raises(ManualCancelation):
        async with Cancelable().on_cancel(hook("cancel")).on_cancel(async_hook) as op2:
            await op2.cancel()
    with pytest.raises(KeyError):
        async with Cancelable().on_error(hook("error")):
            raise KeyError(1)
    assert events == [
        ("start", OperationStatus.RUNNING),
        ("complete", OperationStatus.COMPLETED),
        ("cancel", OperationStatus.CANCELLED),
        ("cancel-async", OperationStatus.CANCELLED),
        ("error", OperationStatus.FAILED),
    ]


# --------------------------------------------------------------------- run_in_thread


@pytest.mark.anyio
async def test_run_in_thread_sees_current_operation() -> None:
    async with Cancelable(name="host") as op:

        def work(x: int) -> tuple[Any, int]:
            found = current_operation()
            return (found.name if found else None), x * 2

        assert await op.run_in_thread(work, 21) == ("host", 42)


@pytest.mark.anyio
async def test_run_in_thread_token_check_raises_on_timeout() -> None:
    checks: list[int] = []

    def cpu_bound() -> None:
        op = current_operation()
        assert op is not None
        deadline = time.monotonic() + BACKSTOP
        while time.monotonic() < deadline:
            checks.append(1)
            op.token.check()  # the documented way for sync code to notice
            time.sleep(0.001)
        raise AssertionError("the timeout never reached the thread")

    with pytest.raises(TimeoutCancelation) as info:
        async with Cancelable.with_timeout(0.02, name="crunch") as op:
            await op.run_in_thread(cpu_bound)
    assert checks
    assert op.context.cancel_reason is CancelationReason.TIMEOUT
    assert info.value.context is op.context


@pytest.mark.anyio
async def test_run_in_thread_token_check_sees_parent_timeout() -> None:
    def cpu_bound() -> None:
        op = current_operation()
        assert op is not None
        deadline = time.monotonic() + BACKSTOP
        while time.monotonic() < deadline:
            op.token.check()
            time.sleep(0.001)

    with pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(0.02, name="outer"), Cancelable(name="inner") as inner:
            with pytest.raises(ParentCancelation):
                await inner.run_in_thread(cpu_bound)
            await anyio.sleep(FOREVER)
    assert inner.context.cancel_reason is CancelationReason.PARENT


@pytest.mark.anyio
async def test_token_cancel_from_thread_stops_operation() -> None:
    def worker() -> None:
        op = current_operation()
        assert op is not None
        op.token.cancel_sync("thread gave up")

    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="gave up"):
        async with Cancelable() as op:
            await op.run_in_thread(worker)
            await anyio.sleep(FOREVER)


# --------------------------------------------------------------------------- stream


async def numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield i


@pytest.mark.anyio
async def test_stream_buffers_partial_result_on_cancel() -> None:
    seen: list[int] = []
    with pytest.raises(ManualCancelation) as info:
        async with Cancelable(name="reader") as op:
            async for item in op.stream(numbers(100), buffer_partial=True):
                seen.append(item)
                if item == 4:
                    op.cancel_sync()
    assert seen == [0, 1, 2, 3, 4]
    # Shaped as the seed library shapes it.
    partial = {"count": 5, "buffer": [0, 1, 2, 3, 4], "completed": False}
    assert op.context.partial_result == partial
    assert info.value.partial_result == partial


@pytest.mark.anyio
async def test_stream_reports_progress_every_interval() -> None:
    reports: list[tuple[str, dict[str, Any]]] = []
    async with Cancelable() as op:
        op.on_progress(lambda i, m, d: reports.append((m, d)))
        items = [item async for item in op.stream(numbers(7), report_interval=3)]
    assert items == list(range(7))
    assert [d["count"] for _, d in reports] == [3, 6]
    assert [d["latest_item"] for _, d in reports] == [2, 5]
    assert [m for m, _ in reports] == ["Processed 3 items", "Processed 6 items"]
    assert op.context.partial_result == {"count": 7, "buffer": items, "completed": True}


@pytest.mark.anyio
async def test_stream_without_buffer_counts_and_buffer_is_bounded() -> None:
    async with Cancelable() as op:
        async for _ in op.stream(numbers(3), buffer_partial=False):
            pass
    assert op.context.partial_result == {"count": 3, "buffer": None, "completed": True}
    async with Cancelable() as op:
        async for _ in op.stream(numbers(1005)):
            pass
    assert op.context.partial_result["buffer"] == list(range(5, 1005))


@pytest.mark.anyio
async def test_stream_with_timeout_keeps_partial() -> None:
    async def slow() -> AsyncIterator[int]:
        yield 1
        yield 2
        await anyio.sleep(FOREVER)
        yield 3

    with pytest.raises(TimeoutCancelation) as info:
        async with Cancelable.with_timeout(0.01) as op:
            async for _ in op.stream(slow(), buffer_partial=True):
                pass
    assert info.value.partial_result["buffer"] == [1, 2]


@pytest.mark.parametrize("interval", [0, -3, 1.5, True])
def test_stream_rejects_bad_report_interval_at_call_site(interval: Any) -> None:
    with pytest.raises(ValueError, match="report_interval"):
        Cancelable().stream(numbers(1), report_interval=interval)


def test_stream_rejects_non_async_iterable() -> None:
    with pytest.raises(TypeError, match="async iterable"):
        Cancelable().stream([1, 2])  # type: ignore[arg-type]


# ------------------------------------------------------------------ wrap / wrapping


@pytest.mark.anyio
async def test_wrap_checks_cancellation_before_each_call() -> None:
    calls: list[int] = []

    async def fetch(x: int) -> int:
        calls.append(x)
        return x + 1

    with pytest.raises(ManualCancelation):
        async with Cancelable() as op:
            wrapped = op.wrap(fetch)
            assert await wrapped(1) == 2
            op.cancel_sync()
            await wrapped(2)
            raise AssertionError("a cancelled operation ran the wrapped function")
    assert calls == [1]


@pytest.mark.anyio
async def test_wrap_accepts_sync_functions_and_keeps_metadata() -> None:
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    async with Cancelable() as op:
        wrapped = op.wrap(add)
        assert await wrapped(2, 3) == 5
    assert wrapped.__name__ == "add"
    assert wrapped.__doc__ == "Adds."


@pytest.mark.anyio
async def test_wrap_outside_cancelled_operation_raises_backend_cancelled() -> None:
    async with Cancelable() as op:
        pass
    wrapped = op.wrap(lambda: 1)
    op2 = Cancelable()
    op2.cancel_sync()
    with pytest.raises(cancelled_exc()):
        await op2.wrap(lambda: 1)()
    assert await wrapped() == 1


@pytest.mark.anyio
async def test_wrapping_context_manager() -> None:
    calls: list[str] = []

    async def step(name: str) -> str:
        calls.append(name)
        return name.upper()

    with pytest.raises(ManualCancelation):
        async with Cancelable() as op, op.wrapping() as call:
            assert await call(step, "a") == "A"
            op.cancel_sync()
            await call(step, "b")
    assert calls == ["a"]


# --------------------------------------------------------------------------- shield


@pytest.mark.anyio
async def test_shield_defers_cancellation_until_after_block() -> None:
    finished_shielded_work = False
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation):
        async with Cancelable(name="saver") as op:
            with op.shield():
                assert op.context.status is OperationStatus.SHIELDED
                op.cancel_sync(message="stop")
                await anyio.sleep(0)  # a checkpoint: not interrupted in here
                await anyio.lowlevel.checkpoint()
                finished_shielded_work = True
            assert op.context.status is OperationStatus.RUNNING
            await anyio.sleep(FOREVER)
    assert finished_shielded_work
    assert op.context.status is OperationStatus.CANCELLED


@pytest.mark.anyio
async def test_async_shield_and_thread_cancel(
    start_thread: Callable[..., threading.Thread],
) -> None:
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation):
        async with Cancelable() as op:
            async with op.shield():
                start_thread(op.cancel_sync).join(BACKSTOP)
                # The wake-up is queued on the loop; let it run without interrupting us.
                await anyio.wait_all_tasks_blocked()
                await anyio.lowlevel.checkpoint()
                assert op.is_cancelled
            await anyio.sleep(FOREVER)


# ------------------------------------------------------------- state and bad input


@pytest.mark.anyio
async def test_operation_id_and_metadata() -> None:
    async with Cancelable("named", operation_id="job-1", metadata={"user": 42}) as op:
        assert op.context.id == "job-1"
        assert op.context.metadata == {"user": 42}
        assert op.name == "named"
    assert "named" in repr(op)


@pytest.mark.anyio
async def test_generated_ids_are_unique_uuids() -> None:
    import uuid

    ids = {Cancelable().context.id for _ in range(100)}
    assert len(ids) == 100
    for op_id in ids:
        uuid.UUID(op_id)


@pytest.mark.anyio
async def test_concurrent_tasks_see_their_own_current_operation() -> None:
    seen: dict[str, str | None] = {}

    async def job(name: str, ready: anyio.Event, go: anyio.Event) -> None:
        async with Cancelable(name=name):
            ready.set()
            await go.wait()
            found = current_operation()
            seen[name] = found.name if found else None

    go = anyio.Event()
    readies = [anyio.Event() for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for i, ready in enumerate(readies):
            tg.start_soon(job, f"job{i}", ready, go)
        for ready in readies:
            await ready.wait()
        go.set()
    assert seen == {"job0": "job0", "job1": "job1", "job2": "job2"}


@pytest.mark.anyio
async def test_entering_twice_is_an_error() -> None:
    op = Cancelable()
    async with op:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        async with op:
            pass


@pytest.mark.anyio
async def test_adding_sources_after_start_is_an_error() -> None:
    async with Cancelable() as op:
        with pytest.raises(RuntimeError, match="already started"):
            op.add_token(CancelationToken())


def test_non_cancelable_parent_is_rejected() -> None:
    with pytest.raises(TypeError, match="parent must be a Cancelable"):
        Cancelable(parent="root")  # type: ignore[arg-type]


def test_non_string_name_is_rejected() -> None:
    with pytest.raises(TypeError, match="name must be a string"):
        Cancelable(name=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, math.inf, -math.inf])
def test_bad_timeouts_fail_at_call_site(bad: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds"):
        Cancelable.with_timeout(bad)


@pytest.mark.parametrize("bad", ["10", None, True, [1]])
def test_non_numeric_timeouts_fail_at_call_site(bad: Any) -> None:
    with pytest.raises(TypeError, match="number of seconds or a timedelta"):
        Cancelable.with_timeout(bad)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_timeout_validation_property(value: float) -> None:
    if math.isfinite(value) and value >= 0:
        op = Cancelable.with_timeout(value)
        assert op.timeout == value
    else:
        with pytest.raises(ValueError, match="timeout must be a finite number"):
            Cancelable.with_timeout(value)


@given(st.timedeltas())
def test_timedelta_validation_property(value: timedelta) -> None:
    if value.total_seconds() >= 0:
        assert Cancelable.with_timeout(value).timeout == value.total_seconds()
    else:
        with pytest.raises(ValueError, match="timeout"):
            Cancelable.with_timeout(value)


def test_non_callable_condition_fails_at_call_site() -> None:
    with pytest.raises(TypeError, match="condition must be callable"):
        Cancelable.with_condition(True)  # type: ignore[arg-type]


@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf])
def test_bad_check_interval_fails_at_call_site(interval: float) -> None:
    with pytest.raises(ValueError, match="check_interval"):
        Cancelable.with_condition(lambda: False, check_interval=interval)


@pytest.mark.parametrize("sig", [0, 12345, -1, "SIGINT"])
def test_unknown_signal_fails_at_call_site(sig: Any) -> None:
    with pytest.raises(ValueError, match="signal"):
        Cancelable.with_signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_uncatchable_signal_fails_at_call_site(sig: int) -> None:
    with pytest.raises(ValueError, match="cannot be caught"):
        Cancelable.with_signal(sig)


def test_no_signal_means_sigint_and_sigterm() -> None:
    # As the seed library: SignalSource() listens for the usual stop signals.
    [source] = Cancelable.with_signal().sources
    assert isinstance(source, SignalSource)
    assert source.signals == (signal.SIGINT, signal.SIGTERM)


def test_add_source_and_token_reject_wrong_types() -> None:
    with pytest.raises(TypeError, match="CancelationSource"):
        Cancelable().add_source(CancelationToken())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CancelationToken"):
        Cancelable().add_token(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Cancelable"):
        Cancelable().combine(object())  # type: ignore[arg-type]


def test_cancel_sync_rejects_wrong_reason_type() -> None:
    with pytest.raises(TypeError, match="reason"):
        Cancelable().cancel_sync(42)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_is_cancelled_and_token_follow_the_operation() -> None:
    with pytest.raises(ManualCancelation):
        async with Cancelable() as op:
            token = op.token
            assert not op.is_cancelled
            assert not token.is_cancelled
            op.cancel_sync(message="bye")
            assert op.is_cancelled
            assert token.is_cancelled
            assert token.reason is CancelationReason.MANUAL
            await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_cancelling_operation_token_cancels_operation() -> None:
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="via token"):
        async with Cancelable() as op:
            await op.token.cancel("via token")
            await anyio.sleep(FOREVER)


@pytest.mark.anyio
async def test_token_made_before_entry_sees_deadline() -> None:
    op = Cancelable.with_timeout(0.01)
    token = op.token
    with pytest.raises(TimeoutCancelation):
        async with op:
            await anyio.sleep(FOREVER)
    assert token.is_cancelled
    assert token.reason is CancelationReason.TIMEOUT


@pytest.mark.anyio
async def test_cancel_after_exit_is_a_no_op() -> None:
    async with Cancelable() as op:
        pass
    op.cancel_sync()
    await op.cancel()
    assert op.context.status is OperationStatus.COMPLETED
    assert op.context.cancel_reason is None


@pytest.mark.anyio
async def test_error_raised_during_own_cancellation_is_not_swallowed() -> None:
    async def child() -> None:
        try:
            await anyio.sleep(FOREVER)
        finally:
            raise ValueError("in cleanup")

    with pytest.raises(ExceptionGroup) as info:
        async with Cancelable(name="a") as op, anyio.create_task_group() as tg:
            tg.start_soon(child)
            await anyio.wait_all_tasks_blocked()
            op.cancel_sync()
            await anyio.sleep(FOREVER)
    assert info.group_contains(ValueError, match="in cleanup")
    assert op.context.status is OperationStatus.FAILED
    assert op.context.error is info.value
    # The cancellation that was under way is still recorded.
    assert op.context.cancel_reason is CancelationReason.MANUAL


@pytest.mark.anyio
async def test_failing_child_task_fails_operation() -> None:
    async def child() -> None:
        await anyio.lowlevel.checkpoint()
        raise KeyError("lost")

    with pytest.raises(ExceptionGroup) as info:
        async with Cancelable() as op, anyio.create_task_group() as tg:
            tg.start_soon(child)
            await anyio.sleep(FOREVER)
    assert info.group_contains(KeyError)
    assert op.context.status is OperationStatus.FAILED
    assert op.context.cancel_reason is None


class ExternalToken(CancelationToken):
    """A token whose flag is set elsewhere, with no listener run in this process.

    It stands in for the pool's shared-memory token, cancelled by another process.
    """

    def __init__(self) -> None:
        super().__init__()
        self.external = False

    @property
    def is_cancelled(self) -> bool:
        return self._cancelled or self.external


@pytest.mark.anyio
async def test_sync_check_sees_watched_token_without_awaiting() -> None:
    external = ExternalToken()
    checks = 0
    with pytest.raises(ManualCancelation) as info:
        async with Cancelable(name="job").add_token(external) as op:
            while True:  # CPU-bound code on the loop: never awaits
                checks += 1
                if checks == 3:
                    external.external = True
                op.token.check()
    assert checks == 3
    assert info.value.context is op.context
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.MANUAL


@pytest.mark.anyio
async def test_nested_sync_check_sees_ancestor_watched_token() -> None:
    external = ExternalToken()
    with pytest.raises(ManualCancelation):
        async with Cancelable(name="job").add_token(external) as job:
            with pytest.raises(ParentCancelation, match="'job'"):
                async with Cancelable(name="step") as step:
                    external.external = True
                    current = current_operation()
                    assert current is step
                    current.token.check()
            assert job.is_cancelled
            await anyio.lowlevel.checkpoint()
    assert step.context.cancel_reason is CancelationReason.PARENT


@pytest.mark.anyio
async def test_thread_sees_watched_token_in_run_in_thread() -> None:
    external = ExternalToken()

    def crunch() -> None:
        op = current_operation()
        assert op is not None
        external.external = True
        op.token.check()

    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation):
        async with Cancelable().add_token(external) as op:
            await op.run_in_thread(crunch)
