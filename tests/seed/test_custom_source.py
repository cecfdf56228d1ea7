"""A cancellation source written for the seed library runs unchanged.

The seed's protocol: ``start_monitoring(scope)`` on entry (inside the operation's
scope), ``stop_monitoring()`` on exit, ``set_cancel_callback``, and
``trigger_cancelation(message)`` when the condition is met. These sources are written
as a seed user writes them (their own task group, the scope's deadline).
"""

# An operation's body is what a ``pytest.raises`` block runs: several statements.
# ruff: noqa: PT012

from __future__ import annotations

import logging

import anyio
import anyio.abc
import pytest

from _handshake import BACKSTOP
from cancelpool import (
    Cancelable,
    CancelationReason,
    CancelationSource,
    ConditionCancelation,
    OperationStatus,
    TimeoutCancelation,
)

FOREVER = 3600


class EventSource(CancelationSource):
    """Cancels when an event is set; watches in a task group of its own."""

    def __init__(self, event: anyio.Event) -> None:
        super().__init__(CancelationReason.CONDITION, "event_source")
        self.event = event
        self.calls: list[str] = []
        self._tg: anyio.abc.TaskGroup | None = None

    async def start_monitoring(self, scope: anyio.CancelScope) -> None:
        await super().start_monitoring(scope)
        self.calls.append("start")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._watch)

    async def _watch(self) -> None:
        await self.event.wait()
        await self.trigger_cancelation("the event was set")

    async def stop_monitoring(self) -> None:
        self.calls.append("stop")
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._tg = None


class DeadlineSource(CancelationSource):
    """Like the seed's TimeoutSource: sets the scope's deadline."""

    def __init__(self, seconds: float) -> None:
        super().__init__(CancelationReason.TIMEOUT, "deadline_source")
        self.seconds = seconds

    async def start_monitoring(self, scope: anyio.CancelScope) -> None:
        self.scope = scope
        scope.deadline = anyio.current_time() + self.seconds

    async def stop_monitoring(self) -> None:
        pass


@pytest.mark.anyio
async def test_seed_source_cancels_with_its_reason_and_message() -> None:
    event = anyio.Event()
    source = EventSource(event)
    with anyio.fail_after(BACKSTOP), pytest.raises(ConditionCancelation, match="event was set"):
        async with Cancelable(name="watched").add_source(source) as op:
            assert source.scope is not None
            assert source.calls == ["start"]
            event.set()
            await anyio.sleep(FOREVER)
    assert source.calls == ["start", "stop"]
    assert source.triggered
    assert op.context.status is OperationStatus.CANCELLED
    assert op.context.cancel_reason is CancelationReason.CONDITION
    assert op.context.cancel_message == "the event was set"


@pytest.mark.anyio
async def test_seed_source_is_stopped_when_the_operation_completes() -> None:
    source = EventSource(anyio.Event())
    with anyio.fail_after(BACKSTOP):
        async with Cancelable().add_source(source) as op:
            pass
    assert source.calls == ["start", "stop"]
    assert not source.triggered
    assert op.context.status is OperationStatus.COMPLETED


@pytest.mark.anyio
async def test_seed_deadline_source_times_out() -> None:
    with anyio.fail_after(BACKSTOP), pytest.raises(TimeoutCancelation):
        async with Cancelable().add_source(DeadlineSource(0.01)) as op:
            await anyio.sleep(FOREVER)
    assert op.context.cancel_reason is CancelationReason.TIMEOUT


@pytest.mark.anyio
async def test_set_cancel_callback_is_called_with_reason_and_message() -> None:
    seen: list[tuple[CancelationReason, str]] = []

    async def record(reason: CancelationReason, message: str) -> None:
        seen.append((reason, message))

    source = CancelationSource(CancelationReason.MANUAL, "plain")
    source.set_cancel_callback(record)
    await source.trigger_cancelation("by hand")
    await source.trigger_cancelation("again")  # once only
    assert seen == [(CancelationReason.MANUAL, "by hand")]
    with pytest.raises(TypeError, match="callable"):
        source.set_cancel_callback("nope")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_failing_stop_monitoring_is_logged_and_the_operation_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(DeadlineSource):
        async def stop_monitoring(self) -> None:
            raise OSError("cannot stop")

    with caplog.at_level(logging.ERROR):
        async with Cancelable().add_source(Broken(FOREVER)) as op:
            pass
    assert op.context.status is OperationStatus.COMPLETED
    assert any("stop_monitoring() of source" in r.getMessage() for r in caplog.records)
