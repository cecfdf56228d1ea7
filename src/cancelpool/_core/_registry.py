"""The operation registry: every running :class:`Cancelable`, and a bounded history.

Operations register themselves when they start and move to the history when they end.
The registry can cancel any of them, by id or by name pattern, from the event loop
(:class:`OperationRegistry`, async verbs) or from plain threads
(:class:`ThreadSafeRegistry`, the same verbs, sync). Cancelling from a thread wakes the
operation's loop at once (see ``Cancelable.cancel_sync``).
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

import anyio.lowlevel

from ._context import OperationContext
from ._enums import CancelationReason, OperationStatus
from ._token import split_args

if TYPE_CHECKING:
    from ._cancelable import Cancelable

#: Finished operations kept in the history. Bigger costs memory (one context each),
#: smaller forgets sooner.
DEFAULT_HISTORY_SIZE = 1000


@dataclass(frozen=True)
class RegistryStatistics:
    """Counts of the registry at one moment."""

    total_operations: int
    running_operations: int
    completed_operations: int
    cancelled_operations: int
    failed_operations: int
    history_size: int
    average_duration: float | None


def _check_pattern(name_pattern: str | None) -> None:
    if name_pattern is not None and not isinstance(name_pattern, str):
        raise TypeError(
            f"name_pattern must be a glob string such as 'user_42_*', not {name_pattern!r}"
        )


def _matches(
    ctx: OperationContext,
    status: OperationStatus | None,
    name_pattern: str | None,
    parent_id: str | None,
) -> bool:
    if status is not None and ctx.status is not status:
        return False
    if parent_id is not None and ctx.parent_id != parent_id:
        return False
    if name_pattern is not None:
        return ctx.name is not None and fnmatch.fnmatchcase(ctx.name, name_pattern)
    return True


def _status_or_pattern(
    status: OperationStatus | str | None, name_pattern: str | None
) -> tuple[OperationStatus | None, str | None]:
    # The seed library's cancel_all() takes the status first; cancelpool's took the
    # name pattern first: a plain string there is the pattern.
    if status is None or isinstance(status, OperationStatus):
        return status, name_pattern
    if isinstance(status, str) and name_pattern is None:
        return None, status
    raise TypeError(f"status must be an OperationStatus, not {status!r}")


def _since(since: datetime | float | None) -> float | None:
    if since is None:
        return None
    if isinstance(since, datetime):
        return since.timestamp()
    if isinstance(since, bool) or not isinstance(since, (int, float)):
        raise TypeError(f"since must be a datetime or epoch seconds, not {since!r}")
    return float(since)


class _Store:
    """The shared state behind both registry front-ends (thread-safe)."""

    def __init__(self, history_size: int) -> None:
        self.lock = threading.Lock()
        self.active: dict[int, Cancelable] = {}
        self.history: deque[OperationContext] = deque(maxlen=history_size)
        self.finished_total = 0
        self.completed = 0
        self.cancelled = 0
        self.failed = 0
        self.duration_total = 0.0


class OperationRegistry:
    """Tracks running operations; async verbs for use inside an event loop.

    ``OperationRegistry.get_instance()`` is the process-wide registry that every
    ``Cancelable(register=True)`` joins (registration is off by default, as in the
    seed library). Its history of finished operations is bounded
    (``history_size``), so a long-running program that registers every operation
    does not grow without limit.
    """

    _instance: ClassVar[OperationRegistry | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, history_size: int = DEFAULT_HISTORY_SIZE) -> None:
        if not isinstance(history_size, int) or history_size < 0:
            raise ValueError(f"history_size must be an int >= 0, not {history_size!r}")
        self._store = _Store(history_size)

    @classmethod
    def get_instance(cls) -> OperationRegistry:
        """The process-wide registry."""
        instance = OperationRegistry._instance
        if instance is None:
            with OperationRegistry._instance_lock:
                instance = OperationRegistry._instance
                if instance is None:
                    instance = OperationRegistry._instance = OperationRegistry()
        return instance

    # -- called by Cancelable ---------------------------------------------------------------
    def _add(self, op: Cancelable) -> None:
        with self._store.lock:
            self._store.active[id(op)] = op

    def _finish(self, op: Cancelable) -> None:
        store = self._store
        ctx = op.context
        status = ctx.status
        start, end = ctx.start_time, ctx.end_time
        with store.lock:
            if store.active.pop(id(op), None) is None:
                return
            store.history.append(ctx)
            store.finished_total += 1
            # Identity tests: hashing an enum member runs Python code, this is hot.
            if status is OperationStatus.COMPLETED:
                store.completed += 1
            elif status is OperationStatus.CANCELLED:
                store.cancelled += 1
            elif status is OperationStatus.FAILED:
                store.failed += 1
            if start is not None and end is not None:
                store.duration_total += end - start

    # -- sync core (also used by ThreadSafeRegistry) -----------------------------------------
    def _active(self) -> list[Cancelable]:
        with self._store.lock:
            return list(self._store.active.values())

    def _list(
        self,
        status: OperationStatus | None,
        name_pattern: str | None,
        parent_id: str | None,
    ) -> list[OperationContext]:
        _check_pattern(name_pattern)
        return [
            op.context
            for op in self._active()
            if _matches(op.context, status, name_pattern, parent_id)
        ]

    def _get(self, operation_id: str) -> Cancelable | None:
        for op in self._active():
            if op.context.id == operation_id:
                return op
        return None

    def _cancel_one(
        self, operation_id: str, reason: CancelationReason, message: str | None
    ) -> bool:
        op = self._get(operation_id)
        if op is None or op.is_cancelled:
            return False
        op.cancel_sync(reason, message)
        return True

    def _cancel_many(
        self,
        name_pattern: str | None,
        status: OperationStatus | None,
        reason: CancelationReason,
        message: str | None,
    ) -> int:
        _check_pattern(name_pattern)
        count = 0
        for op in self._active():
            if not op.is_cancelled and _matches(op.context, status, name_pattern, None):
                op.cancel_sync(reason, message)
                count += 1
        return count

    def _history(
        self,
        limit: int | None,
        status: OperationStatus | None = None,
        since: datetime | float | None = None,
    ) -> list[OperationContext]:
        cutoff = _since(since)
        with self._store.lock:
            items = list(self._store.history)
        if status is not None:
            items = [ctx for ctx in items if ctx.status is status]
        if cutoff is not None:
            items = [ctx for ctx in items if ctx.end_time is not None and ctx.end_time >= cutoff]
        return items if limit is None else items[-limit:] if limit > 0 else []

    def _cleanup(self, older_than: timedelta | float | None, keep_failed: bool) -> int:
        if isinstance(older_than, timedelta):
            older_than = older_than.total_seconds()
        cutoff = None if older_than is None else time.time() - older_than
        with self._store.lock:
            kept = [
                ctx
                for ctx in self._store.history
                if (keep_failed and ctx.status is OperationStatus.FAILED)
                or (cutoff is not None and (ctx.end_time or 0) > cutoff)
            ]
            removed = len(self._store.history) - len(kept)
            self._store.history.clear()
            self._store.history.extend(kept)
        return removed

    def _clear(self) -> None:
        store = self._store
        with store.lock:
            store.active.clear()
            store.history.clear()
            store.finished_total = store.completed = store.cancelled = store.failed = 0
            store.duration_total = 0.0

    def _statistics(self) -> RegistryStatistics:
        store = self._store
        with store.lock:
            finished = store.finished_total
            return RegistryStatistics(
                total_operations=len(store.active) + finished,
                running_operations=len(store.active),
                completed_operations=store.completed,
                cancelled_operations=store.cancelled,
                failed_operations=store.failed,
                history_size=len(store.history),
                average_duration=store.duration_total / finished if finished else None,
            )

    # -- async verbs ----------------------------------------------------------------------
    async def register(self, operation: Cancelable) -> None:
        """List ``operation`` as running (the seed library's explicit registration).

        ``Cancelable(register=True)`` does this itself on entry; registering twice
        changes nothing. The operation moves to the history when it ends.
        """
        from ._cancelable import Cancelable

        if not isinstance(operation, Cancelable):
            raise TypeError(f"register() takes a Cancelable, not {type(operation).__name__}")
        await anyio.lowlevel.checkpoint()
        self._add(operation)

    async def unregister(self, operation_id: str) -> None:
        """Move the operation with this id from the running list to the history.

        Unknown ids are ignored. A registered operation does this itself when it ends.
        """
        await anyio.lowlevel.checkpoint()
        op = self._get(operation_id)
        if op is not None:
            self._finish(op)

    async def list_operations(
        self,
        status: OperationStatus | None = None,
        parent_id: str | None = None,
        name_pattern: str | None = None,
    ) -> list[OperationContext]:
        """Contexts of the running operations that match every filter given
        (``name_pattern`` is a glob such as ``"user_42_*"``)."""
        await anyio.lowlevel.checkpoint()
        return self._list(status, name_pattern, parent_id)

    async def get_operation(self, operation_id: str) -> Cancelable | None:
        """The running operation with this id, or None."""
        await anyio.lowlevel.checkpoint()
        return self._get(operation_id)

    async def cancel_operation(
        self,
        operation_id: str,
        reason: CancelationReason | str = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Cancel one running operation; False if it is unknown or already cancelled.

        ``reason`` may be the message instead (``cancel_operation(id, "why")``).
        """
        await anyio.lowlevel.checkpoint()
        return self.cancel_operation_sync(operation_id, reason, message)

    async def cancel_all(
        self,
        status: OperationStatus | str | None = None,
        reason: CancelationReason | str = CancelationReason.MANUAL,
        message: str | None = None,
        *,
        name_pattern: str | None = None,
    ) -> int:
        """Cancel every running operation with ``status`` whose name matches the glob
        ``name_pattern`` (all if both are None); returns how many were cancelled.

        The seed library's order (``status`` first); a string given first is taken
        as the name pattern.
        """
        await anyio.lowlevel.checkpoint()
        return self.cancel_all_sync(status, reason, message, name_pattern=name_pattern)

    async def get_history(
        self,
        limit: int | None = None,
        status: OperationStatus | None = None,
        since: datetime | float | None = None,
    ) -> list[OperationContext]:
        """Contexts of finished operations, oldest first: the last ``limit`` of those
        with ``status`` that ended at or after ``since`` (a datetime or epoch seconds)."""
        await anyio.lowlevel.checkpoint()
        return self._history(limit, status, since)

    async def cleanup_completed(
        self, older_than: timedelta | float | None = None, keep_failed: bool = True
    ) -> int:
        """Drop finished operations from the history (those that ended more than
        ``older_than`` ago, or all); returns how many were dropped."""
        await anyio.lowlevel.checkpoint()
        return self._cleanup(older_than, keep_failed)

    async def clear_all(self) -> None:
        """Forget every operation, running or finished (running ones keep running)."""
        await anyio.lowlevel.checkpoint()
        self._clear()

    async def get_statistics(self) -> RegistryStatistics:
        """A snapshot of the registry's counters."""
        await anyio.lowlevel.checkpoint()
        return self._statistics()

    # -- the seed library's sync twins: from any thread, no event loop needed ---------------
    def get_operation_sync(self, operation_id: str) -> Cancelable | None:
        """:meth:`get_operation` without awaiting, from any thread."""
        return self._get(operation_id)

    def list_operations_sync(
        self,
        status: OperationStatus | None = None,
        parent_id: str | None = None,
        name_pattern: str | None = None,
    ) -> list[OperationContext]:
        """:meth:`list_operations` without awaiting, from any thread."""
        return self._list(status, name_pattern, parent_id)

    def get_statistics_sync(self) -> RegistryStatistics:
        """:meth:`get_statistics` without awaiting, from any thread."""
        return self._statistics()

    def get_history_sync(
        self,
        limit: int | None = None,
        status: OperationStatus | None = None,
        since: datetime | float | None = None,
    ) -> list[OperationContext]:
        """:meth:`get_history` without awaiting, from any thread."""
        return self._history(limit, status, since)

    def cancel_operation_sync(
        self,
        operation_id: str,
        reason: CancelationReason | str = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """:meth:`cancel_operation` from any thread; takes effect at once (the
        operation's loop is woken), rather than scheduled as in the seed library."""
        why, text = split_args(reason, message)
        return self._cancel_one(operation_id, why, text)

    def cancel_all_sync(
        self,
        status: OperationStatus | str | None = None,
        reason: CancelationReason | str = CancelationReason.MANUAL,
        message: str | None = None,
        *,
        name_pattern: str | None = None,
    ) -> int:
        """:meth:`cancel_all` from any thread; takes effect at once."""
        state, pattern = _status_or_pattern(status, name_pattern)
        why, text = split_args(reason, message)
        return self._cancel_many(pattern, state, why, text)


class ThreadSafeRegistry:
    """The registry's verbs for plain threads (Flask/Django views, GUI callbacks).

    Every verb takes effect at once: a cancelled operation's event loop is woken
    through its thread-safe wake-up; no event loop is needed in the calling thread.
    """

    _instance: ClassVar[ThreadSafeRegistry | None] = None

    def __init__(self, registry: OperationRegistry | None = None) -> None:
        self._registry = registry if registry is not None else OperationRegistry.get_instance()

    @classmethod
    def get_instance(cls) -> ThreadSafeRegistry:
        """The process-wide thread-safe front-end of :meth:`OperationRegistry.get_instance`."""
        instance = ThreadSafeRegistry._instance
        if instance is None:
            with OperationRegistry._instance_lock:
                instance = ThreadSafeRegistry._instance
                if instance is None:
                    instance = ThreadSafeRegistry._instance = ThreadSafeRegistry()
        return instance

    def list_operations(
        self,
        status: OperationStatus | None = None,
        parent_id: str | None = None,
        name_pattern: str | None = None,
    ) -> list[OperationContext]:
        """Contexts of the running operations that match every filter given."""
        return self._registry.list_operations_sync(status, parent_id, name_pattern)

    def get_operation(self, operation_id: str) -> OperationContext | None:
        """The context of the running operation with this id, or None."""
        op = self._registry._get(operation_id)
        return None if op is None else op.context

    def cancel_operation(
        self,
        operation_id: str,
        reason: CancelationReason | str = CancelationReason.MANUAL,
        message: str | None = None,
    ) -> bool:
        """Cancel one running operation; False if it is unknown or already cancelled.

        ``reason`` may be the message instead, as the seed documents call it
        (``cancel_operation(job_id, "User requested cancel")``).
        """
        return self._registry.cancel_operation_sync(operation_id, reason, message)

    def cancel_all(
        self,
        status: OperationStatus | str | None = None,
        reason: CancelationReason | str = CancelationReason.MANUAL,
        message: str | None = None,
        *,
        name_pattern: str | None = None,
    ) -> int:
        """Cancel every matching running operation; returns how many (see
        :meth:`OperationRegistry.cancel_all`)."""
        return self._registry.cancel_all_sync(status, reason, message, name_pattern=name_pattern)

    def get_history(
        self,
        limit: int | None = None,
        status: OperationStatus | None = None,
        since: datetime | float | None = None,
    ) -> list[OperationContext]:
        """Contexts of finished operations, oldest first (see
        :meth:`OperationRegistry.get_history`)."""
        return self._registry.get_history_sync(limit, status, since)

    def cleanup_completed(
        self, older_than: timedelta | float | None = None, keep_failed: bool = True
    ) -> int:
        """Drop finished operations from the history; returns how many."""
        return self._registry._cleanup(older_than, keep_failed)

    def clear_all(self) -> None:
        """Forget every operation, running or finished."""
        self._registry._clear()

    def get_statistics(self) -> RegistryStatistics:
        """A snapshot of the registry's counters."""
        return self._registry._statistics()
