"""The seed library's public names and shapes, each used as a seed program uses it."""

# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012

from __future__ import annotations

import concurrent.futures
import contextvars
import pickle
import signal
from datetime import datetime
from typing import Any

import anyio
import pytest

import cancelpool
from _handshake import BACKSTOP
from cancelpool import (
    AnyioBridge,
    Cancelable,
    CancelationReason,
    CancelationToken,
    ConditionCancelation,
    ContextBridge,
    LinkedCancelationToken,
    ManualCancelation,
    OperationContext,
    OperationRegistry,
    OperationStatus,
    ParentCancelation,
    SignalCancelation,
    SignalSource,
    ThreadSafeRegistry,
    TimeoutCancelation,
    cancelable,
    cancelable_stream,
    current_operation,
    ensure_cancelable,
    with_timeout,
)

FOREVER = 3600

# Every name the seed library's top-level package exports.
SEED_ALL = [
    "OperationStatus",
    "CancelationReason",
    "OperationContext",
    "CancelationToken",
    "Cancelable",
    "OperationRegistry",
    "ThreadSafeRegistry",
    "current_operation",
    "CancelationError",
    "TimeoutCancelation",
    "ManualCancelation",
    "SignalCancelation",
    "ConditionCancelation",
    "ParentCancelation",
    "CompositeSource",
    "AnyOfSource",
    "AllOfSource",
    "ProgressCallback",
    "ProgressCallbackType",
    "StatusCallback",
    "StatusCallbackType",
    "ErrorCallback",
    "ErrorCallbackType",
    "ensure_cancelable",
    "cancelable",
    "cancelable_with_token",
    "cancelable_with_signal",
    "cancelable_with_condition",
    "cancelable_combine",
    "with_cancelable",
    "with_timeout",
    "cancelable_stream",
    "AnyioBridge",
    "call_soon_threadsafe",
]


def test_every_seed_name_is_exported() -> None:
    missing = [name for name in SEED_ALL if name not in cancelpool.__all__]
    assert missing == []


# -- exceptions -------------------------------------------------------------------------
def test_exception_constructors_and_attributes_as_the_seed() -> None:
    timeout = TimeoutCancelation(5.0)
    assert timeout.timeout_seconds == 5.0
    assert timeout.reason is CancelationReason.TIMEOUT
    assert str(timeout) == "Operation timed out after 5.0s"
    assert isinstance(timeout, TimeoutError)
    assert str(ManualCancelation()) == "Operation cancelled manually"
    assert ManualCancelation("stop").message == "stop"
    sig = SignalCancelation(15)
    assert sig.signal_number == 15
    assert str(sig) == "Operation cancelled by signal 15"
    cond = ConditionCancelation("disk_full")
    assert cond.condition_name == "disk_full"
    assert str(cond) == "Operation cancelled: disk_full condition met"
    parent = ParentCancelation("p-1", CancelationReason.TIMEOUT)
    assert (parent.parent_id, parent.parent_reason) == ("p-1", CancelationReason.TIMEOUT)
    assert str(parent) == "Operation cancelled: parent p-1 was cancelled (timeout)"
    for error in (timeout, sig, cond, parent, ManualCancelation("x")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert copy.__dict__ == error.__dict__


@pytest.mark.anyio
async def test_raised_errors_carry_the_seed_attributes() -> None:
    with pytest.raises(TimeoutCancelation) as timed_out:
        async with Cancelable.with_timeout(0.01):
            await anyio.sleep(FOREVER)
    assert timed_out.value.timeout_seconds == 0.01

    # The child runs in a task of its own, outside the parent's scope: the parent's
    # cancellation reaches it as ParentCancelation.
    errors: list[BaseException] = []
    parent = Cancelable(name="parent")
    parent_running, child_running = anyio.Event(), anyio.Event()

    async def run_parent() -> None:
        with pytest.raises(ManualCancelation):
            async with parent:
                parent_running.set()
                await child_running.wait()
                parent.cancel_sync(CancelationReason.MANUAL, "stop")
                await anyio.sleep(FOREVER)

    async def run_child() -> None:
        await parent_running.wait()
        try:
            async with Cancelable(parent=parent):
                child_running.set()
                await anyio.sleep(FOREVER)
        except ParentCancelation as exc:
            errors.append(exc)

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_parent)
            tg.start_soon(run_child)
    [error] = errors
    assert isinstance(error, ParentCancelation)
    assert error.parent_id == parent.context.id
    assert error.parent_reason is CancelationReason.MANUAL


