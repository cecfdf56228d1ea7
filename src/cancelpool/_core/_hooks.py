"""What an operation tells its observers: the status hooks (``on_start``,
``on_complete``, ``on_cancel``, ``on_error``) and the callback types.

Observers never change what happens to the operation: a hook runs shielded from
cancellation, and one that raises is logged and the operation goes on.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from ._context import OperationContext

logger = logging.getLogger("cancelpool")

ProgressCallback = Callable[[str, str, dict[str, Any]], "Awaitable[Any] | Any"]
StatusCallback = Callable[["OperationContext"], "Awaitable[Any] | Any"]
ErrorCallback = Callable[["OperationContext", BaseException], "Awaitable[Any] | Any"]

#: The events an operation has hooks for.
EVENTS = ("start", "complete", "cancel", "error")


def takes_two(callback: Callable[..., Any]) -> bool:
    """Whether ``callback`` accepts ``(context, error)`` (the seed's error callback)."""
    try:
        sig = inspect.signature(callback)
    except (TypeError, ValueError):
        return False
    try:
        sig.bind(None, None)
    except TypeError:
        return False
    return True


class Hooks:
    """The status hooks of one operation, by event, in the order they were added."""

    __slots__ = ("_by_event",)

    def __init__(self) -> None:
        self._by_event: dict[str, list[StatusCallback | ErrorCallback]] = {}

    def add(self, event: str, callback: StatusCallback | ErrorCallback) -> None:
        """Call ``callback`` on ``event`` (one of :data:`EVENTS`)."""
        if event not in EVENTS:
            raise ValueError(f"no such operation event {event!r}; one of {EVENTS}")
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self._by_event.setdefault(event, []).append(callback)

    async def run(self, event: str, context: OperationContext) -> None:
        """Call every hook of ``event`` with the context (an error hook that takes two
        arguments gets ``context.error`` too); async hooks are awaited.

        Shielded: hooks run even while the operation is being cancelled, and a
        cancellation of the calling task waits for them. A hook that raises is logged.
        """
        callbacks = self._by_event.get(event)
        if not callbacks:
            return
        with anyio.CancelScope(shield=True):
            for callback in callbacks:
                try:
                    hook: Callable[..., Any] = callback
                    if event == "error" and takes_two(hook):
                        result = hook(context, context.error)
                    else:
                        result = hook(context)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("cancelpool: %s callback %r failed", event, callback)
