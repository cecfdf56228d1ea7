"""Progress: the callbacks one operation relays reports to, and the reports made from
threads that wait for the operation's event loop.

A report goes to the reporting operation's callbacks and then to every ancestor's
(the operation walks up its parents and hands the report to each relay); callbacks
receive the reporting operation's id. Reports never cancel anything and a callback
that raises never stops the operation: it is logged.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from typing import Any

from ._hooks import ProgressCallback

logger = logging.getLogger("cancelpool")

#: Guards making an operation's relay and its queue of thread reports; both are rare
#: next to an operation, so one lock for all is enough.
RELAY_LOCK = threading.Lock()


class ProgressRelay:
    """One operation's progress callbacks, and its reports waiting for the loop."""

    __slots__ = ("_callbacks", "_pending")

    def __init__(self) -> None:
        self._callbacks: list[ProgressCallback] = []
        # Reports from threads not delivered yet; None when no drainer is scheduled.
        self._pending: deque[tuple[str, dict[str, Any] | None]] | None = None

    def add(self, callback: ProgressCallback) -> None:
        """Relay every report to ``callback(operation_id, message, metadata)``."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self._callbacks.append(callback)

    @property
    def callbacks(self) -> tuple[ProgressCallback, ...]:
        """The callbacks, in the order they were added."""
        return tuple(self._callbacks)

    async def deliver(self, operation_id: str, message: str, metadata: dict[str, Any]) -> None:
        """Call each callback; async ones are awaited here (so a cancellation of the
        reporting task while one runs propagates as usual); one that raises is logged."""
        for callback in self._callbacks:
            try:
                result = callback(operation_id, message, metadata)
                # None first: most callbacks are plain functions, and this runs for
                # every report of every operation (isawaitable costs a few checks).
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("cancelpool: progress callback %r failed", callback)

    # -- reports from threads ----------------------------------------------------------
    def queue(self, message: str, metadata: dict[str, Any] | None) -> bool:
        """Queue a report made off the loop; True if the caller must schedule the
        drainer (none is scheduled yet), False if the scheduled one will take it."""
        with RELAY_LOCK:
            if self._pending is not None:
                self._pending.append((message, metadata))
                return False
            self._pending = deque([(message, metadata)])
            return True

    def next_pending(self) -> tuple[str, dict[str, Any] | None] | None:
        """The oldest queued report, or None once the queue is empty (the drainer
        then ends, and the next report schedules a new one)."""
        with RELAY_LOCK:
            pending = self._pending
            if not pending:
                self._pending = None
                return None
            return pending.popleft()

    def drop_pending(self) -> None:
        """Forget the queued reports (their loop has closed)."""
        with RELAY_LOCK:
            self._pending = None