# -- OperationContext -------------------------------------------------------------------
@pytest.mark.anyio
async def test_operation_context_seed_api() -> None:
    ctx = OperationContext(name="x")
    assert ctx.start_time is not None  # set at creation
    assert ctx.duration_seconds is None
    assert not ctx.is_success
    assert not ctx.is_cancelled
    async with Cancelable(name="op") as op:
        assert op.context.duration_seconds is not None
        log = op.context.log_context()
        assert log["operation_id"] == op.context.id
        assert log["status"] == "running"
    assert op.context.is_success
    with pytest.raises(ManualCancelation):
        async with Cancelable() as cancelled:
            await cancelled.cancel()
    assert cancelled.context.is_cancelled
    assert not cancelled.context.is_success
    ctx.update_status(OperationStatus.COMPLETED)
    assert ctx.end_time is not None
    assert ctx.is_success
    with pytest.raises(TypeError, match="OperationStatus"):
        ctx.update_status("done")  # type: ignore[arg-type]


# -- Cancelable -------------------------------------------------------------------------
@pytest.mark.anyio
async def test_cancelable_seed_attributes() -> None:
    op = Cancelable(name="job", operation_id="job-1", register_globally=False)
    assert op.operation_id == "job-1"
    assert not op.is_running
    assert not op.is_completed
    async with op:
        assert op.is_running
        await op.check_cancelation()  # not cancelled: returns
    assert op.is_completed
    assert not op.is_running
    with pytest.raises(ManualCancelation):
        async with Cancelable() as stopped:
            stopped.cancel_sync()
            await stopped.check_cancelation()
            pytest.fail("check_cancelation() returned on a cancelled operation")


@pytest.mark.anyio
async def test_on_error_is_called_with_context_and_error() -> None:
    seen: list[tuple[Any, ...]] = []
    boom = KeyError("boom")
    op = Cancelable()
    op.on_error(lambda ctx, error: seen.append((ctx, error)))
    op.on_error(lambda ctx: seen.append((ctx,)))  # one argument: the context only
    with pytest.raises(KeyError):
        async with op:
            raise boom
    assert seen == [(op.context, boom), (op.context,)]


# -- tokens -----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_token_seed_api_awaited_and_plain() -> None:
    token = CancelationToken()
    assert isinstance(token.id, str)
    assert token.id == token.id
    assert token.cancelled_at is None
    assert not token.is_cancelation_requested()
    notices: list[Any] = []
    await token.register_callback(notices.append)  # the seed awaits it
    token.register_callback(notices.append)  # the documents call it plainly
    child_awaited, child_plain = LinkedCancelationToken(), LinkedCancelationToken()
    await child_awaited.link(token)
    child_plain.link(token)
    await token.cancel(CancelationReason.MANUAL, "stop")
    assert token.is_cancelation_requested()
    assert isinstance(token.cancelled_at, datetime)
    assert child_awaited.is_cancelled
    assert child_plain.is_cancelled
    # A callback gets the message (as the documents show) that reads as the token
    # (as the seed passes it).
    assert notices == ["stop", "stop"]
    assert notices[0].token is token
    assert notices[0].reason is CancelationReason.MANUAL
    assert notices[0].is_cancelled
    assert notices[0].id == token.id


