# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012
"""The operation registry: listing, filtering, cancelling, history and statistics.

The async verbs (``OperationRegistry``) and the plain-thread verbs
(``ThreadSafeRegistry``) share one store. The conftest clears the global registry around
each test.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import anyio
import anyio.lowlevel
import pytest

from cancelpool import (
    Cancelable,
    CancelationReason,
    ManualCancelation,
    OperationRegistry,
    OperationStatus,
    RegistryStatistics,
    ThreadSafeRegistry,
    TimeoutCancelation,
)

BACKSTOP = 5.0
FOREVER = 100


@asynccontextmanager
async def running(*names: str) -> AsyncIterator[dict[str, Cancelable]]:
    """Run one operation per name in background tasks until the block ends."""
    ops: dict[str, Cancelable] = {}
    ready = anyio.Event()

    async def job(name: str) -> None:
        try:
            async with Cancelable(name=name, register=True) as op:
                ops[name] = op
                if len(ops) == len(names):
                    ready.set()
                await anyio.sleep(FOREVER)
        except ManualCancelation:
            pass

    with anyio.fail_after(BACKSTOP):
        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(job, name)
            await ready.wait()
            yield ops
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_running_operations_are_listed_and_leave_on_exit() -> None:
    registry = OperationRegistry.get_instance()
    assert registry is OperationRegistry.get_instance()
    async with Cancelable(name="a", register=True) as op:
        listed = await registry.list_operations()
        assert [ctx.id for ctx in listed] == [op.context.id]
        assert await registry.get_operation(op.context.id) is op
    assert await registry.list_operations() == []
    assert await registry.get_operation(op.context.id) is None
    [finished] = await registry.get_history()
    assert finished is op.context
    assert finished.status is OperationStatus.COMPLETED


@pytest.mark.anyio
async def test_unregistered_operations_stay_out() -> None:
    registry = OperationRegistry.get_instance()
    async with Cancelable(name="hidden", register=False):
        assert await registry.list_operations() == []
    assert await registry.get_history() == []


@pytest.mark.anyio
async def test_filter_by_status_name_pattern_and_parent() -> None:
    registry = OperationRegistry.get_instance()
    async with (
        Cancelable(name="user_42_root", register=True) as root,
        running("user_42_a", "user_42_b", "user_7_a") as ops,
    ):
        with root.shield():
            shielded = await registry.list_operations(status=OperationStatus.SHIELDED)
            assert [ctx.name for ctx in shielded] == ["user_42_root"]
        running_now = await registry.list_operations(status=OperationStatus.RUNNING)
        assert len(running_now) == 4
        names = {ctx.name for ctx in await registry.list_operations(name_pattern="user_42_*")}
        assert names == {"user_42_root", "user_42_a", "user_42_b"}
        children = await registry.list_operations(parent_id=root.context.id)
        assert {ctx.name for ctx in children} == {"user_42_a", "user_42_b", "user_7_a"}
        assert all(ops[ctx.name].parent is root for ctx in children if ctx.name)
        both = await registry.list_operations(name_pattern="user_7_*", parent_id=root.context.id)
        assert [ctx.name for ctx in both] == ["user_7_a"]
        assert await registry.list_operations(status=OperationStatus.CANCELLED) == []


@pytest.mark.anyio
async def test_cancel_operation_by_id() -> None:
    registry = OperationRegistry.get_instance()
    with anyio.fail_after(BACKSTOP), pytest.raises(ManualCancelation, match="admin"):
        async with Cancelable(name="job", register=True) as op:
            assert await registry.cancel_operation(op.context.id, message="admin")
            await anyio.sleep(FOREVER)
    assert not await registry.cancel_operation(op.context.id)  # gone
    assert not await registry.cancel_operation("no-such-id")


@pytest.mark.anyio
async def test_cancel_operation_twice_reports_false() -> None:
    registry = OperationRegistry.get_instance()
    with pytest.raises(ManualCancelation):
        async with Cancelable(register=True) as op:
            assert await registry.cancel_operation(op.context.id)
            assert not await registry.cancel_operation(op.context.id)


@pytest.mark.anyio
async def test_cancel_all_by_pattern_and_status() -> None:
    registry = OperationRegistry.get_instance()
    async with running("user_42_a", "user_42_b", "user_7_a") as ops:
        count = await registry.cancel_all(name_pattern="user_42_*", message="logout")
        assert count == 2
        await anyio.wait_all_tasks_blocked()
        assert ops["user_42_a"].context.status is OperationStatus.CANCELLED
        assert ops["user_42_a"].context.cancel_message == "logout"
        assert ops["user_7_a"].context.status is OperationStatus.RUNNING
        assert await registry.cancel_all(status=OperationStatus.COMPLETED) == 0
        assert await registry.cancel_all(status=OperationStatus.RUNNING) == 1
    assert await registry.cancel_all() == 0


@pytest.mark.anyio
async def test_cancel_all_from_plain_thread(
    start_thread: Callable[..., threading.Thread],
) -> None:
    counts: list[int] = []
    async with running("batch_1", "batch_2", "other") as ops:
        thread = start_thread(
            lambda: counts.append(ThreadSafeRegistry().cancel_all(name_pattern="batch_*"))
        )
        thread.join(BACKSTOP)
        # The thread's wake-ups are queued on this loop: let them run.
        while any(ops[n].context.status is OperationStatus.RUNNING for n in ("batch_1", "batch_2")):
            await anyio.wait_all_tasks_blocked()
            await anyio.lowlevel.checkpoint()
        assert ops["other"].context.status is OperationStatus.RUNNING
    assert counts == [2]


def test_thread_safe_registry_verbs_without_event_loop() -> None:
    registry = ThreadSafeRegistry()
    assert registry.list_operations() == []
    assert registry.get_operation("missing") is None
    assert registry.cancel_operation("missing") is False
    assert registry.cancel_all() == 0
    assert registry.get_history() == []
    assert registry.cleanup_completed() == 0
    registry.clear_all()
    stats = registry.get_statistics()
    assert stats.total_operations == 0


@pytest.mark.anyio
async def test_thread_safe_registry_sees_same_operations() -> None:
    async with Cancelable(name="shared", register=True) as op:
        sync = ThreadSafeRegistry()
        assert [ctx.name for ctx in sync.list_operations()] == ["shared"]
        assert sync.get_operation(op.context.id) is op.context


@pytest.mark.anyio
async def test_history_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    small = OperationRegistry(history_size=3)
    monkeypatch.setattr(OperationRegistry, "_instance", small)
    for i in range(5):
        async with Cancelable(name=f"op{i}", register=True):
            pass
    history = await small.get_history()
    assert [ctx.name for ctx in history] == ["op2", "op3", "op4"]
    assert [ctx.name for ctx in await small.get_history(limit=2)] == ["op3", "op4"]
    assert await small.get_history(limit=0) == []
    stats = await small.get_statistics()
    assert stats.total_operations == 5
    assert stats.completed_operations == 5
    assert stats.history_size == 3


def test_history_size_validated() -> None:
    with pytest.raises(ValueError, match="history_size"):
        OperationRegistry(history_size=-1)


@pytest.mark.anyio
async def test_cleanup_completed() -> None:
    registry = OperationRegistry.get_instance()
    async with Cancelable(name="fine", register=True):
        pass
    with pytest.raises(KeyError):
        async with Cancelable(name="broken", register=True):
            raise KeyError("x")
    with pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(0, name="late", register=True):
            await anyio.sleep(FOREVER)
    # Nothing ended more than an hour ago.
    assert await registry.cleanup_completed(older_than=3600) == 0
    # Failed operations are kept unless asked (the seed library's default).
    assert await registry.cleanup_completed() == 2
    assert [ctx.name for ctx in await registry.get_history()] == ["broken"]
    assert await registry.cleanup_completed(keep_failed=False) == 1
    assert await registry.get_history() == []


@pytest.mark.anyio
async def test_clear_all_forgets_everything() -> None:
    registry = OperationRegistry.get_instance()
    async with Cancelable(name="old", register=True):
        pass
    async with Cancelable(name="live", register=True):
        await registry.clear_all()
        assert await registry.list_operations() == []
    assert await registry.get_history() == []
    stats = await registry.get_statistics()
    assert stats.total_operations == 0


@pytest.mark.anyio
async def test_statistics_is_a_frozen_snapshot() -> None:
    registry = OperationRegistry.get_instance()
    async with Cancelable(name="ok", register=True):
        pass
    with pytest.raises(ManualCancelation):
        async with Cancelable(name="stopped", register=True) as op:
            await op.cancel()
    with pytest.raises(KeyError):
        async with Cancelable(name="failed", register=True):
            raise KeyError("x")
    async with Cancelable(name="live", register=True):
        stats = await registry.get_statistics()
    assert isinstance(stats, RegistryStatistics)
    assert stats.total_operations == 4
    assert stats.running_operations == 1
    assert stats.completed_operations == 1
    assert stats.cancelled_operations == 1
    assert stats.failed_operations == 1
    assert stats.history_size == 3
    assert stats.average_duration is not None
    assert stats.average_duration >= 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.total_operations = 0  # type: ignore[misc]
    assert ThreadSafeRegistry().get_statistics().running_operations == 0


@pytest.mark.anyio
async def test_outside_cancellation_counts_as_cancelled() -> None:
    with anyio.CancelScope() as outer:
        async with Cancelable(name="x", register=True):
            outer.cancel()
            await anyio.sleep(FOREVER)
    stats = await OperationRegistry.get_instance().get_statistics()
    assert stats.cancelled_operations == 1
    [ctx] = await OperationRegistry.get_instance().get_history()
    assert ctx.cancel_reason is CancelationReason.PARENT


@pytest.mark.anyio
async def test_bad_name_pattern_fails_at_call_site() -> None:
    registry = OperationRegistry.get_instance()
    with pytest.raises(TypeError, match="glob string"):
        await registry.list_operations(name_pattern=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="glob string"):
        ThreadSafeRegistry().cancel_all(name_pattern=["a"])  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_seed_positional_orders_and_sync_twins() -> None:
    registry = OperationRegistry.get_instance()
    sync = ThreadSafeRegistry.get_instance()
    with pytest.raises(TimeoutCancelation):
        async with Cancelable.with_timeout(0, name="late", register=True):
            await anyio.sleep(FOREVER)
    async with Cancelable(name="root", register=True) as root:
        async with Cancelable(name="user_42_a", register=True) as child:
            # The seed's order: status, parent_id, name_pattern.
            [ctx] = await registry.list_operations(OperationStatus.RUNNING, root.context.id)
            assert ctx is child.context
            assert registry.list_operations_sync(None, root.context.id) == [child.context]
            assert sync.list_operations(None, None, "user_42_*") == [child.context]
            assert registry.get_operation_sync(child.context.id) is child
            assert registry.get_statistics_sync().running_operations == 2
            # cancel_operation(id, reason, message), and the documents' (id, message).
            assert sync.cancel_operation(child.context.id, "user requested") is True
            assert child.context.cancel_message == "user requested"
            assert child.context.cancel_reason is CancelationReason.MANUAL
        assert registry.cancel_operation_sync(root.context.id, CancelationReason.SIGNAL, "s")
        assert root.context.cancel_reason is CancelationReason.SIGNAL
    # cancel_all(status, reason, message); a first string is cancelpool's glob.
    with pytest.raises(TimeoutCancelation, match=r"^t$"):
        async with Cancelable(name="user_7_b", register=True) as other:
            assert registry.cancel_all_sync("user_42_*") == 0
            assert await registry.cancel_all(OperationStatus.COMPLETED) == 0
            with pytest.raises(TypeError, match="OperationStatus"):
                registry.cancel_all_sync(42)  # type: ignore[arg-type]
            assert sync.cancel_all(OperationStatus.RUNNING, CancelationReason.TIMEOUT, "t") == 1
            await anyio.lowlevel.checkpoint()
    assert other.context.cancel_reason is CancelationReason.TIMEOUT
    names = [ctx.name for ctx in registry.get_history_sync(status=OperationStatus.CANCELLED)]
    assert names == ["late", "user_7_b"]
    first, *_, last = registry.get_history_sync()
    assert first.end_time is not None
    assert last.end_time is not None
    # A datetime rounds to microseconds: a millisecond of margin keeps the first one.
    since = datetime.fromtimestamp(first.end_time - 0.001, UTC)
    assert [ctx.name for ctx in sync.get_history(None, None, since)] == [
        "late",
        "user_42_a",
        "root",
        "user_7_b",
    ]
    assert await registry.get_history(since=last.end_time + 3600) == []
    with pytest.raises(TypeError, match="since"):
        registry.get_history_sync(since="yesterday")  # type: ignore[arg-type]
