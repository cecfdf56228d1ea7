# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012
"""Behaviours a program written for hother-cancelable (the seed library) relies on.

Each test is one behaviour the seed has under the same API, on every backend.
"""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest

from _handshake import BACKSTOP
from cancelpool import (
    AnyioBridge,
    Cancelable,
    CancelationReason,
    ManualCancelation,
    OperationRegistry,
    OperationStatus,
    TimeoutCancelation,
)

# Seconds: a deadline short enough to pass inside a busy-wait.
SHORT = 0.01
FOREVER = 3600


def _spin_until(deadline_passed: float) -> None:
    # Blocking on purpose: a shielded section that never awaits (CPU work, a sync
    # call) while the deadline passes. Bounded by the backstop.
    import time

    end = time.monotonic() + BACKSTOP
    while time.monotonic() < deadline_passed and time.monotonic() < end:
        pass


# -- shield: a cancellation that lands inside it is not forgotten --------------------------
@pytest.mark.anyio
async def test_timeout_inside_async_shield_raises_at_its_exit() -> None:
    import time

    after_shield: list[str] = []
    with anyio.fail_after(BACKSTOP), pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(SHORT, name="save") as op:
            async with op.shield():
                _spin_until(time.monotonic() + SHORT * 5)
            after_shield.append("ran")  # never: the shield's exit raises
    assert after_shield == []
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.TIMEOUT
    assert op.is_cancelled


@pytest.mark.anyio
async def test_timeout_inside_sync_shield_with_no_await_after_is_recorded() -> None:
    import time

    with anyio.fail_after(BACKSTOP), pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(SHORT, name="save") as op:
            with op.shield():
                _spin_until(time.monotonic() + SHORT * 5)
            # no await after the shield: the operation's exit delivers it
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.TIMEOUT


@pytest.mark.anyio
async def test_manual_cancel_inside_shield_with_no_await_after_is_recorded() -> None:
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="stop"):
        async with Cancelable(name="save") as op:
            with op.shield():
                op.cancel_sync(message="stop")
                await anyio.lowlevel.checkpoint()  # shielded: not interrupted here
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.MANUAL


@pytest.mark.anyio
async def test_shield_without_cancellation_completes() -> None:
    async with Cancelable(name="save") as op:
        async with op.shield() as shielded:
            assert isinstance(shielded, Cancelable)
            assert shielded.context.status is OperationStatus.SHIELDED
            assert shielded.context.parent_id == op.context.id
            assert shielded.name == "save_shielded"
            assert op.context.status is OperationStatus.SHIELDED
        with op.shield():
            pass
    assert op.context.status is OperationStatus.COMPLETED
    assert not op.is_cancelled


# -- __aexit__ without __aenter__ ------------------------------------------------------------
@pytest.mark.anyio
async def test_aexit_without_aenter_is_tolerated() -> None:
    op = Cancelable(name="never entered")
    assert await op.__aexit__(None, None, None) is False
    error = ValueError("passing through")
    assert await op.__aexit__(ValueError, error, None) is False
    assert op.context.status is OperationStatus.PENDING


@pytest.mark.anyio
async def test_second_aexit_is_tolerated() -> None:
    async with Cancelable() as op:
        pass
    assert await op.__aexit__(None, None, None) is False
    assert op.context.status is OperationStatus.COMPLETED


# -- registration only when asked, bounded history ---------------------------------------
@pytest.mark.anyio
async def test_operations_are_not_registered_unless_asked() -> None:
    registry = OperationRegistry.get_instance()
    for _ in range(10):
        async with Cancelable(name="quiet") as op:
            assert await registry.get_operation(op.context.id) is None
    assert await registry.get_history() == []
    assert (await registry.get_statistics()).total_operations == 0


@pytest.mark.anyio
async def test_register_globally_registers_both_spellings() -> None:
    registry = OperationRegistry.get_instance()
    async with Cancelable(name="a", register_globally=True) as a:
        assert await registry.get_operation(a.context.id) is a
    async with Cancelable(name="b", register=True) as b:
        assert await registry.get_operation(b.context.id) is b
    assert [ctx.name for ctx in await registry.get_history()] == ["a", "b"]


@pytest.mark.anyio
async def test_history_is_bounded_however_many_operations_register() -> None:
    registry = OperationRegistry(history_size=5)
    for i in range(50):
        op = Cancelable(name=f"op{i}")
        await registry.register(op)
        await registry.unregister(op.context.id)
    history = await registry.get_history()
    assert [ctx.name for ctx in history] == [f"op{i}" for i in range(45, 50)]
    assert (await registry.get_statistics()).running_operations == 0


@pytest.mark.anyio
async def test_explicit_register_and_unregister() -> None:
    registry = OperationRegistry.get_instance()
    async with Cancelable(name="manual") as op:
        await registry.register(op)
        await registry.register(op)  # twice changes nothing
        assert [ctx.name for ctx in await registry.list_operations()] == ["manual"]
        await registry.unregister(op.context.id)
        await registry.unregister("no such id")
        assert await registry.list_operations() == []
    with pytest.raises(TypeError, match="Cancelable"):
        await registry.register("not an operation")  # type: ignore[arg-type]


# -- AnyioBridge: queues before it starts -----------------------------------------------
@pytest.mark.anyio
async def test_bridge_queues_calls_before_start_then_runs_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bridge = AnyioBridge()
    ran: list[str] = []
    done = anyio.Event()
    bridge.call_soon_threadsafe(ran.append, "queued before start")
    bridge.call_soon_threadsafe(done.set)
    assert not bridge.is_started
    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            tg.start_soon(bridge.start)
            await done.wait()
            assert bridge.is_started
            await bridge.stop()
    assert ran == ["queued before start"]
    assert not bridge.is_started
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="closed"):
        bridge.call_soon_threadsafe(ran.append, "late")