# -- shield yields a child ----------------------------------------------------------------
@pytest.mark.anyio
async def test_shield_yields_a_tracking_cancelable() -> None:
    with pytest.raises(ManualCancelation):
        async with Cancelable(name="main") as op, op.shield() as shielded:
            assert isinstance(shielded, Cancelable)
            assert shielded.context.metadata == {"shielded": True}
            op.cancel_sync()  # does not reach the tracking operation
            assert not shielded.is_cancelled
    assert op.context.status is OperationStatus.CANCELLED


# -- registries and bridges -----------------------------------------------------------
def test_singletons() -> None:
    assert ThreadSafeRegistry.get_instance() is ThreadSafeRegistry.get_instance()
    assert OperationRegistry.get_instance() is OperationRegistry.get_instance()
    assert AnyioBridge.get_instance() is AnyioBridge.get_instance()


@pytest.mark.anyio
async def test_context_bridge_seed_api() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="-")
    var.set("request-7")
    captured = dict(ContextBridge.copy_context())  # the seed hands out a dict

    def in_thread() -> tuple[str, str]:
        ContextBridge.restore_context(captured)  # a plain call, as in the seed
        return var.get(), threading_name()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine") as executor:
        value, thread = await ContextBridge.run_in_thread_with_context(in_thread, executor=executor)
    assert value == "request-7"
    assert thread.startswith("mine")

    async with Cancelable(name="outer") as op:

        def which() -> Cancelable | None:
            return current_operation()

        assert await ContextBridge.run_in_thread_with_context(which) is op


def threading_name() -> str:
    import threading

    return threading.current_thread().name


def test_signal_source_defaults_to_sigint_and_sigterm() -> None:
    assert SignalSource().signals == (signal.SIGINT, signal.SIGTERM)


# -- helpers ------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_with_timeout_helper() -> None:
    async def quick() -> int:
        return 7

    assert await with_timeout(BACKSTOP, quick()) == 7
    with pytest.raises(TimeoutCancelation):
        await with_timeout(0.01, anyio.sleep(FOREVER))
    with pytest.raises(TypeError, match="awaitable"):
        await with_timeout(1.0, quick)  # type: ignore[arg-type]


def test_ensure_cancelable() -> None:
    op = Cancelable()
    assert ensure_cancelable(op) is op
    with pytest.raises(RuntimeError, match="is None"):
        ensure_cancelable(None)


@pytest.mark.anyio
async def test_decorator_takes_the_seed_options() -> None:
    registry = OperationRegistry.get_instance()

    @cancelable(timeout=BACKSTOP, operation_id="fixed", register_globally=True)
    async def work(cancelable: Cancelable) -> bool:
        return await registry.get_operation("fixed") is cancelable

    assert await work()


async def _numbers(n: int) -> Any:
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield i


@pytest.mark.anyio
async def test_cancelable_stream_token_timeout_progress() -> None:
    progress: list[tuple[int, int]] = []
    items = [
        i
        async for i in cancelable_stream(
            _numbers(5), report_interval=2, on_progress=lambda n, item: progress.append((n, item))
        )
    ]
    assert items == [0, 1, 2, 3, 4]
    assert progress == [(2, 1), (4, 3)]

    token = CancelationToken()
    seen: list[int] = []
    with pytest.raises(ManualCancelation) as info:
        async for i in cancelable_stream(_numbers(100), token=token, buffer_partial=True):
            seen.append(i)
            if i == 2:
                token.cancel_sync("enough")
    assert seen == [0, 1, 2]
    assert info.value.partial_result == {"count": 3, "buffer": [0, 1, 2]}

    async def stalls() -> Any:
        yield 1
        await anyio.sleep(FOREVER)
        yield 2  # pragma: no cover

    with anyio.fail_after(BACKSTOP), pytest.raises(TimeoutCancelation):
        async for _ in cancelable_stream(stalls(), timeout=0.01):
            pass
