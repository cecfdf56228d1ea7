"""Helpers for testing code that uses cancelpool, as the seed library offers them.

* :class:`MockCancelationToken`: a token that records every cancel call and can
  cancel itself after a delay;
* :class:`OperationRecorder`: records an operation's start, progress, completion,
  cancellation and errors, with assertions on them;
* :func:`assert_cancelation_within`: a block that fails unless its token is cancelled
  within a time window;
* :class:`CancelationScenario`: a script of delays and cancellations played against
  an operation, with checks on its progress and final status;
* :func:`create_slow_stream`, :func:`run_with_timeout_test`,
  :func:`sample_async_operation`.

Import it explicitly (``from cancelpool.testing import ...``): ``import cancelpool``
does not load it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio

from ._core._cancelable import Cancelable
from ._core._context import OperationContext
from ._core._enums import CancelationReason, OperationStatus
from ._core._exceptions import CancelationError
from ._core._loop import LoopHandle
from ._core._token import CancelationToken, split_args

T = TypeVar("T")

__all__ = (
    "CancelationScenario",
    "CancellationScenario",
    "MockCancelationToken",
    "MockCancellationToken",
    "OperationRecorder",
    "assert_cancelation_within",
    "assert_cancellation_within",
    "create_slow_stream",
    "run_with_timeout_test",
    "sample_async_operation",
)


class MockCancelationToken(CancelationToken):
    """A real token that also records each cancel call (``cancel_history``).

    Unlike the seed library's, the history belongs to each token (not shared by
    all of them), and :meth:`schedule_cancel` leaves no task group open.
    """

    __slots__ = ("_cancelled_mono", "cancel_history")

    def __init__(self) -> None:
        super().__init__()
        #: One dict per cancel call: ``time`` (UTC), ``reason``, ``message``.
        self.cancel_history: list[dict[str, Any]] = []
        self._cancelled_mono: float | None = None

    def _record(self, reason: CancelationReason, message: str | None) -> None:
        self.cancel_history.append(
            {"time": datetime.now(UTC), "reason": reason, "message": message}
        )
        if self._cancelled_mono is None:
            self._cancelled_mono = time.monotonic()

    async def cancel(
        self,
        reason: CancelationReason | str | None = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Record the call, then cancel as a plain token does."""
        reason, message = split_args(reason, message)
        self._record(reason, message)
        return await super().cancel(reason, message)

    def cancel_sync(
        self,
        reason: CancelationReason | str | None = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Record the call, then cancel as a plain token does (any thread)."""
        reason, message = split_args(reason, message)
        self._record(reason, message)
        return super().cancel_sync(reason, message)

    async def schedule_cancel(
        self,
        delay: float,
        reason: CancelationReason = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> None:
        """Cancel the token ``delay`` seconds from now; returns at once.

        The timer runs as a background task of the event loop (it ends with the
        loop); a checkpoint for the caller.
        """
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError(f"delay must be a number of seconds >= 0, not {delay!r}")

        async def later() -> None:
            await anyio.sleep(delay)
            await self.cancel(reason, message)

        LoopHandle.current().spawn(later)
        await anyio.lowlevel.checkpoint()

    def get_cancel_count(self) -> int:
        """How many times cancel was called (a repeated call counts too)."""
        return len(self.cancel_history)


class OperationRecorder:
    """Records what happens to the operations it is attached to.

    Example::

        recorder = OperationRecorder()
        async with recorder.attach_to_cancelable(Cancelable(name="job")) as op:
            await op.report_progress("half way")
        recorder.assert_final_status(op.context.id, OperationStatus.COMPLETED)

    Each event is a dict: ``time`` (UTC), ``operation_id``, ``event_type``
    (``progress``, ``status_running``, ``status_completed``, ``status_cancelled``,
    ``error``) and ``data``. Safe to use from several tasks and threads.
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.operations: dict[str, OperationContext] = {}
        self._lock = threading.Lock()

    async def record_event(
        self, operation_id: str, event_type: str, data: dict[str, Any] | None = None
    ) -> None:
        """Record one event (what the attached callbacks call)."""
        self._add(operation_id, event_type, data)

    def _add(self, operation_id: str, event_type: str, data: dict[str, Any] | None) -> None:
        event = {
            "time": datetime.now(UTC),
            "operation_id": operation_id,
            "event_type": event_type,
            "data": data or {},
        }
        with self._lock:
            self.events.append(event)

    def attach_to_cancelable(self, cancelable: Cancelable) -> Cancelable:
        """Record ``cancelable``'s events from now on; returns it, for chaining."""
        if not isinstance(cancelable, Cancelable):
            raise TypeError(f"attach a Cancelable, not {type(cancelable).__name__}")
        self.operations[cancelable.context.id] = cancelable.context

        def progress(op_id: str, message: str, meta: dict[str, Any] | None) -> None:
            self._add(op_id, "progress", {"message": message, "meta": meta})

        def status(ctx: OperationContext) -> None:
            self._add(ctx.id, f"status_{ctx.status.value}", ctx.log_context())

        def error(ctx: OperationContext, exc: BaseException) -> None:
            self._add(
                ctx.id, "error", {"error_type": type(exc).__name__, "error_message": str(exc)}
            )

        return (
            cancelable.on_progress(progress)
            .on_start(status)
            .on_complete(status)
            .on_cancel(status)
            .on_error(error)
        )

    attach_to_cancellable = attach_to_cancelable

    def get_events_for_operation(self, operation_id: str) -> list[dict[str, Any]]:
        """Every event of one operation, in order."""
        with self._lock:
            return [e for e in self.events if e["operation_id"] == operation_id]

    def get_events_by_type(self, event_type: str) -> list[dict[str, Any]]:
        """Every event of one type, in order."""
        with self._lock:
            return [e for e in self.events if e["event_type"] == event_type]

    def assert_event_occurred(
        self, operation_id: str, event_type: str, timeout: float = 1.0
    ) -> dict[str, Any]:
        """The latest such event; :class:`AssertionError` if there is none.

        ``timeout`` is accepted for the seed library's signature; the check is
        immediate (events are recorded before the operation's block exits).
        """
        events = [
            e for e in self.get_events_for_operation(operation_id) if e["event_type"] == event_type
        ]
        if not events:
            raise AssertionError(f"event {event_type!r} not found for operation {operation_id}")
        return events[-1]

    def assert_final_status(self, operation_id: str, expected_status: OperationStatus) -> None:
        """:class:`AssertionError` unless the operation's status is ``expected_status``."""
        ctx = self.operations.get(operation_id)
        if ctx is None:
            raise AssertionError(f"operation {operation_id} is not recorded")
        if ctx.status is not expected_status:
            raise AssertionError(f"expected status {expected_status.value}, got {ctx.status.value}")


@asynccontextmanager
async def assert_cancelation_within(
    min_time: float, max_time: float
) -> AsyncIterator[MockCancelationToken]:
    """A block whose token must be cancelled between ``min_time`` and ``max_time``
    seconds after the block starts.

    The time is taken when the token is cancelled (not when the block ends), on the
    monotonic clock. Raises :class:`AssertionError` at the block's end if the token
    was not cancelled, or too early or too late.
    """
    if min_time < 0 or max_time < min_time:
        raise ValueError(f"need 0 <= min_time <= max_time, not {min_time!r}, {max_time!r}")
    token = MockCancelationToken()
    start = time.monotonic()
    yield token
    at = token._cancelled_mono
    if not token.is_cancelled or at is None:
        raise AssertionError("expected the token to be cancelled, but it was not")
    took = at - start
    if took < min_time:
        raise AssertionError(f"cancelled too early: after {took:.3f}s < {min_time:.3f}s")
    if took > max_time:
        raise AssertionError(f"cancelled too late: after {took:.3f}s > {max_time:.3f}s")


async def create_slow_stream(
    items: Iterable[T], delay: float = 0.1, cancelable: Cancelable | None = None
) -> AsyncIterator[T]:
    """Yield ``items`` with ``delay`` seconds between them (none before the first),
    checking ``cancelable`` before each one."""
    for i, item in enumerate(items):
        if i:
            await anyio.sleep(delay)
        if cancelable is not None:
            await cancelable.check_cancelation()
        yield item


async def run_with_timeout_test(
    coro: Awaitable[Any], expected_timeout: float, tolerance: float = 0.1
) -> None:
    """Await ``coro`` and assert that it times out about ``expected_timeout``
    seconds later (within ``tolerance``).

    A timeout is a :class:`TimeoutError` (``TimeoutCancelation`` is one, so is what
    ``anyio.fail_after`` raises). Unlike the seed library's, the backend's cancelled
    exception is not taken for a timeout: it propagates, never swallowed.
    """
    start = time.monotonic()
    try:
        await coro
    except TimeoutError:
        took = time.monotonic() - start
        if abs(took - expected_timeout) > tolerance:
            raise AssertionError(
                f"timed out after {took:.2f}s, expected {expected_timeout:.2f}s ± {tolerance:.2f}s"
            ) from None
        return
    raise AssertionError("expected a timeout, but the operation completed")


async def sample_async_operation(
    duration: float = 1.0, cancelable: Cancelable | None = None
) -> str:
    """A stand-in operation for tests: ``duration`` seconds in two halves, reporting
    "Operation started", "Operation 50% complete" and "Operation completed" to
    ``cancelable`` when given; returns ``"success"``.

    Each half is an ``anyio.sleep``, so a cancellation stops it there.
    """
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration >= 0:
        raise ValueError(f"duration must be a number of seconds >= 0, not {duration!r}")
    if cancelable is not None:
        await cancelable.report_progress("Operation started")
    await anyio.sleep(duration / 2)
    if cancelable is not None:
        await cancelable.report_progress("Operation 50% complete")
    await anyio.sleep(duration / 2)
    if cancelable is not None:
        await cancelable.report_progress("Operation completed")
    return "success"


class CancelationScenario:
    """A script played against one operation: delays and cancellations, then checks.

    Example::

        async def job() -> None:
            op = current_operation()
            await op.report_progress("started")
            await anyio.sleep(60)

        recorder = await (
            CancelationScenario("stop early")
            .add_cancelation(CancelationReason.MANUAL, "enough")
            .add_progress_check("started")
            .add_status_check(OperationStatus.CANCELLED)
            .run(job)
        )

    :meth:`run` opens an operation named ``scenario_<name>`` watching a
    :class:`MockCancelationToken`, with an :class:`OperationRecorder` attached, and
    awaits ``operation(*args, **kwargs)`` inside it (the operation reaches it through
    :func:`~cancelpool.current_operation`). Meanwhile the steps run in order in a task
    of their own: a delay sleeps, a cancellation cancels the token. The operation's
    own cancellation by the scenario is expected and not raised; a cancellation from
    outside, or any other error, propagates. Once the operation has ended and every
    step has run, the checks are made in the order they were added.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"a scenario's name is a string, not {type(name).__name__}")
        self.name = name
        #: The steps, in order: ``{"type": "delay", "duration": s}`` or
        #: ``{"type": "cancel", "reason": ..., "message": ...}``.
        self.steps: list[dict[str, Any]] = []
        #: The checks: ``{"type": "progress", "message": ..., "timeout": s}`` or
        #: ``{"type": "status", "status": ...}``.
        self.assertions: list[dict[str, Any]] = []

    def add_delay(self, duration: float) -> CancelationScenario:
        """Wait ``duration`` seconds before the next step; returns ``self``."""
        if (
            isinstance(duration, bool)
            or not isinstance(duration, (int, float))
            or not 0 <= duration < float("inf")
        ):
            raise ValueError(f"a delay is a number of seconds >= 0, not {duration!r}")
        self.steps.append({"type": "delay", "duration": duration})
        return self

    def add_cancelation(
        self,
        reason: CancelationReason = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> CancelationScenario:
        """Cancel the operation's token with ``reason`` and ``message``; returns ``self``."""
        if not isinstance(reason, CancelationReason):
            raise TypeError(f"reason must be a CancelationReason, not {reason!r}")
        if message is not None and not isinstance(message, str):
            raise TypeError(f"message must be a string or None, not {type(message).__name__}")
        self.steps.append({"type": "cancel", "reason": reason, "message": message})
        return self

    add_cancellation = add_cancelation

    def add_progress_check(
        self, expected_message: str, timeout: float = 1.0
    ) -> CancelationScenario:
        """Check that the operation reported ``expected_message``; returns ``self``.

        ``timeout`` is kept for the seed library's signature: the check is made once
        the operation has ended, when every report has been recorded.
        """
        self.assertions.append(
            {"type": "progress", "message": expected_message, "timeout": timeout}
        )
        return self

    def add_status_check(self, expected_status: OperationStatus) -> CancelationScenario:
        """Check the operation's final status; returns ``self``."""
        if not isinstance(expected_status, OperationStatus):
            raise TypeError(f"expected_status must be an OperationStatus, not {expected_status!r}")
        self.assertions.append({"type": "status", "status": expected_status})
        return self

    async def run(
        self, operation: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> OperationRecorder:
        """Play the scenario against ``operation(*args, **kwargs)``; returns the recorder.

        Returns once the operation has ended and every step has run. Cancelling the
        task that awaits this cancels the operation and the steps, and propagates.

        Raises:
            AssertionError: a check failed (the first one that did).
        """
        if not callable(operation):
            raise TypeError(f"run() takes an async callable, not {operation!r}")
        recorder = OperationRecorder()
        token = MockCancelationToken()
        op = recorder.attach_to_cancelable(
            Cancelable.with_token(token, name=f"scenario_{self.name}")
        )
        steps = list(self.steps)

        async def play() -> None:
            for step in steps:
                if step["type"] == "delay":
                    await anyio.sleep(step["duration"])
                else:
                    await token.cancel(step["reason"], step["message"])

        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(play)
            try:
                async with op:
                    await operation(*args, **kwargs)
            except Exception as exc:
                # The scenario's own cancellation is expected; any other error ends the
                # scenario (its remaining steps too) and leaves as itself, not grouped.
                if not (isinstance(exc, CancelationError) and exc.context is op.context):
                    failure = exc
                    tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        self._check(recorder, op)
        return recorder

    def _check(self, recorder: OperationRecorder, op: Cancelable) -> None:
        for assertion in self.assertions:
            if assertion["type"] == "progress":
                messages = [e["data"]["message"] for e in recorder.get_events_by_type("progress")]
                if assertion["message"] not in messages:
                    raise AssertionError(
                        f"scenario {self.name!r}: progress message {assertion['message']!r} "
                        f"not reported (reported: {messages!r})"
                    )
            else:
                recorder.assert_final_status(op.context.id, assertion["status"])


# The double-l spellings of the seed documents.
MockCancellationToken = MockCancelationToken
assert_cancellation_within = assert_cancelation_within
CancellationScenario = CancelationScenario
